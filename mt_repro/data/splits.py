"""Label splits of the original TensorFlow ConvNet experiments (paper Tables 1-3), regenerated.

The TensorFlow half of the original code never shipped label files: each run drew its split
from ``numpy.random.RandomState(data_seed)``, in this order of calls on that one generator:

1. unless in the test phase, a validation partition (5000 CIFAR-10 / 7325 SVHN images) is cut
   from the training file by shuffling a boolean mask whose first ``validation_size`` entries
   are set (one ``shuffle``); the rest, in file order, is the training part;
2. unless all labels are kept, a class-balanced labeled subset of the training part: for each
   class present in it, in ascending order, one ``choice(positions, n_labeled / n_classes,
   replace=False)``; labeled images come first (class by class, in the order drawn), then the
   other images of the training part in file order, unlabeled;
3. (SVHN) ``n_extra_unlabeled`` images of ``extra_32x32.mat`` are cut by a second boolean-mask
   shuffle over the whole extra file, and appended unlabeled, in file order.

The paper's final runs used the test phase (no validation cut) and data seeds 2000..2009
(2000..2003 with all labels). Given the datasets in their published order, ``tf_split``
returns the same images in the same order as the original did, which
``tests/test_splits.py`` checks against indices recorded from the original code itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mt_repro.core.errors import BadInput
from mt_repro.data.registry import dataset_names, get_dataset

VALIDATION_SIZE = {"cifar10": 5000, "svhn": 7325}
# numpy.random.RandomState takes seeds 0 .. 2**32 - 1.
MAX_DATA_SEED = 2**32 - 1
PAPER_DATA_SEEDS = tuple(range(2000, 2010))


@dataclass(frozen=True)
class TFSplit:
    """Which images of the published files a TensorFlow-half run trained and evaluated on.

    All arrays hold indices into the published files (``labeled``/``unlabeled``/``validation``
    into the training file, ``extra`` into ``extra_32x32.mat``), in the original's order.
    """

    labeled: np.ndarray              # class by class, in the order drawn
    unlabeled: np.ndarray            # ascending: the rest of the training part
    validation: np.ndarray | None    # ascending; None in the test phase (evaluate on the test file)
    extra: np.ndarray                # ascending; empty unless extra images were added
    labels: np.ndarray               # class of every image of the training file (0..K-1)

    def training_order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, index, target) of each element of the original's training array, in its
        order: source 0 = training file, 1 = extra file; target -1 = unlabeled."""
        n_lab, n_unl, n_ext = len(self.labeled), len(self.unlabeled), len(self.extra)
        source = np.concatenate([np.zeros(n_lab + n_unl, np.int64), np.ones(n_ext, np.int64)])
        index = np.concatenate([self.labeled, self.unlabeled, self.extra]).astype(np.int64)
        target = np.concatenate([self.labels[self.labeled], np.full(n_unl + n_ext, -1)]).astype(np.int64)
        return source, index, target

    def per_class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels[self.labeled], minlength=num_classes).tolist()


def check_data_seed(data_seed: int) -> int:
    if isinstance(data_seed, bool) or not isinstance(data_seed, (int, np.integer)):
        raise BadInput(f"data seed must be an integer, got {data_seed!r}")
    if not 0 <= data_seed <= MAX_DATA_SEED:
        raise BadInput(f"data seed {data_seed} is outside 0..{MAX_DATA_SEED} "
                       "(the range numpy.random.RandomState accepts)")
    return int(data_seed)


