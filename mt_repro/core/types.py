"""Types and vocabularies shared between the layers: what the data pipeline hands a method, what
a method hands back to the engine."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import numpy as np
import torch

from mt_repro.core.errors import NonFiniteLoss

NO_LABEL = -1  # the target of an unlabeled sample (the original's NO_LABEL)

# Per-sample inputs a method may ask the training data for, besides the two views; they reach
# ``Method.losses`` in ``Batch.extras`` under these names.
SAMPLE_EXTRAS = {
    "indices": "each sample's position in the training set (per-sample memories)",
    "clean_input": "the image without augmentation or noise (the evaluation input)",
    "strong_input": "the image through the strong augmentation (the weak translation and flip, then "
                    "RandAugment + Cutout: mt_repro.data.randaugment), then the pipeline's "
                    "normalisation: FixMatch's and UDA's strong view",
    "moco_v1_views": "two views of the image through MoCo v1's augmentation (mt_repro.data.contrastive), "
                     "then the pipeline's normalisation: N x 2 x C x H x W, the query's first",
    "moco_v2_views": "the same with MoCo v2's augmentation (colour jitter with probability 0.8, blur)",
}


@dataclass
class Batch:
    """One training minibatch: the student's and the teacher's view of the same images (the
    same tensor where the noise lives inside the model), targets (``NO_LABEL`` for unlabeled
    samples) and the sample extras the method asked for."""

    student_input: torch.Tensor
    teacher_input: torch.Tensor
    targets: torch.Tensor
    extras: dict[str, torch.Tensor]
    # The rows of the labeled and of the unlabeled samples (int64 indices on the targets'
    # device), found by the engine on the host before the minibatch went to the device
    # (``HostCopy.rows``): selecting by them waits for nothing, where a boolean mask on a GPU makes the
    # host wait for the device to count its rows. None: found here from the targets when asked.
    rows: tuple[torch.Tensor, torch.Tensor] | None = None
    # The same minibatch's indices and labeled rows as the host knew them before the copy
    # (``HostCopy.of``): per-sample bookkeeping kept on the host reads them there, where reading
    # the device's tensors would make the host wait. None: read here from the tensors when asked.
    host: "HostCopy | None" = None

    def on_host(self) -> "HostCopy":
        if self.host is None:
            self.host = HostCopy.of(self.targets.cpu(), self.extras.get("indices"))
        return self.host

    @property
    def labeled_rows(self) -> torch.Tensor:
        return self._rows()[0]

    @property
    def unlabeled_rows(self) -> torch.Tensor:
        return self._rows()[1]

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rows is None:
            labeled = self.targets.ne(NO_LABEL)
            self.rows = (labeled.nonzero().flatten(), labeled.logical_not().nonzero().flatten())
        return self.rows


@dataclass(frozen=True)
class HostCopy:
    """A minibatch's samples as the host knows them, in numpy (so no tensor operation is
    dispatched): their indices in the training set (the ``indices`` extra; None without it) and
    whether each is labeled."""

    indices: np.ndarray | None
    labeled: np.ndarray

    @classmethod
    def of(cls, targets: torch.Tensor, indices: torch.Tensor | None = None) -> "HostCopy":
        """From host ``targets`` (and ``indices``, read from the device if they are there)."""
        return cls(None if indices is None else indices.cpu().numpy(), targets.numpy() != NO_LABEL)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of the labeled and of the unlabeled samples, on the host: for ``Batch.rows``."""
        return torch.from_numpy(np.flatnonzero(self.labeled)), torch.from_numpy(np.flatnonzero(~self.labeled))

    def size_to_hold(self) -> int:
        """The length a per-sample memory needs for these indices."""
        return int(self.indices.max()) + 1


@dataclass(frozen=True)
class StepContext:
    """Where a training step stands, as the run's schedule sees it: the integer epoch,
    the SGD steps already taken, and the consistency weight the schedule gives this step."""

    epoch: int
    global_step: int
    consistency_weight: float


Logged = Union[torch.Tensor, float, "OnHost"]


@dataclass
class StepResult:
    """What a method's step returns: the loss to minimise and what to log of the step.

    ``logged`` holds 0-d tensors where the step computed a value on its device, numbers where
    it knew one on the host. Reading a tensor waits for the device, so the engine chooses when:
    each step in faithful mode (as the original, which read its losses every step), once per
    training-log row in fast mode (``read_logged`` reads many steps with one wait). ``max_loss``:
    the loss above which the step counts as diverged (``check_loss``)."""

    loss: torch.Tensor
    logged: dict[str, Logged]
    labeled_minibatch_size: torch.Tensor | int
    max_loss: float = math.inf
    _values: dict[str, float] | None = field(default=None, repr=False, compare=False)

    @property
    def values(self) -> dict[str, float]:
        """``logged`` as numbers, with ``labeled_minibatch_size`` (read from the device once)."""
        if self._values is None:
            self._values = read_logged([self])[0]
        return self._values


LABELED_MINIBATCH_SIZE = "labeled_minibatch_size"


def check_loss(values: dict[str, float], max_loss: float) -> None:
    """Raise ``NonFiniteLoss`` for a step whose loss is not finite or above ``max_loss``."""
    loss = values["loss"]
    if not math.isfinite(loss) or loss > max_loss:
        raise NonFiniteLoss(loss, {name: value for name, value in values.items() if name != "loss"})


@dataclass(frozen=True)
class OnHost:
    """A logged value the host derives from ``tensor`` as it reads it, ``derive(value)``: in
    Python's float64 arithmetic, where the original computed it (an error from a precision, a
    weighted cost), since not every device computes in float64."""

    tensor: torch.Tensor
    derive: Callable[[float], float]


def read_logged(results: Sequence[StepResult]) -> list[dict[str, float]]:
    """The logged values of ``results`` as numbers, each step's ``labeled_minibatch_size`` last.
    The tensors of one device and dtype are stacked and copied to the host together: the host
    waits for each device once (the later copies find it idle), and each value is read exactly."""
    rows = [{**r.logged, LABELED_MINIBATCH_SIZE: r.labeled_minibatch_size} if r._values is None else r._values
            for r in results]
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[dict, str, torch.Tensor]]] = {}
    derived = []
    for row, result in zip(rows, results):
        if result._values is not None:   # read before
            continue
        for name, value in row.items():
            if isinstance(value, OnHost):
                derived.append((row, name, value.derive))
                value = value.tensor
            if isinstance(value, torch.Tensor):
                groups.setdefault((value.device, value.dtype), []).append((row, name, value))
            else:
                row[name] = float(value)
    for places in groups.values():
        numbers = torch.stack([value.detach().reshape(()) for _, _, value in places]).tolist()
        for (row, name, _), number in zip(places, numbers):
            row[name] = float(number)
    for row, name, derive in derived:
        row[name] = derive(row[name])
    for row, result in zip(rows, results):
        result._values = row
    return rows
