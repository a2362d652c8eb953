"""What the methods other than Mean Teacher share: options from their settings file (changed
by the run's ``method_options``), an EMA of the student evaluated beside it (as Mean Teacher's
teacher, so every run reports both), the step counter, and the supervised part of the loss as
the original computed it (summed cross-entropy over labeled samples ÷ the whole minibatch)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mt_repro.methods.interface import MethodHooks
from mt_repro.methods.losses import classification_cost
from mt_repro.methods.mean_teacher import consistency_weight, update_teacher
from mt_repro.methods.registry import method_options


class EMAMethod(MethodHooks):
    Options: type = type(None)  # a dataclass of the method's own settings

    def __init__(self, config, student: nn.Module, teacher: nn.Module, options: Any = None):
        self.config = config
        self.student = student
        self.teacher = teacher
        self.options = options if options is not None else method_options(self.method_name, config.method_options)
        self.global_step = 0

    def class_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return classification_cost(logits, targets) / len(targets)

    def common_part(self, student_input: torch.Tensor, teacher_input: torch.Tensor, targets: torch.Tensor,
                    epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """The student's logits on its view, the EMA model's on the other (no gradient), the
        supervised loss and the step's consistency weight: how every method's step begins."""
        logits, _ = self.student(student_input)
        with torch.no_grad():
            ema_logits, _ = self.teacher(teacher_input)
        return logits, ema_logits, self.class_loss(logits, targets), self.weight(epoch)

    def weight(self, epoch: int) -> float:
        """The consistency weight of the run's config, ramped up as Mean Teacher's."""
        return consistency_weight(self.config, epoch) if self.config.consistency else 0.0

    def after_optimizer_step(self) -> None:
        self.global_step += 1
        update_teacher(self.student, self.teacher, self.config.ema_decay, self.global_step)



class LabeledFraction:
    """M/N, the fraction of labeled images among the training images seen so far (by their
    indices), for the weights Laine & Aila scaled by it (their ``train.py``)."""

    def __init__(self) -> None:
        self.seen = torch.zeros(0, dtype=torch.bool)
        self.labeled = torch.zeros(0, dtype=torch.bool)

    def record(self, indices: torch.Tensor, labeled: torch.Tensor) -> None:
        indices = indices.cpu()
        size = int(indices.max()) + 1
        if size > len(self.seen):
            extra = torch.zeros(size - len(self.seen), dtype=torch.bool)
            self.seen, self.labeled = torch.cat([self.seen, extra]), torch.cat([self.labeled, extra])
        self.seen[indices] = True
        self.labeled[indices] = labeled.cpu()

    def value(self) -> float:
        return float(self.labeled[self.seen].sum()) / max(int(self.seen.sum()), 1)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "labeled": self.labeled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.labeled = state["seen"].clone(), state["labeled"].clone()
