"""SVHN from the published ``train_32x32.mat``, ``test_32x32.mat`` and ``extra_32x32.mat``.

Each file (MATLAB v5) holds ``X``, 32 x 32 x 3 x N uint8 (height, width, channel, image), and
``y``, N x 1, the digit with 0 stored as 10. The original TensorFlow code read the files in this
order, mapped 10 to 0 and kept raw pixels; its model standardised each image itself (a layer
norm without scale or offset: ``mt_repro.models.convnet13.per_image_standardize``).

Image names. SVHN ships no per-image files, so for label files and listings each image is
named by its position in its file and its digit, as the original by-image CIFAR-10 tree names
its PNGs: ``<i>_<digit>.png`` for image ``i`` (0-based, the 4th axis of ``X``) of
``train_32x32.mat`` (e.g. ``0_1.png``, ``1_9.png``), ``test_<i>_<digit>.png`` in the test file
and ``extra_<i>_<digit>.png`` in the extra file. Class names are the digits ``"0"`` .. ``"9"``.

The per-image pipeline (the USB protocol; not the paper's, whose SVHN runs are the ConvNet's)
opens the parts ``train``, ``test``, ``extra`` and ``train+extra``, the training and extra
images joined in that order as USB's ``semilearn/datasets/cv_datasets/svhn.py`` joins them
(its split is drawn over the 604,388 images in that order). USB's weak augmentation of SVHN is
CIFAR's: ±4 px translation with mirrored borders (its ``RandomCrop(32, padding=4,
padding_mode="reflect")``) and a horizontal flip (FixMatch's paper does not flip SVHN; USB
does), normalised with USB's SVHN statistics.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from torch.utils.data import Dataset

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import MEMBER_BYTES, regular_file
from mt_repro.data.cifar10 import CifarArrays
from mt_repro.data.registry import DatasetSpec, TFArrays, register
from mt_repro.data.splits import NamedSplit, TFSplit, svhn_split
from mt_repro.data.translate_flip import TranslateFlip

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
PUBLISHED_SIZES = {"train": 73257, "test": 26032, "extra": 531131}
NAME_PREFIX = {"train": "", "test": "test_", "extra": "extra_"}
CLASS_NAMES = tuple(str(d) for d in range(10))
# the parts the per-image pipeline opens, each the files it joins in order
PIPELINE_PARTS = {"train": ("train",), "test": ("test",), "extra": ("extra",), "train+extra": ("train", "extra")}
USB_SVHN_STATS = {"mean": [0.4380, 0.4440, 0.4730], "std": [0.1751, 0.1771, 0.1744]}  # USB's svhn.py


@dataclass
class SvhnPart:
    part: str                       # train, test or extra
    images: np.ndarray | None       # N x 32 x 32 x 3 uint8, or None when read for labels only
    labels: np.ndarray              # N digits 0..9

    def file_names(self) -> list[str]:
        prefix = NAME_PREFIX[self.part]
        return [f"{prefix}{i}_{d}.png" for i, d in enumerate(self.labels.tolist())]


def svhn_path(directory: str | os.PathLike, part: str) -> Path:
    if part not in FILES:
        raise BadInput(f"SVHN has the parts {', '.join(FILES)}, not {part!r}")
    return Path(directory) / FILES[part]


def read_svhn(directory: str | os.PathLike, part: str, *, labels_only: bool = False) -> SvhnPart:
    """One published file of SVHN; ``labels_only`` skips the pixels (checks their shape)."""
    path = svhn_path(directory, part)
    if not os.path.lexists(path):
        raise BadInput(f"SVHN file {path} does not exist (expected {FILES[part]} from "
                       "http://ufldl.stanford.edu/housenumbers/ in that directory)")
    try:
        shapes = check_mat(path)
        if labels_only:
            contents = scipy.io.loadmat(str(path), variable_names=["y"])
        else:
            contents = scipy.io.loadmat(str(path))
            shapes = {k: (v.shape, v.dtype.name) for k, v in contents.items() if isinstance(v, np.ndarray)}
    except MemoryError:
        raise BadInput(f"{path.name} does not fit in memory: not a published SVHN file?") from None
    except NotImplementedError:
        raise BadInput(f"{path.name} is a MATLAB v7.3 (HDF5) file; the published SVHN files are v5: "
                       "re-download it") from None
    except BadInput:
        raise
    except Exception as exc:  # scipy raises many kinds for damaged files; all mean the same here
        raise BadInput(f"{path.name} is not a readable .mat file ({_one_line(exc)}): "
                       "truncated or corrupt? re-download it") from None
    for name in ("X", "y"):
        if name not in shapes or (name == "y" and "y" not in contents):
            raise BadInput(f"{path.name} has no variable {name!r}: truncated, or not an SVHN "
                           "*_32x32.mat file? re-download it")
    x_shape, x_type = shapes["X"]
    if len(x_shape) != 4 or tuple(x_shape[:3]) != (32, 32, 3) or x_type != "uint8":
        raise BadInput(f"{path.name}: X must be 32 x 32 x 3 x N uint8, got "
                       f"{' x '.join(map(str, x_shape))} {x_type}")
    y = np.asarray(contents["y"])
    n = x_shape[3]
    if y.ndim not in (1, 2) or y.size != n or (y.ndim == 2 and 1 not in y.shape):
        raise BadInput(f"{path.name}: y must be {n} x 1 (one label per image in X), got "
                       f"{' x '.join(map(str, y.shape))}")
    y = y.reshape(-1).astype(np.int64)
    if n and (y.min() < 1 or y.max() > 10):
        raise BadInput(f"{path.name}: labels must be 1..10 (10 for the digit 0), found "
                       f"{y.min()}..{y.max()}")
    y[y == 10] = 0
    images = None
    if not labels_only:
        images = np.ascontiguousarray(np.transpose(contents["X"], (3, 0, 1, 2)))
    return SvhnPart(part, images, y)


def split_from_files(directory: str | os.PathLike, n_labeled: int | None, data_seed: int, *,
                     test_phase: bool = True, n_extra_unlabeled: int = 0) -> TFSplit:
    """The original ``SVHN(data_seed, n_labeled, n_extra_unlabeled, test_phase)`` split of the
    files in ``directory`` (only the labels are read)."""
    train = read_svhn(directory, "train", labels_only=True)
    n_extra = 0
    if n_extra_unlabeled > 0:
        path = svhn_path(directory, "extra")
        if not path.is_file():
            raise BadInput(f"{n_extra_unlabeled} extra images requested but {path} does not exist")
        n_extra = _image_count(path)
    return svhn_split(train.labels, n_labeled, data_seed, test_phase=test_phase,
                      n_extra_unlabeled=n_extra_unlabeled, n_extra=n_extra)


def _image_count(path: Path) -> int:
    try:
        shapes = {name: shape for name, (shape, _) in check_mat(path).items()}
    except NotImplementedError:
        raise BadInput(f"{path.name} is a MATLAB v7.3 (HDF5) file; the published SVHN files are v5") from None
    except BadInput:
        raise
    except Exception as exc:
        raise BadInput(f"{path.name} is not a readable .mat file ({_one_line(exc)})") from None
    if "X" not in shapes or len(shapes["X"]) != 4:
        raise BadInput(f"{path.name} has no 32 x 32 x 3 x N variable 'X'")
    return int(shapes["X"][3])


def training_array(directory: str | os.PathLike, split: TFSplit, train: SvhnPart | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The original's training array for ``split``: labeled images, the rest of the training
    part and the chosen extra images, in that order; their targets (-1: unlabeled) and names.
    ``train``: the training part, if already read."""
    train = train or read_svhn(directory, "train")
    source, index, target = split.training_order()
    names = train.file_names()
    images = [train.images[index[source == 0]]]
    all_names = [names[i] for i in index[source == 0].tolist()]
    if (source == 1).any():
        extra = read_svhn(directory, "extra")
        images.append(extra.images[index[source == 1]])
        extra_names = extra.file_names()
        all_names += [extra_names[i] for i in index[source == 1].tolist()]
    return np.concatenate(images), target, all_names


