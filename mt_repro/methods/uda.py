"""Unsupervised Data Augmentation (Xie et al., NeurIPS 2020), for images. Per step, with the
minibatch's weak view and the unlabeled images' strong view (``strong_input``: RandAugment and
Cutout, ``mt_repro.data.randaugment``), in one pass of the student as FixMatch's
(``mt_repro.methods.fixmatch``):

* target of each unlabeled image: the student's prediction on its weak view sharpened with
  temperature ``temperature`` (0.4), ``softmax(z / T)`` of the detached logits (no gradient);
* confidence mask: the unsharpened softmax's largest probability reaches ``threshold`` (0.8);
* loss: cross-entropy averaged over the labeled images, plus the run's consistency weight (λ_u)
  × KL(target ‖ the strong view's softmax), summed over the confident images and averaged over
  all the unlabeled ones. The KL is the paper's; USB's cross-entropy with the same soft target
  differs from it by the target's entropy, a constant, so the gradients are the same.

USB's UDA (``semilearn/algorithms/uda/uda.py``) takes the probabilities with ``softmax=False``
and so never sharpens: its ``T`` = 0.4 is read and unused. Here the target is sharpened, as the
paper and its code do. Training Signal Annealing is off, USB's default (``tsa_schedule:
none``), and not implemented. The EMA teacher is reported, as USB evaluates the EMA model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mt_repro.core.errors import BadInput
from mt_repro.core.types import NO_LABEL, Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.fixmatch import (STRONG, confident_guess, refuse_without_strong_view,
                                      weak_and_strong_logits)
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class UDAOptions:
    temperature: float = 0.4
    threshold: float = 0.8

    def check(self) -> None:
        if self.temperature <= 0:
            raise BadInput(f"uda: temperature must be positive (got {self.temperature})")
        if not 0 <= self.threshold <= 1:
            raise BadInput(f"uda: threshold must be in [0, 1] (got {self.threshold})")


def sharpened_target(weak_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(z / T)`` of the detached logits: the soft target, without gradient."""
    with torch.no_grad():
        return F.softmax(weak_logits.detach() / temperature, dim=1)


def uda_cost(weak_logits: torch.Tensor, strong_logits: torch.Tensor, temperature: float,
             threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed KL(sharpened weak-view target ‖ strong-view softmax) over the confident rows,
    the confidence mask) over the rows of the unlabeled images."""
    _, _, mask = confident_guess(weak_logits, threshold)
    target = sharpened_target(weak_logits, temperature)
    costs = F.kl_div(F.log_softmax(strong_logits, dim=1), target, reduction="none").sum(dim=1)
    return (costs * mask).sum(), mask


@register("uda")
class UDA(EMAMethod):
    Options = UDAOptions
    sample_extras = (STRONG,)
    reported_model = "teacher"  # USB evaluates the EMA of the weights
    mean_over_parts = True      # the labeled mean, and the masked cost's mean over the unlabeled images

    @classmethod
    def check_config(cls, config) -> None:
        refuse_without_strong_view(config, cls.method_name)

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        unlabeled = targets.eq(NO_LABEL)
        logits, strong_logits = weak_and_strong_logits(self.student, batch)
        with torch.no_grad():
            ema_logits, _ = self.teacher(batch.teacher_input)
        class_loss = self.class_loss(logits, targets)
        cost, mask = uda_cost(logits[unlabeled], strong_logits, self.options.temperature, self.options.threshold)
        weight = step.consistency_weight
        consistency = weight * self.part_mean(cost, int(unlabeled.sum()), len(targets))
        values = {"class_loss": class_loss.item(), "cons_weight": weight, "cons_loss": consistency.item(),
                  "confident": float(mask.float().mean()) if len(mask) else 0.0}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)
