"""USB's labeled / unlabeled split, regenerated (``mt_repro.data.usb_splits``).

``tests/golden/usb_splits.json`` holds index arrays recorded by running USB's own
``split_ssl_data`` (``semilearn/datasets/utils.py``, at the commit it names) on the stand-in
targets below, which have CIFAR-10's and CIFAR-100's class balance (the split depends on the
targets only through their classes). Every index array is compared through its sha256, so a
single differing index fails. The golden file also records what USB does with bad input.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mt_repro.core.errors import BadInput
from mt_repro.data.usb_splits import usb_split

GOLDEN = json.loads((Path(__file__).parent / "golden" / "usb_splits.json").read_text())
CLASSES = {"cifar10": 10, "cifar100": 100}


def stand_in_targets(name: str) -> np.ndarray:
    """cifar10: 5000 per class of 10; cifar100: 500 per class of 100; in a fixed shuffled order."""
    if name == "cifar10":
        return np.random.RandomState(10).permutation(np.repeat(np.arange(10), 5000))
    return np.random.RandomState(100).permutation(np.repeat(np.arange(100), 500))


def summary(indices: np.ndarray) -> dict:
    indices = np.asarray(indices, dtype="<i8")
    return {"n": len(indices), "sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
            "head": indices[:8].tolist(), "tail": indices[-8:].tolist()}


@pytest.mark.parametrize("key", sorted(GOLDEN["cases"]))
def test_split_equals_usbs(key):
    name, num_labels, seed = key.split("/")
    targets = stand_in_targets(name)
    labeled, unlabeled = usb_split(targets, int(num_labels), CLASSES[name], int(seed))
    _, unlabeled_only = usb_split(targets, int(num_labels), CLASSES[name], int(seed), include_lb_to_ulb=False)
    assert labeled.dtype == unlabeled.dtype == np.int64
    ours = {"labeled": summary(labeled), "labeled_classes": summary(targets[labeled]),
            "unlabeled": summary(unlabeled), "unlabeled_without_labeled": summary(unlabeled_only)}
    assert ours == GOLDEN["cases"][key]


def test_golden_covers_the_usb_protocol():
    assert GOLDEN["usb_repository"] == "microsoft/Semi-supervised-learning" and len(GOLDEN["usb_commit"]) == 40
    expected = {f"cifar10/{n}/{s}" for n in (40, 250, 4000) for s in (0, 1, 2)}
    expected |= {f"cifar100/{n}/{s}" for n in (400, 2500, 10000) for s in (0, 1, 2)}
    assert set(GOLDEN["cases"]) == expected


def test_labeled_are_balanced_and_unlabeled_includes_them_by_default():
    targets = stand_in_targets("cifar10")
    labeled, unlabeled = usb_split(targets, 250, 10, 0)
    assert np.bincount(targets[labeled], minlength=10).tolist() == [25] * 10
    assert len(unlabeled) == len(targets) and sorted(unlabeled.tolist()) == list(range(len(targets)))
    assert (unlabeled[:250] == labeled).all()
    _, rest = usb_split(targets, 250, 10, 0, include_lb_to_ulb=False)
    assert len(rest) == len(targets) - 250 and not set(rest.tolist()) & set(labeled.tolist())


def test_numpys_global_generator_is_left_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    usb_split(stand_in_targets("cifar10"), 40, 10, 0)
    assert (np.random.get_state()[1] == before).all()


def test_seeds_give_different_splits_and_a_seed_the_same():
    targets = stand_in_targets("cifar10")
    assert (usb_split(targets, 40, 10, 1)[0] == usb_split(targets, 40, 10, 1)[0]).all()
    assert not (usb_split(targets, 40, 10, 1)[0] == usb_split(targets, 40, 10, 2)[0]).all()


def test_labeling_every_image_is_allowed():
    targets = np.repeat(np.arange(3), 2)
    labeled, unlabeled = usb_split(targets, 6, 3, 0, include_lb_to_ulb=False)
    assert sorted(labeled.tolist()) == list(range(6)) and unlabeled.dtype == np.int64 and len(unlabeled) == 0


@pytest.mark.parametrize("targets, num_labels, num_classes, seed, message", [
    # USB: AssertionError "lb_num_labels must be dividable by num_classes in balanced setting"
    (np.repeat(np.arange(10), 5000), 45, 10, 0, "45 labels cannot be balanced over 10 classes"),
    # USB: IndexError (an empty float index array)
    (np.repeat(np.arange(10), 5000), 60000, 10, 0, "60000 labels requested but there are only 50000 images"),
    (np.arange(10), 40, 10, 0, "40 labels requested but there are only 10 images"),
    # USB: silently 36 labels from 9 classes
    (np.repeat(np.arange(9), 5000), 40, 10, 0, r"class\(es\) 9 \(0\) have fewer"),
    (np.concatenate([np.repeat(np.arange(9), 10), [9, 9]]), 40, 10, 0, r"4 images per class, but class\(es\) 9 \(2\)"),
    # USB: silently leaves these images out of both sets
    (np.repeat(np.arange(11), 50), 40, 10, 0, r"50 target\(s\) are outside 0..9, the first at index 500: 10"),
    (np.array([-1, 0, 1]), 2, 2, 0, "outside 0..1"),
    # USB: 0 labels fails indexing; -10 labels silently labels all but one image per class
    (np.repeat(np.arange(10), 50), 0, 10, 0, "the number of labels must be positive, got 0"),
    (np.repeat(np.arange(10), 50), -10, 10, 0, "the number of labels must be positive, got -10"),
    (np.repeat(np.arange(10), 50), 40.0, 10, 0, "the number of labels must be an integer"),
    (np.repeat(np.arange(10), 50), 40, 0, 0, "the number of classes must be positive"),
    (np.repeat(np.arange(10), 50), 40, 10, -1, "data seed -1 is outside"),
    (np.repeat(np.arange(10), 50).reshape(10, 50), 40, 10, 0, "one class per image"),
    (np.repeat(np.arange(10), 50).astype(float), 40, 10, 0, "integer classes"),
])
def test_bad_input_is_refused_in_one_line(targets, num_labels, num_classes, seed, message):
    with pytest.raises(BadInput, match=message) as error:
        usb_split(targets, num_labels, num_classes, seed)
    assert "\n" not in str(error.value)


def test_the_golden_records_what_usb_does_with_bad_input():
    behaviour = GOLDEN["usb_behaviour_on_bad_input"]
    assert behaviour["45 labels, 10 classes"].startswith("AssertionError")
    assert behaviour["40 labels, 10 classes, class 9 absent"].startswith("no error: 36 labeled")
    assert behaviour["-10 labels"].startswith("no error: 49990 labeled")



TORCHSSL = json.loads((Path(__file__).parent / "golden" / "torchssl_splits.json").read_text())


@pytest.mark.parametrize("key", sorted(TORCHSSL["cases"]))
def test_torchssl_labels_the_images_usb_labels_for_a_seed(key):
    """TorchSSL's split (its own function's indices, recorded) draws each class's labeled images
    with ``np.random.choice(positions, k, replace=False)``, a permutation's first k: the same
    draws as USB's shuffle, so the same labeled images, in the same order. Its unlabeled set
    differs only in order (every other image, ascending; USB's: class by class), which the
    runs here do not use: they train on every image the label file does not name."""
    name, num_labels, seed = key.split("/")
    targets = stand_in_targets(name)
    labeled, unlabeled = usb_split(targets, int(num_labels), CLASSES[name], int(seed), include_lb_to_ulb=False)
    assert summary(labeled) == TORCHSSL["cases"][key]["labeled"]
    assert summary(np.sort(unlabeled)) == TORCHSSL["cases"][key]["unlabeled_without_labeled"]
