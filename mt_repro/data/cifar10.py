"""CIFAR-10 from the published python tarball, its extracted batches, or the by-image PNG tree.

The original code read CIFAR-10 only as a tree of PNGs, ``train+val/<class>/<i>_<class>.png``
and ``test/<class>/<i>_<class>.png``, where ``i`` counts images across the five training
batches in order (0..49999) and across the test batch (0..9999). Its label files name those
PNGs. ``CifarArrays`` presents the arrays under exactly those names and in the order
torchvision's ``ImageFolder`` walks the tree (classes sorted, then file names sorted as
strings), so a label file selects the same images and the sampler sees the same indices
whichever form the data is in.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import TEMPORARY_SUFFIX, atomic_write
from mt_repro.core.limits import ARCHIVE_BYTES, MEMBER_BYTES, MiB, regular_file
from mt_repro.data import images, splits, zca
from mt_repro.data.registry import DatasetSpec, TFArrays, register
from mt_repro.data.tar_stream import CHUNK, refuse_unsafe_member, tar_members
from mt_repro.data.translate_flip import TranslateFlip

@dataclass(frozen=True)
class CifarFormat:
    """One of the two published CIFAR python tarballs (Krizhevsky 2009): where its members are,
    what its batches call the labels, and how large a member of it can be."""

    name: str
    batch_dir: str                    # the tarball's one directory
    train_batches: tuple[str, ...]
    test_batch: str
    meta: str
    label_key: str
    class_names_key: str
    batch_bytes: int                  # no member of the published tarball is larger
    batch_size_text: str              # what its largest member takes, for messages
    meta_size_text: str
    members_text: str                 # how many entries the published tarball has
    tarball: str                      # the published file's name

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train_batches, self.test_batch, self.meta)


# A CIFAR-10 batch is 10000 rows of 3072 bytes with their labels and names (29.6 MiB), the meta
# 158 bytes; CIFAR-100's training file is 50000 rows (148.9 MiB), its test file 10000.
CIFAR10 = CifarFormat("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      "test_batch", "batches.meta", "labels", "label_names", 64 * MiB, "29.6 MiB",
                      "158 bytes", "8", "cifar-10-python.tar.gz")
CIFAR100 = CifarFormat("CIFAR-100", "cifar-100-python", ("train",), "test", "meta", "fine_labels",
                       "fine_label_names", 256 * MiB, "148.9 MiB", "1.5 KiB", "4", "cifar-100-python.tar.gz")
TRAIN_BATCHES, TEST_BATCH, META, BATCH_DIR = (CIFAR10.train_batches, CIFAR10.test_batch, CIFAR10.meta,
                                             CIFAR10.batch_dir)


@dataclass
class CifarSplit:
    images: np.ndarray          # N x 32 x 32 x 3, uint8
    labels: list[int]
    class_names: list[str]

    def file_names(self) -> list[str]:
        return [f"{i}_{self.class_names[c]}.png" for i, c in enumerate(self.labels)]


def read_cifar10(source: str | os.PathLike) -> dict[str, CifarSplit]:
    """``{"train+val": ..., "test": ...}`` from a tarball or a directory of python batches."""
    return read_cifar(source, CIFAR10)


def read_cifar(source: str | os.PathLike, fmt: CifarFormat) -> dict[str, CifarSplit]:
    """``read_cifar10`` for either published format (``CIFAR10``, ``CIFAR100``: fine labels)."""
    source = Path(source)
    if not source.exists():
        raise BadInput(f"{fmt.name} source {source} does not exist")
    if source.is_dir():
        batch_dir = source / fmt.batch_dir if (source / fmt.batch_dir).is_dir() else source
        pickles = {name: _read_batch_file(batch_dir / name, name, fmt) for name in fmt.members}
    else:
        pickles = _pickles_from_tarball(source, fmt)
    try:
        return _splits(pickles, fmt)
    except MemoryError:
        raise BadInput(f"{fmt.name} batches of {source.name} do not fit in memory: not the published "
                       "files (they take 180 MiB)?") from None


def _splits(pickles: dict[str, bytes], fmt: CifarFormat = CIFAR10) -> dict[str, CifarSplit]:
    meta = _unpickle(pickles.pop(fmt.meta), fmt.meta, fmt)
    class_names = [_text(name) for name in _field(meta, fmt.class_names_key, fmt.meta, fmt)]
    parts = {}
    for split, names in (("train+val", fmt.train_batches), ("test", (fmt.test_batch,))):
        images, labels = [], []
        for name in names:
            batch = _unpickle(pickles.pop(name), name, fmt)  # each pickle is dropped once read
            images.append(_images(batch, name, fmt))
            labels += [int(label) for label in _field(batch, fmt.label_key, name, fmt)]
        images = np.concatenate(images)
        if len(labels) != len(images):
            raise BadInput(f"{fmt.name} {split}: {len(images)} images but {len(labels)} labels")
        if labels and not 0 <= min(labels) <= max(labels) < len(class_names):
            raise BadInput(f"{fmt.name} {split}: labels outside 0..{len(class_names) - 1}")
        parts[split] = CifarSplit(images, labels, class_names)
    return parts


# What each member of the published tarball needs (``CifarFormat.batch_bytes``); members far
# larger are not the published ones.
BATCH_BYTES = CIFAR10.batch_bytes
META_BYTES = 1 * MiB
MAX_MEMBERS = 1000     # the published tarballs have 8 (CIFAR-10) and 4 (CIFAR-100) entries


def _kind_bytes(name: str, fmt: CifarFormat) -> int:
    return META_BYTES if name == fmt.meta else fmt.batch_bytes


def _check_declared(size: int, name: str, subject: str, fmt: CifarFormat) -> None:
    """Refuse a batch that declares more bytes than any limit allows, before reading it."""
    MEMBER_BYTES.check(size, subject)
    if size > _kind_bytes(name, fmt):
        meta = name == fmt.meta
        raise BadInput(f"{subject} declares {size:,} bytes, far more than a {fmt.name} "
                       f"{'meta file' if meta else 'batch'} needs "
                       f"({fmt.meta_size_text if meta else fmt.batch_size_text}): not the published file, refused")


def _pickles_from_tarball(path: Path, fmt: CifarFormat) -> dict[str, bytes]:
    regular_file(path, f"{fmt.name} tarball")
    wanted = {f"{fmt.batch_dir}/{name}": name for name in fmt.members}
    found: dict[str, bytes] = {}
    with tar_members(path, what=f"the {fmt.name} python tarball", kind=fmt.name, redownload=fmt.tarball) as tar:
        declared = 0
        for count, member in enumerate(tar, 1):
            if count > MAX_MEMBERS:
                raise BadInput(f"{path.name} holds more than {MAX_MEMBERS} members (the {fmt.name} "
                               f"python tarball has {fmt.members_text}): refused")
            refuse_unsafe_member(path, member)
            subject = f"{path.name}: member {member.name!r}"
            MEMBER_BYTES.check(member.size, subject)
            declared += tarfile.BLOCKSIZE + member.size
            ARCHIVE_BYTES.check(declared, f"{path.name} (its members up to {member.name!r})")
            # Archives re-packed from an extracted copy name members "./cifar-10-batches-py/...".
            name = member.name[2:] if member.name.startswith("./") else member.name
            if name in wanted and member.isfile():
                _check_declared(member.size, wanted[name], subject, fmt)
                found[wanted[name]] = _read_member(tar, member, subject)
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise BadInput(f"{path.name} lacks {fmt.batch_dir}/{', '.join(missing)}: not the {fmt.name} python tarball?")
    return found


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, subject: str) -> bytes:
    """A member's bytes, read ``CHUNK`` at a time: exactly as many as it declares."""
    source = tar.extractfile(member)
    chunks, got = [], 0
    while True:
        chunk = source.read(min(CHUNK, member.size - got + 1))  # a byte more: is there more than declared?
        if not chunk:
            break
        got += len(chunk)
        if got > member.size:
            raise BadInput(f"{subject} holds more than the {member.size:,} bytes it declares: refused")
        chunks.append(chunk)
    if got < member.size:
        raise BadInput(f"{subject} holds {got:,} of the {member.size:,} bytes it declares: truncated")
    return b"".join(chunks)


