"""CIFAR-100 (Krizhevsky 2009) for the protocol of USB/TorchSSL (WRN-28-8, 400 / 2500 / 10000
labels): the published python tarball ``cifar-100-python.tar.gz``, its extracted
``cifar-100-python/``, or a by-image PNG tree laid out as CIFAR-10's. Not in the Mean Teacher
paper.

The tarball is read by the same bounded reader as CIFAR-10's (``mt_repro.data.cifar10``), with
the 100 fine labels (``fine_labels``, ``fine_label_names``); the 20 coarse labels are not used.
Images are named as CIFAR-10's by-image tree names them, ``<i>_<class>.png`` in the published
order, and presented in ``ImageFolder`` order.

Augmentation is CIFAR-10's (±4 px translation with mirrored borders, horizontal flip: what
USB's ``RandomCrop(32, padding=4, padding_mode="reflect")`` and flip draw), normalised with
USB's CIFAR-100 statistics (``semilearn/datasets/cv_datasets/cifar.py``: mean (129.3, 124.1,
112.4) / 255, std (68.2, 65.4, 70.4) / 255).
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from mt_repro.data.cifar10 import CIFAR100, TEST_PART, TRAIN_PART, open_cifar_part
from mt_repro.data.registry import DatasetSpec, register
from mt_repro.data.translate_flip import TranslateFlip

CIFAR100_STATS = {"mean": [x / 255 for x in (129.3, 124.1, 112.4)],
                  "std": [x / 255 for x in (68.2, 65.4, 70.4)]}


def open_part(root: Path, part: str, transform, damaged_images: str = "refuse") -> Dataset:
    return open_cifar_part(root, part, transform, damaged_images, CIFAR100)


AUGMENTATION = TranslateFlip(4, **CIFAR100_STATS)
train_transform, eval_transform, batch_augment = (AUGMENTATION.train_transform, AUGMENTATION.eval_transform,
                                                  AUGMENTATION.batch_augment)


SPEC = register(DatasetSpec(
    name="cifar100", description="CIFAR-100 (Krizhevsky 2009): 50000 training, 10000 test images, 100 classes",
    num_classes=100, train_size=50000, default_root="data-local/cifar-100-python.tar.gz",
    reads="cifar-100-python.tar.gz, its extracted cifar-100-python/, or a by-image PNG tree "
          "(train+val/<class>/<i>_<class>.png, test/...)",
    train_part=TRAIN_PART, eval_part=TEST_PART,
    open_part=open_part, train_transform=train_transform, eval_transform=eval_transform,
    batch_augment=batch_augment, augmentation=AUGMENTATION))
