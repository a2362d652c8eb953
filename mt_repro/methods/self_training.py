"""Self-training with a noised student (Xie et al., "Self-training with Noisy Student", CVPR
2020) and temperature distillation (Hinton et al. 2015). The teacher, in eval mode (no dropout,
its running batch-norm statistics), predicts on the clean images (no augmentation, no noise);
the student, in train mode, sees the augmented noisy view and is pulled towards the teacher's
softened predictions: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over the unlabeled
samples, × the ramped-up weight, besides the cross-entropy averaged over the labeled ones (each
part a mean over its own samples, as Xie et al.'s Algorithm 1 writes the loss).

Every generation is a whole training of the run's ``epochs`` with the run's learning-rate
schedule, as Xie et al. train every model fully: a run of ``generations`` generations trains
``generations × epochs`` epochs (each network it trains has Mean Teacher's budget). The first
trains on the labels alone; at the end of each generation the student's weights become the
teacher (the run's teacher network, so it is evaluated and checkpointed as the teacher) and
the student goes on from those weights (Xie et al. start each student from scratch). The
consistency ramp-up, too, starts again in each generation.

Two settings for robustness, as the noisy-student recipe adds them (``[options]``):

* ``noise = "randaugment"``: the student sees the strong view (the weak translation and flip,
  RandAugment and Cutout, ``mt_repro.data.randaugment``) instead of the pipeline's augmented
  view: Xie et al.'s input noise (their RandAugment; their other noises, dropout and stochastic
  depth, are the network's own). The teacher still predicts on the clean images.
* ``swa = true``: each next teacher is the stochastic weight average (Izmailov et al. 2018,
  ``torch.optim.swa_utils.AveragedModel``) of the student's weights at the end of each epoch of
  the last ``1 − swa_start`` of the generation, not its last weights; the student goes on from
  its own. The batch-norm statistics are averaged with the weights (``use_buffers``), not
  recomputed by ``update_bn``'s pass over the training images, which a method does not make.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.fixmatch import STRONG, refuse_without_strong_view
from mt_repro.methods.registry import method_options, register

NOISES = ("pipeline", "randaugment")


@dataclass(frozen=True)
class SelfTrainingOptions:
    temperature: float = 1.0
    generations: int = 3
    noise: str = "pipeline"     # the student's input: the pipeline's view, or "randaugment"
    swa: bool = False           # each next teacher: the SWA of the student over the generation's end
    swa_start: float = 0.75     # the fraction of a generation's epochs after which SWA averages

    def check(self) -> None:
        if self.temperature <= 0 or self.generations < 2:
            raise BadInput("self_training: temperature must be positive and generations at least 2 "
                           "(the first has no teacher)")
        if self.noise not in NOISES:
            raise BadInput(f"self_training: noise must be one of {', '.join(NOISES)} (got {self.noise!r})")
        if not 0 <= self.swa_start < 1:
            raise BadInput(f"self_training: swa_start must be in [0, 1) (got {self.swa_start})")


def distillation_cost(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Summed ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (T² keeps the gradient's scale as T varies)."""
    target = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return temperature ** 2 * F.kl_div(F.log_softmax(student_logits / temperature, dim=1), target,
                                       reduction="sum")


@register("self_training")
class SelfTraining(EMAMethod):
    Options = SelfTrainingOptions
    sample_extras = ("clean_input",)
    updates_teacher = False  # the teacher changes only between generations
    mean_over_parts = True  # Xie et al.'s Algorithm 1: (1/n) Σ over labeled + (1/m) Σ over pseudo-labeled

    def __init__(self, config, student, teacher, options=None, *, build_network=None):
        super().__init__(config, student, teacher, options, build_network=build_network)
        self.average = AveragedModel(student, use_buffers=True) if self.options.swa else None

    @classmethod
    def extras_for(cls, config) -> tuple[str, ...]:
        if method_options("self_training", config.method_options).noise == "randaugment":
            return (*cls.sample_extras, STRONG)
        return cls.sample_extras

    @classmethod
    def check_config(cls, config) -> None:
        if method_options("self_training", config.method_options).noise == "randaugment":
            refuse_without_strong_view(config, "self_training with noise = \"randaugment\"")
        if config.recipe.timeline != "epochs":
            raise BadInput("self_training chains whole trainings of the run's epochs; the ConvNet "
                           "recipe measures its runs in steps (training_length): train it with the "
                           "ResNet recipe or on the digits")

    def run_epochs(self, epochs: int) -> int:
        return self.options.generations * epochs

    def generation(self, epoch: float) -> int:
        """Which generation (0: the labels alone) the run is in at (fractional) ``epoch``."""
        return min(int(epoch // self.config.epochs), self.options.generations - 1)

    def schedule_position(self, position: float) -> float:
        """Each generation runs the run's whole learning-rate schedule from its start, so that
        every teacher is taken at the end of a ramp-down."""
        return position - self.generation(position) * self.config.epochs

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets, clean_input, epoch = batch.targets, batch.extras.get("clean_input"), step.epoch
        if clean_input is None:
            raise ValueError("self_training needs the clean images")
        noisy = batch.extras[STRONG] if self.options.noise == "randaugment" else batch.student_input
        logits, _ = self.student(noisy)
        class_loss = self.class_loss(logits, targets)
        self.teacher.eval()
        with torch.no_grad():
            teacher_logits, _ = self.teacher(clean_input)
        generation = self.generation(epoch)
        # the schedule's weight at schedule_position(epoch): its ramp-up starts again each generation
        weight = step.consistency_weight if generation > 0 else 0.0
        rows = batch.unlabeled_rows
        cost = (distillation_cost(logits[rows], teacher_logits[rows], self.options.temperature)
                if weight and len(rows) else logits.sum() * 0.0)
        distillation = weight * self.part_mean(cost, len(rows), len(targets))
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": distillation.detach(),
                  "generation": float(generation)}
        return step_result(class_loss + distillation, values, logits, teacher_logits, targets)

    def end_of_epoch(self, epochs_done: int) -> None:
        epochs = self.config.epochs
        within = epochs_done - (epochs_done - 1) // epochs * epochs   # 1 .. epochs in its generation
        if self.average is not None and within > self.options.swa_start * epochs:
            self.average.update_parameters(self.student)
        if epochs_done % epochs == 0 and epochs_done < self.run_epochs(epochs):
            if self.average is None:
                self.teacher.load_state_dict(self.student.state_dict())
            else:
                self.teacher.load_state_dict(self.average.module.state_dict())
                self.average = AveragedModel(self.student, use_buffers=True)  # the next generation's

    def state_dict(self) -> dict[str, Any]:
        return {} if self.average is None else {"swa": self.average.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.average is not None and "swa" in state:
            self.average.load_state_dict(state["swa"])
