"""Per-sample inputs that some methods need besides the two augmented views.

``SampleExtras`` wraps the training set: item ``i`` becomes ``(views, target, extras)`` with
``extras["indices"] = i`` (a per-sample memory, e.g. Temporal Ensembling's ensemble
predictions), ``extras["clean_input"]``, the image through the evaluation transform (no
augmentation, no noise: the self-training teacher's input), ``extras["strong_input"]``,
the image through ``strong_view`` (``mt_repro.data.randaugment.StrongView``: FixMatch's and
UDA's strong augmentation, then the evaluation transform's normalisation), and/or
``extras["moco_v1_views"]`` / ``["moco_v2_views"]``, two views through ``contrastive_view``
(MoCo's augmentation, ``mt_repro.data.contrastive``, then the same normalisation), stacked.

The first two draw no random number. The strong view and MoCo's views each draw from their own
``numpy.random.Generator``, seeded from the run's seed, the stream's constant, the epoch
(``set_epoch``, before the epoch's loader starts) and the loader's worker (0 in the main
process, 1 + the worker's id in a worker process), so its views are a function of the run's
seed and ``workers``, an epoch's are the same when a run resumes at its start, and the global
generators that draw the two views and the minibatches are left as they were. Runs whose method asks for nothing get the training
set unwrapped, so the Mean Teacher path's random draws are untouched.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mt_repro.core.types import SAMPLE_EXTRAS

# Tell the strong view's and MoCo's seeds apart from any other use of the same (seed, epoch, worker).
STRONG_VIEW_STREAM = 0x5743
CONTRASTIVE_VIEW_STREAM = 0x4D6F
CONTRASTIVE = ("moco_v1_views", "moco_v2_views")


class SampleExtras(Dataset):
    def __init__(self, dataset: Dataset, wanted: Sequence[str], clean: Dataset | None = None, *,
                 raw: Dataset | None = None, strong_view: Callable | None = None,
                 contrastive_view: Callable | None = None, seed: int | None = None):
        unknown = sorted(set(wanted) - set(SAMPLE_EXTRAS))
        if unknown:
            raise ValueError(f"unknown sample extras {unknown}")
        if "clean_input" in wanted and (clean is None or len(clean) != len(dataset)):
            raise ValueError("clean_input needs the same images through the evaluation transform")
        if "strong_input" in wanted and (raw is None or strong_view is None or len(raw) != len(dataset)):
            raise ValueError("strong_input needs the same images untransformed and the strong view")
        self.contrastive = [name for name in wanted if name in CONTRASTIVE]
        if len(self.contrastive) > 1 or (self.contrastive and (raw is None or contrastive_view is None
                                                               or len(raw) != len(dataset))):
            raise ValueError("MoCo's views need the same images untransformed and one contrastive view")
        self.dataset = dataset
        self.wanted = tuple(wanted)
        self.clean = clean
        self.raw = raw
        self.strong_view = strong_view
        self.contrastive_view = contrastive_view
        self.seed = 0 if seed is None else int(seed) % (1 << 63)
        self.epoch = 0
        self._generators: dict[int, tuple[tuple[int, int], np.random.Generator]] = {}

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next items are for (the strong view's generator is the epoch's)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self._with_extras(index, self.dataset[index], self.clean[index] if self._needs_clean else None,
                                 self.raw[index] if self._needs_strong else None)

    def __getitems__(self, indices: list[int]) -> list:
        """A minibatch at once where the wrapped datasets can (``DataLoader`` prefers this)."""
        items = _items(self.dataset, indices)
        clean = _items(self.clean, indices) if self._needs_clean else [None] * len(indices)
        raw = _items(self.raw, indices) if self._needs_strong else [None] * len(indices)
        return [self._with_extras(i, item, clean_item, raw_item)
                for i, item, clean_item, raw_item in zip(indices, items, clean, raw)]

    @property
    def _needs_clean(self) -> bool:
        return "clean_input" in self.wanted

    @property
    def _needs_strong(self) -> bool:
        return "strong_input" in self.wanted or bool(self.contrastive)

    def _with_extras(self, index: int, item, clean_item, raw_item):
        views, target = item
        extras = {}
        if "indices" in self.wanted:
            extras["indices"] = index
        if clean_item is not None:
            extras["clean_input"] = clean_item[0]
        if raw_item is not None and "strong_input" in self.wanted:
            extras["strong_input"] = self.strong_view(raw_item[0], self._generator(STRONG_VIEW_STREAM))
        if raw_item is not None and self.contrastive:
            rng = self._generator(CONTRASTIVE_VIEW_STREAM)
            query = self.contrastive_view(raw_item[0], rng)
            extras[self.contrastive[0]] = torch.stack([query, self.contrastive_view(raw_item[0], rng)])
        return views, target, extras

    def _generator(self, stream: int) -> np.random.Generator:
        """The stream's generator of this epoch in this process: made afresh when either changes
        (a persistent worker keeps the one it started with, and goes on drawing from it). The
        strong view's seeds are those it had before MoCo's views existed."""
        worker = get_worker_info()
        key = (self.epoch, 0 if worker is None else worker.id + 1)
        kept = self._generators.get(stream)
        if kept is None or kept[0] != key:
            kept = (key, np.random.default_rng([stream, self.seed, *key]))
            self._generators[stream] = kept
        return kept[1]


def _items(dataset: Dataset, indices: list[int]) -> list:
    getitems = getattr(dataset, "__getitems__", None)
    return getitems(indices) if getitems is not None else [dataset[i] for i in indices]
