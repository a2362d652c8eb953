"""Reader of the published CIFAR-10-C and CIFAR-100-C files (Hendrycks & Dietterich 2019, on
zenodo): the test images of CIFAR-10 (CIFAR-100) under the benchmark's corruptions.

The published directory holds one ``<corruption>.npy`` per corruption, uint8 of shape
(50000, 32, 32, 3): the 10000 test images at severity 1, then at severity 2, ... 5; and
``labels.npy``, shape (50000,), the test labels repeated for the 5 severities. The names are
those of :data:`mt_repro.data.corruptions.CORRUPTIONS` (the 15 standard corruptions and the 4
extra ones); :mod:`mt_repro.data.corruptions` makes the same corruptions for other images.

The files come from elsewhere, so they are read as untrusted: each must be a regular file (a
link to ``/dev/zero`` or a FIFO is refused, not read forever), its ``.npy`` header is parsed
here and checked before anything is allocated (numbers only, never pickled objects; C order;
uint8 images, integer labels; the declared size within ``MEMBER_BYTES`` and equal to what the
file holds after its header, so that a truncated or padded file is refused), and only then are
its bytes read. What the arrays hold is checked too: 5 severities of 32 x 32 x 3 images, one
label per image, the same labels at every severity, within the classes, and (when given) the
test set's own labels. Every refusal is one line naming the file.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import MEMBER_BYTES, regular_file
from mt_repro.data.corruptions import CORRUPTIONS

LABELS = "labels.npy"
SEVERITY_COUNT = 5
IMAGE_SHAPE = (32, 32, 3)


def corruptions_in(directory: str | os.PathLike) -> tuple[str, ...]:
    """The corruptions of ``CORRUPTIONS`` whose files ``directory`` holds, in the benchmark's order."""
    directory = _directory(directory)
    present = tuple(name for name in CORRUPTIONS if (directory / f"{name}.npy").exists())
    if not present and not (directory / LABELS).exists():
        raise BadInput(f"{directory} holds none of the published CIFAR-10-C / CIFAR-100-C files "
                       f"(<corruption>.npy, {LABELS}): is it the extracted folder?")
    return present


