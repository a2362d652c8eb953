"""Costs of the original PyTorch code. Each returns a *sum* over the minibatch: the caller
divides by the whole minibatch size (labeled and unlabeled), as the original did."""
from __future__ import annotations

import torch
from torch.nn import functional as F

NO_LABEL = -1


def classification_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the labeled samples; unlabeled ones carry ``NO_LABEL``."""
    return F.cross_entropy(logits, targets, reduction="sum", ignore_index=NO_LABEL)


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
