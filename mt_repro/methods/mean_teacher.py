"""Mean Teacher as the original PyTorch code trained it (``pytorch/main.py``, ``train``).

One SGD step: the teacher (an exponential moving average of the student's parameters, run in
train mode with its own batch-norm statistics) sees one augmented view, the student the other;
the student learns from the labels and from the teacher's predictions; then the teacher's
parameters move towards the student's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mt_repro.config import TrainConfig
from mt_repro.errors import RunFailed
from mt_repro.methods import ramps
from mt_repro.methods.interface import MethodHooks
from mt_repro.methods.registry import register
from mt_repro.methods.losses import (CONSISTENCY_COSTS, NO_LABEL, classification_cost,
                                     symmetric_mse_loss)

# The original aborted above this loss ("Loss explosion"), not only on NaN.
MAX_LOSS = 1e5


def learning_rate(config: TrainConfig, position: float) -> float:
    """Linear warm-up from ``initial_lr`` then a cosine ramp-down, at ``position``: the fractional
    epoch ``epoch + step_in_epoch / steps_per_epoch``, as the original computes it per step."""
    lr = ramps.linear_rampup(position, config.lr_rampup) * (config.lr - config.initial_lr) + config.initial_lr
    if config.lr_rampdown_epochs:
        lr *= ramps.cosine_rampdown(position, config.lr_rampdown_epochs)
    return lr


def consistency_weight(config: TrainConfig, epoch: int) -> float:
    """Sigmoid ramp-up on the *integer* epoch, as in the original (it steps once per epoch)."""
    return config.consistency * ramps.sigmoid_rampup(epoch, config.consistency_rampup)


def create_teacher(student_factory) -> nn.Module:
    """A separately initialised copy whose parameters never receive gradients."""
    teacher = student_factory()
    for param in teacher.parameters():
        param.detach_()
    return teacher


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, ema_decay: float, global_step: int) -> None:
    """``teacher = a*teacher + (1-a)*student`` for parameters only (buffers stay the teacher's).

    ``a = min(1 - 1/(global_step + 1), ema_decay)``: the true average of all students so far,
    until that would weigh the past more than ``ema_decay`` does.
    """
    alpha = min(1 - 1 / (global_step + 1), ema_decay)
    teacher_params, student_params = list(teacher.parameters()), list(student.parameters())
    # Multi-tensor ops: one kernel launch per list on GPUs, the same roundings as a loop of
    # ``mul_(alpha).add_(student, alpha=1 - alpha)``.
    torch._foreach_mul_(teacher_params, alpha)
    torch._foreach_add_(teacher_params, student_params, alpha=1 - alpha)


def accuracy(logits: torch.Tensor, targets: torch.Tensor, topk=(1,)) -> list[float]:
    """Precision@k in percent over the labeled samples (unlabeled ones never count as correct)."""
    labeled = max(int(targets.ne(NO_LABEL).sum()), 1e-8)
    _, predicted = logits.topk(max(topk), 1, True, True)
    correct = predicted.t().eq(targets.view(1, -1).expand_as(predicted.t()))
    return [float(correct[:k].reshape(-1).float().sum(0) * (100.0 / labeled)) for k in topk]


@dataclass
class StepResult:
    loss: torch.Tensor
    values: dict[str, float]
    labeled_minibatch_size: int


@register("mean_teacher")
class MeanTeacher(MethodHooks):
    """The method: its costs and the teacher update. ``global_step`` counts SGD steps. It keeps
    nothing between steps beyond its two networks; the paper reports the teacher."""

    reported_model = "teacher"
    multi_process = True

    def __init__(self, config: TrainConfig, student: nn.Module, teacher: nn.Module):
        self.config = config
        self.student = student
        self.teacher = teacher
        self.consistency_cost = CONSISTENCY_COSTS[config.consistency_type]
        self.global_step = 0

    def losses(self, student_input: torch.Tensor, teacher_input: torch.Tensor,
               targets: torch.Tensor, epoch: int) -> StepResult:
        cfg = self.config
        minibatch_size = len(targets)
        labeled_minibatch_size = int(targets.ne(NO_LABEL).sum())
        # The original asserted this; uniformly drawn minibatches may lack labels (class cost 0).
        if labeled_minibatch_size == 0 and cfg.sampling != "uniform":
            raise RunFailed("a minibatch has no labeled samples")

        # Teacher first, then student: both draw shake gates from torch's generator.
        with torch.no_grad():
            teacher_logit, _ = self.teacher(teacher_input)
        logit1, logit2 = self.student(student_input)
        teacher_logit = teacher_logit.detach()

        values: dict[str, float] = {}
        if cfg.logit_distance_cost >= 0:
            class_logit, cons_logit = logit1, logit2
            res_loss = cfg.logit_distance_cost * symmetric_mse_loss(class_logit, cons_logit) / minibatch_size
            values["res_loss"] = res_loss.item()
        else:
            class_logit = cons_logit = logit1
            res_loss = 0

        class_loss = classification_cost(class_logit, targets) / minibatch_size
        values["class_loss"] = class_loss.item()
        ema_class_loss = classification_cost(teacher_logit, targets) / minibatch_size
        values["ema_class_loss"] = ema_class_loss.item()

        if cfg.consistency:
            weight = consistency_weight(cfg, epoch)
            values["cons_weight"] = weight
            consistency_loss = weight * self.consistency_cost(cons_logit, teacher_logit) / minibatch_size
            values["cons_loss"] = consistency_loss.item()
        else:
            consistency_loss = 0
            values["cons_loss"] = 0.0

        loss = class_loss + consistency_loss + res_loss
        return step_result(loss, values, class_logit, teacher_logit, targets)

    def after_optimizer_step(self) -> None:
        self.global_step += 1
        update_teacher(self.student, self.teacher, self.config.ema_decay, self.global_step)


def step_result(loss: torch.Tensor, values: dict[str, float], class_logit: torch.Tensor,
                teacher_logit: torch.Tensor, targets: torch.Tensor) -> StepResult:
    """Check the loss (the original's explosion guard), add it and the student's and teacher's
    minibatch precision to ``values``: the end of every method's step."""
    loss_value = loss.item()
    if not math.isfinite(loss_value) or loss_value > MAX_LOSS:
        raise NonFiniteLoss(loss_value, values)
    values["loss"] = loss_value
    top1, top5 = accuracy(class_logit.detach(), targets, topk=(1, 5))
    ema_top1, ema_top5 = accuracy(teacher_logit.detach(), targets, topk=(1, 5))
    values.update(top1=top1, error1=100.0 - top1, top5=top5, error5=100.0 - top5,
                  ema_top1=ema_top1, ema_error1=100.0 - ema_top1,
                  ema_top5=ema_top5, ema_error5=100.0 - ema_top5)
    return StepResult(loss, values, int(targets.ne(NO_LABEL).sum()))


class NonFiniteLoss(RunFailed):
    def __init__(self, loss: float, values: dict[str, float]):
        parts = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k.endswith("loss"))
        super().__init__(f"loss is {loss} ({parts})")
        self.loss = loss