def _read_batch_file(path: Path, name: str, fmt: CifarFormat) -> bytes:
    """One file of an extracted ``cifar-10-batches-py/``: a regular file of a batch's size."""
    if not os.path.lexists(path):
        raise BadInput(f"{fmt.name} batch file {path} is missing")
    info = regular_file(path, f"{fmt.name} batch file")
    _check_declared(info.st_size, name, f"{fmt.name} batch file {path}", fmt)
    try:
        with open(path, "rb") as f:
            data = f.read(_kind_bytes(name, fmt) + 1)  # no more than a batch, even if the file grows
    except OSError as exc:
        raise BadInput(f"{fmt.name} batch file {path} cannot be read: {exc.strerror or exc}") from None
    _check_declared(len(data), name, f"{fmt.name} batch file {path}", fmt)
    return data


class _CheckedArray(np.ndarray):
    """What the batch pickles' arrays are rebuilt as: numpy's pickle protocol creates an empty
    array and then fills it from a state of (shape, dtype, raw bytes); this checks that state
    (its size against ``MEMBER_BYTES``, the bytes against the shape) before numpy allocates."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array's state is not (shape, dtype, order, data)")
        shape, dtype, _, raw = state[-4:]
        nbytes = _declared_bytes(shape, dtype)
        if isinstance(raw, str):  # a Python 2 str, read as latin-1: one character per byte
            present = len(raw)
        elif isinstance(raw, (bytes, bytearray)):
            present = len(raw)
        else:
            raise pickle.UnpicklingError(f"an array's data is a {type(raw).__name__}, not bytes")
        if present != nbytes:
            raise pickle.UnpicklingError(f"an array declares {nbytes:,} bytes of data but holds {present:,}")
        super().__setstate__(state)


def _declared_bytes(shape, dtype) -> int:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"an array's type {dtype!r} is not a plain numeric type")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"an array's shape {shape!r} is not a tuple of sizes")
    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= n
    MEMBER_BYTES.check(nbytes, f"an array of shape {shape} {dtype}")
    return nbytes


def _reconstruct(cls, shape, dtype):
    """numpy's ``_reconstruct`` for ``_CheckedArray`` alone, its (usually empty) shape checked."""
    if cls is not _CheckedArray:
        raise pickle.UnpicklingError("only numpy arrays may be rebuilt")
    dtype = np.dtype(dtype) if isinstance(dtype, (str, bytes)) else dtype
    _declared_bytes(tuple(shape) if isinstance(shape, (tuple, list)) else shape, dtype)
    return np.ndarray.__new__(cls, shape, dtype)


