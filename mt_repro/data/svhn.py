"""SVHN from the published ``train_32x32.mat``, ``test_32x32.mat`` and ``extra_32x32.mat``.

Each file (MATLAB v5) holds ``X``, 32 x 32 x 3 x N uint8 (height, width, channel, image), and
``y``, N x 1, the digit with 0 stored as 10. The original TensorFlow code read the files in this
order, mapped 10 to 0 and kept raw pixels; its model standardised each image itself (a layer
norm without scale or offset: ``per_image_standardize`` here).

Image names. SVHN ships no per-image files, so for label files and listings each image is
named by its position in its file and its digit, as the original by-image CIFAR-10 tree names
its PNGs: ``<i>_<digit>.png`` for image ``i`` (0-based, the 4th axis of ``X``) of
``train_32x32.mat`` (e.g. ``0_1.png``, ``1_9.png``), ``test_<i>_<digit>.png`` in the test file
and ``extra_<i>_<digit>.png`` in the extra file. Class names are the digits ``"0"`` .. ``"9"``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io
import torch
from PIL import Image
from torch.utils.data import Dataset

from mt_repro.data.splits import TFSplit, svhn_split
from mt_repro.errors import BadInput

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
PUBLISHED_SIZES = {"train": 73257, "test": 26032, "extra": 531131}
NAME_PREFIX = {"train": "", "test": "test_", "extra": "extra_"}
CLASS_NAMES = tuple(str(d) for d in range(10))
# slim.layer_norm(center=False, scale=False) of the original: variance epsilon of TF 1.x layer_norm.
STANDARDIZE_EPSILON = 1e-12


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
    if not path.is_file():
        raise BadInput(f"SVHN file {path} does not exist (expected {FILES[part]} from "
                       "http://ufldl.stanford.edu/housenumbers/ in that directory)")
    try:
        if labels_only:
            shapes = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(str(path))}
            contents = scipy.io.loadmat(str(path), variable_names=["y"])
        else:
            contents = scipy.io.loadmat(str(path))
            shapes = {k: (v.shape, v.dtype.name) for k, v in contents.items() if isinstance(v, np.ndarray)}
    except NotImplementedError:
        raise BadInput(f"{path.name} is a MATLAB v7.3 (HDF5) file; the published SVHN files are v5: "
                       "re-download it") from None
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
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(str(path))}
    except Exception as exc:
        raise BadInput(f"{path.name} is not a readable .mat file ({_one_line(exc)})") from None
    if "X" not in shapes or len(shapes["X"]) != 4:
        raise BadInput(f"{path.name} has no 32 x 32 x 3 x N variable 'X'")
    return int(shapes["X"][3])


class SvhnArrays(Dataset):
    """SVHN images in memory, presented like ``ImageFolder`` (``samples``, ``class_to_idx``), so
    label files and ``apply_labels`` work on them; ``__getitem__`` gives a PIL RGB image."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, names: list[str],
                 transform: Callable | None = None):
        self.transform = transform
        self.classes = list(CLASS_NAMES)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self._images = images
        self.samples = list(zip(names, (int(t) for t in targets)))
        self.targets = [t for _, t in self.samples]
        self.imgs = self.samples

    @classmethod
    def from_part(cls, part: SvhnPart, transform: Callable | None = None) -> "SvhnArrays":
        if part.images is None:
            raise ValueError("read the part with its images (labels_only=False)")
        return cls(part.images, part.labels, part.file_names(), transform)

    @classmethod
    def training_set(cls, directory: str | os.PathLike, split: TFSplit,
                     transform: Callable | None = None) -> "SvhnArrays":
        """The original's training array for ``split``: labeled images, the rest of the
        training part and the chosen extra images, in that order; unlabeled targets are -1."""
        train = read_svhn(directory, "train")
        source, index, target = split.training_order()
        names = train.file_names()
        images = [train.images[index[source == 0]]]
        all_names = [names[i] for i in index[source == 0].tolist()]
        if (source == 1).any():
            extra = read_svhn(directory, "extra")
            images.append(extra.images[index[source == 1]])
            extra_names = extra.file_names()
            all_names += [extra_names[i] for i in index[source == 1].tolist()]
        return cls(np.concatenate(images), target, all_names, transform)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = Image.fromarray(self._images[index], "RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index][1]


def per_image_standardize(images, epsilon: float = STANDARDIZE_EPSILON):
    """Each image minus its mean, divided by ``sqrt(its variance + epsilon)``, over all of its
    pixels and channels: the original ConvNet's input normalisation for SVHN
    (``slim.layer_norm`` without scale or offset). ``images``: N x ... numpy array or torch
    tensor; float64 numpy for integer input."""
    if isinstance(images, torch.Tensor):
        x = images if images.is_floating_point() else images.float()
        axes = tuple(range(1, x.dim()))
        mean = x.mean(dim=axes, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
        return (x - mean) / torch.sqrt(var + epsilon)
    x = np.asarray(images)
    x = x.astype(np.float64) if not np.issubdtype(x.dtype, np.floating) else x
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
