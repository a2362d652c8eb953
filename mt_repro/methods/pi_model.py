"""Π-model (Laine & Aila, ICLR 2017): the consistency target is the student's own prediction on
the other augmented view, with gradients through both passes. With
``scale_by_labeled_fraction`` the weight is multiplied by M/N, the fraction of labeled training
images, as Laine & Aila's ``train.py`` scaled its maximum."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mt_repro.methods.base import EMAMethod, LabeledFraction
from mt_repro.methods.losses import NO_LABEL, softmax_mse_loss
from mt_repro.methods.mean_teacher import StepResult, step_result
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class PiOptions:
    scale_by_labeled_fraction: bool = True  # the weight itself is the run's `consistency`


@register("pi_model")
class PiModel(EMAMethod):
    Options = PiOptions
    sample_extras = ("indices",)  # to count M/N (the draws of the run are unchanged)

    def __init__(self, config, student, teacher, options=None):
        super().__init__(config, student, teacher, options)
        self.labeled_fraction = LabeledFraction()

    def losses(self, student_input: torch.Tensor, teacher_input: torch.Tensor, targets: torch.Tensor,
               epoch: int, indices: torch.Tensor | None = None) -> StepResult:
        logits, _ = self.student(student_input)
        other, _ = self.student(teacher_input)
        with torch.no_grad():
            ema_logits, _ = self.teacher(teacher_input)
        class_loss = self.class_loss(logits, targets)
        weight = self.weight(epoch)
        if self.options.scale_by_labeled_fraction:
            if indices is None:
                raise ValueError("pi_model with scale_by_labeled_fraction needs the samples' indices")
            self.labeled_fraction.record(indices, targets.ne(NO_LABEL))
            weight *= self.labeled_fraction.value()
        # softmax_mse_loss sums over classes and samples; both sides keep their gradients
        consistency = weight * softmax_mse_loss(logits, other) / len(targets)
        values = {"class_loss": class_loss.item(), "cons_weight": weight, "cons_loss": consistency.item()}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)

    def state_dict(self) -> dict[str, Any]:
        return {"labeled_fraction": self.labeled_fraction.state_dict()} if self.options.scale_by_labeled_fraction else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.labeled_fraction.load_state_dict(state["labeled_fraction"])
