"""STL-10 (Coates, Lee & Ng 2011) from its binary release, for the protocol of USB/TorchSSL.
Not in the Mean Teacher paper.

The release is ``stl10_binary.tar.gz``; it extracts to ``stl10_binary/`` with

* ``train_X.bin``, ``test_X.bin``, ``unlabeled_X.bin``: images one after the other, 27648 bytes
  each (3 x 96 x 96 uint8): the red plane, then the green, then the blue, each plane written
  column by column (all 96 rows of column 0 first). The published files hold 5000, 8000 and
  100000 images (the unlabeled file takes 2.76 GB);
* ``train_y.bin``, ``test_y.bin``: one byte per image, its class 1..10;
* ``class_names.txt``: the name of class ``k`` on line ``k`` (airplane, bird, car, cat, deer,
  dog, horse, monkey, ship, truck);
* ``fold_indices.txt``: the ten 1000-image folds of the paper's own protocol; not used here
  (USB draws its labeled images from all 5000).

``--data`` is the tarball itself, the extracted ``stl10_binary/``, or the directory holding it.
Nothing of a file is allocated before its size is checked: an image file must hold a whole
number of images, no more than its published count, and a label file one byte per image.
A part reads only the files it needs: ``train`` and ``test`` never touch ``unlabeled_X.bin``
(from the tarball, whose gzip stream cannot be skipped, the members passed over are
decompressed and dropped, never kept; the pass stops at the last member the part needs).
What has been read is kept for the next ``open_part`` of the same files: a run opens its
training part several times.

Parts and image names. ``train``: the 5000 labeled images, image ``i`` of ``train_X.bin`` named
``<i>_<class>.png`` as the by-image CIFAR-10 tree names its PNGs (so USB's split, drawn over
the published order, becomes a label file of the original format); ``test``: the 8000 test
images, named the same way by their position in ``test_X.bin``; ``train+unlabeled``: the
training images followed by the 100000 unlabeled ones, named ``unlabeled_<i>.png``, whose
target is ``NO_LABEL``. Within the labeled images the order is ``ImageFolder``'s over such a
tree (classes sorted, then names sorted as strings), as for CIFAR; the unlabeled ones follow
in their file's order. Each dataset's ``published_order`` lists its items in the files' order.
USB builds its unlabeled set from the same 105000 images (the unlabeled file, then the
training images); the targets here are the class's index among the sorted names, which for
the published names is the file's label minus one, as torchvision's ``STL10`` gives it.

Augmentation is USB's weak one for STL-10 (``semilearn/datasets/cv_datasets/stl10.py``,
crop ratio 0.875): ``RandomCrop(96, padding=12, padding_mode="reflect")`` and a horizontal
flip. Its crop draws the same images as ``RandomTranslateWithReflect(12)``: a crop at offset
``(i, j)`` of the image padded by 12 mirrored pixels is the image translated by ``(12 - j,
12 - i)`` with mirrored borders, each offset uniform over 25 values; only the generator
differs (torch's there, numpy's here, as for CIFAR). USB's ``Resize(96)`` before it leaves a
96 x 96 image unchanged. Normalisation uses USB's STL-10 statistics: mean (112.4, 109.1, 98.6)
/ 255, std (68.4, 66.6, 68.5) / 255.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import ARCHIVE_BYTES, MEMBER_BYTES, regular_file
from mt_repro.core.types import NO_LABEL
from mt_repro.data.registry import DatasetSpec, register
from mt_repro.data.tar_stream import CHUNK, refuse_unsafe_member, tar_members
from mt_repro.data.translate_flip import TranslateFlip

NAME = "STL-10"
TARBALL = "stl10_binary.tar.gz"
BASE_DIR = "stl10_binary"
SIZE = 96
IMAGE_BYTES = 3 * SIZE * SIZE                 # 27648
N_CLASSES = 10
CLASS_NAMES_FILE = "class_names.txt"
# image file -> (its label file or None, the images of the published file)
IMAGE_FILES = {"train_X.bin": ("train_y.bin", 5000), "test_X.bin": ("test_y.bin", 8000),
               "unlabeled_X.bin": (None, 100000)}
LABEL_FILES = {labels: images for images, (labels, _) in IMAGE_FILES.items() if labels}
CLASS_NAMES_BYTES = 64 * 1024                 # ten short names take under a hundred bytes
PARTS = {"train": ("train_X.bin",), "test": ("test_X.bin",), "train+unlabeled": ("train_X.bin", "unlabeled_X.bin")}
TRAIN_PART, TEST_PART, UNLABELED_PART = "train", "test", "train+unlabeled"
UNLABELED_PREFIX = "unlabeled_"
STL10_STATS = {"mean": [x / 255 for x in (112.4, 109.1, 98.6)],
               "std": [x / 255 for x in (68.4, 66.6, 68.5)]}
MAX_TRANSLATION = int(SIZE * (1 - 0.875))     # 12: USB's padding for its crop ratio 0.875
MAX_MEMBERS = 1000                            # the release is one directory of 7 files


def files_of(part: str) -> tuple[str, ...]:
    """The files of the release that ``part`` reads."""
    if part not in PARTS:
        raise BadInput(f"{NAME} has the parts {', '.join(PARTS)}, not {part!r}")
    needed = []
    for images in PARTS[part]:
        needed.append(images)
        if IMAGE_FILES[images][0]:
            needed.append(IMAGE_FILES[images][0])
    return (*needed, CLASS_NAMES_FILE)


# --- what a file may be, decided from its size ----------------------------------------------------
def check_size(name: str, size: int, subject: str) -> None:
    """Refuse a file of the release whose size (declared or on disk) is not one it can have,
    before anything of that size is read."""
    if name in IMAGE_FILES:
        published = IMAGE_FILES[name][1]
        if size > published * IMAGE_BYTES:
            raise BadInput(f"{subject} declares {size:,} bytes, more than the {published:,} images of "
                           f"{IMAGE_BYTES:,} bytes the published {name} holds: not the published file, refused")
        if size % IMAGE_BYTES:
            raise BadInput(f"{subject} holds {size:,} bytes, not a whole number of {IMAGE_BYTES:,}-byte "
                           f"(3 x {SIZE} x {SIZE}) images: truncated or not an {NAME} image file")
        if size == 0:
            raise BadInput(f"{subject} holds no images")
    elif name in LABEL_FILES:
        published = IMAGE_FILES[LABEL_FILES[name]][1]
        if size > published:
            raise BadInput(f"{subject} declares {size:,} bytes, more than the {published:,} labels (one byte "
                           f"each) of the published {name}: not the published file, refused")
    elif size > CLASS_NAMES_BYTES:
        raise BadInput(f"{subject} declares {size:,} bytes, more than a list of {N_CLASSES} class names "
                       f"needs ({CLASS_NAMES_BYTES:,} at most): not the published file, refused")
    MEMBER_BYTES.check(size, subject)


def check_counts(sizes: dict[str, int], where: Callable[[str], str]) -> None:
    """Each label file of ``sizes`` must hold one byte per image of its image file."""
    for labels, images in LABEL_FILES.items():
        if labels in sizes and images in sizes and sizes[labels] != sizes[images] // IMAGE_BYTES:
            raise BadInput(f"{where(labels)} holds {sizes[labels]:,} labels but {images} "
                           f"{sizes[images] // IMAGE_BYTES:,} images: one byte per image expected")


# --- reading the files ---------------------------------------------------------------------------
def _buffer(size: int, subject: str) -> np.ndarray:
    try:
        return np.empty(size, np.uint8)
    except MemoryError:
        raise BadInput(f"{subject}: its {size:,} bytes do not fit in this machine's memory") from None


def _read_file(path: Path, name: str, size: int) -> np.ndarray:
    """The ``size`` bytes (already checked) of a regular file, exactly: no fewer, no more."""
    subject = f"{NAME} file {path}"
    data = _buffer(size, subject)
    view, got = memoryview(data), 0
    try:
        with open(path, "rb") as f:
            while got < size:
                n = f.readinto(view[got:got + 64 * CHUNK])
                if not n:
                    break
                got += n
            grew = got == size and f.read(1)
    except OSError as exc:
        raise BadInput(f"cannot read {subject}: {exc.strerror or exc}") from None
    if got < size:
        raise BadInput(f"{subject} holds {got:,} of its {size:,} bytes: it shrank while read")
    if grew:
        raise BadInput(f"{subject} grew while read beyond its {size:,} bytes: refused")
    return data


def _directory_files(base: Path, names: tuple[str, ...]) -> dict[str, tuple[Path, int]]:
    """Path and size of each of ``names`` in an extracted ``stl10_binary/``, all checked."""
    found = {}
    for name in names:
        path = base / name
        if not os.path.lexists(path):
            raise BadInput(f"{NAME} file {path} is missing (expected {name} of {TARBALL} in {base})")
        info = regular_file(path, f"{NAME} file")
        check_size(name, info.st_size, f"{NAME} file {path}")
        found[name] = (path, info.st_size)
    check_counts({name: size for name, (_, size) in found.items()}, _describer(base))
    return found


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, subject: str) -> np.ndarray:
    """A member's bytes into one buffer of the size it declares (already checked), ``CHUNK``
    at a time; a member holding fewer is truncated."""
    data = _buffer(member.size, subject)
    view, got = memoryview(data), 0
    source = tar.extractfile(member)
    while got < member.size:
        n = source.readinto(view[got:got + CHUNK])
        if not n:
            break
        got += n
    if got < member.size:
        raise BadInput(f"{subject} holds {got:,} of the {member.size:,} bytes it declares: truncated")
    return data


def _tarball_files(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The bytes of each of ``names`` from the tarball, in one pass that stops after the last."""
    regular_file(path, f"{NAME} tarball")
    wanted = {f"{BASE_DIR}/{name}": name for name in names}
    found: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    with tar_members(path, what=f"the {NAME} tarball", kind=NAME, redownload=TARBALL) as tar:
        declared = 0
        for count, member in enumerate(tar, 1):
            if count > MAX_MEMBERS:
                raise BadInput(f"{path.name} holds more than {MAX_MEMBERS} members (the {NAME} binary "
                               "tarball: a directory of 7 files): refused")
            refuse_unsafe_member(path, member)
            subject = f"{path.name}: member {member.name!r}"
            name = member.name[2:] if member.name.startswith("./") else member.name
            read = name in wanted and member.isfile() and wanted[name] not in found
            if read:
                check_size(wanted[name], member.size, subject)   # what the file may hold, first
            MEMBER_BYTES.check(member.size, subject)
            declared += tarfile.BLOCKSIZE + member.size
            ARCHIVE_BYTES.check(declared, f"{path.name} (its members up to {member.name!r})")
            if not read:
                continue
            name = wanted[name]
            sizes[name] = member.size
            check_counts(sizes, _describer(path))
            found[name] = _read_member(tar, member, subject)
            if len(found) == len(names):
                break
    missing = [name for name in names if name not in found]
    if missing:
        raise BadInput(f"{path.name} lacks {', '.join(f'{BASE_DIR}/{name}' for name in missing)}: "
                       f"not the {NAME} binary tarball ({TARBALL})?")
    return found


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- what the bytes mean -------------------------------------------------------------------------
def stored_images(data: np.ndarray) -> np.ndarray:
    """An image file's bytes as ``N x 3 x 96 x 96`` uint8 in the order they are stored:
    ``[image, channel, column, row]`` (no copy)."""
    return data.reshape(-1, 3, SIZE, SIZE)


