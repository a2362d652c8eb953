"""FixMatch (Sohn et al., NeurIPS 2020). Per step, with the minibatch's weak view (the
student's view: the pipeline's translation and flip) and the strong view of every image
(``strong_input``: that augmentation, then RandAugment and Cutout, ``mt_repro.data.randaugment``):

* one pass of the student over the minibatch's weak view and the unlabeled images' strong view
  together, so batch norm sees labeled, weak and strong images at once (as USB's ``use_cat``,
  its default);
* pseudo-label of each unlabeled image: the arg-max class of the student's softmax on its weak
  view, detached (no gradient), kept where that probability reaches ``threshold`` (0.95);
* loss: cross-entropy averaged over the labeled images, plus the run's consistency weight (λ_u)
  × the cross-entropy of the strong view's prediction against the pseudo-label, summed over the
  confident images and averaged over all the unlabeled ones (USB's ``(ce * mask).mean()``).

How many unlabeled images come with each labeled one (FixMatch's μ = 7) is the run's minibatch
composition: ``batch_size − labeled_batch_size`` unlabeled beside ``labeled_batch_size``
labeled images, so μ = 7 is ``labeled_batch_size = batch_size / 8``. The EMA teacher follows
the student (the run's ``ema_decay``) and sees the other weak view, as every method's does here
(its batch-norm statistics come from those passes), except in the ``usb`` recipe, whose update
copies the student's statistics into it: there it makes no training pass, as in USB, since the
pass would only be logged. FixMatch and USB evaluate the EMA model, so this method reports the
teacher.

The strong view is made image by image in the data pipeline: the ConvNet recipe (raw arrays, the
noise inside the model) has none, and the method refuses it before anything is built; fast mode
then loads its minibatches per image too (``mt_repro.data.loaders``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.registry import register

STRONG = "strong_input"


@dataclass(frozen=True)
class FixMatchOptions:
    threshold: float = 0.95

    def check(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise BadInput(f"fixmatch: threshold must be in [0, 1] (got {self.threshold})")


def refuse_without_strong_view(config, method: str) -> None:
    """``BadInput`` for a run whose data path makes no strong view (``strong_input``)."""
    if config.recipe.noise != "pipeline":
        raise BadInput(f"{method} needs a strong view of each image (RandAugment + Cutout), made in the "
                       "per-image data pipeline, and the ConvNet recipe feeds raw arrays with the noise "
                       "inside the model: train it with the ResNet recipe's settings or in the digits demo")


def weak_and_strong_logits(student, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's logits on the minibatch's weak view (every image) and on the unlabeled
    images' strong view, from one pass over both."""
    strong = batch.extras[STRONG][batch.unlabeled_rows]
    logits, _ = student(torch.cat([batch.student_input, strong]))
    n = len(batch.targets)
    return logits[:n], logits[n:]


def confident_guess(weak_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(softmax of the detached weak-view logits, its arg-max class, whether its probability
    reaches ``threshold``): no gradient flows through any of them."""
    with torch.no_grad():
        probabilities = F.softmax(weak_logits.detach(), dim=1)
        confidence, guess = probabilities.max(dim=1)
        return probabilities, guess, confidence.ge(threshold)


def fixmatch_cost(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy of the strong-view logits against the weak view's confident
    arg-max class, the confidence mask) over the rows of the unlabeled images."""
    _, guess, mask = confident_guess(weak_logits, threshold)
    costs = F.cross_entropy(strong_logits, guess, reduction="none")
    return (costs * mask).sum(), mask


class WeakStrongMethod(EMAMethod):
    """A step of FixMatch's shape, shared with UDA: one student pass over the weak view and the
    unlabeled images' strong view, the labeled mean, and the run's weight × the masked cost of
    the unlabeled images (``unlabeled_cost``) averaged over them. Reports the EMA teacher."""

    sample_extras = (STRONG,)
    reported_model = "teacher"  # FixMatch and USB evaluate the EMA of the weights
    mean_over_parts = True      # the labeled mean, and the masked cost's mean over the unlabeled images

    @classmethod
    def check_config(cls, config) -> None:
        refuse_without_strong_view(config, cls.method_name)

    def unlabeled_cost(self, weak_logits: torch.Tensor, strong_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the cost summed over the unlabeled rows, the confidence mask)."""
        raise NotImplementedError

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        logits, strong_logits = weak_and_strong_logits(self.student, batch)
        ema_logits = self.logged_teacher_logits(batch.teacher_input)
        class_loss = self.class_loss(logits, targets)
        cost, mask = self.unlabeled_cost(logits[batch.unlabeled_rows], strong_logits)
        weight = step.consistency_weight
        consistency = weight * self.part_mean(cost, len(batch.unlabeled_rows), len(targets))
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": consistency.detach(),
                  "confident": mask.float().mean() if len(mask) else 0.0}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)


@register("fixmatch")
class FixMatch(WeakStrongMethod):
    Options = FixMatchOptions

    def unlabeled_cost(self, weak_logits, strong_logits):
        return fixmatch_cost(weak_logits, strong_logits, self.options.threshold)
