"""How long a run is and when it evaluates, checkpoints and logs: the two halves' conventions.

* ``epochs`` (``pytorch/main.py``): ``run_epochs`` epochs of the training data (a method may
  chain several trainings); evaluation of student and teacher after every
  ``evaluation_epochs``-th epoch; a checkpoint after every epoch (kept as ``checkpoint.N.ckpt``
  every ``checkpoint_epochs``-th, else only as ``last.ckpt``); a training-log row at the first
  step of an epoch and every ``print_freq`` steps after it.
* ``steps`` (``tensorflow/mean_teacher/train.py``): ``training_length`` steps; evaluation (and a
  checkpoint) before the first step, after every ``evaluation_span``-th step and after the
  last; a training-log row after the first step and every ``print_span``-th. Epochs (passes of
  the minibatch stream) only bound the methods' per-epoch updates.
"""
from __future__ import annotations

import math


class EpochTimeline:
    evaluate_at_start = False
    numbered_checkpoints = True
    checkpoint_with_evaluations = True   # (it evaluates between epochs only)

    def __init__(self, config, method, steps_per_epoch: int):
        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.epochs = method.run_epochs(config.epochs)
        self.total_steps = self.epochs * steps_per_epoch

    def steps_in(self, epoch: int) -> int:
        return self.steps_per_epoch

    def log_row(self, step_in_epoch: int, global_step: int) -> bool:
        """Whether the step just taken (``step_in_epoch`` counted from 0) gets a log row."""
        return step_in_epoch % self.config.print_freq == 0

    def evaluate_after_step(self, global_step: int) -> bool:
        return False

    def evaluate_after_epoch(self, epochs_done: int) -> bool:
        every = self.config.evaluation_epochs
        return bool(every) and epochs_done % every == 0

    def checkpoint_after_epoch(self, epochs_done: int) -> bool:
        return True

    def numbered_checkpoint(self, epochs_done: int) -> bool:
        every = self.config.checkpoint_epochs
        return bool(every) and epochs_done % every == 0


class StepTimeline:
    evaluate_at_start = True
    numbered_checkpoints = False
    checkpoint_with_evaluations = True

    def __init__(self, config, method, steps_per_epoch: int):
        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.total_steps = config.training_length
        self.epochs = math.ceil(self.total_steps / steps_per_epoch)

    def steps_in(self, epoch: int) -> int:
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

    def log_row(self, step_in_epoch: int, global_step: int) -> bool:
        return global_step % self.config.print_span == 0 or global_step == 1

    def evaluate_after_step(self, global_step: int) -> bool:
        return global_step % self.config.evaluation_span == 0 and global_step < self.total_steps

    def evaluate_after_epoch(self, epochs_done: int) -> bool:
        return epochs_done == self.epochs   # after the last step

    def checkpoint_after_epoch(self, epochs_done: int) -> bool:
        return epochs_done == self.epochs

    def numbered_checkpoint(self, epochs_done: int) -> bool:
        return False


class StepsWholeEpochsTimeline(StepTimeline):
    checkpoint_with_evaluations = False

    def checkpoint_after_epoch(self, epochs_done: int) -> bool:
        return True


TIMELINES = {"epochs": EpochTimeline, "steps": StepTimeline, "steps_whole_epochs": StepsWholeEpochsTimeline}
