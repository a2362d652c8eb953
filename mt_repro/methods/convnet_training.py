"""The TensorFlow half's training objective and per-step schedule (paper Tables 1-3).

Everything here is per step (``global_step``, counted before the step's update, as the original
graph read it): learning rate and consistency weight ramp up with ``sigmoid_rampup`` over
``rampup_length`` steps; learning rate and Adam's beta1 (0.9 → 0.5) ramp down with
``sigmoid_rampdown`` over the last ``rampdown_length`` of ``training_length`` steps; Adam's beta2
(0.99 → 0.999) and the EMA decay (0.99 → 0.999) switch at the end of the ramp-up.

Costs are per sample (``tensorflow/mean_teacher/model.py``): cross-entropy of labeled samples
(0 for unlabeled), the consistency cost (below) times its weight, masked off for labeled samples
unless ``apply_consistency_to_labeled``, and ``logit_distance_cost · Σ(class − cons logits)²``.
What the original minimised is not their mean over the minibatch but ``total_cost``: each kind
summed over the minibatch, averaged over the three kinds (``model.py`` ``total_costs``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mt_repro.methods.losses import NO_LABEL
from mt_repro.methods.ramps import sigmoid_rampdown, sigmoid_rampup, step_rampup


@dataclass(frozen=True)
class StepHyper:
    learning_rate: float
    adam_beta_1: float
    adam_beta_2: float
    ema_decay: float
    cons_coefficient: float


def step_hyperparameters(step: int, hyper) -> StepHyper:
    """The schedule at ``step`` for a config with the original's hyperparameter names."""
    up = sigmoid_rampup(step, hyper.rampup_length)
    down = sigmoid_rampdown(step, hyper.rampdown_length, hyper.training_length)
    switch = step_rampup(step, hyper.rampup_length)
    return StepHyper(
        learning_rate=up * down * hyper.max_learning_rate,
        adam_beta_1=down * hyper.adam_beta_1_before_rampdown + (1 - down) * hyper.adam_beta_1_after_rampdown,
        adam_beta_2=(1 - switch) * hyper.adam_beta_2_during_rampup + switch * hyper.adam_beta_2_after_rampup,
        ema_decay=(1 - switch) * hyper.ema_decay_during_rampup + switch * hyper.ema_decay_after_rampup,
        cons_coefficient=up * hyper.max_consistency_cost,
    )


def classification_costs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy; 0 for unlabeled samples (label -1)."""
    labeled = labels.ne(NO_LABEL)
    costs = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    return torch.where(labeled, costs, torch.zeros_like(costs))


def errors(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per labeled sample: 1.0 where the arg-max class is wrong (unlabeled samples dropped)."""
    labeled = labels.ne(NO_LABEL)
    return logits[labeled].argmax(dim=1).ne(labels[labeled]).float()


def consistency_costs(logits: torch.Tensor, target_logits: torch.Tensor, coefficient: float,
                      mask: torch.Tensor, trust: float) -> torch.Tensor:
    """Per-sample consistency cost between the student's ``logits`` and the target's.

    ``trust`` 0: mean over classes of the squared softmax difference; 1: KL(target‖student);
    between: KL of both softmaxes mixed with the uniform distribution at weight ``trust``. The KL
    forms are scaled by ``2(1 - 1/K)/K²/trust²`` so their gradients match MSE's as trust → 0.
    As in the original, pure KL gives the target no gradient; MSE and the mixture give it to both
    sides (the Π-model's second pass learns from them). ``mask`` selects the samples that pay the cost.
    """
    num_classes = logits.shape[1]
    student = F.softmax(logits, dim=1)
    target = F.softmax(target_logits, dim=1)
    if trust == 0:
        costs = ((student - target) ** 2).mean(dim=1)
    else:
        multiplier = 2 * (1 - 1 / num_classes) / num_classes ** 2 / trust ** 2
        if trust == 1:
            # cross-entropy minus the target's entropy; neither gives the target a gradient
            target = target.detach()
            costs = (target * (F.log_softmax(target_logits.detach(), dim=1) - F.log_softmax(logits, dim=1))).sum(dim=1)
        else:
            uniform = 1.0 / num_classes
            mixed_student = trust * student + (1 - trust) * uniform
            mixed_target = trust * target + (1 - trust) * uniform
            costs = (mixed_target * torch.log(mixed_target / mixed_student)).sum(dim=1)
        costs = costs * multiplier
    return costs * mask.float() * coefficient


def residual_costs(class_logits: torch.Tensor, cons_logits: torch.Tensor, cost: float) -> torch.Tensor:
    """``cost · Σ_k (class − cons)²`` per sample: ties the two heads together."""
    return cost * ((class_logits - cons_logits) ** 2).sum(dim=1)


def total_cost(*per_sample_costs: torch.Tensor) -> torch.Tensor:
    """The original's minimised cost: the per-sample costs stacked to K x N, summed over the N
    samples and averaged over the K kinds, i.e. ``(Σ class + Σ cons + Σ res) / 3``. This quirk of
    ``model.py`` ``total_costs`` (its result is asserted to have shape [3]) scales the gradient
    by N/3 against a per-sample mean; Adam undoes the scale but for its epsilon, so it is kept."""
    return torch.stack(per_sample_costs).sum(dim=1).mean()


def consistency_mask(labels: torch.Tensor, apply_to_labeled: bool) -> torch.Tensor:
    return torch.ones_like(labels, dtype=torch.bool) if apply_to_labeled else labels.eq(NO_LABEL)
