"""The TensorFlow recipe's training data: the raw arrays of an original TensorFlow split, fed to
the network one minibatch at a time with no augmentation in the pipeline (the noise lives inside
the model), from the original's endless minibatch streams (``tensorflow/mean_teacher/
minibatching.py``).

The streams reshuffle whenever they run out, mid-minibatch, and never restart, so the engine's
epochs are a counting convention here: an epoch is one pass of the stream that covers the most
images (the ``steps_per_epoch`` below), and a run may be interrupted and resumed at any step,
as the streams' positions and generator are part of its checkpoints.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from mt_repro.core.errors import BadInput
from mt_repro.core.rng import load_random_state, random_state_dict
from mt_repro.core.types import NO_LABEL, Batch
from mt_repro.data.registry import TFArrays, get_dataset


class EternalBatches:
    """Index batches from endless reshuffles of ``range(n)`` (the original's
    ``eternal_random_index_batches``); its state is part of a checkpoint."""

    def __init__(self, n: int, batch_size: int, rng: np.random.RandomState):
        if n <= 0 or batch_size <= 0:
            raise BadInput(f"cannot draw minibatches of {batch_size} from {n} images")
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.order = np.zeros(0, np.int64)
        self.position = 0

    def next(self) -> np.ndarray:
        taken = []
        needed = self.batch_size
        while needed:
            if self.position == len(self.order):
                self.order = np.arange(self.n)
                self.rng.shuffle(self.order)
                self.position = 0
            chunk = self.order[self.position:self.position + needed]
            self.position += len(chunk)
            needed -= len(chunk)
            taken.append(chunk)
        return np.concatenate(taken)

    @property
    def steps_per_pass(self) -> int:
        return max(1, self.n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"order": torch.from_numpy(self.order.copy()), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.position = state["order"].numpy().astype(np.int64), int(state["position"])


class Minibatches:
    """The original's three minibatch compositions (``minibatching.training_batches``):
    ``'vary'``: every image, labeled or not, shuffled together; ``batch_size``: labeled images
    only; ``k`` < batch size: ``k`` labeled images plus ``batch_size - k`` drawn from all images
    with their labels hidden."""

    def __init__(self, labels: np.ndarray, n_labeled_per_batch: int | str, batch_size: int,
                 rng: np.random.RandomState):
        self.labels = labels
        self.labeled = np.flatnonzero(labels != NO_LABEL)
        per_batch = n_labeled_per_batch
        if per_batch != "vary" and len(self.labeled) == 0:
            raise BadInput("this minibatch mode needs labeled images, and the split has none")
        self.mode = "vary" if per_batch == "vary" else ("labeled" if per_batch == batch_size else "mixed")
        if self.mode == "vary":
            self.streams = [EternalBatches(len(labels), batch_size, rng)]
        elif self.mode == "labeled":
            self.streams = [EternalBatches(len(self.labeled), batch_size, rng)]
        else:
            self.streams = [EternalBatches(len(self.labeled), per_batch, rng),
                            EternalBatches(len(labels), batch_size - per_batch, rng)]

    @property
    def steps_per_epoch(self) -> int:
        """One pass of the stream over all images (the labeled images' with labeled minibatches)."""
        return self.streams[-1].steps_per_pass

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """(image indices, targets) of the next minibatch."""
        if self.mode == "vary":
            index = self.streams[0].next()
            return index, self.labels[index]
        labeled = self.labeled[self.streams[0].next()]
        if self.mode == "labeled":
            return labeled, self.labels[labeled]
        unlabeled = self.streams[1].next()
        return (np.concatenate([labeled, unlabeled]),
                np.concatenate([self.labels[labeled], np.full(len(unlabeled), NO_LABEL)]))

    def state_dict(self) -> list[dict[str, Any]]:
        return [s.state_dict() for s in self.streams]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for stream, state in zip(self.streams, states):
            stream.load_state_dict(state)


def _tensor(images: np.ndarray) -> torch.Tensor:
    """``N x H x W x C`` to ``N x C x H x W``, keeping uint8 pixels uint8 (else float32)."""
    images = np.asarray(images)
    dtype = np.uint8 if images.dtype == np.uint8 else np.float32
    return torch.from_numpy(np.ascontiguousarray(images.astype(dtype, copy=False).transpose(0, 3, 1, 2)))


class ArrayData:
    """A split's arrays and its minibatch stream, minibatches as float32 tensors. Both views of
    a minibatch are the same tensor: the network draws its own noise on every pass."""

    def __init__(self, arrays: TFArrays, num_classes: int, n_labeled_per_batch: int | str, batch_size: int,
                 seed: int, extras: Sequence[str] = ()):
        self.train_x, self.train_y = _tensor(arrays.train_x), np.asarray(arrays.train_y, np.int64)
        self.eval_x, self.eval_y = _tensor(arrays.eval_x), np.asarray(arrays.eval_y, np.int64)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.rng = np.random.RandomState(seed)
        self.batches = Minibatches(self.train_y, n_labeled_per_batch, batch_size, self.rng)
        self.extras = tuple(extras)

    @property
    def n_labeled(self) -> int:
        return int((self.train_y != NO_LABEL).sum())

    @property
    def n_unlabeled(self) -> int:
        return len(self.train_y) - self.n_labeled

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    def _images(self, x: torch.Tensor, index) -> torch.Tensor:
        return x[index].float()

    def init_batch(self) -> torch.Tensor:
        """The first minibatch of the stream: the data-dependent initialisation's (as the
        original's initialisation run, it is not trained on)."""
        index, _ = self.batches.next()
        return self._images(self.train_x, index)

    def epoch(self, epoch: int, start: int = 0, steps: int | None = None) -> Iterator[Batch]:
        """``steps`` minibatches (default: a whole epoch less ``start``) from the stream."""
        for _ in range((self.steps_per_epoch if steps is None else steps) - start):
            index, targets = self.batches.next()
            x = self._images(self.train_x, index)
            extras = {}
            if "indices" in self.extras:
                extras["indices"] = torch.from_numpy(index)
            if "clean_input" in self.extras:
                extras["clean_input"] = x  # the network in evaluation mode adds no noise
            yield Batch(x, x, torch.from_numpy(targets), extras)

    def evaluation(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.eval_y), self.batch_size):
            yield (self._images(self.eval_x, slice(start, start + self.batch_size)),
                   torch.from_numpy(self.eval_y[start:start + self.batch_size]))

    def state_dict(self) -> dict[str, Any]:
        return {"streams": self.batches.state_dict(), "numpy": random_state_dict(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["streams"])
        load_random_state(self.rng, state["numpy"])


def training_data(config, extras: Sequence[str] = ()) -> ArrayData:
    """The arrays and minibatch stream of a ``ConvNetConfig``'s split."""
    spec = get_dataset(config.dataset)
    if spec.tf_arrays is None:
        raise BadInput(f"{spec.name} has no ConvNet (TensorFlow-recipe) input: train it with the "
                       "ResNet recipe's settings")
    if config.n_extra_unlabeled and not spec.has_extra:
        raise BadInput(f"only datasets with extra images (SVHN) add extra unlabeled images; {spec.name} has none")
    root = spec.root(config.data_dir)
    if root is None:
        raise BadInput(f"{spec.name} needs --data: {spec.reads}")
    n_labeled = None if config.n_labeled == "all" else int(config.n_labeled)
    arrays = spec.tf_arrays(root, n_labeled, config.data_seed, config.test_phase, config.n_extra_unlabeled)
    data = ArrayData(arrays, spec.num_classes, config.n_labeled_per_batch, config.batch_size, config.run_seed,
                     extras)
    if len(data.eval_y) == 0:
        raise BadInput(f"no evaluation images in {root}")
    return data
