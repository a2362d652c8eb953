"""The labeled / unlabeled split of the USB benchmark (microsoft/Semi-supervised-learning,
``split_ssl_data`` and ``sample_labeled_unlabeled_data`` of ``semilearn/datasets/utils.py``),
regenerated, so that Mean Teacher trains on the images USB's runs label for a given seed.

USB's ``train.py`` calls ``np.random.seed(seed)`` before anything else draws from numpy, and the
split then draws from that global generator: for each class ``c`` in ``0 .. num_classes - 1``,
in that order, the positions of ``c`` in the targets (ascending) are shuffled with one
``np.random.shuffle``, the first ``num_labels / num_classes`` are labeled and the rest unlabeled,
in the shuffled order. The labeled indices are the classes' labeled parts one after the other,
the unlabeled ones likewise; with ``include_lb_to_ulb`` (USB's default for CIFAR and SVHN; STL-10
turns it off) the unlabeled set is the labeled indices followed by the others, so labeled images
are also used as unlabeled ones. Here the draws come from ``numpy.random.RandomState(seed)``:
the same Mersenne-Twister stream as the seeded global generator, without touching numpy's
global state.

This is USB's balanced setting (imbalance ratio 1, every image that is not labeled is
unlabeled). Where USB would quietly build another split, this refuses with ``BadInput``:
USB takes fewer labels from a class that has fewer images than its share (a class absent from
the targets gives none), leaves targets outside ``0 .. num_classes - 1`` out of both sets, and
reads a negative number of labels as "all but that many per class". Labels that do not divide
evenly over the classes USB refuses with an assertion; so does this, with ``BadInput``. Labeling
every image is allowed (USB itself then fails indexing with an empty float array): the unlabeled
set is then the labeled one, or empty without ``include_lb_to_ulb``.

``tests/test_usb_splits.py`` compares the result with indices recorded from USB's own function
(``tests/golden/usb_splits.json``), and with TorchSSL's (``tests/golden/torchssl_splits.json``):
TorchSSL's ``sample_labeled_data`` draws each class's labeled images with ``np.random.choice(...,
replace=False)``, which takes a permutation's first ones, the same draws as USB's shuffle. So a
seed labels the same images in both; TorchSSL's unlabeled set differs only in order.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mt_repro.core.errors import BadInput
from mt_repro.data.splits import check_data_seed


def _check_count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadInput(f"{what} must be an integer, got {value!r}")
    if value <= 0:
        raise BadInput(f"{what} must be positive, got {value}")
    return int(value)


def _check_targets(targets: Sequence[int], num_classes: int) -> np.ndarray:
    array = np.asarray(targets)
    if array.ndim != 1:
        raise BadInput(f"targets must be one class per image, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise BadInput(f"targets must be integer classes, got {array.dtype}")
    array = array.astype(np.int64)
    outside = (array < 0) | (array >= num_classes)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise BadInput(f"{int(outside.sum())} target(s) are outside 0..{num_classes - 1}, "
                       f"the first at index {first}: {int(array[first])}")
    return array


def usb_split(targets: Sequence[int], num_labels: int, num_classes: int, seed: int, *,
              include_lb_to_ulb: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(labeled indices, unlabeled indices) into ``targets``, int64, as USB's
    ``split_ssl_data(..., lb_num_labels=num_labels)`` chooses them after ``np.random.seed(seed)``."""
    num_classes = _check_count(num_classes, "the number of classes")
    num_labels = _check_count(num_labels, "the number of labels")
    rng = np.random.RandomState(check_data_seed(seed))
    targets = _check_targets(targets, num_classes)
    if num_labels > len(targets):
        raise BadInput(f"{num_labels} labels requested but there are only {len(targets)} images")
    if num_labels % num_classes:
        raise BadInput(f"{num_labels} labels cannot be balanced over {num_classes} classes: "
                       f"choose a multiple of {num_classes}")
    per_class = num_labels // num_classes
    counts = np.bincount(targets, minlength=num_classes)
    short = [f"{c} ({n})" for c, n in enumerate(counts.tolist()) if n < per_class]
    if short:
        raise BadInput(f"{num_labels} labels need {per_class} images per class, but class(es) "
                       f"{', '.join(short[:5])}{', …' if len(short) > 5 else ''} have fewer")
    labeled, unlabeled = [], []
    for c in range(num_classes):
        positions = np.flatnonzero(targets == c)
        rng.shuffle(positions)
        labeled.append(positions[:per_class])
        unlabeled.append(positions[per_class:])
    labeled_indices = np.concatenate(labeled).astype(np.int64)
    unlabeled_indices = np.concatenate(unlabeled).astype(np.int64)
    if include_lb_to_ulb:
        unlabeled_indices = np.concatenate([labeled_indices, unlabeled_indices])
    return labeled_indices, unlabeled_indices
