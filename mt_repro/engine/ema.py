"""The teacher: how it starts and how it follows the student, by the recipe's names.

* ``separate`` / ``after_step`` (``pytorch/main.py``): the teacher is built like the student
  (its own initial weights), its parameters never receive gradients; after each SGD step every
  teacher *parameter* (not buffer) becomes ``α·teacher + (1−α)·student`` with
  ``α = min(1 − 1/(global_step + 1), ema_decay)``: the true average of all students so far,
  until that would weigh the past more than ``ema_decay`` does.
* ``copy`` / ``before_step`` (``tensorflow/mean_teacher/model.py``): the teacher starts as a
  copy of the data-initialised student, with the teacher's dropout rate; the plain EMA of
  TensorFlow's ``ExponentialMovingAverage`` (no warm-up), ``shadow -= (1 − decay)(shadow −
  variable)``, runs on the student's weights *before* the step's update (the original ran it
  among the update ops the optimizer step depended on).
* ``student_copy`` / ``ema_after_step`` (USB's ``EMA`` and ``EMAHook``, ``semilearn``): the
  teacher starts as a copy of the student; after each SGD step its parameters become
  ``decay·teacher + (1−decay)·student`` (no warm-up) and its buffers (batch norm's running
  statistics) are copied from the student's.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def separate_teacher(config, student: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """A separately initialised network whose parameters never receive gradients."""
    teacher = build()
    for param in teacher.parameters():
        param.detach_()
    return teacher


def copied_teacher(config, student: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    teacher = copy.deepcopy(student)
    teacher.dropout = config.teacher_dropout_probability
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def student_copy(config, student: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    teacher = copy.deepcopy(student)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_after_step(student: nn.Module, teacher: nn.Module, ema_decay: float, global_step: int) -> None:
    """Parameters ``decay·teacher + (1−decay)·student``, buffers the student's."""
    teacher_params, student_params = list(teacher.parameters()), list(student.parameters())
    torch._foreach_mul_(teacher_params, ema_decay)
    torch._foreach_add_(teacher_params, student_params, alpha=1 - ema_decay)
    for mine, theirs in zip(teacher.buffers(), student.buffers()):
        mine.copy_(theirs)


@torch.no_grad()
def update_after_step(student: nn.Module, teacher: nn.Module, ema_decay: float, global_step: int) -> None:
    """``teacher = a*teacher + (1-a)*student``, ``a = min(1 - 1/(global_step + 1), ema_decay)``,
    ``global_step`` counting the step just taken."""
    alpha = min(1 - 1 / (global_step + 1), ema_decay)
    teacher_params, student_params = list(teacher.parameters()), list(student.parameters())
    # Multi-tensor ops: one kernel launch per list on GPUs, the same roundings as a loop of
    # ``mul_(alpha).add_(student, alpha=1 - alpha)``.
    torch._foreach_mul_(teacher_params, alpha)
    torch._foreach_add_(teacher_params, student_params, alpha=1 - alpha)


@torch.no_grad()
def update_before_step(student: nn.Module, teacher: nn.Module, ema_decay: float, global_step: int) -> None:
    """``teacher -= (1 - decay)(teacher - student)`` of the trainable variables."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.sub_((t - s).mul_(1 - ema_decay))


@dataclass(frozen=True)
class TeacherUpdate:
    before_step: bool   # True: from the student's weights before the optimizer's step
    update: Callable[[nn.Module, nn.Module, float, int], None]


TEACHER_INITS = {"separate": separate_teacher, "copy": copied_teacher, "student_copy": student_copy}
TEACHER_UPDATES = {"after_step": TeacherUpdate(False, update_after_step),
                   "before_step": TeacherUpdate(True, update_before_step),
                   "ema_after_step": TeacherUpdate(False, ema_after_step)}