class _BatchUnpickler(pickle.Unpickler):
    """The batches hold only dicts, lists, strings, numbers and numpy arrays: allow just those,
    arrays rebuilt through ``_CheckedArray``."""

    ALLOWED = {("numpy", "ndarray"): _CheckedArray, ("numpy", "dtype"): np.dtype,
               ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct, ("_codecs", "encode"): codecs.encode}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return self.ALLOWED[module, name]


def _unpickle(payload: bytes, name: str, fmt: CifarFormat = CIFAR10) -> dict:
    try:
        obj = _BatchUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except BadInput as exc:
        raise BadInput(f"{fmt.name} batch {name}: {exc}") from None
    except Exception as exc:  # any failure to decode is the same problem for the user
        raise BadInput(f"{fmt.name} batch {name} is corrupt or truncated ({_one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{fmt.name} batch {name} is not a dict")
    return {_text(k): v for k, v in obj.items()}


def _field(batch: dict, key: str, name: str, fmt: CifarFormat = CIFAR10):
    if key not in batch:
        raise BadInput(f"{fmt.name} batch {name} has no {key!r} entry")
    return batch[key]


def _images(batch: dict, name: str, fmt: CifarFormat = CIFAR10) -> np.ndarray:
    data = np.asarray(_field(batch, "data", name, fmt))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise BadInput(f"{fmt.name} batch {name}: expected uint8 rows of 3072 values, "
                       f"got {data.dtype} {data.shape}")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _one_line(exc: Exception) -> str:
    """An exception's message on one line (tarfile lists each decompressor it tried on its own)."""
    return " ".join(str(exc).split())


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


