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

import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from mt_repro.errors import BadInput

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
BATCH_DIR = "cifar-10-batches-py"


@dataclass
class CifarSplit:
    images: np.ndarray          # N x 32 x 32 x 3, uint8
    labels: list[int]
    class_names: list[str]

    def file_names(self) -> list[str]:
        return [f"{i}_{self.class_names[c]}.png" for i, c in enumerate(self.labels)]


def read_cifar10(source: str | os.PathLike) -> dict[str, CifarSplit]:
    """``{"train+val": ..., "test": ...}`` from a tarball or a directory of python batches."""
    source = Path(source)
    if not source.exists():
        raise BadInput(f"CIFAR-10 source {source} does not exist")
    if source.is_file():
        pickles = _pickles_from_tarball(source)
    else:
        batch_dir = source / BATCH_DIR if (source / BATCH_DIR).is_dir() else source
        pickles = {name: _read_bytes(batch_dir / name) for name in (*TRAIN_BATCHES, TEST_BATCH, META)}
    meta = _unpickle(pickles[META], META)
    class_names = [_text(name) for name in _field(meta, "label_names", META)]
    splits = {}
    for split, names in (("train+val", TRAIN_BATCHES), ("test", (TEST_BATCH,))):
        batches = [_unpickle(pickles[name], name) for name in names]
        images = np.concatenate([_images(b, name) for b, name in zip(batches, names)])
        labels = [int(label) for b, name in zip(batches, names) for label in _field(b, "labels", name)]
        if len(labels) != len(images):
            raise BadInput(f"CIFAR-10 {split}: {len(images)} images but {len(labels)} labels")
        if labels and not 0 <= min(labels) <= max(labels) < len(class_names):
            raise BadInput(f"CIFAR-10 {split}: labels outside 0..{len(class_names) - 1}")
        splits[split] = CifarSplit(images, labels, class_names)
    return splits


def _pickles_from_tarball(path: Path) -> dict[str, bytes]:
    wanted = {f"{BATCH_DIR}/{name}": name for name in (*TRAIN_BATCHES, TEST_BATCH, META)}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                _refuse_unsafe(path, member)
                # Archives re-packed from an extracted copy name members "./cifar-10-batches-py/...".
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name in wanted and member.isfile():
                    found[wanted[name]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(f"{path.name} is not a readable CIFAR-10 tarball ({_one_line(exc)}); "
                       "re-download cifar-10-python.tar.gz") from None
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise BadInput(f"{path.name} lacks {BATCH_DIR}/{', '.join(missing)}: not the CIFAR-10 python tarball?")
    return found


def _refuse_unsafe(path: Path, member: tarfile.TarInfo) -> None:
    """The published tarball holds one directory of regular files. Members are only read in
    memory, never extracted, but an archive with links, devices or paths leaving its directory
    is not the published one and is refused outright."""
    parts = Path(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts:
        raise BadInput(f"{path.name}: member {member.name!r} points outside the archive: refused")
    if member.issym() or member.islnk():
        raise BadInput(f"{path.name}: member {member.name!r} is a link (to {member.linkname!r}): refused")
    if not (member.isfile() or member.isdir()):
        raise BadInput(f"{path.name}: member {member.name!r} is not a regular file: refused")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"CIFAR-10 batch file {path} is missing") from None
    except OSError as exc:
        raise BadInput(f"CIFAR-10 batch file {path} cannot be read: {exc}") from None


class _BatchUnpickler(pickle.Unpickler):
    """The batches hold only dicts, lists, strings, numbers and numpy arrays: allow just those."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _unpickle(payload: bytes, name: str) -> dict:
    import io
    try:
        obj = _BatchUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except Exception as exc:  # any failure to decode is the same problem for the user
        raise BadInput(f"CIFAR-10 batch {name} is corrupt or truncated ({_one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"CIFAR-10 batch {name} is not a dict")
    return {_text(k): v for k, v in obj.items()}


def _field(batch: dict, key: str, name: str):
    if key not in batch:
        raise BadInput(f"CIFAR-10 batch {name} has no {key!r} entry")
    return batch[key]


def _images(batch: dict, name: str) -> np.ndarray:
    data = np.asarray(_field(batch, "data", name))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise BadInput(f"CIFAR-10 batch {name}: expected uint8 rows of 3072 values, "
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

    def __getitem__(self, index: int):
        image = Image.fromarray(self._images[self._array_index[index]], "RGB")
        target = self.samples[index][1]
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def write_image_tree(splits: dict[str, CifarSplit], destination: str | os.PathLike,
                     progress: Callable[[Iterable], Iterable] = lambda x: x) -> dict[str, int]:
    """Write the original by-image PNG tree; return the image count per split.

    Each PNG is written under a temporary name and renamed, and existing ones are kept, so an
    interrupted ``prepare`` can simply be rerun.
    """
    destination = Path(destination)
    counts = {}
    for split_name, split in splits.items():
        names = split.file_names()
        for class_name in set(split.class_names):
            (destination / split_name / class_name).mkdir(parents=True, exist_ok=True)
        for i in progress(range(len(names))):
            path = destination / split_name / split.class_names[split.labels[i]] / names[i]
            if path.exists():
                continue
            partial = path.with_suffix(".png.partial")
            Image.fromarray(split.images[i], "RGB").save(partial, format="PNG")
            os.replace(partial, path)
        counts[split_name] = len(names)
    return counts
