"""Virtual Adversarial Training (Miyato et al., TPAMI 2018): the network's prediction should not
change under the small input perturbation that changes it most. Per step, for every sample
(labeled and unlabeled, the student's view):

* ``p = softmax(f(x))``, kept fixed (no gradient);
* power iteration: ``d`` random unit vector, ``d ← normalize(∇_r KL(p ‖ softmax(f(x + r))))``
  at ``r = ξ·d``, ``power_iterations`` times;
* cost: the mean of ``KL(p ‖ softmax(f(x + ε·d)))`` over the minibatch, × the ramped-up weight;
  with ``entropy_minimization`` the mean prediction entropy is added too (VAT+EntMin), ×
  ``entropy_weight``.

Beside it, the labels' cross-entropy is their mean over the minibatch's labeled samples: the
paper's objective is the labeled data's mean negative log-likelihood + α × the mean smoothness
cost over labeled and unlabeled data.

The perturbed passes run in train mode but leave the network's running statistics (batch norm's,
the ConvNet's evaluation means) as they were (they are not images of the data), as the authors'
code does by not updating them there. ε is in the network's input units: the ConvNet recipe's
CIFAR-10 input is ZCA-whitened as Miyato et al.'s CIFAR-10 runs were (ε 6 applies), its SVHN
input is raw pixels, standardised inside the network (scale ε by the images' pixel deviation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.core.errors import BadInput
from mt_repro.methods.base import EMAMethod, frozen_statistics, step_result
from mt_repro.methods.losses import prediction_entropy
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class VATOptions:
    epsilon: float = 6.0
    xi: float = 1e-6
    power_iterations: int = 1
    entropy_minimization: bool = False
    # the entropy's weight with entropy_minimization: 1 in VAT+EntMin (Miyato et al.), 0.06 in
    # USB's VAT (its ent_loss_ratio)
    entropy_weight: float = 1.0

    def check(self) -> None:
        if self.epsilon <= 0 or self.xi <= 0 or self.power_iterations < 1:
            raise BadInput("vat: epsilon and xi must be positive and power_iterations at least 1")
        if self.entropy_weight < 0:
            raise BadInput(f"vat: entropy_weight must be at least 0 (got {self.entropy_weight})")


def unit_vectors(d: torch.Tensor) -> torch.Tensor:
    """Each sample's ``d`` scaled to unit L2 norm (over all its dimensions)."""
    flat = d.reshape(len(d), -1)
    flat = flat / (flat.abs().max(dim=1, keepdim=True).values + 1e-12)  # no underflow below
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return flat.reshape(d.shape)


def kl_to(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Summed ``KL(p ‖ softmax(logits))``."""
    return F.kl_div(F.log_softmax(logits, dim=1), p, reduction="sum")


def adversarial_direction(model: nn.Module, inputs: torch.Tensor, p: torch.Tensor, xi: float,
                          iterations: int, start: torch.Tensor | None = None) -> torch.Tensor:
    """Unit perturbations along which ``KL(p ‖ f(x + r))`` grows fastest (power iteration from
    ``start``, a random normal direction by default)."""
    d = unit_vectors(torch.randn_like(inputs) if start is None else start)
    for _ in range(iterations):
        d = d.detach().requires_grad_(True)
        logits, _ = model(inputs.detach() + xi * d)
        gradient, = torch.autograd.grad(kl_to(p, logits), d)
        d = unit_vectors(gradient)
    return d.detach()


def vat_cost(model: nn.Module, inputs: torch.Tensor, logits: torch.Tensor, options: VATOptions,
             start: torch.Tensor | None = None) -> torch.Tensor:
    """Summed local distributional smoothness cost ``KL(p ‖ f(x + ε·d_adv))``."""
    p = F.softmax(logits.detach(), dim=1)
    with frozen_statistics(model):
        d = adversarial_direction(model, inputs, p, options.xi, options.power_iterations, start)
        adversarial_logits, _ = model(inputs.detach() + options.epsilon * d)
    return kl_to(p, adversarial_logits)


@register("vat")
class VAT(EMAMethod):
    Options = VATOptions
    mean_over_parts = True  # Miyato et al.'s objective: ℓ(D_l) + α·R_vadv(D_l, D_ul), each a mean

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        logits, ema_logits, class_loss, weight = self.common_part(batch, step)
        vat = weight * vat_cost(self.student, batch.student_input, logits, self.options) / len(targets)
        loss = class_loss + vat
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": vat.detach()}
        if self.options.entropy_minimization:
            entropy = self.options.entropy_weight * prediction_entropy(logits) / len(targets)
            loss = loss + entropy
            values["entropy"] = entropy.detach()
        return step_result(loss, values, logits, ema_logits, targets)
