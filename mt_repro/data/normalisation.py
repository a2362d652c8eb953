"""Which statistics normalise a run's images (``config.normalisation``): the dataset's own, as
every dataset module sets them, or ImageNet's, as USB normalises CIFAR-10
(``semilearn/datasets/cv_datasets/cifar.py``: its ``mean['cifar10']`` and ``std['cifar10']``
are ImageNet's), so that a protocol cell feeds its network the numbers USB's runs feed theirs.

``normalised(spec, name)`` is the dataset with every transform that normalises (the two
training views, the evaluation transform, fast mode's batched augmentation, and so the strong
and contrastive views and the clean images built from them) normalising with those statistics;
the augmentation before it is unchanged. A network is evaluated later with the normalisation it
was trained with: ``mt-repro evaluate`` and ``robustness`` read it from the checkpoint's
settings.
"""
from __future__ import annotations

import dataclasses

from mt_repro.config.train import NORMALISATIONS
from mt_repro.core.errors import BadInput
from mt_repro.data.registry import DatasetSpec
from mt_repro.data.translate_flip import TranslateFlip

IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# config.train.NORMALISATIONS besides "dataset" (the dataset's own): (their name in words, statistics)
STATISTICS = {"imagenet": ("ImageNet", IMAGENET_STATS)}


def described(name: str | None) -> str:
    """``name``'s statistics in words: "the dataset's own statistics", "ImageNet's statistics"."""
    return "the dataset's own statistics" if name in (None, "dataset") else f"{STATISTICS[name][0]}'s statistics"


def normalised(spec: DatasetSpec, name: str | None) -> DatasetSpec:
    """``spec`` normalising with the statistics ``name`` (None or ``"dataset"``: as it is)."""
    if name in (None, "dataset"):
        return spec
    if name not in STATISTICS:
        raise BadInput(f"normalisation {name!r} is not one of {', '.join(NORMALISATIONS)}")
    if not isinstance(spec.augmentation, TranslateFlip):
        raise BadInput(f"normalisation {name!r}: {spec.name}'s images are not normalised by a translate-and-flip "
                       "pipeline whose statistics can be changed (those of cifar10, cifar100, svhn, stl10)")
    augmentation = TranslateFlip(spec.augmentation.max_translation, **STATISTICS[name][1])
    return dataclasses.replace(spec, train_transform=augmentation.train_transform,
                               eval_transform=augmentation.eval_transform,
                               batch_augment=augmentation.batch_augment, augmentation=augmentation)
