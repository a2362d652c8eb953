"""Π-model (Laine & Aila, ICLR 2017): the consistency target is the student's own prediction on
another noisy pass, with gradients through both passes. Its formulation follows the run's recipe:

* the PyTorch recipe: Laine & Aila's (their ``train.py``): the student on each of the two
  augmented views, the cross-entropy ÷ the minibatch, ``weight · Σ(softmax(a) − softmax(b))² /
  classes / minibatch``; with ``scale_by_labeled_fraction`` (their default) the weight × M/N,
  the fraction of labeled training images;
* the TensorFlow recipe: the original TensorFlow half's (``model.py`` with ``ema_consistency``
  false): Mean Teacher's costs (``mt_repro.methods.mean_teacher.losses_as_model_py``) against a
  second pass of the student with the teacher's dropout rate that, like the original's separate
  "secondary" tower, leaves the student's evaluation means alone; no M/N scale unless
  ``scale_by_labeled_fraction`` asks for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, LabeledFraction, dropout_rate, frozen_statistics, step_result
from mt_repro.methods.losses import softmax_mse_loss
from mt_repro.methods.mean_teacher import losses_as_model_py
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class PiOptions:
    # The weight (the run's consistency weight) × M/N; None: the formulation's own choice
    # (Laine & Aila's: yes; the TensorFlow half's: no).
    scale_by_labeled_fraction: bool | None = None


@register("pi_model")
class PiModel(EMAMethod):
    Options = PiOptions
    sample_extras = ("indices",)  # to count M/N (the draws of the run are unchanged)

    def __init__(self, config, student, teacher, options=None, *, build_network=None):
        super().__init__(config, student, teacher, options, build_network=build_network)
        self.labeled_fraction = LabeledFraction()
        scale = self.options.scale_by_labeled_fraction
        self.scaled = (config.recipe.costs == "pytorch") if scale is None else scale

    @classmethod
    def check_config(cls, config) -> None:
        if config.recipe.costs == "tensorflow" and config.consistency_trust > 0:
            raise BadInput("the Pi model needs consistency_trust 0 (its KL costs give the second pass no gradient)")

    def weight(self, step: StepContext, batch: Batch) -> float:
        weight = step.consistency_weight
        if self.scaled:
            indices = batch.extras.get("indices")
            if indices is None:
                raise ValueError("pi_model with scale_by_labeled_fraction needs the samples' indices")
            self.labeled_fraction.record(batch)
            weight *= self.labeled_fraction.value()
        return weight

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        if self.config.recipe.costs == "tensorflow":
            return losses_as_model_py(self.config, self.student, self.teacher, batch, self.weight(step, batch),
                                      target=self.secondary_pass)
        return self.losses_as_laine_and_aila(batch, step)

    def secondary_pass(self, batch: Batch, teacher_logit: torch.Tensor) -> torch.Tensor:
        """The student once more, with the teacher's dropout rate, its evaluation means untouched."""
        with dropout_rate(self.student, self.config.teacher_dropout_probability), frozen_statistics(self.student):
            target, _ = self.student(batch.teacher_input)
        return target

    def losses_as_laine_and_aila(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        logits, _ = self.student(batch.student_input)
        other, _ = self.student(batch.teacher_input)
        ema_logits = self.logged_teacher_logits(batch.teacher_input)   # only for the log
        class_loss = self.class_loss(logits, targets)
        weight = self.weight(step, batch)
        # softmax_mse_loss sums over classes and samples; both sides keep their gradients
        consistency = weight * softmax_mse_loss(logits, other) / len(targets)
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": consistency.detach()}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)

    def state_dict(self) -> dict[str, Any]:
        return {"labeled_fraction": self.labeled_fraction.state_dict()} if self.scaled else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.labeled_fraction.load_state_dict(state["labeled_fraction"])
