"""What the methods other than Mean Teacher share: options from their settings file (changed
by the run's ``method_options``), an EMA of the student evaluated beside it (as Mean Teacher's
teacher, so every run reports both), the step counter, and the supervised part of the loss:
summed cross-entropy over the labeled samples ÷ the whole minibatch, as Mean Teacher's original
and Laine & Aila's Algorithm 1 divide it, or ÷ the labeled samples (``mean_over_parts``) for the
methods whose papers average each part of the loss over its own samples."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mt_repro.methods.interface import MethodHooks
from mt_repro.methods.losses import NO_LABEL, classification_cost
from mt_repro.methods.mean_teacher import consistency_weight, update_teacher
from mt_repro.methods.registry import method_options


class EMAMethod(MethodHooks):
    Options: type = type(None)  # a dataclass of the method's own settings
    # True: the labeled part of the loss is averaged over the labeled samples and the unlabeled
    # part over the unlabeled ones (``part_mean``), as the method's paper writes its loss; with
    # 16 labeled images in a minibatch of 64 this gives the labels 4x the weight of ÷ minibatch.
    mean_over_parts: bool = False

    def __init__(self, config, student: nn.Module, teacher: nn.Module, options: Any = None):
        self.config = config
        self.student = student
        self.teacher = teacher
        self.options = options if options is not None else method_options(self.method_name, config.method_options)
        self.global_step = 0

    def class_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labeled = int(targets.ne(NO_LABEL).sum())
        return self.part_mean(classification_cost(logits, targets), labeled, len(targets))

    def part_mean(self, summed_cost: torch.Tensor, part_size: int, minibatch_size: int) -> torch.Tensor:
        """A cost summed over one part of the minibatch (its labeled or unlabeled samples) ÷ that
        part's size when ``mean_over_parts``, else ÷ the whole minibatch."""
        return summed_cost / (max(part_size, 1) if self.mean_over_parts else minibatch_size)

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
