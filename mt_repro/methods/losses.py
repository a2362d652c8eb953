"""Costs of the original code's two halves, and what the other methods' losses are built from.

The PyTorch half's (``pytorch/main.py``) return a *sum* over the minibatch: the caller divides
by the whole minibatch size (labeled and unlabeled), as the original did. The TensorFlow
half's (``tensorflow/mean_teacher/model.py``) return one cost *per sample*, which its
``total_cost`` combines.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from mt_repro.core.types import NO_LABEL


# --- the PyTorch half, and the other methods ----------------------------------------------------
def classification_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the labeled samples; unlabeled ones carry ``NO_LABEL``."""
    return F.cross_entropy(logits, targets, reduction="sum", ignore_index=NO_LABEL)


def chosen_cross_entropy(logits: torch.Tensor, classes: torch.Tensor, chosen: torch.Tensor, *,
                         wait_free: bool) -> torch.Tensor:
    """Summed cross-entropy of the rows ``chosen`` (a boolean mask) against ``classes``; zero,
    with a gradient, where none is chosen. ``wait_free`` (fast mode): every row with the others
    ignored, which makes the host wait for nothing; else the chosen rows gathered, as faithful
    mode always computed it (on a GPU a boolean mask makes the host wait to count its rows). The
    same sum, its terms added in another order."""
    if wait_free:
        return classification_cost(logits, torch.where(chosen, classes, NO_LABEL))
    if not chosen.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[chosen], classes[chosen], reduction="sum")


def sum_of_chosen_rows(values: torch.Tensor, chosen: torch.Tensor, *, wait_free: bool) -> torch.Tensor:
    """The sum of the rows of ``values`` that ``chosen`` (a boolean mask) marks; ``wait_free`` as
    for ``chosen_cross_entropy``: the others zeroed rather than left out."""
    if wait_free:
        return torch.where(chosen.reshape(-1, *[1] * (values.dim() - 1)), values, 0.0).sum()
    return values[chosen].sum()


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Summed entropy of the softmax predictions, one per row."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum()


def softmax_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``sum (softmax(s) - softmax(t))^2 / num_classes``; pass detached teacher logits."""
    _check_same_shape(student_logits, teacher_logits)
    num_classes = student_logits.size(1)
    return F.mse_loss(F.softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1),
                      reduction="sum") / num_classes


def softmax_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``sum KL(softmax(t) || softmax(s))``; pass detached teacher logits."""
    _check_same_shape(student_logits, teacher_logits)
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1),
                    reduction="sum")


def symmetric_mse_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum (a - b)^2 / num_classes`` with gradients to both sides (the two-head logit tie)."""
    _check_same_shape(a, b)
    return torch.sum((a - b) ** 2) / a.size(1)


CONSISTENCY_COSTS = {"mse": softmax_mse_loss, "kl": softmax_kl_loss}


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")


# --- the TensorFlow half (model.py), per sample -----------------------------------------------------
def classification_costs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy; 0 for unlabeled samples (label -1)."""
    labeled = labels.ne(NO_LABEL)
    costs = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    return torch.where(labeled, costs, torch.zeros_like(costs))


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
