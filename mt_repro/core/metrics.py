"""Classification metrics of the original's meters."""
from __future__ import annotations

import torch

from mt_repro.core.types import NO_LABEL


def accuracy(logits: torch.Tensor, targets: torch.Tensor, topk=(1,)) -> list[torch.Tensor]:
    """Precision@k in percent over the labeled samples (unlabeled ones never count as correct),
    as 0-d float32 tensors on the logits' device: the count of correct ones times 100 ÷ the
    labeled count rounded to float32, the original's arithmetic, without reading the device."""
    labeled = targets.ne(NO_LABEL).sum().clamp_min(1).to(torch.float32)
    # 100 and the count are exact in float32, so the float32 division rounds 100 ÷ count once,
    # as the original's float64 quotient rounded to float32 did
    scale = torch.full_like(labeled, 100.0) / labeled
    _, predicted = logits.topk(max(topk), 1, True, True)
    correct = predicted.t().eq(targets.view(1, -1).expand_as(predicted.t()))
    return [correct[:k].reshape(-1).float().sum(0) * scale for k in topk]


def hundred_less(precision: float) -> float:
    """The error of a precision in percent, as the original's meters computed it."""
    return 100.0 - precision
