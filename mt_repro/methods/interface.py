"""What a semi-supervised method is, for the trainer (``mt_repro.engine.trainer``).

The trainer builds the student, then the teacher (a second network of the same architecture
that it evaluates beside the student and checkpoints as ``ema_state_dict``), the optimizer
over the student's parameters, then the method as ``cls(config, student, teacher)``. Then:

* every SGD step: ``losses(student_input, teacher_input, targets, epoch, **sample_extras)``
  with the two augmented views of the minibatch (targets ``-1`` for unlabeled samples), then
  ``loss.backward()``, ``optimizer.step()`` and ``after_optimizer_step()``;
* after every epoch, before evaluating and checkpointing: ``end_of_epoch(epochs_done)``;
* before every step, the learning rate: the run's schedule at ``schedule_position(epoch)``;
* the run trains ``run_epochs(config.epochs)`` epochs: the config's, unless the method chains
  several trainings of that length (self-training's generations);
* checkpoints carry ``state_dict()`` (what the method keeps beyond the two networks: per-sample
  predictions, the other students of a cohort), ``load_state_dict`` restores it on resume.

``MeanTeacher`` is the reference implementation; ``MethodHooks`` supplies the optional parts
for a method that keeps nothing beyond its two networks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from mt_repro.methods.mean_teacher import StepResult

# Per-sample inputs a method may ask the training loader for, besides the two views; they
# reach ``losses`` as keyword arguments of these names (mt_repro.data.sample_extras).
SAMPLE_EXTRAS = {
    "indices": "each sample's position in the training set (per-sample memories)",
    "clean_input": "the image without augmentation or noise (the evaluation transform)",
}

REPORTED_MODELS = ("student", "teacher")


@runtime_checkable
class Method(Protocol):
    method_name: ClassVar[str]                 # set by ``registry.register``
    sample_extras: ClassVar[tuple[str, ...]]   # names from SAMPLE_EXTRAS
    reported_model: ClassVar[str]              # which network the method's paper reports
    student: nn.Module
    teacher: nn.Module
    global_step: int

    def losses(self, student_input: torch.Tensor, teacher_input: torch.Tensor, targets: torch.Tensor,
               epoch: int, **sample_extras: torch.Tensor) -> "StepResult": ...

    def after_optimizer_step(self) -> None: ...

    def end_of_epoch(self, epochs_done: int) -> None: ...

    def schedule_position(self, position: float) -> float: ...

    def run_epochs(self, epochs: int) -> int: ...

    def extra_parameters(self) -> list[nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


REQUIRED = ("losses", "after_optimizer_step", "end_of_epoch", "schedule_position", "run_epochs",
            "extra_parameters", "state_dict", "load_state_dict", "sample_extras", "reported_model")


class MethodHooks:
    """The optional parts of ``Method`` for a method that keeps nothing between steps beyond
    its two networks and reports its student."""

    sample_extras: ClassVar[tuple[str, ...]] = ()
    # Whether the method runs under several processes: one student forward pass per step and
    # no networks beyond student and teacher (mt_repro.engine.distributed).
    multi_process: ClassVar[bool] = False
    reported_model: ClassVar[str] = "student"

    def end_of_epoch(self, epochs_done: int) -> None:
        pass

    def schedule_position(self, position: float) -> float:
        """Where the run's learning-rate schedule stands at fractional epoch ``position``: the
        epoch itself, unless the method restarts the schedule (self-training's generations)."""
        return position

    def run_epochs(self, epochs: int) -> int:
        """How many epochs the run trains for, given the config's ``epochs``: one training."""
        return epochs

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer trains besides the student's (none)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def check_method_class(cls: type) -> None:
    """Raise ``TypeError`` at registration if ``cls`` lacks part of the interface."""
    missing = [name for name in REQUIRED if not hasattr(cls, name)]
    if missing:
        raise TypeError(f"{cls.__name__} lacks {', '.join(missing)} of the method interface "
                        "(derive it from mt_repro.methods.interface.MethodHooks)")
    unknown = sorted(set(cls.sample_extras) - set(SAMPLE_EXTRAS))
    if unknown:
        raise TypeError(f"{cls.__name__} asks for unknown sample extras {unknown}")
    if cls.reported_model not in REPORTED_MODELS:
        raise TypeError(f"{cls.__name__}.reported_model must be one of {REPORTED_MODELS}")
