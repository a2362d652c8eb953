"""Mean Teacher as USB and TorchSSL compute it, with USB's consistency input corrected.

USB's ``semilearn/algorithms/meanteacher/meanteacher.py`` takes the consistency's input from the
teacher's outputs (``logits_x_ulb_s = outs_x_ulb_w['logits']``), so its consistency term has no
gradient (USB issues #102 and #226). This method is that step with the student's outputs in that
place: the same algorithm as ``mean_teacher`` (the paper's), computed otherwise. TorchSSL's
``models/meanteacher/meanteacher.py`` computes the same, the student's unlabeled pass before the
teacher's:

* three passes, in USB's order: the student over the labeled images (its view); the teacher
  (no gradient) over the unlabeled images' teacher view; the student over their own view with
  its running statistics left as they were (USB's ``bn_controller.freeze_bn``), so the student's,
  and with USB's EMA update the teacher's, statistics come from labeled minibatches alone;
* cross-entropy averaged over the labeled images, plus the run's consistency weight (USB's
  ``lambda_u`` × its linear warm-up) × the squared difference of the two softmax outputs averaged
  over the unlabeled images and the classes (USB's ``consistency_loss(..., 'mse')``).

The paper's consistency covers the labeled images too and comes from one student pass over the
whole minibatch; its cost is summed and divided by the minibatch (``mean_teacher``). USB feeds
Mean Teacher two weak views of each unlabeled image (its ``datasetbase.py`` makes ``x_ulb_s`` with
the weak transform for this algorithm), as the pipeline's two views here.
"""
from __future__ import annotations

import torch

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods import losses
from mt_repro.methods.base import frozen_statistics, step_result
from mt_repro.methods.mean_teacher import MeanTeacher
from mt_repro.methods.registry import register


def losses_as_usb(student, teacher, batch: Batch, weight: float) -> StepResult:
    """USB's Mean Teacher step, its consistency input corrected (see the module's docstring)."""
    labeled, unlabeled = batch.labeled_rows, batch.unlabeled_rows
    labels = batch.targets[labeled]
    class_logit, _ = student(batch.student_input[labeled])
    class_loss = losses.classification_cost(class_logit, labels) / max(len(labeled), 1)
    values = {"class_loss": class_loss.detach(), "cons_weight": weight}
    if len(unlabeled):   # the rows are known on the host: no wait for the device
        with torch.no_grad():
            teacher_logit, _ = teacher(batch.teacher_input[unlabeled])
        with frozen_statistics(student):
            cons_logit, _ = student(batch.student_input[unlabeled])
        consistency = weight * losses.softmax_mse_loss(cons_logit, teacher_logit.detach()) / len(unlabeled)
    else:
        consistency = class_logit.sum() * 0.0
    values["cons_loss"] = consistency.detach()
    # The teacher sees no labeled image: no teacher precision is logged (nor by USB).
    return step_result(class_loss + consistency, values, class_logit, None, labels)


@register("mean_teacher_usb")
class MeanTeacherUSB(MeanTeacher):
    """The teacher is reported, as USB evaluates its EMA model. Two student passes a step: not
    run under several processes (one forward pass per backward pass is what they need)."""

    multi_process = False
    published_as = "mean_teacher"   # TorchSSL's and USB's Mean Teacher rows are of this step

    @classmethod
    def check_config(cls, config) -> None:
        if config.recipe.costs == "tensorflow":
            raise BadInput("mean_teacher_usb is USB's step, of the PyTorch half's kind; the ConvNet recipe forms "
                           "Mean Teacher's costs per sample, as the TensorFlow half: train mean_teacher there")
        if config.consistency_type != "mse":
            raise BadInput(f"mean_teacher_usb's consistency is USB's squared softmax difference: set "
                           f"consistency_type mse (got {config.consistency_type!r})")
        if config.logit_distance_cost >= 0:
            raise BadInput("mean_teacher_usb trains one head, as USB's network has: set logit_distance_cost "
                           f"below 0 (got {config.logit_distance_cost})")

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        return losses_as_usb(self.student, self.teacher, batch, step.consistency_weight)
