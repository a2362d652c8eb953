"""Tiny stand-ins for the real datasets, written in their exact on-disk formats.

Tests, benchmarks and the faithfulness check use these: no machine here reaches the
internet, and a few dozen images are enough to exercise every code path. Pixels come
from a private ``numpy.random.RandomState`` so writing a dataset never touches the
global random generators that faithful training depends on.

Each stand-in says what it is, in a place the real readers pass over (``stand_in_marker``
reads it back, so that a run's summary can say its data was a stand-in): the CIFAR tarballs
begin with a member ``<batch dir>/mt-repro-stand-in.txt`` (the published tarball has a
``readme.html`` the readers skip as well), an extracted batch directory holds that file, and
the SVHN ``.mat`` files carry the words in the 116-byte description text of their MATLAB
header, which readers show but never parse.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from mt_repro.core.errors import BadInput
from mt_repro.data import labels as label_files
from mt_repro.data.cifar10 import read_cifar10

STAND_IN_FILE = "mt-repro-stand-in.txt"
STAND_IN_TEXT = ("A synthetic stand-in written by {what}, in the published format: "
                 "noise around one colour per class. Results on it say nothing about {dataset}.\n")
MAT_STAND_IN = b"MATLAB 5.0 MAT-file, synthetic stand-in for SVHN written by mt-repro synthetic-svhn"
MAT_DESCRIPTION_BYTES = 116   # the free text at the start of a MATLAB v5 header

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


def random_cifar_arrays(n_images: int, seed: int, colour_seed: int | None = None,
                        n_classes: int = len(CIFAR10_CLASSES)) -> tuple[np.ndarray, list[int]]:
    """Images as CIFAR-10 stores them (rows of 3072 uint8, channel-major) and labels.

    Each class gets a distinct mean colour so that a model can learn something. The colours
    come from ``seed`` unless ``colour_seed`` is given: pass the same ``colour_seed`` for a
    training and a test split so that the test split is learnable from the training one.
    """
    rng = np.random.RandomState(seed)
    labels = [i % n_classes for i in range(n_images)]
    rng.shuffle(labels)
    base = rng.randint(0, 256, size=(n_classes, 3, 1, 1))
    if colour_seed is not None:
        base = np.random.RandomState(colour_seed).randint(0, 256, size=(n_classes, 3, 1, 1))
    noise = rng.randint(-60, 61, size=(n_images, 3, 32, 32))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return images.reshape(n_images, 3072), labels


def write_image_tree(root: str | os.PathLike, train_per_class: int = 6, test_per_class: int = 2,
                     seed: int = 0) -> Path:
    """Write the original by-image layout: ``train+val/<class>/<i>_<class>.png`` and ``test/``.

    The test split's class colours differ from the training split's, so test accuracy on this
    tree means nothing; it exists to exercise code paths and to compare runs draw for draw
    (``tests/golden`` was recorded on it: keep its pixels unchanged).
    """
    root = Path(root)
    for subdir, per_class, offset in (("train+val", train_per_class, 0),
                                      ("test", test_per_class, 1)):
        n = per_class * len(CIFAR10_CLASSES)
        images, labels = random_cifar_arrays(n, seed * 2 + offset)
        _write_pngs(root / subdir, images, labels)
    return root


def _write_pngs(directory: Path, images: np.ndarray, labels: list[int]) -> None:
    for index, (row, label) in enumerate(zip(images, labels)):
        name = CIFAR10_CLASSES[label]
        (directory / name).mkdir(parents=True, exist_ok=True)
        pixels = np.moveaxis(row.reshape(3, 32, 32), 0, 2)
        Image.fromarray(pixels, "RGB").save(directory / name / f"{index}_{name}.png")


def write_label_file(path: str | os.PathLike, tree_root: str | os.PathLike,
                     per_class: int) -> Path:
    """Label the first ``per_class`` images (by index) of each class, original line format."""
    chosen: list[tuple[int, str]] = []
    for class_dir in sorted(Path(tree_root, "train+val").iterdir()):
        files = sorted(class_dir.iterdir(), key=lambda p: int(p.name.split("_")[0]))
        chosen += [(int(p.name.split("_")[0]), class_dir.name) for p in files[:per_class]]
    path = Path(path)
    label_files.write_label_file(path, {f"{i}_{c}.png": c for i, c in sorted(chosen)})
    return path


def flat_cifar_arrays(labels: list[int], first_index: int = 0) -> np.ndarray:
    """Cheap, highly compressible images (rows of 3072 uint8, channel-major), one per label.

    Image ``k`` is flat per half: red is ``(first_index + k) % 256``, green is
    ``(first_index + k) // 256 % 256``, blue is ``25 * label``, and the top half is halved.
    So every image up to 65536 is distinct and its index can be read back from its pixels
    (:func:`flat_image_index`); 50000 of them gzip to about a megabyte.
    """
    n = len(labels)
    index = np.arange(first_index, first_index + n)
    images = np.empty((n, 3, 32, 32), dtype=np.uint8)
    images[:, 0] = (index % 256)[:, None, None]
    images[:, 1] = (index // 256 % 256)[:, None, None]
    images[:, 2] = (25 * np.asarray(labels, dtype=np.int64) % 256)[:, None, None]
    images[:, :, :16, :] //= 2
    return images.reshape(n, 3072)


def flat_image_index(pixels: np.ndarray) -> int:
    """The index that :func:`flat_cifar_arrays` encoded in an HWC (32 x 32 x 3) image."""
    pixels = np.asarray(pixels)
    return int(pixels[31, 0, 0]) + 256 * int(pixels[31, 0, 1])


def cifar_batches(n_train: int, n_test: int, seed: int = 0, *, images: str = "random",
                  train_labels: list[int] | None = None,
                  test_labels: list[int] | None = None) -> dict[str, dict]:
    """The python-version CIFAR-10 pickles: five training batches, a test batch and the meta.

    ``images="random"``: noisy images around a per-class colour (learnable); ``"flat"``:
    :func:`flat_cifar_arrays` (fast to write at full size). Labels are shuffled balanced
    classes unless given.
    """
    if images == "random":
        train, random_train_labels = random_cifar_arrays(n_train, seed, colour_seed=seed)
        test, random_test_labels = random_cifar_arrays(n_test, seed + 1, colour_seed=seed)
        if train_labels is not None or test_labels is not None:
            raise ValueError("explicit labels need images='flat'")
        train_labels, test_labels = random_train_labels, random_test_labels
    elif images == "flat":
        train_labels = _balanced_labels(n_train, seed) if train_labels is None else list(train_labels)
        test_labels = _balanced_labels(n_test, seed + 1) if test_labels is None else list(test_labels)
        if len(train_labels) != n_train or len(test_labels) != n_test:
            raise ValueError("need one label per image")
        train = flat_cifar_arrays(train_labels)
        test = flat_cifar_arrays(test_labels, first_index=n_train)
    else:
        raise ValueError(f"images must be 'random' or 'flat', not {images!r}")
    batches: dict[str, dict] = {}
    # Keys in the order the published pickles hold them.
    for k, chunk in enumerate(np.array_split(np.arange(n_train), 5)):
        batches[f"data_batch_{k + 1}"] = {
            "batch_label": f"training batch {k + 1} of 5",
            "labels": [int(train_labels[i]) for i in chunk],
            "data": train[chunk],
            "filenames": [f"synthetic_{i}.png" for i in chunk],
        }
    batches["test_batch"] = {"batch_label": "testing batch 1 of 1",
                             "labels": [int(label) for label in test_labels],
                             "data": test, "filenames": [f"test_{i}.png" for i in range(n_test)]}
    batches["batches.meta"] = {"num_cases_per_batch": n_train // 5, "label_names": list(CIFAR10_CLASSES),
                               "num_vis": 3072}
    return batches


def _balanced_labels(n_images: int, seed: int) -> list[int]:
    labels = [i % len(CIFAR10_CLASSES) for i in range(n_images)]
    np.random.RandomState(seed).shuffle(labels)
    return labels


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the published batches (protocol 2): strings are
    byte strings (``U``/``T`` opcodes, read back with ``encoding='latin1'``) and numpy's
    reconstructor is ``numpy.core.multiarray._reconstruct``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    def save_global(self, obj, name=None):
        module = obj.__module__
        name = name or obj.__qualname__
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(obj) -> bytes:
    """``obj`` pickled the way the published CIFAR-10 batches are (Python 2, protocol 2)."""
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def cifar_pickles(batches: dict[str, dict], py2: bool = True) -> dict[str, bytes]:
    """Each batch pickled: as published (``py2``), or by this Python with protocol 2."""
    return {name: py2_pickle(content) if py2 else pickle.dumps(content, protocol=2)
            for name, content in batches.items()}


def write_tarball(path: str | os.PathLike, members: dict[str, bytes], compresslevel: int = 9,
                  directory: str = "cifar-10-batches-py", stand_in: str | None = None) -> Path:
    """A gzipped tarball holding ``<directory>/<name>`` for each member, in order; first, with
    ``stand_in`` (its text), the member ``<directory>/mt-repro-stand-in.txt`` that says so."""
    path = Path(path)
    if stand_in is not None:
        members = {STAND_IN_FILE: stand_in.encode(), **members}
    with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{directory}/{name}")
            info.size = len(payload)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
    return path


def write_cifar_tarball(path: str | os.PathLike, n_train: int = 100, n_test: int = 20,
                        seed: int = 0, *, images: str = "random", train_labels: list[int] | None = None,
                        test_labels: list[int] | None = None, py2: bool = True,
                        compresslevel: int = 9) -> Path:
    """``cifar-10-python.tar.gz`` as published: ``cifar-10-batches-py/`` with latin1 pickles.

    For a full-size (50000 + 10000) tarball in a few seconds use ``images="flat"`` and
    ``compresslevel=1``.
    """
    batches = cifar_batches(n_train, n_test, seed, images=images,
                            train_labels=train_labels, test_labels=test_labels)
    return write_tarball(path, cifar_pickles(batches, py2=py2), compresslevel=compresslevel,
                         stand_in=STAND_IN_TEXT.format(what="mt-repro synthetic-cifar10", dataset="CIFAR-10"))


def cifar100_batches(n_train: int, n_test: int, seed: int = 0) -> dict[str, dict]:
    """The python-version CIFAR-100 pickles (``train``, ``test``, ``meta``), noisy images around
    a colour per fine class; coarse labels are the fine ones grouped by five, as the published
    file's 20 superclasses of 5 classes (which ones does not matter here)."""
    train, train_labels = random_cifar_arrays(n_train, seed, colour_seed=seed, n_classes=100)
    test, test_labels = random_cifar_arrays(n_test, seed + 1, colour_seed=seed, n_classes=100)

    def part(label: str, images: np.ndarray, labels: list[int]) -> dict:
        # keys in the order the published pickles hold them
        return {"filenames": [f"synthetic_{i}.png" for i in range(len(labels))], "batch_label": label,
                "fine_labels": [int(c) for c in labels], "coarse_labels": [int(c) // 5 for c in labels],
                "data": images}

    return {"train": part("training batch 1 of 1", train, train_labels),
            "test": part("testing batch 1 of 1", test, test_labels),
            "meta": {"fine_label_names": [f"class_{c:02d}" for c in range(100)],
                     "coarse_label_names": [f"superclass_{c:02d}" for c in range(20)]}}


def write_cifar100_tarball(path: str | os.PathLike, n_train: int = 500, n_test: int = 100,
                           seed: int = 0, compresslevel: int = 9) -> Path:
    """``cifar-100-python.tar.gz`` as published: ``cifar-100-python/{train,test,meta}``."""
    return write_tarball(path, cifar_pickles(cifar100_batches(n_train, n_test, seed)),
                         compresslevel=compresslevel, directory="cifar-100-python",
                         stand_in=STAND_IN_TEXT.format(what="mt_repro.data.synthetic.write_cifar100_tarball",
                                                       dataset="CIFAR-100"))


def write_cifar_batches_dir(directory: str | os.PathLike, n_train: int = 100, n_test: int = 20,
                            seed: int = 0, **options) -> Path:
    """The tarball's contents extracted: ``<directory>/cifar-10-batches-py/<batch>``; returns
    the batches directory. ``options`` as for :func:`write_cifar_tarball` (but compresslevel)."""
    py2 = options.pop("py2", True)
    batch_dir = Path(directory) / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True, exist_ok=True)
    for name, payload in cifar_pickles(cifar_batches(n_train, n_test, seed, **options), py2=py2).items():
        (batch_dir / name).write_bytes(payload)
    (batch_dir / STAND_IN_FILE).write_text(
        STAND_IN_TEXT.format(what="mt_repro.data.synthetic.write_cifar_batches_dir", dataset="CIFAR-10"))
    return batch_dir


