"""Entropy minimization (Grandvalet & Bengio, NIPS 2005): besides the labels' cross-entropy, the
entropy of the network's prediction on each unlabeled image is penalised, which keeps the
decision boundary away from the unlabeled data. Their criterion sums both terms over the images,
the entropy × λ, so that a labeled and an unlabeled image weigh the same: here both sums are
÷ the minibatch, and λ is the run's consistency weight, ramped up as Mean Teacher's."""
from __future__ import annotations

import torch

from mt_repro.methods.base import EMAMethod
from mt_repro.methods.losses import NO_LABEL, prediction_entropy
from mt_repro.methods.mean_teacher import StepResult, step_result
from mt_repro.methods.registry import register


@register("entropy_minimization")
class EntropyMinimization(EMAMethod):
    def losses(self, student_input: torch.Tensor, teacher_input: torch.Tensor, targets: torch.Tensor,
               epoch: int) -> StepResult:
        logits, ema_logits, class_loss, weight = self.common_part(student_input, teacher_input, targets, epoch)
        unlabeled = targets.eq(NO_LABEL)
        entropy = weight * self.part_mean(prediction_entropy(logits[unlabeled]), int(unlabeled.sum()), len(targets))
        values = {"class_loss": class_loss.item(), "cons_weight": weight, "cons_loss": entropy.item()}
        return step_result(class_loss + entropy, values, logits, ema_logits, targets)
