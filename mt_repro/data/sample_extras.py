"""Per-sample inputs that some methods need besides the two augmented views.

``SampleExtras`` wraps the training set: item ``i`` becomes ``(views, target, extras)`` with
``extras["indices"] = i`` (a per-sample memory, e.g. Temporal Ensembling's ensemble
predictions) and/or ``extras["clean_input"]``, the image through the evaluation transform (no
augmentation, no noise: the self-training teacher's input). Neither draws a random number, and
runs whose method asks for nothing get the training set unwrapped, so the Mean Teacher path's
random draws are untouched.
"""
from __future__ import annotations

from typing import Sequence

from torch.utils.data import Dataset

from mt_repro.core.types import SAMPLE_EXTRAS


class SampleExtras(Dataset):
    def __init__(self, dataset: Dataset, wanted: Sequence[str], clean: Dataset | None = None):
        unknown = sorted(set(wanted) - set(SAMPLE_EXTRAS))
        if unknown:
            raise ValueError(f"unknown sample extras {unknown}")
        if "clean_input" in wanted and (clean is None or len(clean) != len(dataset)):
            raise ValueError("clean_input needs the same images through the evaluation transform")
        self.dataset = dataset
        self.wanted = tuple(wanted)
        self.clean = clean

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self._with_extras(index, self.dataset[index], self.clean[index] if self._needs_clean else None)

    def __getitems__(self, indices: list[int]) -> list:
        """A minibatch at once where the wrapped datasets can (``DataLoader`` prefers this)."""
        items = _items(self.dataset, indices)
        clean = _items(self.clean, indices) if self._needs_clean else [None] * len(indices)
        return [self._with_extras(i, item, clean_item) for i, item, clean_item in zip(indices, items, clean)]

    @property
    def _needs_clean(self) -> bool:
        return "clean_input" in self.wanted

    def _with_extras(self, index: int, item, clean_item):
        views, target = item
        extras = {}
        if "indices" in self.wanted:
            extras["indices"] = index
        if clean_item is not None:
            extras["clean_input"] = clean_item[0]
        return views, target, extras


def _items(dataset: Dataset, indices: list[int]) -> list:
    getitems = getattr(dataset, "__getitems__", None)
    return getitems(indices) if getitems is not None else [dataset[i] for i in indices]
