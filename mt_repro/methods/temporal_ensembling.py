"""Temporal Ensembling (Laine & Aila, ICLR 2017): the consistency target of each training sample
is an exponential moving average of the network's predictions on it over past epochs,
``Z ← αZ + (1 − α)z`` once per epoch, divided by ``1 − α^n`` (the startup bias correction;
``n`` the number of updates so far). The target stays fixed during an epoch.

As in Laine & Aila's ``train.py``: ``z`` is the prediction (softmax) recorded while training
on the sample (its last one of the epoch when it is seen several times), the cost is the
squared difference ÷ classes ÷ minibatch, and the weight's maximum is scaled by the fraction of
labeled training images M/N. A sample without target yet (the first epoch) adds no cost.
Where their code decays the ensemble of a sample the epoch's batches left out towards zero,
here it is left as it was (every sample is seen each epoch in their runs, so the two agree).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, LabeledFraction, step_result
from mt_repro.methods.losses import sum_of_chosen_rows
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class TemporalEnsemblingOptions:
    prediction_decay: float = 0.6          # α
    scale_by_labeled_fraction: bool = True  # weight × M/N, as Laine & Aila's code

    def check(self) -> None:
        if not 0 <= self.prediction_decay < 1:
            raise BadInput(f"temporal_ensembling: prediction_decay must be in [0, 1), got {self.prediction_decay}")


class PredictionEnsemble:
    """Per-sample ensemble predictions ``Z``, their update counts and the current epoch's
    predictions; grows to the largest sample index it is given. Kept on the host, or with
    ``on_training_device`` on the device of the predictions recorded (fast mode: a step then
    copies nothing back)."""

    def __init__(self, decay: float, on_training_device: bool = False):
        self.decay = decay
        self.on_training_device = on_training_device
        self.ensemble = torch.zeros(0, 0)
        self.updates = torch.zeros(0, dtype=torch.long)
        self.epoch_predictions = torch.zeros(0, 0)
        self.seen = torch.zeros(0, dtype=torch.bool)

    def _grow(self, size: int, classes: int, device: torch.device) -> None:
        if self.updates.device != device:   # (a checkpoint's memories are loaded on the host)
            for name in ("ensemble", "updates", "epoch_predictions", "seen"):
                setattr(self, name, getattr(self, name).to(device))
        if size <= len(self.updates) and classes == self.ensemble.size(1):
            return
        old = len(self.updates)
        size = max(size, old)

        def grown(tensor: torch.Tensor, *shape: int) -> torch.Tensor:
            bigger = torch.zeros(*shape, dtype=tensor.dtype, device=device)
            if old:
                bigger[:old] = tensor
            return bigger

        if old and classes != self.ensemble.size(1):
            raise ValueError(f"{classes} classes, the ensemble has {self.ensemble.size(1)}")
        self.ensemble = grown(self.ensemble, size, classes)
        self.epoch_predictions = grown(self.epoch_predictions, size, classes)
        self.updates, self.seen = grown(self.updates, size), grown(self.seen, size)

    def record(self, indices: torch.Tensor, probabilities: torch.Tensor, size: int | None = None) -> None:
        """Remember this step's predictions; a sample seen twice keeps the later one. ``size``:
        the length that holds ``indices`` as the host knows it (None: read from them)."""
        device = probabilities.device if self.on_training_device else torch.device("cpu")
        indices = indices.to(device)
        self._grow(int(indices.max()) + 1 if size is None else size, probabilities.size(1), device)
        self.epoch_predictions[indices] = probabilities.detach().float().to(device)
        self.seen[indices] = True

    def targets(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bias-corrected ensemble predictions, mask of the samples that have one) of
        samples already ``record``-ed, where the memories are."""
        indices = indices.to(self.updates.device)
        n = self.updates[indices]
        has_target = n > 0
        correction = 1 - self.decay ** n.double().clamp(min=1)
        return (self.ensemble[indices].double() / correction[:, None]).float(), has_target

    def end_epoch(self) -> None:
        seen = self.seen   # selected with where, not a mask: the same values, no rows to count
        updated = self.decay * self.ensemble + (1 - self.decay) * self.epoch_predictions
        self.ensemble = torch.where(seen[:, None], updated, self.ensemble)
        self.updates += seen
        self.seen = torch.zeros_like(self.seen)

    def state_dict(self) -> dict[str, Any]:
        return {"ensemble": self.ensemble, "updates": self.updates,
                "epoch_predictions": self.epoch_predictions, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble = state["ensemble"].clone()
        self.updates = state["updates"].clone()
        # the predictions of the epoch under way (a checkpoint inside an epoch: the ConvNet runs')
        if "epoch_predictions" in state:
            self.epoch_predictions, self.seen = state["epoch_predictions"].clone(), state["seen"].clone()
        else:
            self.epoch_predictions = torch.zeros_like(self.ensemble)
            self.seen = torch.zeros_like(self.updates, dtype=torch.bool)


@register("temporal_ensembling")
class TemporalEnsembling(EMAMethod):
    Options = TemporalEnsemblingOptions
    sample_extras = ("indices",)

    def __init__(self, config, student, teacher, options=None, *, build_network=None):
        super().__init__(config, student, teacher, options, build_network=build_network)
        self.predictions = PredictionEnsemble(self.options.prediction_decay, on_training_device=self.wait_free)
        self.labeled_fraction = LabeledFraction()

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets, indices = batch.targets, batch.extras.get("indices")
        if indices is None:
            raise ValueError("temporal_ensembling needs the samples' indices")
        logits, ema_logits, class_loss, weight = self.common_part(batch, step)
        probabilities = F.softmax(logits, dim=1)
        self.predictions.record(indices, probabilities, size=batch.on_host().size_to_hold())
        self.labeled_fraction.record(batch)
        ensemble, has_target = self.predictions.targets(indices)
        if self.options.scale_by_labeled_fraction:
            weight *= self.labeled_fraction.value()
        mask = has_target.to(logits.device)
        squared = (probabilities - ensemble.to(logits.device)) ** 2
        cost = sum_of_chosen_rows(squared, mask, wait_free=self.wait_free) / logits.size(1)
        consistency = weight * cost / len(targets)
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": consistency.detach()}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)

    def end_of_epoch(self, epochs_done: int) -> None:
        self.predictions.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"predictions": self.predictions.state_dict(), "labeled_fraction": self.labeled_fraction.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.predictions.load_state_dict(state["predictions"])
            self.labeled_fraction.load_state_dict(state["labeled_fraction"])
