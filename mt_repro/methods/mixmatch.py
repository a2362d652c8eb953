"""MixMatch (Berthelot et al., NeurIPS 2019). Per step, with the minibatch's two augmented views
(K = 2 augmentations of each unlabeled image; the labeled images use the student's view):

* label guess of each unlabeled image: the network's softmax averaged over its two views, then
  sharpened, ``q^(1/T) / Σ q^(1/T)`` (no gradient);
* mixup of every labeled and unlabeled image (targets: labels one-hot, guesses) with a shuffled
  partner drawn from all of them, ``λ ~ Beta(α, α)``, ``λ ← max(λ, 1 − λ)`` so that each mix
  stays closer to its own image;
* cost: cross-entropy with the mixed targets, averaged over the labeled mixes, plus the
  ramped-up weight (λ_U) × squared difference of probabilities ÷ classes, averaged over the
  unlabeled mixes.

All mixes go through the network in one pass, so batch norm sees labeled and unlabeled images
together (the reason for the authors' interleaving). The paper evaluates an EMA of the weights:
this method reports the teacher (the run's ``ema_decay``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class MixMatchOptions:
    temperature: float = 0.5
    alpha: float = 0.75

    def check(self) -> None:
        if self.temperature <= 0 or self.alpha <= 0:
            raise BadInput("mixmatch: temperature and alpha must be positive")


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    powered = probabilities ** (1 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def mixmatch_costs(logits: torch.Tensor, mixed_targets: torch.Tensor, n_labeled: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy averaged over the first ``n_labeled`` rows, squared probability difference
    ÷ classes averaged over the others) against soft targets."""
    labeled, unlabeled = logits[:n_labeled], logits[n_labeled:]
    zero = logits.sum() * 0.0
    supervised = (-(mixed_targets[:n_labeled] * F.log_softmax(labeled, dim=1)).sum() / n_labeled
                  if n_labeled else zero)
    unsupervised = (((F.softmax(unlabeled, dim=1) - mixed_targets[n_labeled:]) ** 2).sum()
                    / logits.size(1) / len(unlabeled) if len(unlabeled) else zero)
    return supervised, unsupervised


def mix(inputs: torch.Tensor, targets: torch.Tensor, lam: float, partner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return lam * inputs + (1 - lam) * inputs[partner], lam * targets + (1 - lam) * targets[partner]


@register("mixmatch")
class MixMatch(EMAMethod):
    Options = MixMatchOptions
    reported_model = "teacher"

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        student_input, teacher_input, targets = batch.student_input, batch.teacher_input, batch.targets
        labeled, unlabeled = batch.labeled_rows, batch.unlabeled_rows   # their counts known on the host
        with torch.no_grad():
            logits, _ = self.student(student_input)  # the plain prediction: meters and first guess
            ema_logits = self.logged_teacher_logits(teacher_input)   # only for the log
            guess = F.softmax(logits[unlabeled], dim=1)
            if len(unlabeled):
                other_view, _ = self.student(teacher_input[unlabeled])
                guess = sharpen((guess + F.softmax(other_view, dim=1)) / 2, self.options.temperature)
        num_classes = logits.size(1)
        inputs = torch.cat([student_input[labeled], student_input[unlabeled], teacher_input[unlabeled]])
        # one-hot by comparison: F.one_hot checks the labels' range, a read of the device
        one_hot = targets[labeled, None].eq(torch.arange(num_classes, device=targets.device)).to(guess.dtype)
        soft_targets = torch.cat([one_hot, guess, guess])
        lam = float(np.random.beta(self.options.alpha, self.options.alpha))
        lam = max(lam, 1 - lam)
        partner = torch.randperm(len(inputs), device=inputs.device)
        mixed_inputs, mixed_targets = mix(inputs, soft_targets, lam, partner)
        mixed_logits, _ = self.student(mixed_inputs)
        supervised, unsupervised = mixmatch_costs(mixed_logits, mixed_targets, len(labeled))
        weight = step.consistency_weight
        consistency = weight * unsupervised
        values = {"class_loss": supervised.detach(), "cons_weight": weight, "cons_loss": consistency.detach()}
        return step_result(supervised + consistency, values, logits, ema_logits, targets)
