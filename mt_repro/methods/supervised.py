"""Supervised-only: the network trained on the labels alone, the baseline row of every table.

The original ran it through its Mean Teacher code with the consistency cost switched off and
minibatches of labeled images only, so here it is Mean Teacher's step (in the formulation of the
run's recipe, ``mt_repro.methods.mean_teacher``) without the consistency cost: the same passes,
the same cross-entropy, an EMA teacher kept and evaluated beside the network, which is what the
paper reports.
"""
from __future__ import annotations

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.mean_teacher import MeanTeacher, losses_as_main_py, losses_as_model_py
from mt_repro.methods.registry import register


@register("supervised")
class Supervised(MeanTeacher):
    reported_model = "student"

    @classmethod
    def check_config(cls, config) -> None:
        if not config.labeled_only:
            how = ("n_labeled_per_batch must equal batch_size "
                   f"({config.batch_size}), got {config.n_labeled_per_batch!r}"
                   if config.recipe.name == "tensorflow" else "set exclude_unlabeled")
            raise BadInput(f"supervised-only trains on labeled minibatches: {how}")

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        if self.config.recipe.costs == "tensorflow":  # as the original's runners: consistency weight 0
            return losses_as_model_py(self.config, self.student, self.teacher, batch, 0.0)
        return losses_as_main_py(self.config, self.student, self.teacher, self.consistency_cost, batch, None)
