"""The TensorFlow half's label splits, regenerated (paper Tables 1-3).

``tests/golden/tf_splits.json`` holds split indices recorded by running the original code's own
dataset classes (``tensorflow/datasets/cifar10.py``, ``svhn.py``, ``utils.py``) on the
synthetic label arrays below, which stand in for the published files in their published order
(the split depends only on the labels and the number of images). Every index array of every
case is compared through its sha256, so a single differing index fails.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mt_repro.data import splits
from mt_repro.core.errors import BadInput

GOLDEN = json.loads((Path(__file__).parent / "golden" / "tf_splits.json").read_text())["cases"]
SVHN_EXTRA_SIZE = 531131


def cifar_labels() -> np.ndarray:
    """50000 training labels, 5000 per class, in a fixed shuffled order."""
    return np.random.RandomState(10).permutation(np.repeat(np.arange(10), 5000))


def svhn_file_labels() -> np.ndarray:
    """73257 labels as ``train_32x32.mat`` stores them (1..10, 10 = the digit 0), unbalanced
    like SVHN's (digit d drawn with weight 1/d)."""
    weights = 1.0 / np.arange(1, 11)
    return np.random.RandomState(11).choice(np.arange(1, 11), 73257, p=weights / weights.sum())


def summary(indices: np.ndarray) -> dict:
    indices = np.asarray(indices, dtype="<i8")
    return {"n": len(indices), "sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
            "head": indices[:8].tolist(), "tail": indices[-8:].tolist()}


def regenerate(key: str) -> dict:
    dataset, phase, n_labeled, data_seed, n_extra = key.split("/")
    n_labeled = None if n_labeled == "all" else int(n_labeled)
    test_phase = phase == "test"
    if dataset == "cifar10":
        labels = cifar_labels()
        split = splits.cifar10_split(labels, n_labeled, int(data_seed), test_phase=test_phase)
    else:
        labels = svhn_file_labels()
        labels[labels == 10] = 0
        split = splits.svhn_split(labels, n_labeled, int(data_seed), test_phase=test_phase,
                                  n_extra_unlabeled=int(n_extra), n_extra=SVHN_EXTRA_SIZE)
    source, index, target = split.training_order()
    labeled = target != -1
    return {"labeled": summary(split.labeled), "labeled_classes": summary(labels[split.labeled]),
            "unlabeled": summary(split.unlabeled), "extra": summary(split.extra),
            "validation": None if split.validation is None else summary(split.validation),
            "_order_ok": bool(labeled[:len(split.labeled)].all() and not labeled[len(split.labeled):].any()
                              and (index[source == 1] == split.extra).all())}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_split_equals_the_original(key):
    ours = regenerate(key)
    assert ours.pop("_order_ok")
    assert ours == GOLDEN[key]


def test_golden_covers_the_paper_runs():
    for n in (1000, 2000, 4000):
        assert {f"cifar10/test/{n}/{s}/0" for s in splits.PAPER_DATA_SEEDS} <= set(GOLDEN)
    for n in (250, 500, 1000):
        assert {f"svhn/test/{n}/{s}/100000" for s in splits.PAPER_DATA_SEEDS} <= set(GOLDEN)


def test_labeled_subset_is_balanced_and_disjoint():
    labels = cifar_labels()
    split = splits.cifar10_split(labels, 4000, 2003, test_phase=False)
    assert split.per_class_counts(10) == [400] * 10
    parts = [split.labeled, split.unlabeled, split.validation]
    assert sum(map(len, parts)) == 50000
    assert len(np.unique(np.concatenate(parts))) == 50000
    assert len(split.validation) == 5000


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_labeled=1001), "cannot be balanced over 10 classes"),
    (dict(n_labeled=0), "must be positive"),
    (dict(n_labeled=60000), "training part has only 50000"),
    (dict(data_seed=-1), "outside 0..4294967295"),
    (dict(data_seed=2**32), "outside 0..4294967295"),
    (dict(data_seed=1.5), "must be an integer"),
])
def test_impossible_splits_are_bad_input(kwargs, message):
    args = {"n_labeled": 1000, "data_seed": 2000, **kwargs}
    with pytest.raises(BadInput, match=message):
        splits.cifar10_split(cifar_labels(), args["n_labeled"], args["data_seed"])


def test_more_labels_than_a_class_has():
    labels = np.array([0] * 50 + [1] * 3)
    with pytest.raises(BadInput, match=r"class\(es\) 1 \(3\) have fewer"):
        splits.tf_split(labels, 10, 0, validation_size=0)


def test_more_extra_than_the_extra_file_has():
    with pytest.raises(BadInput, match="extra file has only 10"):
        splits.svhn_split(np.arange(100) % 10, 20, 0, n_extra_unlabeled=11, n_extra=10)
