"""Mean Teacher (Tarvainen & Valpola, NIPS 2017), as the two halves of the original code
computed it.

One SGD step: the teacher (an exponential moving average of the student's parameters, run in
train mode with its own normalisation statistics) sees one view of the minibatch, the student
the other; the student learns from the labels and from the teacher's predictions; then the
engine moves the teacher's parameters towards the student's (the recipe's EMA update).

The run's recipe says how the costs are formed (``config.recipe.costs``):

* ``pytorch`` (``pytorch/main.py``, Table 4): the teacher's pass first; cross-entropy summed
  over the labeled samples ÷ the whole minibatch; with ``logit_distance_cost`` ≥ 0 head 1
  classifies, head 2 is pulled to the teacher and ``cost · Σ(h1 − h2)² / classes / minibatch``
  ties them; consistency ``weight · Σ(softmax(s) − softmax(t))² / classes / minibatch`` (MSE)
  or ``weight · Σ KL(t‖s) / minibatch``; the loss is their sum.
* ``tensorflow`` (``tensorflow/mean_teacher/model.py``, Tables 1-3): the student's pass first;
  every cost per sample: cross-entropy (0 unlabeled), consistency ``weight ·`` the mean over
  classes of the squared softmax difference (or the KL forms of ``consistency_trust``), masked
  off for labeled samples unless ``apply_consistency_to_labeled``, and ``logit_distance_cost ·
  Σ(h1 − h2)²`` (two heads with ``num_logits`` 2); the minimised cost is ``total_cost``: each
  kind summed over the minibatch, averaged over the three kinds.

``target`` gives the consistency target from the teacher's logits: the teacher's prediction
for Mean Teacher; a second noisy pass of the student for the TensorFlow half's Π model
(``mt_repro.methods.pi_model``); supervised-only has none (``mt_repro.methods.supervised``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from mt_repro.core.errors import RunFailed
from mt_repro.core.types import NO_LABEL, Batch, StepContext, StepResult
from mt_repro.methods import losses
from mt_repro.methods.base import logged_teacher_logits, step_result
from mt_repro.methods.interface import MethodHooks, NetworkBuilder
from mt_repro.methods.registry import register


Target = Callable[[Batch, torch.Tensor], torch.Tensor]


def _teacher_prediction(batch: Batch, teacher_logit: torch.Tensor) -> torch.Tensor:
    return teacher_logit


def losses_as_main_py(config, student, teacher, consistency_cost, batch: Batch, weight: float | None,
                      target: Target = _teacher_prediction) -> StepResult:
    """The PyTorch half's step (``main.py`` ``train``); ``weight`` None: no consistency cost."""
    targets = batch.targets
    minibatch_size = len(targets)
    # The original asserted this; uniformly drawn minibatches may lack labels (class cost 0).
    # Fast mode reads nothing from the device within a step: its sampler fills the labeled
    # places by construction (labeled_batch_size >= 1 is validated).
    if config.sampling != "uniform" and config.mode != "fast" and not targets.ne(NO_LABEL).any():
        raise RunFailed("a minibatch has no labeled samples")

    # Teacher first, then student: both draw shake gates from torch's generator. Without a
    # consistency cost (supervised-only) only the log reads the teacher's logits.
    if weight is None:
        teacher_logit = logged_teacher_logits(config, teacher, batch.teacher_input)
    else:
        with torch.no_grad():
            teacher_logit, _ = teacher(batch.teacher_input)
    logit1, logit2 = student(batch.student_input)

    values: dict[str, float] = {}
    if config.logit_distance_cost >= 0:
        class_logit, cons_logit = logit1, logit2
        res_loss = config.logit_distance_cost * losses.symmetric_mse_loss(class_logit, cons_logit) / minibatch_size
        values["res_loss"] = res_loss.detach()
    else:
        class_logit = cons_logit = logit1
        res_loss = 0

    class_loss = losses.classification_cost(class_logit, targets) / minibatch_size
    values["class_loss"] = class_loss.detach()
    if teacher_logit is not None:
        values["ema_class_loss"] = (losses.classification_cost(teacher_logit, targets) / minibatch_size).detach()

    if weight is not None:
        values["cons_weight"] = weight
        consistency_loss = weight * consistency_cost(cons_logit, target(batch, teacher_logit)) / minibatch_size
        values["cons_loss"] = consistency_loss.detach()
    else:
        consistency_loss = 0
        values["cons_loss"] = 0.0

    loss = class_loss + consistency_loss + res_loss
    return step_result(loss, values, class_logit, teacher_logit, targets)


def losses_as_model_py(config, student, teacher, batch: Batch, weight: float,
                       target: Target = _teacher_prediction) -> StepResult:
    """The TensorFlow half's step (``model.py``: its towers, costs and ``total_cost``)."""
    y = batch.targets
    class_1, cons_1 = student(batch.student_input)
    with torch.no_grad():
        class_ema, _ = teacher(batch.teacher_input)
    consistency_target = target(batch, class_ema)
    mask = losses.consistency_mask(y, config.apply_consistency_to_labeled)
    class_costs = losses.classification_costs(class_1, y)
    cons_costs = losses.consistency_costs(cons_1, consistency_target, weight, mask, config.consistency_trust)
    res_costs = losses.residual_costs(class_1, cons_1, config.logit_distance_cost)
    loss = losses.total_cost(class_costs, cons_costs, res_costs)
    with torch.no_grad():
        values = {"cons_weight": weight, "class_loss": class_costs.mean().detach(),
                  "ema_class_loss": losses.classification_costs(class_ema, y).mean().detach(),
                  "cons_loss": cons_costs.mean().detach(), "res_loss": res_costs.mean().detach()}
    # The TensorFlow half had no explosion guard: only a loss that is not finite stops it.
    return step_result(loss, values, class_1, class_ema, y, max_loss=math.inf)


@register("mean_teacher")
class MeanTeacher(MethodHooks):
    """The method: its costs, in the formulation of the run's recipe. It keeps nothing between
    steps beyond its two networks; the paper reports the teacher."""

    reported_model = "teacher"
    multi_process = True

    def __init__(self, config, student, teacher, options=None, *, build_network: NetworkBuilder | None = None):
        self.config = config
        self.student = student
        self.teacher = teacher
        if config.recipe.costs == "pytorch":
            self.consistency_cost = losses.CONSISTENCY_COSTS[config.consistency_type]

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        if self.config.recipe.costs == "tensorflow":
            return losses_as_model_py(self.config, self.student, self.teacher, batch, step.consistency_weight)
        weight = step.consistency_weight if self.config.consistency else None
        return losses_as_main_py(self.config, self.student, self.teacher, self.consistency_cost, batch, weight)