def tf_arrays(root: Path, n_labeled: int | None, data_seed: int, test_phase: bool, n_extra: int) -> TFArrays:
    """The ConvNet runs' input: raw uint8 pixels (the model standardises each image itself).
    They stay uint8 in memory: with 500000 extra images float32 would take 7 GB."""
    split = split_from_files(root, n_labeled, data_seed, test_phase=test_phase, n_extra_unlabeled=n_extra)
    train = read_svhn(root, "train")
    train_x, train_y, _ = training_array(root, split, train)
    if split.validation is None:
        test = read_svhn(root, "test")
        eval_x, eval_y = test.images, test.labels
    else:
        eval_x, eval_y = train.images[split.validation], train.labels[split.validation]
    return TFArrays(train_x, train_y, eval_x, np.asarray(eval_y, np.int64))


def tf_split(root: Path, n_labeled: int | None, data_seed: int, test_phase: bool, n_extra: int):
    split = split_from_files(root, n_labeled, data_seed, test_phase=test_phase, n_extra_unlabeled=n_extra)
    train = read_svhn(root, "train", labels_only=True)
    return NamedSplit(split, train.file_names(), list(CLASS_NAMES))


# Bytes per element of each MATLAB class once read (cells and structs: a pointer per element).
_ITEM_BYTES = {"double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
               "uint32": 4, "int64": 8, "uint64": 8, "logical": 1, "char": 4}
_MAT_HEADER = 128
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_ELEMENT_SLACK = 64 * 1024  # an array's flags, dimensions and name, beside its data


