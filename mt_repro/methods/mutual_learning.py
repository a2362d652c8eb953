"""Deep Mutual Learning (Zhang et al., CVPR 2018): a cohort of K ≥ 2 students of the same
architecture, each initialised separately, trained together; each learns from the labels and
mimics the others: student k's cost is its cross-entropy plus the weight × the mean over the
other K − 1 students l of ``KL(p_l ‖ p_k)`` (the others' predictions fixed, no gradient). With
``ensemble_teacher`` student k mimics instead the average prediction of the other K − 1
(the paper's variant for larger cohorts; with KL it teaches the same, as the gradient of
``KL(q ‖ p_k)`` in student k's logits, ``p_k − q``, is linear in the target q, and only the
cost's value differs). Semi-supervised: the KL terms cover every sample, labeled and
unlabeled, while the labels only teach on labeled ones. Each term is a mean over its own
samples, as the paper's losses are means: the cross-entropy over the labeled samples, the KL
over the whole minibatch.

All students see the same minibatch (the student's view) and take one SGD step together, as
the sum of their costs under one optimizer (the gradients of each student's parameters are
those of its own cost); the paper's Algorithm 1 instead updates them in turn, recomputing the
predictions in between. The run's student is the first of the cohort (reported, checkpointed
as ``state_dict``, followed by the EMA teacher as every method); the others are kept in the
method's state.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, OnHost, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class MutualLearningOptions:
    students: int = 2
    ensemble_teacher: bool = False

    def check(self) -> None:
        if self.students < 2:
            raise BadInput(f"mutual_learning: a cohort needs at least 2 students, got {self.students}")


def mimicry_losses(logits: list[torch.Tensor], ensemble_teacher: bool = False) -> list[torch.Tensor]:
    """Summed KL mimicry cost of each student: mean over the others of ``KL(p_other ‖ p_k)``,
    or ``KL(mean of the others' p ‖ p_k)`` with ``ensemble_teacher``. Only student k's logits
    carry gradient in its cost."""
    fixed = [F.softmax(z.detach(), dim=1) for z in logits]
    costs = []
    for k, z in enumerate(logits):
        log_p = F.log_softmax(z, dim=1)
        others = [p for l, p in enumerate(fixed) if l != k]
        if ensemble_teacher:
            costs.append(F.kl_div(log_p, torch.stack(others).mean(dim=0), reduction="sum"))
        else:
            costs.append(sum(F.kl_div(log_p, p, reduction="sum") for p in others) / len(others))
    return costs


@register("mutual_learning")
class MutualLearning(EMAMethod):
    Options = MutualLearningOptions
    mean_over_parts = True  # Zhang et al.'s Eq. 1 and 9: means over the samples of each term

    def __init__(self, config, student, teacher, options=None, *, build_network=None):
        super().__init__(config, student, teacher, options, build_network=build_network)
        if build_network is None:
            raise ValueError("mutual_learning builds its other students: pass build_network")
        self.peers = nn.ModuleList(build_network() for _ in range(self.options.students - 1))

    @property
    def cohort(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.peers.parameters())

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        self.peers.train(self.student.training)
        logits, ema_logits, class_loss, weight = self.common_part(batch, step)
        all_logits = [logits] + [peer(batch.student_input)[0] for peer in self.peers]
        class_losses = [class_loss] + [self.class_loss(z, targets) for z in all_logits[1:]]
        mimicry = [cost / len(targets) for cost in mimicry_losses(all_logits, self.options.ensemble_teacher)]
        loss = sum(c + weight * m for c, m in zip(class_losses, mimicry))
        # the first student's terms; "loss" is the cohort's sum
        # the weighted cost as the host computed it from the cost (float64)
        weighted = OnHost(mimicry[0].detach(), functools.partial(operator.mul, weight))
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": weighted}
        return step_result(loss, values, logits, ema_logits, targets)

    def state_dict(self) -> dict[str, Any]:
        return {"peers": self.peers.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.peers.load_state_dict(state["peers"])