def balanced_labels(tarball: str | os.PathLike, per_class: int) -> dict[str, str]:
    """An original-format label selection: the first ``per_class`` training images of each class."""
    split = read_cifar10(tarball)["train+val"]
    chosen: dict[str, str] = {}
    counts = dict.fromkeys(split.class_names, 0)
    for name, label in zip(split.file_names(), split.labels):
        class_name = split.class_names[label]
        if counts[class_name] < per_class:
            counts[class_name] += 1
            chosen[name] = class_name
    short = sorted(c for c, n in counts.items() if n < per_class)
    if short:
        raise BadInput(f"fewer than {per_class} training images in class(es) {', '.join(short)}")
    return chosen


SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


def svhn_arrays(n_images: int, seed: int, colour_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels as an SVHN ``*_32x32.mat`` stores them: ``X`` 32 x 32 x 3 x N uint8
    and ``y`` N x 1 with the digit 0 stored as 10. Class colours as ``random_cifar_arrays``
    (shared between files through ``colour_seed``, so the test file is learnable)."""
    rows, labels = random_cifar_arrays(n_images, seed, colour_seed=colour_seed)
    images = rows.reshape(n_images, 3, 32, 32).transpose(2, 3, 1, 0)  # H x W x C x N
    digits = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
    digits[digits == 0] = 10
    return np.ascontiguousarray(images), digits


def write_svhn_mat(directory: str | os.PathLike, n_train: int = 100, n_test: int = 20,
                   n_extra: int = 0, seed: int = 0) -> dict[str, Path]:
    """``train_32x32.mat``, ``test_32x32.mat`` and (``n_extra`` > 0) ``extra_32x32.mat`` in
    the published format (MATLAB v5, variables ``X`` and ``y``); returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for offset, (part, n) in enumerate((("train", n_train), ("test", n_test), ("extra", n_extra))):
        if part == "extra" and n == 0:
            continue
        images, digits = svhn_arrays(n, seed + offset, colour_seed=seed)
        paths[part] = directory / SVHN_FILES[part]
        scipy.io.savemat(paths[part], {"X": images, "y": digits}, format="5", do_compression=False)
        _describe_mat(paths[part])
    return paths


def _describe_mat(path: Path) -> None:
    """The MATLAB header's description text of ``path`` (scipy writes its platform and the time
    there) replaced by the words that mark a stand-in."""
    with open(path, "r+b") as f:
        f.write(MAT_STAND_IN.ljust(MAT_DESCRIPTION_BYTES))


STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
STL10_DIR = "stl10_binary"
STL10_SIZE = 96


def stl10_images_to_bytes(images: np.ndarray) -> bytes:
    """``N x 96 x 96 x 3`` uint8 pixels (row, column, channel) as an STL-10 ``*_X.bin`` stores
    them: per image the three channel planes, each written column by column."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (STL10_SIZE, STL10_SIZE, 3):
        raise ValueError(f"expected N x {STL10_SIZE} x {STL10_SIZE} x 3 images, got {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes()


def stl10_arrays(n_images: int, seed: int, colour_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``N x 96 x 96 x 3`` uint8 images, noise around one colour per class (the colours from
    ``colour_seed``, shared by the files so that the test file is learnable), and their classes
    0..9 (balanced, shuffled); the unlabeled file's images are drawn the same way."""
    rng = np.random.RandomState(seed)
    labels = np.arange(n_images) % len(STL10_CLASSES)
    rng.shuffle(labels)
    base = np.random.RandomState(colour_seed).randint(0, 256, size=(len(STL10_CLASSES), 1, 1, 3))
    noise = rng.randint(-60, 61, size=(n_images, STL10_SIZE, STL10_SIZE, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def stl10_members(n_train: int = 50, n_test: int = 20, n_unlabeled: int = 50, seed: int = 0) -> dict[str, bytes]:
    """The files of ``stl10_binary/`` as published (``train_X.bin``, ``train_y.bin``,
    ``test_X.bin``, ``test_y.bin``, ``unlabeled_X.bin``, ``class_names.txt``,
    ``fold_indices.txt``), each file's bytes; labels stored as 1..10."""
    train, train_labels = stl10_arrays(n_train, seed, colour_seed=seed)
    test, test_labels = stl10_arrays(n_test, seed + 1, colour_seed=seed)
    unlabeled, _ = stl10_arrays(n_unlabeled, seed + 2, colour_seed=seed)
    folds = np.array_split(np.random.RandomState(seed + 3).permutation(n_train), 10)
    return {
        "train_X.bin": stl10_images_to_bytes(train),
        "train_y.bin": (train_labels + 1).astype(np.uint8).tobytes(),
        "test_X.bin": stl10_images_to_bytes(test),
        "test_y.bin": (test_labels + 1).astype(np.uint8).tobytes(),
        "unlabeled_X.bin": stl10_images_to_bytes(unlabeled),
        "class_names.txt": "".join(f"{name}\n" for name in STL10_CLASSES).encode(),
        "fold_indices.txt": "".join(" ".join(map(str, fold.tolist())) + " \n" for fold in folds).encode(),
    }


def write_stl10_binary(directory_or_tarball: str | os.PathLike, n_train: int = 50, n_test: int = 20,
                       n_unlabeled: int = 50, seed: int = 0, compresslevel: int = 1,
                       members: dict[str, bytes] | None = None) -> Path:
    """STL-10's binary release: a path ending ``.tar.gz``, ``.tgz`` or ``.tar`` gets the tarball
    (``stl10_binary/<file>``, first the stand-in's marker), any other the extracted directory
    ``<path>/stl10_binary/`` (with the marker file). ``members``: the files to write instead of
    ``stl10_members(...)`` (tests alter them). Returns the path given, which the reader takes."""
    path = Path(directory_or_tarball)
    members = stl10_members(n_train, n_test, n_unlabeled, seed) if members is None else members
    marker = STAND_IN_TEXT.format(what="mt_repro.data.synthetic.write_stl10_binary", dataset="STL-10")
    if path.name.endswith((".tar.gz", ".tgz")):
        return write_tarball(path, members, compresslevel=compresslevel, directory=STL10_DIR, stand_in=marker)
    if path.name.endswith(".tar"):
        with tarfile.open(path, "w") as tar:
            for name, payload in {STAND_IN_FILE: marker.encode(), **members}.items():
                info = tarfile.TarInfo(f"{STL10_DIR}/{name}")
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
        return path
    base = path / STL10_DIR
    base.mkdir(parents=True, exist_ok=True)
    for name, payload in members.items():
        (base / name).write_bytes(payload)
    (base / STAND_IN_FILE).write_text(marker)
    return path


# --- recognising a stand-in ----------------------------------------------------------------------
_COMPRESSED = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))
_HEAD_BYTES = 2 * tarfile.BLOCKSIZE + 1024   # the first member's header and a marker's text


def stand_in_marker(path: str | os.PathLike) -> str | None:
    """The words a stand-in of this module carries (see the module's docstring), or None: for a
    CIFAR tarball, an extracted batch directory (or the directory above it), an SVHN directory
    or one of its ``.mat`` files. Reads a few kilobytes at most; anything unreadable is None
    (the run's own reader has judged the data already)."""
    path = Path(path)
    try:
        if path.is_dir():
            return _directory_marker(path)
        if not path.is_file():   # a FIFO would never end, a device is no dataset
            return None
        with open(path, "rb") as f:
            start = f.read(MAT_DESCRIPTION_BYTES)
        if start.startswith(MAT_STAND_IN):
            return start.decode("ascii", "replace").rstrip()
        return _tarball_marker(path, start)
    except (OSError, EOFError, ValueError, tarfile.TarError, zlib.error, lzma.LZMAError):
        return None


def _directory_marker(directory: Path) -> str | None:
    for candidate in (directory / STAND_IN_FILE, directory / "cifar-10-batches-py" / STAND_IN_FILE,
                      directory / "cifar-100-python" / STAND_IN_FILE, directory / STL10_DIR / STAND_IN_FILE):
        if candidate.is_file():
            with open(candidate, "rb") as f:
                return f.read(1024).decode("utf-8", "replace").strip()
    for name in SVHN_FILES.values():
        if (directory / name).is_file():
            return stand_in_marker(directory / name)
    return None


def _tarball_marker(path: Path, start: bytes) -> str | None:
    """The text of the first member of a tarball (compressed or not) if that member is the
    stand-in's file; only its first blocks are decompressed."""
    opener = next((open_ for magic, open_ in _COMPRESSED if start.startswith(magic)), open)
    with opener(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if len(head) < tarfile.BLOCKSIZE:
        return None
    member = tarfile.TarInfo.frombuf(head[:tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    if Path(member.name).name != STAND_IN_FILE or not member.isfile():
        return None
    text = head[tarfile.BLOCKSIZE:tarfile.BLOCKSIZE + min(member.size, 1024)]
    return text.decode("utf-8", "replace").strip()

