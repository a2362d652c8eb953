"""Pseudo-Label (Lee, ICML 2013 workshop), iteration variant: each unlabeled sample whose most
likely class the student predicts with probability ≥ ``threshold`` counts as labeled with that
class (recomputed every step, no gradient through the choice), weighted by the ramped-up
consistency weight (α(t) of the paper). Each part of the loss is a mean over its own samples, as
Lee's Eq. 15 writes it: cross-entropy ÷ the minibatch's labeled samples, pseudo-label
cross-entropy ÷ its unlabeled ones (confident or not). The threshold is that of Oliver et al.
(NeurIPS 2018), the common re-implementation; Lee's paper has none."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mt_repro.core.types import NO_LABEL, Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.losses import chosen_cross_entropy
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class PseudoLabelOptions:
    threshold: float = 0.95


def pseudo_label_cost(logits: torch.Tensor, targets: torch.Tensor, threshold: float, *,
                      wait_free: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of the unlabeled samples against their confident arg-max class;
    returns it and how many samples were confident (on the device). ``wait_free``: as
    ``chosen_cross_entropy``'s."""
    with torch.no_grad():
        probabilities = F.softmax(logits, dim=1)
        confidence, guess = probabilities.max(dim=1)
        chosen = targets.eq(NO_LABEL) & confidence.ge(threshold)
    return chosen_cross_entropy(logits, guess, chosen, wait_free=wait_free), chosen.sum()


@register("pseudo_label")
class PseudoLabel(EMAMethod):
    Options = PseudoLabelOptions
    mean_over_parts = True  # Lee's Eq. 15: (1/n) Σ over the labeled + α(t) (1/n') Σ over the unlabeled

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        logits, ema_logits, class_loss, weight = self.common_part(batch, step)
        cost, confident = pseudo_label_cost(logits, targets, self.options.threshold, wait_free=self.wait_free)
        pseudo = weight * self.part_mean(cost, len(batch.unlabeled_rows), len(targets))
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": pseudo.detach(),
                  "pseudo_labeled": confident}
        return step_result(class_loss + pseudo, values, logits, ema_logits, targets)
