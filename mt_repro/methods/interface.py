"""What a semi-supervised method is, for the engine (``mt_repro.engine.trainer``).

The engine builds the student, then the teacher (a second network of the same architecture
that it evaluates beside the student and checkpoints as ``ema_state_dict``), the optimizer
over the student's parameters, then the method as
``cls(config, student, teacher, build_network=...)`` (``build_network()`` makes one more
network of the run's architecture, initialised as the run's recipe initialises its networks,
for a method that trains extra ones). Then:

* every SGD step: ``losses(batch, step)`` with the minibatch's two views (``Batch``, targets
  ``NO_LABEL`` for unlabeled samples, the sample extras the method asked for) and the step's
  place in the schedule (``StepContext``: epoch, steps taken, the consistency weight of the
  run's schedule); then ``loss.backward()``, the optimizer's step, and, for a method that
  ``updates_teacher``, the recipe's EMA update of the teacher;
* after every epoch, before evaluating and checkpointing: ``end_of_epoch(epochs_done)``;
* the learning rate comes from the run's schedule at ``schedule_position(epoch)``, and the run
  trains ``run_epochs(epochs)`` epochs: the config's, unless the method chains several
  trainings of that length (self-training's generations);
* checkpoints carry ``state_dict()`` (what the method keeps beyond the two networks: per-sample
  predictions, the other students of a cohort), ``load_state_dict`` restores it on resume.

Before anything is built, ``check_config(config)`` may refuse a configuration the method cannot
give a meaning to, with the reason. A method knows its losses and what it keeps between steps;
it never builds data or runs a loop.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

from torch import nn

from mt_repro.core.types import SAMPLE_EXTRAS, Batch, StepContext, StepResult

REPORTED_MODELS = ("student", "teacher")
# How the engine evaluates a method's networks: "classifier", their classification head on the
# evaluation images (every semi-supervised method); "knn", their features by a weighted kNN
# against the labeled training images (a pre-training method, whose heads learn no classes).
EVALUATIONS = ("classifier", "knn")


@runtime_checkable
class Method(Protocol):
    method_name: ClassVar[str]                 # set by ``registry.register``
    sample_extras: ClassVar[tuple[str, ...]]   # names from SAMPLE_EXTRAS
    reported_model: ClassVar[str]              # which network the method's paper reports
    updates_teacher: ClassVar[bool]            # the engine's EMA update of the teacher after each step
    multi_process: ClassVar[bool]              # runs under several processes (torchrun)
    evaluation: ClassVar[str]                  # one of EVALUATIONS
    pretraining: ClassVar[bool]                # learns an encoder for other runs (init_from), no classes
    student: nn.Module
    teacher: nn.Module

    @classmethod
    def check_config(cls, config) -> None: ...

    @classmethod
    def extras_for(cls, config) -> tuple[str, ...]: ...

    def losses(self, batch: Batch, step: StepContext) -> StepResult: ...

    def end_of_epoch(self, epochs_done: int) -> None: ...

    def schedule_position(self, position: float) -> float: ...

    def run_epochs(self, epochs: int) -> int: ...

    def extra_parameters(self) -> list[nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


REQUIRED = ("losses", "check_config", "extras_for", "end_of_epoch", "schedule_position", "run_epochs", "extra_parameters",
            "state_dict", "load_state_dict", "sample_extras", "reported_model", "updates_teacher", "multi_process",
            "evaluation", "pretraining")

NetworkBuilder = Callable[[], nn.Module]


class MethodHooks:
    """The optional parts of ``Method`` for a method that keeps nothing between steps beyond
    its two networks, whose teacher is the EMA of its student, and that reports its student."""

    sample_extras: ClassVar[tuple[str, ...]] = ()
    reported_model: ClassVar[str] = "student"
    updates_teacher: ClassVar[bool] = True
    # Whether the method runs under several processes: one student forward pass per step, and
    # no trained networks beyond the student but those whose gradients every process computes
    # alike from the gathered outputs (MoCo's heads; mt_repro.engine.distributed).
    multi_process: ClassVar[bool] = False
    evaluation: ClassVar[str] = "classifier"
    # A pre-training method (MoCo) leaves an encoder; it is not a row of a semi-supervised
    # table (``--method all`` leaves it out).
    pretraining: ClassVar[bool] = False
    # The method whose published numbers this one's runs stand beside (``compare --published``):
    # another computation of that algorithm (mean_teacher_usb: Mean Teacher). None: its own name.
    published_as: ClassVar[str | None] = None

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse (``BadInput``, with the reason) a configuration the method cannot run."""

    @classmethod
    def extras_for(cls, config) -> tuple[str, ...]:
        """The sample extras a run of ``config`` needs: ``sample_extras``, unless one of the
        method's options asks for more (self-training's RandAugment noise)."""
        return cls.sample_extras

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
    if cls.evaluation not in EVALUATIONS:
        raise TypeError(f"{cls.__name__}.evaluation must be one of {EVALUATIONS}")
