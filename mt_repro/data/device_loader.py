"""Fast mode's training loader: the whole training set on the device, minibatches as gathers.

The faithful loader decodes and augments every image in Python, one at a time. For the small
image datasets (CIFAR-10: 150 MB as uint8; the digits) fast mode instead keeps all training
images in one tensor on the training device, and for each minibatch of indices from the *same*
batch sampler as faithful mode (so the same minibatch composition: two-stream, labeled only or
uniform) gathers the images and augments them twice with ``BatchAugment``, once per view.
Nothing is left for worker processes to do, so the model never waits for data.

It yields what the faithful loader yields: ``((student_view, teacher_view), targets)``, plus a
dict of the sample extras the method asked for (``indices``, ``clean_input``).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mt_repro.data.batch_augment import BatchAugment, epoch_generator, to_device
from mt_repro.core.errors import BadInput


def images_in_memory(dataset: Dataset) -> np.ndarray:
    """All images of ``dataset`` as one ``N x H x W x C`` array, in the dataset's index order:
    the arrays of a dataset held in memory (its ``in_memory_images()``: CIFAR-10 batches, the
    digits), or a by-image tree decoded once."""
    if hasattr(dataset, "in_memory_images"):
        return dataset.in_memory_images()
    samples = getattr(dataset, "samples", None)
    loader = getattr(dataset, "loader", None)
    if samples is None or loader is None:
        raise BadInput(f"fast mode cannot hold {type(dataset).__name__} in memory")
    images = [np.asarray(loader(path)) for path, _ in samples]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise BadInput(f"fast mode needs images of one size; found {len(shapes)} sizes "
                       f"({', '.join(map(str, sorted(shapes)[:3]))}, …)")
    return np.stack(images)


class DeviceBatches:
    """Iterate like a ``DataLoader`` over ``batch_sampler``'s minibatches of ``images`` (on
    ``device``), each augmented twice by ``augment`` with parameters from ``epoch_generator``.

    ``set_epoch(e)`` before iterating epoch ``e`` (as for ``DistributedSampler``); the batch
    sampler draws its permutations as in faithful mode.
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int], batch_sampler: Iterable[list[int]],
                 augment: BatchAugment, device: torch.device, *, seed: int | None,
                 extras: Sequence[str] = ()):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        # on the host, as a DataLoader's: the engine finds the labeled rows there (core.types.HostCopy)
        self.targets = torch.as_tensor(list(targets), dtype=torch.int64)
        self.batch_sampler = batch_sampler
        self.augment = augment
        self.seed = seed
        self.extras = tuple(extras)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple]:
        generator = epoch_generator(self.seed, self.epoch)
        _, height, width, channels = self.images.shape
        for batch in self.batch_sampler:
            index = torch.as_tensor(batch, dtype=torch.int64)
            on_device = to_device(index, self.images.device)
            raw = self.images[on_device]
            views = tuple(self.augment(raw, self.augment.draw(len(batch), channels, height, width, generator))
                          for _ in range(2))  # the student's view, then the teacher's
            item = (views, self.targets[index])
            if self.extras:
                extras = {}
                if "indices" in self.extras:
                    extras["indices"] = index
                if "clean_input" in self.extras:
                    extras["clean_input"] = self.augment.normalise(raw)
                item = (*item, extras)
            yield item