class CifarArrays(Dataset):
    """A CIFAR-10 split in memory that looks like ``ImageFolder`` over the by-image tree."""

    def __init__(self, split: CifarSplit, transform: Callable | None = None):
        self.transform = transform
        self.classes = sorted(split.class_names)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self._images = split.images
        names = split.file_names()
        # ImageFolder order: class directories sorted, then file names sorted as strings.
        order = sorted(range(len(names)), key=lambda i: (split.class_names[split.labels[i]], names[i]))
        self._array_index = order
        self.samples = [(names[i], self.class_to_idx[split.class_names[split.labels[i]]]) for i in order]
        self.targets = [t for _, t in self.samples]
        self.imgs = self.samples

    def __len__(self) -> int:
        return len(self.samples)

    def in_memory_images(self) -> np.ndarray:
        """Every image, ``N x 32 x 32 x 3`` uint8, in the dataset's (``ImageFolder``) order."""
        return self._images[np.asarray(self._array_index)]

    def __getitem__(self, index: int):
        image = Image.fromarray(self._images[self._array_index[index]], "RGB")
        target = self.samples[index][1]
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def write_image_tree(splits: dict[str, CifarSplit], destination: str | os.PathLike,
                     progress: Callable[[Iterable], Iterable] = lambda x: x) -> dict[str, int]:
    """Write the original by-image PNG tree; return the image count per split.

    Each PNG is written atomically and existing ones are kept, so an interrupted ``prepare``
    can simply be rerun; the temporary files a killed one left behind are removed first.
    """
    destination = Path(destination)
    counts = {}
    for split_name, split in splits.items():
        names = split.file_names()
        for class_name in set(split.class_names):
            folder = destination / split_name / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(f"*{TEMPORARY_SUFFIX}"):
                stale.unlink(missing_ok=True)
        for i in progress(range(len(names))):
            path = destination / split_name / split.class_names[split.labels[i]] / names[i]
            if path.exists():
                continue
            # No sync per PNG (60000 would cost a minute): a killed prepare leaves no half PNG;
            # only a power loss could, and a re-run would keep it.
            with atomic_write(path, sync=False) as f:
                Image.fromarray(split.images[i], "RGB").save(f, format="PNG")
        counts[split_name] = len(names)
    return counts


# --- CIFAR-10 for the runs ------------------------------------------------------------------
CIFAR10_STATS = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
TRAIN_PART, TEST_PART = "train+val", "test"
_READ: dict[tuple[str, Path], dict[str, CifarSplit]] = {}   # the last source read, for its two parts


def open_part(root: Path, part: str, transform, damaged_images: str = "refuse") -> Dataset:
    """One part of CIFAR-10 as an ``ImageFolder``-like dataset: the by-image tree's folder
    ``root/part`` (every PNG checked first: ``mt_repro.data.images.checked_folder``), or (the
    tarball, its extracted batches) the arrays under the same names."""
    return open_cifar_part(root, part, transform, damaged_images, CIFAR10)


def open_cifar_part(root: Path, part: str, transform, damaged_images: str, fmt: CifarFormat) -> Dataset:
    """``open_part`` for either published format."""
    if not root.exists():
        how = ("prepare it with: mt-repro prepare cifar10 --from <tarball> --to DIR, or pass the tarball itself"
               if fmt is CIFAR10 else f"pass {fmt.tarball} itself or the directory it extracts to")
        raise BadInput(f"data directory {root} does not exist ({how})")
    folder = root / part
    if folder.is_dir():
        return images.checked_folder(folder, transform, damaged_images)
    if root.is_file() or (root / fmt.batch_dir).is_dir() or (root / fmt.meta).is_file():
        key = (fmt.name, root.resolve())
        if key not in _READ:
            _READ.clear()
            _READ[key] = read_cifar(root, fmt)
        if part not in _READ[key]:
            raise BadInput(f"{fmt.name} batches have the parts {TRAIN_PART} and {TEST_PART}, not {part!r}")
        return CifarArrays(_READ[key][part], transform)
    raise BadInput(f"{folder} does not exist: expected {root} to hold {part}/<class>/<image> folders, "
                   f"or the {fmt.name} tarball or batches")


AUGMENTATION = TranslateFlip(4, **CIFAR10_STATS)   # the original's: ±4 px with mirrored borders, flip
train_transform, eval_transform, batch_augment = (AUGMENTATION.train_transform, AUGMENTATION.eval_transform,
                                                  AUGMENTATION.batch_augment)


def gcn_zca_arrays(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None
                   ) -> dict[str, np.ndarray]:
    """What the original's ``cifar10_gcn_zca_v2.npz`` held, from the published CIFAR-10 python
    tarball or its batches: ``train_x`` (50000 x 32 x 32 x 3 float32), ``train_y``, ``test_x``,
    ``test_y``, in the published order (the original read the MATLAB batches: same images, same
    order)."""
    parts = read_cifar10(source)
    train, test = parts[TRAIN_PART], parts[TEST_PART]
    train_white, test_white = zca.gcn_zca(zca.images_to_rows(train.images), zca.images_to_rows(test.images),
                                          cache_dir=cache_dir)
    return {"train_x": zca.rows_to_images(train_white), "train_y": np.asarray(train.labels, np.int32),
            "test_x": zca.rows_to_images(test_white), "test_y": np.asarray(test.labels, np.int32)}


