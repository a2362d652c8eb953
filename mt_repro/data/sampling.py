"""How minibatches are drawn: the original's two-stream sampler, and USB's epoch-seeded streams.

``TwoStreamBatchSampler`` is the original's (``TwoStreamBatchSampler`` in ``data.py``). Each
minibatch is ``batch_size - labeled_batch_size`` unlabeled indices followed by
``labeled_batch_size`` labeled ones. An epoch is one pass over the unlabeled indices (one numpy
permutation, partial chunk dropped); the labeled indices are cycled through fresh permutations
as often as needed. The permutations are drawn lazily, at the moment the stream
needs them, because the augmentations draw from the same numpy generator in between.

``EpochSeededBatchSampler`` is USB's (``DistributedSampler`` of
``semilearn/datasets/samplers/sampler.py``, one per loader, as ``get_data_loader`` of
``semilearn/core/utils/build.py`` builds them). An epoch is a fixed number of steps, not a pass:
each stream (the unlabeled images, the labeled ones) is that many minibatches' places filled
from whole permutations of its images one after the other, then part of one more, so a
minibatch may span two passes and hold an image twice. The permutations come from a torch
generator seeded with the epoch number alone (``set_epoch``, as USB's ``DistSamplerSeedHook``
calls it), not with the run's seed and not from any global generator: the same epoch gives the
same positions in every run, and a resumed run needs no sampler state.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class TwoStreamBatchSampler(Sampler[list[int]]):
    """``labeled_may_repeat``: fewer labeled samples than labeled places are allowed (a minibatch
    then holds some twice, as USB's samplers give them); the original refused that."""

    def __init__(self, unlabeled_indices: Sequence[int], labeled_indices: Sequence[int],
                 batch_size: int, labeled_batch_size: int, labeled_may_repeat: bool = False):
        self.unlabeled_indices = list(unlabeled_indices)
        self.labeled_indices = list(labeled_indices)
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = batch_size - labeled_batch_size
        if not 0 < self.unlabeled_batch_size <= len(self.unlabeled_indices):
            raise ValueError(f"{len(self.unlabeled_indices)} unlabeled samples cannot fill "
                             f"{self.unlabeled_batch_size} unlabeled places per minibatch")
        enough = bool(self.labeled_indices) if labeled_may_repeat else labeled_batch_size <= len(self.labeled_indices)
        if not (0 < labeled_batch_size and enough):
            raise ValueError(f"{len(self.labeled_indices)} labeled samples cannot fill "
                             f"{labeled_batch_size} labeled places per minibatch")

    def __iter__(self) -> Iterator[list[int]]:
        unlabeled = np.random.permutation(self.unlabeled_indices)
        labeled = itertools.chain.from_iterable(self._reshuffled_forever(self.labeled_indices))
        pairs = zip(_chunks(unlabeled, self.unlabeled_batch_size),
                    _chunks(labeled, self.labeled_batch_size))
        return (list(u) + list(l) for u, l in pairs)

    def __len__(self) -> int:
        return len(self.unlabeled_indices) // self.unlabeled_batch_size

    @staticmethod
    def _reshuffled_forever(indices: list[int]):
        while True:
            yield np.random.permutation(indices)


class EpochSeededBatchSampler(Sampler[list[int]]):
    """``steps_per_epoch`` minibatches an epoch, each the concatenation of one part per stream:
    ``streams`` is ``(indices, places per minibatch)`` in minibatch order (the unlabeled part
    first, as ``TwoStreamBatchSampler`` puts it)."""

    def __init__(self, streams: Sequence[tuple[Sequence[int], int]], steps_per_epoch: int):
        if steps_per_epoch <= 0:
            raise ValueError(f"an epoch needs at least one step, got {steps_per_epoch}")
        self.streams = [(np.asarray(indices, dtype=np.int64), places) for indices, places in streams]
        for indices, places in self.streams:
            if places <= 0 or not len(indices):
                raise ValueError(f"{len(indices)} samples cannot fill {places} places per minibatch")
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        parts = [indices[epoch_seeded_stream(len(indices), self.steps_per_epoch * places, self.epoch)]
                 .reshape(self.steps_per_epoch, places) for indices, places in self.streams]
        return (np.concatenate(rows).tolist() for rows in zip(*parts))

    def __len__(self) -> int:
        return self.steps_per_epoch


def epoch_seeded_stream(count: int, length: int, epoch: int) -> np.ndarray:
    """``length`` positions into ``count`` items, as USB's ``DistributedSampler.__iter__`` draws
    them in one process: ``length // count`` permutations of a generator seeded with ``epoch``,
    then the first ``length % count`` of one more (drawn even when that is none of it)."""
    generator = torch.Generator().manual_seed(epoch)
    passes = [torch.randperm(count, generator=generator) for _ in range(length // count)]
    passes.append(torch.randperm(count, generator=generator)[:length % count])
    return torch.cat(passes).numpy()


def _chunks(values, size: int):
    """Consecutive full chunks of ``size`` items; a trailing partial chunk is dropped."""
    iterator = iter(values)
    return zip(*[iterator] * size)
