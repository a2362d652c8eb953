"""What the methods share: the end of every step (``step_result``), passes that leave a network's
running statistics alone, and, for the methods beside Mean Teacher, ``EMAMethod``: options from
their settings file (changed by the run's ``method_options``), an EMA of the student evaluated
beside it (as Mean Teacher's teacher, so every run reports both), and the supervised part of
the loss: summed cross-entropy over the labeled samples ÷ the whole minibatch, as Mean Teacher's
original and Laine & Aila's Algorithm 1 divide it, or ÷ the labeled samples
(``mean_over_parts``) for the methods whose papers average each part of the loss over its own
samples."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from mt_repro.core.metrics import accuracy, hundred_less
from mt_repro.core.types import NO_LABEL, Batch, Logged, OnHost, StepContext, StepResult
from mt_repro.methods.interface import MethodHooks, NetworkBuilder
from mt_repro.methods.losses import classification_cost
from mt_repro.methods.registry import method_options

# The original PyTorch code aborted above this loss ("Loss explosion"), not only on NaN.
MAX_LOSS = 1e5


def step_result(loss: torch.Tensor, logged: dict[str, Logged], class_logit: torch.Tensor,
                teacher_logit: torch.Tensor | None, targets: torch.Tensor, max_loss: float = MAX_LOSS) -> StepResult:
    """The end of every method's step: ``logged`` with the loss and the student's and teacher's
    minibatch precision added, all left on the device (``StepResult``); the engine checks the
    loss against ``max_loss`` (non-finite, or above the original's explosion guard) when it
    reads them. No ``teacher_logit``: no teacher precision logged (no teacher pass was made)."""
    logged["loss"] = loss.detach()
    top1, top5 = accuracy(class_logit.detach(), targets, topk=(1, 5))
    logged.update(top1=top1, error1=OnHost(top1, hundred_less), top5=top5, error5=OnHost(top5, hundred_less))
    if teacher_logit is not None:
        ema_top1, ema_top5 = accuracy(teacher_logit.detach(), targets, topk=(1, 5))
        logged.update(ema_top1=ema_top1, ema_error1=OnHost(ema_top1, hundred_less),
                      ema_top5=ema_top5, ema_error5=OnHost(ema_top5, hundred_less))
    return StepResult(loss, logged, targets.ne(NO_LABEL).sum(), max_loss)


def logged_teacher_logits(config, teacher: nn.Module, inputs: torch.Tensor) -> torch.Tensor | None:
    """The EMA model's logits on ``inputs`` (no gradient), for a step that uses them only in
    its log (the teacher's minibatch precision). None, and no pass, where the recipe copies
    the student's buffers into the teacher after each step (USB's): there the pass would
    change nothing but that log, and USB's own steps make none."""
    if config.recipe.teacher_statistics_copied:
        return None
    with torch.no_grad():
        return teacher(inputs)[0]


@contextmanager
def frozen_statistics(model: nn.Module):
    """Training-mode passes inside normalise with their own batch's statistics but leave the
    network's running statistics as they were: batch norm's running mean and variance, and
    the evaluation means of weight-normalised layers (``track_eval_mean``, the ConvNet's)."""
    norms = [(m, m.momentum) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracked = [m for m in model.modules() if getattr(m, "track_eval_mean", None) is True]
    try:
        for module, _ in norms:
            module.momentum = 0.0
        for module in tracked:
            module.track_eval_mean = False
        yield model
    finally:
        for module, momentum in norms:
            module.momentum = momentum
        for module in tracked:
            module.track_eval_mean = True


@contextmanager
def dropout_rate(model: nn.Module, probability: float):
    """Passes inside drop units with ``probability``: a network whose dropout is an attribute
    (the ConvNet's ``dropout``), as the original's towers of one network had their own rates."""
    if not hasattr(model, "dropout"):
        raise TypeError(f"{type(model).__name__} has no dropout rate to change")
    saved = model.dropout
    model.dropout = probability
    try:
        yield model
    finally:
        model.dropout = saved


class EMAMethod(MethodHooks):
    Options: type = type(None)  # a dataclass of the method's own settings
    # True: the labeled part of the loss is averaged over the labeled samples and the unlabeled
    # part over the unlabeled ones (``part_mean``), as the method's paper writes its loss; with
    # 16 labeled images in a minibatch of 64 this gives the labels 4x the weight of ÷ minibatch.
    mean_over_parts: bool = False

    def __init__(self, config, student: nn.Module, teacher: nn.Module, options: Any = None, *,
                 build_network: NetworkBuilder | None = None):
        self.config = config
        self.student = student
        self.teacher = teacher
        self.options = options if options is not None else method_options(self.method_name, config.method_options)
        self.build_network = build_network

    @property
    def wait_free(self) -> bool:
        """Whether the step must not make the host wait for the device (fast mode): costs over
        the rows a mask chooses are then summed with the others zeroed (``chosen_cross_entropy``)
        and per-sample memories live on the training device."""
        return self.config.mode == "fast"

    def class_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.part_mean(classification_cost(logits, targets), targets.ne(NO_LABEL).sum(), len(targets))

    def part_mean(self, summed_cost: torch.Tensor, part_size: int | torch.Tensor, minibatch_size: int) -> torch.Tensor:
        """A cost summed over one part of the minibatch (its labeled or its unlabeled samples,
        ``part_size`` of them: a count the host knows, ``len(batch.unlabeled_rows)``, or one left
        on the device) ÷ that size (at least 1) when ``mean_over_parts``, else ÷ the whole
        minibatch. Nothing here waits for the device."""
        if not self.mean_over_parts:
            return summed_cost / minibatch_size
        if isinstance(part_size, torch.Tensor):
            return summed_cost / part_size.clamp_min(1)
        return summed_cost / max(part_size, 1)

    def logged_teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """``logged_teacher_logits`` of this method's teacher."""
        return logged_teacher_logits(self.config, self.teacher, inputs)

    def common_part(self, batch: Batch, step: StepContext, *, teacher_in_loss: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, float]:
        """The student's logits on its view, the EMA model's on the other (no gradient), the
        supervised loss and the step's consistency weight: how every method's step begins.
        Unless the method's loss reads the EMA model's logits (``teacher_in_loss``), only the
        log does, and they are ``logged_teacher_logits``: None in the usb recipe."""
        logits, _ = self.student(batch.student_input)
        if teacher_in_loss:
            with torch.no_grad():
                ema_logits, _ = self.teacher(batch.teacher_input)
        else:
            ema_logits = self.logged_teacher_logits(batch.teacher_input)
        return logits, ema_logits, self.class_loss(logits, batch.targets), step.consistency_weight


class LabeledFraction:
    """M/N, the fraction of labeled images among the training images seen so far (by their
    indices; an image ever seen with its label counts as labeled), for the weights Laine & Aila
    scaled by it (their ``train.py``). Counted on the host, from the minibatch's ``HostCopy``:
    the weight it scales is a number the step needs before the device has computed anything."""

    def __init__(self) -> None:
        self.seen = np.zeros(0, dtype=bool)
        self.labeled = np.zeros(0, dtype=bool)

    def record(self, batch: Batch) -> None:
        host = batch.on_host()
        if host.indices is None:
            raise ValueError("counting the labeled fraction needs the samples' indices")
        size = host.size_to_hold()
        if size > len(self.seen):
            extra = np.zeros(size - len(self.seen), dtype=bool)
            self.seen, self.labeled = np.concatenate([self.seen, extra]), np.concatenate([self.labeled, extra])
        self.seen[host.indices] = True
        # ConvNet minibatches draw their unlabeled part from all images, labels hidden: a
        # labeled image seen there is still a labeled image.
        self.labeled[host.indices[host.labeled]] = True

    def value(self) -> float:
        return int(self.labeled[self.seen].sum()) / max(int(self.seen.sum()), 1)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": torch.from_numpy(self.seen.copy()), "labeled": torch.from_numpy(self.labeled.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.labeled = state["seen"].numpy().copy(), state["labeled"].numpy().copy()
