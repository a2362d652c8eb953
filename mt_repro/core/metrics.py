"""Classification metrics of the original's meters."""
from __future__ import annotations

import torch

from mt_repro.core.types import NO_LABEL


def accuracy(logits: torch.Tensor, targets: torch.Tensor, topk=(1,)) -> list[float]:
    """Precision@k in percent over the labeled samples (unlabeled ones never count as correct)."""
    labeled = max(int(targets.ne(NO_LABEL).sum()), 1e-8)
    _, predicted = logits.topk(max(topk), 1, True, True)
    correct = predicted.t().eq(targets.view(1, -1).expand_as(predicted.t()))
    return [float(correct[:k].reshape(-1).float().sum(0) * (100.0 / labeled)) for k in topk]