def check_mat(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{variable: (shape, MATLAB class)}`` of a MATLAB v5 file, read from its headers only,
    once each variable's declared size (its shape, and the bytes its element declares) is within
    ``MEMBER_BYTES`` and each element lies within the file. A regular file only."""
    info = regular_file(path, "SVHN file")
    elements = _element_sizes(path, info.st_size)
    variables = scipy.io.whosmat(str(path))
    for index, (name, shape, cls) in enumerate(variables):
        declared = _ITEM_BYTES.get(cls, 8)
        for n in shape:
            declared *= int(n)
        subject = f"{path.name}: variable {name!r} ({' x '.join(map(str, shape))} {cls})"
        MEMBER_BYTES.check(declared, subject)
        if index < len(elements) and cls in _ITEM_BYTES:
            kind, size = elements[index]
            # The data can be stored narrower than it is read (MATLAB stores whole doubles as
            # bytes), never wider than a complex value: more is not this array's data.
            if size > 2 * declared + _ELEMENT_SLACK:
                raise BadInput(f"{subject} has an element of {size:,} bytes, more than its shape "
                               f"holds: damaged, refused")
    return {name: (tuple(int(n) for n in shape), cls) for name, shape, cls in variables}


def _element_sizes(path: Path, file_size: int) -> list[tuple[int, int]]:
    """(type, bytes) of each top-level element of a MATLAB v5 file, the bytes of a compressed
    one being what its first header says it decompresses to. Each must lie within the file."""
    sizes = []
    with open(path, "rb") as f:
        header = f.read(_MAT_HEADER)
        if len(header) < _MAT_HEADER:
            raise BadInput(f"{path.name} is not a readable .mat file (shorter than its header): "
                           "truncated or corrupt? re-download it")
        if header[124:126] == b"\x00\x02":  # version 0x0200: MATLAB 7.3, an HDF5 file
            raise NotImplementedError
        order = "<" if header[126:128] == b"IM" else ">"
        position = _MAT_HEADER
        while position + 8 <= file_size:
            f.seek(position)
            kind, size = struct.unpack(order + "II", f.read(8))
            end = position + 8 + size
            if end > file_size:
                raise BadInput(f"{path.name}: an element declares {size:,} bytes, more than the file holds: "
                               "truncated or corrupt? re-download it")
            MEMBER_BYTES.check(size, f"{path.name}: an element")
            if kind == _MI_COMPRESSED:
                inflated = zlib.decompressobj().decompress(f.read(min(size, 256)), 8)
                if len(inflated) == 8:
                    size = struct.unpack(order + "II", inflated)[1]
                    MEMBER_BYTES.check(size, f"{path.name}: a compressed element")
            sizes.append((kind, size))
            position = end if kind == _MI_COMPRESSED else end + (-end % 8)
    return sizes


@dataclass
class JoinedParts:
    """Published files of SVHN joined in order, as ``CifarArrays`` takes a split."""
    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    sizes: dict[str, int]           # the images of each file joined, in order
    class_names: tuple[str, ...] = CLASS_NAMES

    def file_names(self) -> list[str]:
        return self.names


_READ: dict[tuple[Path, str], JoinedParts] = {}   # the last part read: a run opens its part several times


def open_part(root: Path, part: str, transform, damaged_images: str = "refuse") -> Dataset:
    """A pipeline part (``PIPELINE_PARTS``) in memory, looking like ``ImageFolder`` over images
    named as the module says. Its ``published_order`` lists its items in the files' order, its
    ``part_sizes`` the images of each file it joins."""
    if part not in PIPELINE_PARTS:
        raise BadInput(f"SVHN's per-image parts are {', '.join(PIPELINE_PARTS)}, not {part!r}")
    key = (Path(root).resolve(), part)
    if key not in _READ:
        _READ.clear()
        pieces = [read_svhn(root, name) for name in PIPELINE_PARTS[part]]
        _READ[key] = JoinedParts(np.concatenate([p.images for p in pieces]) if len(pieces) > 1 else pieces[0].images,
                                 np.concatenate([p.labels for p in pieces]),
                                 [name for p in pieces for name in p.file_names()],
                                 {p.part: len(p.labels) for p in pieces})
    joined = _READ[key]
    dataset = CifarArrays(joined, transform)
    position = {name: i for i, name in enumerate(joined.names)}
    dataset.published_order = sorted(range(len(dataset)), key=lambda k: position[dataset.samples[k][0]])
    dataset.part_sizes = dict(joined.sizes)
    return dataset


AUGMENTATION = TranslateFlip(4, **USB_SVHN_STATS)
train_transform, eval_transform, batch_augment = (AUGMENTATION.train_transform, AUGMENTATION.eval_transform,
                                                  AUGMENTATION.batch_augment)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


SPEC = register(DatasetSpec(
    name="svhn", description="SVHN (Netzer et al. 2011): 73257 training, 26032 test and 531131 extra "
                             "images of house-number digits",
    num_classes=10, train_size=PUBLISHED_SIZES["train"], default_root="data-local/images/svhn",
    reads="the directory holding train_32x32.mat, test_32x32.mat (and extra_32x32.mat)",
    eval_part="test", open_part=open_part, train_transform=train_transform, eval_transform=eval_transform,
    batch_augment=batch_augment, augmentation=AUGMENTATION, tf_arrays=tf_arrays, tf_split=tf_split, has_extra=True))
