"""The two halves' schedules: what the learning rate, the consistency weight, the EMA decay and
(for Adam) the betas are at a training step.

* ``per_epoch`` (``pytorch/main.py``): linear warm-up of the learning rate from ``initial_lr``
  over ``lr_rampup`` epochs, times a cosine ramp-down over ``lr_rampdown_epochs``, at the
  *fractional* epoch; the consistency weight ``consistency · exp(−5(1 − t/T)²)`` at the
  *integer* epoch (the original stepped it once per epoch); a constant EMA decay (the teacher
  update warms it up by itself). Both positions go through the method's ``schedule_position``.
* ``per_step`` (``tensorflow/mean_teacher/model.py``): at the global step, counted before the
  step's update as the original graph read it, a sigmoid ramp-up over ``rampup_length`` steps
  of the learning rate and the consistency weight, a sigmoid ramp-down over the last
  ``rampdown_length`` of ``training_length`` steps of the learning rate and Adam's beta1
  (0.9 → 0.5), and Adam's beta2 (0.99 → 0.999) and the EMA decay (0.99 → 0.999) switched at
  the end of the ramp-up.
* ``cosine_steps`` (USB's ``get_cosine_schedule_with_warmup``, no warm-up): at the steps taken
  ``k`` of ``training_length`` ``K``, learning rate ``lr·max(0, cos(lr_cycles·π·k/K))`` with
  ``lr_cycles`` 7/16 (FixMatch's); consistency weight ``consistency·min(1, k/R)`` over
  ``consistency_rampup_steps`` ``R`` (USB's Mean Teacher: 0.4 K; 0: the full weight from the
  start, as its FixMatch); a constant EMA decay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from mt_repro.core import ramps


@dataclass(frozen=True)
class StepHyper:
    """The schedule at one step."""

    lr: float
    consistency_weight: float
    ema_decay: float
    betas: tuple[float, float] | None = None   # Adam's, where the schedule sets them
    logged: dict[str, float] = field(default_factory=dict)   # what the training log records of it


def learning_rate(config, position: float) -> float:
    """Linear warm-up from ``initial_lr`` then a cosine ramp-down, at ``position``: the fractional
    epoch ``epoch + step_in_epoch / steps_per_epoch``, as the original computes it per step."""
    lr = ramps.linear_rampup(position, config.lr_rampup) * (config.lr - config.initial_lr) + config.initial_lr
    if config.lr_rampdown_epochs:
        lr *= ramps.cosine_rampdown(position, config.lr_rampdown_epochs)
    return lr


def consistency_weight(config, epoch: float) -> float:
    """Sigmoid ramp-up on the *integer* epoch, as in the original (it steps once per epoch)."""
    return config.consistency * ramps.sigmoid_rampup(epoch, config.consistency_rampup)


class PerEpochSchedule:
    def __init__(self, config, method):
        self.config, self.method = config, method

    def at(self, epoch: int, step_in_epoch: int, steps_in_epoch: int, global_step: int) -> StepHyper:
        cfg, position = self.config, self.method.schedule_position
        lr = learning_rate(cfg, position(epoch + step_in_epoch / steps_in_epoch))
        weight = consistency_weight(cfg, position(epoch)) if cfg.consistency else 0.0
        return StepHyper(lr=lr, consistency_weight=weight, ema_decay=cfg.ema_decay, logged={"lr": lr})


class PerStepSchedule:
    def __init__(self, config, method):
        self.config = config

    def at(self, epoch: int, step_in_epoch: int, steps_in_epoch: int, global_step: int) -> StepHyper:
        cfg = self.config
        up = ramps.sigmoid_rampup(global_step, cfg.rampup_length)
        down = ramps.sigmoid_rampdown(global_step, cfg.rampdown_length, cfg.training_length)
        switch = ramps.step_rampup(global_step, cfg.rampup_length)
        lr = up * down * cfg.max_learning_rate
        beta_1 = down * cfg.adam_beta_1_before_rampdown + (1 - down) * cfg.adam_beta_1_after_rampdown
        beta_2 = (1 - switch) * cfg.adam_beta_2_during_rampup + switch * cfg.adam_beta_2_after_rampup
        ema_decay = (1 - switch) * cfg.ema_decay_during_rampup + switch * cfg.ema_decay_after_rampup
        return StepHyper(lr=lr, consistency_weight=up * cfg.max_consistency_cost, ema_decay=ema_decay,
                         betas=(beta_1, beta_2),
                         logged={"lr": lr, "adam_beta_1": beta_1, "adam_beta_2": beta_2, "ema_decay": ema_decay})


class CosineStepSchedule:
    def __init__(self, config, method):
        self.config = config

    def at(self, epoch: int, step_in_epoch: int, steps_in_epoch: int, global_step: int) -> StepHyper:
        cfg = self.config
        lr = cfg.lr * max(0.0, math.cos(math.pi * cfg.lr_cycles * global_step / cfg.training_length))
        ramp = min(1.0, global_step / cfg.consistency_rampup_steps) if cfg.consistency_rampup_steps else 1.0
        weight = (cfg.consistency or 0.0) * ramp
        return StepHyper(lr=lr, consistency_weight=weight, ema_decay=cfg.ema_decay, logged={"lr": lr})


SCHEDULES = {"per_epoch": PerEpochSchedule, "per_step": PerStepSchedule, "cosine_steps": CosineStepSchedule}


def apply(hp: StepHyper, optimizer) -> None:
    """Set the step's learning rate (and betas) in every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = hp.lr
        if hp.betas is not None:
            group["betas"] = hp.betas