def read_original_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The original TensorFlow half's ``cifar10_gcn_zca_v2.npz``, checked, as float32/int32."""
    path = Path(path)
    if not os.path.lexists(path):
        raise BadInput(f"{path} does not exist")
    regular_file(path, "npz file")
    try:
        _check_npz(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("train_x", "train_y", "test_x", "test_y") if k in data}
    except BadInput:
        raise
    except MemoryError:
        raise BadInput(f"{path.name} does not fit in memory: not cifar10_gcn_zca_v2.npz?") from None
    except Exception as exc:
        raise BadInput(f"{path.name} is not a readable .npz file ({' '.join(str(exc).split())}): "
                       "truncated or corrupt?") from None
    missing = sorted({"train_x", "train_y", "test_x", "test_y"} - set(arrays))
    if missing:
        raise BadInput(f"{path.name} lacks {', '.join(missing)}: not cifar10_gcn_zca_v2.npz?")
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or y.reshape(-1).shape != (len(x),):
            raise BadInput(f"{path.name}: {split}_x must be N x 32 x 32 x 3 with N {split}_y labels, "
                           f"got {x.shape} and {y.shape}")
    return {"train_x": arrays["train_x"].astype(np.float32, copy=False),
            "train_y": arrays["train_y"].reshape(-1).astype(np.int32),
            "test_x": arrays["test_x"].astype(np.float32, copy=False),
            "test_y": arrays["test_y"].reshape(-1).astype(np.int32)}


def _check_npz(path: Path) -> None:
    """Each array of an ``.npz`` (a zip of ``.npy`` files) as large as its header declares and its
    zip entry holds, within ``MEMBER_BYTES``, all within ``ARCHIVE_BYTES``: numpy allocates an
    array from its header's shape before reading it."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for entry in archive.infolist():
            subject = f"{path.name}: {entry.filename}"
            MEMBER_BYTES.check(entry.file_size, subject)
            total += entry.file_size
            ARCHIVE_BYTES.check(total, f"{path.name} (decompressed)")
            if not entry.filename.endswith(".npy"):
                continue
            with archive.open(entry) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                header = f.tell()
            if dtype.hasobject:
                raise BadInput(f"{subject} holds Python objects, not numbers: refused")
            declared = dtype.itemsize * int(np.prod(shape, dtype=object))
            MEMBER_BYTES.check(declared, f"{subject} ({' x '.join(map(str, shape))} {dtype})")
            if declared != entry.file_size - header:
                raise BadInput(f"{subject} declares {declared:,} bytes of data but holds "
                               f"{entry.file_size - header:,}: truncated or corrupt")


def tf_arrays(root: Path, n_labeled: int | None, data_seed: int, test_phase: bool, n_extra: int) -> TFArrays:
    """The ConvNet runs' input: GCN + ZCA of the published files (or the original's own npz),
    the original's split of it, labeled images first."""
    arrays = read_original_npz(root) if root.suffix == ".npz" else gcn_zca_arrays(root)
    split = splits.cifar10_split(arrays["train_y"].astype(np.int64), n_labeled, data_seed, test_phase=test_phase)
    _, index, target = split.training_order()
    if split.validation is None:
        eval_x, eval_y = arrays["test_x"], arrays["test_y"]
    else:
        eval_x, eval_y = arrays["train_x"][split.validation], arrays["train_y"][split.validation]
    return TFArrays(arrays["train_x"][index], target, eval_x, np.asarray(eval_y, np.int64))


def tf_split(root: Path, n_labeled: int | None, data_seed: int, test_phase: bool, n_extra: int):
    train = read_cifar10(root)[TRAIN_PART]
    split = splits.cifar10_split(np.asarray(train.labels), n_labeled, data_seed, test_phase=test_phase)
    return splits.NamedSplit(split, train.file_names(), list(train.class_names))


SPEC = register(DatasetSpec(
    name="cifar10", description="CIFAR-10 (Krizhevsky 2009): 50000 training, 10000 test images, 10 classes",
    num_classes=10, train_size=50000, default_root="data-local/images/cifar/cifar10/by-image",
    reads="cifar-10-python.tar.gz, its extracted cifar-10-batches-py/, or the original by-image PNG tree "
          "(ConvNet runs also: the original's cifar10_gcn_zca_v2.npz)",
    train_part=TRAIN_PART, eval_part=TEST_PART,
    open_part=open_part, train_transform=train_transform, eval_transform=eval_transform,
    batch_augment=batch_augment, augmentation=AUGMENTATION, tf_arrays=tf_arrays, tf_split=tf_split))