def to_hwc(stored: np.ndarray) -> np.ndarray:
    """Stored images (``... x 3 x column x row``) as ``... x row x column x 3`` pixels, a view."""
    return np.swapaxes(np.moveaxis(stored, -3, -1), -3, -2)


def parse_labels(data: np.ndarray, n_classes: int, subject: str) -> np.ndarray:
    """A label file's bytes (classes 1..n) as int64 classes 0..n-1."""
    labels = np.asarray(data, np.uint8)
    bad = (labels < 1) | (labels > n_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise BadInput(f"{subject}: label {int(labels[first])} for image {first}: the classes are "
                       f"1..{n_classes} ({int(bad.sum()):,} label(s) outside)")
    return labels.astype(np.int64) - 1


def parse_class_names(data: bytes, subject: str) -> list[str]:
    """``class_names.txt``: one name per line, ``N_CLASSES`` distinct names. A name becomes part
    of image names and of label-file lines, so it must be one printable word without a path
    separator."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{subject} is not UTF-8 text (byte {exc.start})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) != N_CLASSES:
        raise BadInput(f"{subject} names {len(lines)} classes, one per line; {NAME} has {N_CLASSES}")
    for number, name in enumerate(lines, 1):
        if not name or not name.isprintable() or any(c.isspace() or c in "/\\" for c in name):
            raise BadInput(f"{subject} line {number}: {name!r} is not a class name (one word, "
                           "no path separator)")
    if len(set(lines)) != len(lines):
        raise BadInput(f"{subject} names a class twice")
    return lines


@dataclass
class Stl10Part:
    """A part of the release as read: the labeled images (train or test) and, for
    ``train+unlabeled``, the unlabeled ones after them, each in the stored layout
    (``N x 3 x column x row``, see ``stored_images``)."""

    part: str
    images: np.ndarray             # N x 3 x 96 x 96 uint8, stored layout
    labels: np.ndarray             # N classes 0..9, int64 (class_names' order)
    class_names: list[str]
    unlabeled: np.ndarray | None = None   # M x 3 x 96 x 96 uint8, stored layout

    def file_names(self) -> list[str]:
        """Every image's name in the files' order: labeled ``<i>_<class>.png``, then
        ``unlabeled_<i>.png``."""
        names = [f"{i}_{self.class_names[c]}.png" for i, c in enumerate(self.labels.tolist())]
        if self.unlabeled is not None:
            names += [f"{UNLABELED_PREFIX}{i}.png" for i in range(len(self.unlabeled))]
        return names


# What has been read, for the next part of the same release: (source, file) -> (its state, value).
_READ: dict[tuple[str, str], tuple[tuple, object]] = {}


def _state(path: Path) -> tuple:
    info = path.stat()
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev


def _base_directory(source: Path) -> Path:
    """The extracted ``stl10_binary/``: ``source`` itself or its subdirectory of that name."""
    return source / BASE_DIR if (source / BASE_DIR).is_dir() else source


def _raw_files(source: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The bytes of ``names`` from a tarball or an extracted directory, reusing what was read
    of the same unchanged files."""
    if source.is_dir():
        base = _base_directory(source)
        files = _directory_files(base, names)
        key, states = str(base.resolve()), {name: _state(path) for name, (path, _) in files.items()}
    else:
        regular_file(source, f"{NAME} tarball")
        key, tarball_state = str(source.resolve()), _state(source)
        states = dict.fromkeys(names, tarball_state)
    if any(cached[0] != key for cached in _READ):
        _READ.clear()  # another release: keep one in memory at a time
    have = {name: _READ[key, name][1] for name in names
            if (key, name) in _READ and _READ[key, name][0] == states[name]}
    todo = tuple(name for name in names if name not in have)
    if todo:
        if source.is_dir():
            new = {name: _read_file(files[name][0], name, files[name][1]) for name in todo}
        else:
            new = _tarball_files(source, todo)
        for name, data in new.items():
            _READ[key, name] = (states[name], data)
        have.update(new)
    return have


def _describer(source: Path) -> Callable[[str], str]:
    """How messages name a file of the release at ``source``."""
    if source.is_dir():
        base = _base_directory(source)
        return lambda name: f"{NAME} file {base / name}"
    return lambda name: f"{source.name}: member {f'{BASE_DIR}/{name}'!r}"


def read_stl10(source: str | os.PathLike, part: str) -> Stl10Part:
    """One part (``train``, ``test``, ``train+unlabeled``) of the release at ``source``: the
    tarball, the extracted ``stl10_binary/`` or the directory holding it. Only that part's files
    are read."""
    source = Path(source)
    names = files_of(part)
    if not os.path.lexists(source):
        raise BadInput(f"{NAME} source {source} does not exist (pass {TARBALL} itself or the "
                       f"directory it extracts to)")
    raw = _raw_files(source, names)
    where = _describer(source)
    # A tarball's members are checked against each other once all are read (one may come first).
    check_counts({name: len(data) for name, data in raw.items()}, where)
    class_names = parse_class_names(raw[CLASS_NAMES_FILE], where(CLASS_NAMES_FILE))
    labeled = PARTS[part][0]
    labels = parse_labels(raw[IMAGE_FILES[labeled][0]], len(class_names), where(IMAGE_FILES[labeled][0]))
    unlabeled = stored_images(raw["unlabeled_X.bin"]) if "unlabeled_X.bin" in raw else None
    return Stl10Part(part, stored_images(raw[labeled]), labels, class_names, unlabeled)


class Stl10Arrays(Dataset):
    """A part of STL-10 in memory, looking like ``ImageFolder`` over a by-image tree of it (as
    ``mt_repro.data.cifar10.CifarArrays``): ``samples`` (name, target), ``targets``,
    ``classes`` (sorted), ``class_to_idx``; the unlabeled images after the labeled ones, with
    target ``NO_LABEL``. ``published_order``: the items' indices in the files' order."""

    def __init__(self, part: Stl10Part, transform: Callable | None = None):
        self.transform = transform
        self.classes = sorted(part.class_names)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        names = part.file_names()
        n_labeled = len(part.labels)
        label_names = [part.class_names[c] for c in part.labels.tolist()]
        order = sorted(range(n_labeled), key=lambda i: (label_names[i], names[i]))
        order += range(n_labeled, len(names))
        self._labeled, self._unlabeled, self._n_labeled = part.images, part.unlabeled, n_labeled
        self._position = np.asarray(order, np.int64)   # item -> position in the files' order
        self.samples = [(names[i], self.class_to_idx[label_names[i]] if i < n_labeled else NO_LABEL)
                        for i in order]
        self.targets = [t for _, t in self.samples]
        self.imgs = self.samples
        self.published_order = np.argsort(self._position, kind="stable").tolist()

    def __len__(self) -> int:
        return len(self.samples)

    def _stored(self, position: int) -> np.ndarray:
        if position < self._n_labeled:
            return self._labeled[position]
        return self._unlabeled[position - self._n_labeled]

    def pixels(self, index: int) -> np.ndarray:
        """Item ``index`` as ``96 x 96 x 3`` uint8 pixels (row, column, channel)."""
        return np.ascontiguousarray(to_hwc(self._stored(int(self._position[index]))))

    def in_memory_images(self) -> np.ndarray:
        """Every image, ``N x 96 x 96 x 3`` uint8, in the dataset's order (a new array)."""
        out = np.empty((len(self), SIZE, SIZE, 3), np.uint8)
        labeled = self._position < self._n_labeled
        out[labeled] = to_hwc(self._labeled[self._position[labeled]])
        if not labeled.all():
            out[~labeled] = to_hwc(self._unlabeled[self._position[~labeled] - self._n_labeled])
        return out

    def __getitem__(self, index: int):
        image = Image.fromarray(self.pixels(index))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index][1]


