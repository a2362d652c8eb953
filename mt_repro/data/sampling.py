"""The two-stream minibatch sampler of the original (``TwoStreamBatchSampler`` in ``data.py``).

Each minibatch is ``batch_size - labeled_batch_size`` unlabeled indices followed by
``labeled_batch_size`` labeled ones. An epoch is one pass over the unlabeled indices (one
numpy permutation, partial chunk dropped); the labeled indices are cycled through fresh
permutations as often as needed. The permutations are drawn lazily, at the moment the stream
needs them, because the augmentations draw from the same numpy generator in between.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import numpy as np
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


def _chunks(values, size: int):
    """Consecutive full chunks of ``size`` items; a trailing partial chunk is dropped."""
    iterator = iter(values)
    return zip(*[iterator] * size)