def read_corruption(directory: str | os.PathLike, name: str, *, expected_labels: np.ndarray | None = None,
                    num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of corruption ``name`` in a published directory: images uint8 of shape
    (5, n, 32, 32, 3), severity s at index s - 1; labels int64 of shape (n,), those of the n
    test images. ``expected_labels``: the test set's labels, which the file's must equal;
    ``num_classes``: 10 for CIFAR-10-C, 100 for CIFAR-100-C."""
    if name not in CORRUPTIONS:
        raise BadInput(f"unknown corruption {name!r}: the corruptions are {', '.join(CORRUPTIONS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise BadInput(f"num_classes {num_classes!r} must be a positive whole number")
    directory = _directory(directory)
    path, labels_path = directory / f"{name}.npy", directory / LABELS
    if not path.exists() and not path.is_symlink():
        present = [f"{other}.npy" for other in CORRUPTIONS if (directory / f"{other}.npy").exists()]
        present += [LABELS] if labels_path.exists() else []
        raise BadInput(f"{directory} has no {name}.npy: it holds {', '.join(present) or 'none of the published files'}")
    if not labels_path.exists() and not labels_path.is_symlink():
        raise BadInput(f"{directory} has no {LABELS}, the labels of its corruption files")

    images = _read_npy(path, "images")
    _check_image_shape(path, images.shape)
    labels = _checked_labels(directory, path, images.shape[0], num_classes)
    n = images.shape[0] // SEVERITY_COUNT
    per_severity = labels.reshape(SEVERITY_COUNT, n)
    test_labels = per_severity[0].copy()
    if expected_labels is not None:
        expected = np.asarray(expected_labels).reshape(-1)
        if len(expected) != n:
            raise BadInput(f"{path} holds {n} images per severity, the test set {len(expected)}: "
                           "is it the corrupted copy of this test set?")
        differ = np.flatnonzero(test_labels != expected)
        if len(differ):
            raise BadInput(f"{labels_path} differs from the test set's labels at {len(differ)} of {n} images "
                           f"(first at test image {differ[0]}): is it the corrupted copy of this test set?")
    return images.reshape(SEVERITY_COUNT, n, *IMAGE_SHAPE), test_labels


def _checked_labels(directory: Path, path: Path, rows: int, num_classes: int) -> np.ndarray:
    """The labels of ``directory``, checked against the ``rows`` images of ``path``: one per
    image, within the classes, the same at every severity."""
    labels_path = directory / LABELS
    labels = _read_npy(labels_path, "labels")
    if labels.ndim != 1:
        raise BadInput(f"{labels_path} has shape {labels.shape}: it should hold one label per image, ({rows},)")
    if len(labels) != rows:
        raise BadInput(f"{labels_path} holds {len(labels)} labels but {path} holds {rows} images: "
                       f"they must be the same, {SEVERITY_COUNT} severities × the test images")
    labels = labels.astype(np.int64)
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(outside):
        raise BadInput(f"{labels_path} holds label {labels[outside[0]]} (row {outside[0]}): the labels of "
                       f"{num_classes} classes are 0..{num_classes - 1}")
    n = rows // SEVERITY_COUNT
    per_severity = labels.reshape(SEVERITY_COUNT, n)
    for severity in range(1, SEVERITY_COUNT):
        differ = np.flatnonzero(per_severity[severity] != per_severity[0])
        if len(differ):
            raise BadInput(f"{labels_path} is not the test labels repeated for the {SEVERITY_COUNT} severities: "
                           f"severity {severity + 1}'s differ from severity 1's at {len(differ)} of {n} images "
                           f"(first at test image {differ[0]})")
    return labels


def check_corruption_files(directory: str | os.PathLike, names: list[str], *, num_classes: int = 10) -> None:
    """Every file ``read_corruption`` would read for ``names``, checked before the first is
    used: the labels read and checked whole (400 kB), each corruption file's header (its
    images are read when they are evaluated). A bad file is refused now, not after an hour."""
    directory = _directory(directory)
    labels = None
    for name in names:
        path = directory / f"{name}.npy"
        if not path.exists() and not path.is_symlink():
            raise BadInput(f"{directory} has no {name}.npy")
        shape, _ = _npy(path, "images", read=False)
        _check_image_shape(path, shape)
        if labels is None:
            if not (directory / LABELS).exists() and not (directory / LABELS).is_symlink():
                raise BadInput(f"{directory} has no {LABELS}, the labels of its corruption files")
            labels = _checked_labels(directory, path, shape[0], num_classes)
        elif shape[0] != len(labels):
            raise BadInput(f"{path} holds {shape[0]} images but {directory / LABELS} {len(labels)} labels: "
                           f"they must be the same, {SEVERITY_COUNT} severities × the test images")


def _check_image_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE or shape[0] == 0 or shape[0] % SEVERITY_COUNT:
        raise BadInput(f"{path} has shape {shape}: the published files hold {SEVERITY_COUNT} severities "
                       f"× the test images, 32×32×3")


def _directory(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise BadInput(f"CIFAR-10-C directory {directory} does not exist")
    if not directory.is_dir():
        raise BadInput(f"CIFAR-10-C directory {directory} is not a directory")
    return directory


def _read_npy(path: Path, kind: str) -> np.ndarray:
    """The array of an untrusted ``.npy`` file, ``kind`` "images" (uint8) or "labels" (integers),
    its header checked before its data is allocated or read."""
    return _npy(path, kind, read=True)[1]


def _npy(path: Path, kind: str, *, read: bool) -> tuple[tuple[int, ...], np.ndarray | None]:
    """(shape, the array or None unless ``read``) of a ``.npy`` file: ``_read_npy``'s checks."""
    regular_file(path, "file")   # before it is opened: opening a FIFO would block
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BadInput(f"{path} is not a regular file: refused")
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise BadInput(f"{path} is a .npy file of version {version[0]}.{version[1]}: "
                                   "the published files are version 1.0")
            except (ValueError, SyntaxError, TypeError, EOFError) as exc:
                message = " ".join(str(exc).split())[:200] or type(exc).__name__   # a header may be huge
                raise BadInput(f"{path} is not a readable .npy file ({message})") from None
            header = f.tell()
            if dtype.hasobject:
                raise BadInput(f"{path} holds Python objects (pickled), not numbers: refused unread")
            if kind == "images" and dtype != np.uint8:
                raise BadInput(f"{path} holds {dtype} values: the published images are uint8")
            if kind == "labels" and dtype.kind not in "iu":
                raise BadInput(f"{path} holds {dtype} values, not integer labels")
            if fortran_order:
                raise BadInput(f"{path} is in Fortran order: the published files are in C order")
            count = int(np.prod(shape, dtype=object))
            declared = count * dtype.itemsize
            MEMBER_BYTES.check(declared, f"{path} ({' x '.join(map(str, shape))} {dtype})")
            held = info.st_size - header
            if held != declared:
                raise BadInput(f"{path} declares {declared:,} bytes of data ({' x '.join(map(str, shape))} {dtype}) "
                               f"but holds {held:,}: {'truncated' if held < declared else 'padded'} or corrupt")
            if not read:
                return tuple(shape), None
            data = np.fromfile(f, dtype=dtype, count=count)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.size != count:   # the file shrank while it was read
        raise BadInput(f"{path} ended after {data.size:,} of its {count:,} values: truncated")
    return tuple(shape), data.reshape(shape)
