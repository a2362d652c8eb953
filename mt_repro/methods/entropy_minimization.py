"""Entropy minimization (Grandvalet & Bengio, NIPS 2005): besides the labels' cross-entropy, the
entropy of the network's prediction on each unlabeled image is penalised, which keeps the
decision boundary away from the unlabeled data. Their criterion sums both terms over the images,
the entropy × λ, so that a labeled and an unlabeled image weigh the same: here both sums are
÷ the minibatch, and λ is the run's consistency weight, ramped up as Mean Teacher's."""
from __future__ import annotations

from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.losses import prediction_entropy
from mt_repro.methods.registry import register


@register("entropy_minimization")
class EntropyMinimization(EMAMethod):
    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        logits, ema_logits, class_loss, weight = self.common_part(batch, step)
        rows = batch.unlabeled_rows
        entropy = weight * self.part_mean(prediction_entropy(logits[rows]), len(rows), len(targets))
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": entropy.detach()}
        return step_result(class_loss + entropy, values, logits, ema_logits, targets)
