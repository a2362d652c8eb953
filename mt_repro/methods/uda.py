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
from mt_repro.methods.fixmatch import WeakStrongMethod, confident_guess
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
class UDA(WeakStrongMethod):
    Options = UDAOptions

    def unlabeled_cost(self, weak_logits, strong_logits):
        return uda_cost(weak_logits, strong_logits, self.options.temperature, self.options.threshold)