def open_part(root: Path, part: str, transform, damaged_images: str = "refuse") -> Dataset:
    """A part of STL-10 (``train``, ``test``, ``train+unlabeled``) as an ``ImageFolder``-like
    dataset. The images are arrays, never image files, so ``damaged_images`` has nothing to do."""
    root = Path(root)
    if not os.path.lexists(root):
        raise BadInput(f"data directory {root} does not exist (pass {TARBALL} itself or the directory "
                       "it extracts to)")
    return Stl10Arrays(read_stl10(root, part), transform)


AUGMENTATION = TranslateFlip(MAX_TRANSLATION, **STL10_STATS)
train_transform, eval_transform, batch_augment = (AUGMENTATION.train_transform, AUGMENTATION.eval_transform,
                                                  AUGMENTATION.batch_augment)


SPEC = register(DatasetSpec(
    name="stl10", description="STL-10 (Coates et al. 2011): 5000 labeled training, 8000 test and 100000 "
                              "unlabeled 96x96 images, 10 classes",
    num_classes=N_CLASSES, train_size=IMAGE_FILES["train_X.bin"][1], default_root=f"data-local/{TARBALL}",
    reads=f"{TARBALL}, its extracted {BASE_DIR}/, or the directory holding that (parts train, test, "
          "train+unlabeled)",
    train_part=TRAIN_PART, eval_part=TEST_PART,
    open_part=open_part, train_transform=train_transform, eval_transform=eval_transform,
    batch_augment=batch_augment, augmentation=AUGMENTATION))
