"""Datasets by name, each described once: classes, sizes, where the original kept it, how to read
it, its augmentations, its splits.

A dataset is one module of this package that calls ``register(DatasetSpec(...))``; the
registry imports every module of the package, so ``mt-repro`` commands, the two recipes'
data pipelines (``mt_repro.data.loaders`` for the PyTorch recipe, ``mt_repro.data.arrays`` for
the TensorFlow one) and the tests find it with nothing else changed. What a dataset offers
decides where it can run:

* ``open_part`` (+ ``train_transform``, ``eval_transform``): the PyTorch recipe, augmentation
  per image in the data pipeline, two views; ``batch_augment`` adds fast mode's on-device
  augmentation of whole minibatches (``None``: fast mode loads images one by one);
* ``tf_arrays``: the TensorFlow recipe, the raw training and evaluation arrays of an original
  TensorFlow split (the noise then lives inside the model);
* ``tf_split``: ``mt-repro splits``, the label file of such a split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from mt_repro.core.registry import Registry


@dataclass(frozen=True)
class TFArrays:
    """The training and evaluation arrays of a TensorFlow-half split, as its graph was fed:
    images ``N x H x W x C`` (uint8 pixels or float32 whitened values), targets ``NO_LABEL``
    for unlabeled images."""

    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    num_classes: int
    train_size: int                        # images of the published training set ("all labels")
    # where the original code looked for it (a dataset it never read: where we look by default);
    # None: bundled
    default_root: str | None = None
    reads: str = ""                        # what --data takes, for help and errors
    train_part: str = "train"              # the parts open_part reads (the original's --train-subdir,
    eval_part: str = "test"                # --eval-subdir)
    # the PyTorch recipe
    # (root, part, transform, damaged_images): damaged_images is what to do with image files that
    # do not decode, "refuse" or "skip" (mt_repro.data.images)
    open_part: Callable[..., Dataset] | None = None
    train_transform: Callable[[], Any] | None = None
    eval_transform: Callable[[], Any] | None = None
    batch_augment: Callable[[], Any] | None = None
    # the object the three above come from where it is a translate-and-flip pipeline
    # (mt_repro.data.translate_flip): mt_repro.data.normalisation changes its statistics
    augmentation: Any = None
    # the TensorFlow recipe and `mt-repro splits`
    tf_arrays: Callable[..., TFArrays] | None = None   # (root, n_labeled|None, data_seed, test_phase, n_extra)
    tf_split: Callable[..., Any] | None = None         # (root, n_labeled|None, data_seed, test_phase, n_extra) -> NamedSplit
    has_extra: bool = False                # extra unlabeled images beside the training set (SVHN)

    def root(self, data_dir: str | os.PathLike | None) -> Path | None:
        """The data directory of a run: the given one, else where the original code kept it."""
        if data_dir is not None:
            return Path(data_dir)
        return None if self.default_root is None else Path(self.default_root)


_DATASETS: Registry[DatasetSpec] = Registry("mt_repro.data", "dataset")


def register(spec: DatasetSpec) -> DatasetSpec:
    return _DATASETS.add(spec.name, spec)


def dataset_names() -> list[str]:
    return _DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    return _DATASETS.get(name)
