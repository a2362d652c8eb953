"""Interpolation Consistency Training (Verma et al., IJCAI 2019): the student's prediction on a
mixup of two unlabeled images should equal the same mixup of the EMA teacher's predictions,
``λ ~ Beta(α, α)`` once per step, the partner of each image a random permutation of the batch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mt_repro.methods.base import EMAMethod
from mt_repro.methods.losses import NO_LABEL
from mt_repro.methods.mean_teacher import StepResult, step_result
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class ICTOptions:
    alpha: float = 1.0


def ict_cost(student, teacher_probabilities: torch.Tensor, unlabeled: torch.Tensor, lam: float,
             permutation: torch.Tensor) -> torch.Tensor:
    """Summed squared difference (÷ classes) between the student's softmax on the mixed images
    and the mixed teacher probabilities."""
    mixed = lam * unlabeled + (1 - lam) * unlabeled[permutation]
    target = lam * teacher_probabilities + (1 - lam) * teacher_probabilities[permutation]
    logits, _ = student(mixed)
    return F.mse_loss(F.softmax(logits, dim=1), target, reduction="sum") / logits.size(1)


@register("ict")
class ICT(EMAMethod):
    Options = ICTOptions
    reported_model = "teacher"  # the authors' code reports its EMA model's test error

    def losses(self, student_input: torch.Tensor, teacher_input: torch.Tensor, targets: torch.Tensor,
               epoch: int) -> StepResult:
        logits, ema_logits, class_loss, weight = self.common_part(student_input, teacher_input, targets, epoch)
        unlabeled = targets.eq(NO_LABEL)
        cost = logits.sum() * 0.0
        if unlabeled.sum() > 1:
            lam = float(np.random.beta(self.options.alpha, self.options.alpha))
            permutation = torch.randperm(int(unlabeled.sum()), device=logits.device)
            cost = ict_cost(self.student, F.softmax(ema_logits[unlabeled], dim=1), teacher_input[unlabeled],
                            lam, permutation)
        consistency = weight * cost / len(targets)
        values = {"class_loss": class_loss.item(), "cons_weight": weight, "cons_loss": consistency.item()}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)
