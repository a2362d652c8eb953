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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mt_repro.core.errors import BadInput
from mt_repro.core.types import NO_LABEL, Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class SelfTrainingOptions:
    temperature: float = 1.0
    generations: int = 3

    def check(self) -> None:
        if self.temperature <= 0 or self.generations < 2:
            raise BadInput("self_training: temperature must be positive and generations at least 2 "
                           "(the first has no teacher)")


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

    @classmethod
    def check_config(cls, config) -> None:
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
        logits, _ = self.student(batch.student_input)
        class_loss = self.class_loss(logits, targets)
        self.teacher.eval()
        with torch.no_grad():
            teacher_logits, _ = self.teacher(clean_input)
        unlabeled = targets.eq(NO_LABEL)
        generation = self.generation(epoch)
        # the schedule's weight at schedule_position(epoch): its ramp-up starts again each generation
        weight = step.consistency_weight if generation > 0 else 0.0
        cost = (distillation_cost(logits[unlabeled], teacher_logits[unlabeled], self.options.temperature)
                if weight and unlabeled.any() else logits.sum() * 0.0)
        distillation = weight * self.part_mean(cost, int(unlabeled.sum()), len(targets))
        values = {"class_loss": class_loss.item(), "cons_weight": weight, "cons_loss": distillation.item(),
                  "generation": float(generation)}
        return step_result(class_loss + distillation, values, logits, teacher_logits, targets)

    def end_of_epoch(self, epochs_done: int) -> None:
        if epochs_done % self.config.epochs == 0 and epochs_done < self.run_epochs(self.config.epochs):
            self.teacher.load_state_dict(self.student.state_dict())
