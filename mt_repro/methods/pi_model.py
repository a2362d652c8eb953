"""Π-model (Laine & Aila, ICLR 2017): the consistency target is the student's own prediction on
the other augmented view, with gradients through both passes."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mt_repro.methods.base import EMAMethod
from mt_repro.methods.losses import softmax_mse_loss
from mt_repro.methods.mean_teacher import StepResult, step_result
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class PiOptions:
    pass  # the weight and its ramp-up are the run's consistency settings


@register("pi_model")
class PiModel(EMAMethod):
    Options = PiOptions

    def losses(self, student_input: torch.Tensor, teacher_input: torch.Tensor, targets: torch.Tensor,
               epoch: int) -> StepResult:
        logits, _ = self.student(student_input)
        other, _ = self.student(teacher_input)
        with torch.no_grad():
            ema_logits, _ = self.teacher(teacher_input)
        class_loss = self.class_loss(logits, targets)
        weight = self.weight(epoch)
        # softmax_mse_loss sums over classes and samples; both sides keep their gradients
        consistency = weight * softmax_mse_loss(logits, other) / len(targets)
        values = {"class_loss": class_loss.item(), "cons_weight": weight, "cons_loss": consistency.item()}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)
