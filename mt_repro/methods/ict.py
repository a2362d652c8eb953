"""Interpolation Consistency Training (Verma et al., IJCAI 2019): the student's prediction on a
mixup of two unlabeled images should equal the same mixup of the EMA teacher's predictions,
``λ ~ Beta(α, α)`` once per step, the partner of each image a random permutation of the batch.
``mix_targets`` says what of the teacher's is mixed: ``"logits"`` (the default), as the authors'
``main.py`` does, which then compares softmaxes, so the target is the softmax of the mixed logits;
or ``"probabilities"``, as the paper writes ``Mix_λ(f_θ'(u_j), f_θ'(u_k))``. The softmax of mixed
logits is the sharper target: between two confident predictions of different classes it still
leans to the class of the larger share.

With ``supervised_alpha`` > 0 the labels teach through mixup too, as the authors' runs do
(``--mixup_sup_alpha`` in their ``main.py``): the student sees a mixup of the labeled images
(its own ``λ ~ Beta(α_sup, α_sup)``) and pays ``λ·CE(y_a) + (1 − λ)·CE(y_b)``. The plain pass
over the whole minibatch still runs, for the meters and for batch norm. Each part of the loss
is a mean over its own images (labeled cross-entropy, unlabeled consistency), as in main.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.core.errors import BadInput
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.registry import register


MIXED_TARGETS = ("logits", "probabilities")


@dataclass(frozen=True)
class ICTOptions:
    alpha: float = 1.0
    supervised_alpha: float = 0.0
    mix_targets: str = "logits"

    def check(self) -> None:
        if self.alpha <= 0 or self.supervised_alpha < 0:
            raise BadInput("ict: alpha must be positive and supervised_alpha at least 0 (0: no mixup of labels)")
        if self.mix_targets not in MIXED_TARGETS:
            raise BadInput(f"ict: mix_targets must be one of {', '.join(MIXED_TARGETS)} (got {self.mix_targets!r})")


def ict_cost(student, teacher_logits: torch.Tensor, unlabeled: torch.Tensor, lam: float,
             permutation: torch.Tensor, mix_targets: str = "logits") -> torch.Tensor:
    """Summed squared difference (÷ classes) between the student's softmax on the mixed images
    and the teacher's mixed prediction (see the module's docstring for ``mix_targets``)."""
    mixed = lam * unlabeled + (1 - lam) * unlabeled[permutation]
    if mix_targets == "logits":
        target = F.softmax(lam * teacher_logits + (1 - lam) * teacher_logits[permutation], dim=1)
    else:
        probabilities = F.softmax(teacher_logits, dim=1)
        target = lam * probabilities + (1 - lam) * probabilities[permutation]
    logits, _ = student(mixed)
    return F.mse_loss(F.softmax(logits, dim=1), target, reduction="sum") / logits.size(1)


def mixup_class_cost(student, images: torch.Tensor, labels: torch.Tensor, lam: float,
                     permutation: torch.Tensor) -> torch.Tensor:
    """Summed ``λ·CE(y) + (1 − λ)·CE(y_partner)`` of the student's logits on the mixed images."""
    logits, _ = student(lam * images + (1 - lam) * images[permutation])
    return (lam * F.cross_entropy(logits, labels, reduction="sum")
            + (1 - lam) * F.cross_entropy(logits, labels[permutation], reduction="sum"))


@register("ict")
class ICT(EMAMethod):
    Options = ICTOptions
    reported_model = "teacher"  # the authors' code reports its EMA model's test error
    mean_over_parts = True  # main.py: mean cross-entropy over the labeled batch, consistency ÷ the unlabeled one

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets = batch.targets
        logits, ema_logits, class_loss, weight = self.common_part(batch, step, teacher_in_loss=True)
        labeled_rows, unlabeled_rows = batch.labeled_rows, batch.unlabeled_rows   # their counts known on the host
        if self.options.supervised_alpha and len(labeled_rows):
            lam = float(np.random.beta(self.options.supervised_alpha, self.options.supervised_alpha))
            permutation = torch.randperm(len(labeled_rows), device=logits.device)
            class_loss = self.part_mean(mixup_class_cost(self.student, batch.student_input[labeled_rows],
                                                         targets[labeled_rows], lam, permutation),
                                        len(labeled_rows), len(targets))
        cost = logits.sum() * 0.0
        if len(unlabeled_rows) > 1:
            lam = float(np.random.beta(self.options.alpha, self.options.alpha))
            permutation = torch.randperm(len(unlabeled_rows), device=logits.device)
            cost = ict_cost(self.student, ema_logits[unlabeled_rows], batch.teacher_input[unlabeled_rows], lam,
                            permutation, self.options.mix_targets)
        consistency = weight * self.part_mean(cost, len(unlabeled_rows), len(targets))
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": consistency.detach()}
        return step_result(class_loss + consistency, values, logits, ema_logits, targets)