def mask_partition(n: int, first_size: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of ``first_size`` of ``range(n)`` and the rest, both ascending: one
    ``rng.shuffle`` of a boolean mask whose first ``first_size`` entries are set."""
    if not 0 <= first_size <= n:
        raise BadInput(f"cannot take {first_size} of {n} images")
    chosen = np.zeros(n, dtype=bool)
    chosen[:first_size] = True
    rng.shuffle(chosen)
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def balanced_choice(labels: np.ndarray, n_labeled: int, rng: np.random.RandomState,
                    what: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``n_labeled`` elements of ``labels``, the same number per class present
    (classes ascending, one ``rng.choice`` without replacement each, in that order), and the
    other positions ascending."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) == 0:
        raise BadInput(f"no {what} to choose labels from")
    if n_labeled <= 0:
        raise BadInput(f"the number of labels must be positive, got {n_labeled}")
    if n_labeled % len(classes):
        raise BadInput(f"{n_labeled} labels cannot be balanced over {len(classes)} classes: "
                       f"choose a multiple of {len(classes)}")
    per_class = n_labeled // len(classes)
    short = [f"{c} ({n})" for c, n in zip(classes.tolist(), counts.tolist()) if n < per_class]
    if short:
        raise BadInput(f"{n_labeled} labels need {per_class} {what} per class, but class(es) "
                       f"{', '.join(short[:5])}{', …' if len(short) > 5 else ''} have fewer")
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                             for c in classes])
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    return chosen, rest


def tf_split(labels: Sequence[int], n_labeled: int | None, data_seed: int, *, validation_size: int,
             test_phase: bool = True, n_extra_unlabeled: int = 0, n_extra: int = 0) -> TFSplit:
    """The original TensorFlow half's split of a training file with class ``labels``.

    ``n_labeled=None`` keeps every label ("all"). ``n_extra`` is the number of images in the
    extra file (SVHN's 531131), of which ``n_extra_unlabeled`` are added unlabeled.
    """
    rng = np.random.RandomState(check_data_seed(data_seed))
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise BadInput(f"labels must be one per image, got shape {labels.shape}")
    if test_phase:
        validation, training = None, np.arange(len(labels))
    else:
        if validation_size >= len(labels):
            raise BadInput(f"a validation set of {validation_size} leaves no training images "
                           f"out of {len(labels)}")
        validation, training = mask_partition(len(labels), validation_size, rng)
    if n_labeled is None:
        labeled, unlabeled = training, training[:0]
    else:
        if n_labeled > len(training):
            raise BadInput(f"{n_labeled} labels requested but the training part has only "
                           f"{len(training)} images")
        chosen, rest = balanced_choice(labels[training], n_labeled, rng, what="training images")
        labeled, unlabeled = training[chosen], training[rest]
    if n_extra_unlabeled < 0:
        raise BadInput(f"the number of extra unlabeled images must be >= 0, got {n_extra_unlabeled}")
    if n_extra_unlabeled > 0:
        if n_extra_unlabeled > n_extra:
            raise BadInput(f"{n_extra_unlabeled} extra images requested but the extra file has "
                           f"only {n_extra}")
        extra, _ = mask_partition(n_extra, n_extra_unlabeled, rng)
    else:
        extra = np.zeros(0, np.int64)
    return TFSplit(labeled=labeled, unlabeled=unlabeled, validation=validation, extra=extra,
                   labels=labels)


def cifar10_split(labels: Sequence[int], n_labeled: int | None, data_seed: int, *,
                  test_phase: bool = True) -> TFSplit:
    """``Cifar10ZCA(data_seed, n_labeled, test_phase)`` of the original: ``labels`` are the
    50000 training labels in the published batch order (data_batch_1 .. data_batch_5)."""
    return tf_split(labels, n_labeled, data_seed, validation_size=VALIDATION_SIZE["cifar10"],
                    test_phase=test_phase)


def svhn_split(labels: Sequence[int], n_labeled: int | None, data_seed: int, *,
               test_phase: bool = True, n_extra_unlabeled: int = 0, n_extra: int = 0) -> TFSplit:
    """``SVHN(data_seed, n_labeled, n_extra_unlabeled, test_phase)`` of the original: ``labels``
    are ``train_32x32.mat``'s digits in file order, 0..9 (the file's 10 already mapped to 0)."""
    return tf_split(labels, n_labeled, data_seed, validation_size=VALIDATION_SIZE["svhn"],
                    test_phase=test_phase, n_extra_unlabeled=n_extra_unlabeled, n_extra=n_extra)


def label_file_entries(names: Sequence[str], class_names: Sequence[str], labels: np.ndarray,
                       indices: np.ndarray) -> dict[str, str]:
    """``{file name: class name}`` of the images ``indices``, in that order, for
    ``mt_repro.data.labels.write_label_file``."""
    return {names[i]: class_names[labels[i]] for i in indices.tolist()}


@dataclass(frozen=True)
class NamedSplit:
    """A split with the names the label files use for its images."""

    split: TFSplit
    names: list[str]          # of every image of the training file, by index
    class_names: list[str]    # by class index

    def label_file_entries(self) -> dict[str, str]:
        return label_file_entries(self.names, self.class_names, self.split.labels, self.split.labeled)


def dataset_split(dataset: str, n_labeled: int | None, data_seed: int, *, data=None,
                  test_phase: bool = True, n_extra_unlabeled: int = 0) -> NamedSplit:
    """The TensorFlow half's split of a dataset read from its published files (``data``: the
    CIFAR-10 tarball or batches directory, the directory of the SVHN ``.mat`` files; the digits
    need none), by the dataset's own ``tf_split``. Image names are those of the by-image
    layouts, so the label file feeds any command."""
    spec = get_dataset(dataset)
    if spec.tf_split is None:
        with_splits = [name for name in dataset_names() if get_dataset(name).tf_split is not None]
        raise BadInput(f"splits are defined for {', '.join(with_splits)}, not {dataset!r}")
    if n_extra_unlabeled and not spec.has_extra:
        raise BadInput(f"only SVHN has extra unlabeled images, not {dataset}")
    if data is None and spec.default_root is not None:
        raise BadInput(f"{dataset} splits need the published files: pass --data")
    return spec.tf_split(None if data is None else Path(data), n_labeled, data_seed, test_phase, n_extra_unlabeled)
