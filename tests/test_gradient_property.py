"""The property a semi-supervised method's code must have and a published implementation lacked:
its unsupervised part of the loss teaches the student.

USB's Mean Teacher computed its consistency between the teacher's output and itself (the
student's strong-view logits were overwritten by the teacher's), so the term had no gradient
and the method trained as supervised-only. Every registered method here is built on a tiny
minibatch and checked: the part of the loss the schedule weights (``StepContext``'s
``consistency_weight``, which every method's unsupervised term is multiplied by) alone gives
the student's parameters a non-zero gradient, and the teacher's parameters get none. The
gradient of that part is the difference of the loss's gradients at weight 1 and weight 0 (the
loss is affine in the weight). A Mean Teacher with USB's defect fails the same check.
"""
from __future__ import annotations

import pytest
import torch

from mt_repro import models
from mt_repro.config import TrainConfig
from mt_repro.core.types import NO_LABEL, Batch, StepContext
from mt_repro.methods import registry
from mt_repro.methods.mean_teacher import MeanTeacher

# Methods whose loss has no unsupervised part by definition.
SUPERVISED_ONLY = {"supervised"}
# An untrained network is confident about nothing: the pseudo-label methods are measured with
# every prediction counted as confident, so that their term is engaged at all.
OPTIONS = {"pseudo_label": "threshold=0.0", "pseudo_label_epoch": "threshold=0.0", "fixmatch": "threshold=0.0",
           "uda": "threshold=0.0"}
# A method that gathers its targets over a whole epoch (per-sample memories) is measured after
# this many epochs of steps on the same samples, so that it has targets to teach with.
WARM_UP_EPOCHS = 3


def build(method_name: str, method_class=None):
    torch.manual_seed(0)
    supervised = method_name in SUPERVISED_ONLY  # trains on labeled minibatches only
    config = TrainConfig(dataset="digits", arch="digits_convnet", batch_size=8,
                         labeled_batch_size=None if supervised else 2, exclude_unlabeled=supervised,
                         consistency=1.0, consistency_rampup=0, epochs=2 * WARM_UP_EPOCHS,
                         method=method_name, method_options=OPTIONS.get(method_name)).validate()
    registry.check_config(config)
    student, teacher = models.create_model("digits_convnet", 10), models.create_model("digits_convnet", 10)
    # The engine detaches the teacher's parameters; here they are left trainable, so that a
    # method whose loss reaches the teacher is seen doing so.
    teacher.load_state_dict(student.state_dict())
    cls = method_class or registry.method_class(method_name)
    return cls(config, student, teacher,
               build_network=lambda: models.create_model("digits_convnet", 10))


def minibatch(labeled_only: bool) -> Batch:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 1, 8, 8, generator=generator)
    other_view = images + 0.3 * torch.randn(8, 1, 8, 8, generator=generator)
    targets = torch.tensor([3, 7, 1, 0, 9, 4, 4, 2] if labeled_only else [3, 7] + [NO_LABEL] * 6)
    strong_view = images + 0.5 * torch.randn(8, 1, 8, 8, generator=generator)
    return Batch(images, other_view, targets, {"indices": torch.arange(8), "clean_input": images.clone(),
                                               "strong_input": strong_view})


def unsupervised_gradient(method) -> tuple[float, bool]:
    """(norm of the gradient that the weighted part of the loss alone gives the student's
    parameters, whether any of the teacher's parameters got a gradient)."""
    batch = minibatch(labeled_only=method.config.exclude_unlabeled)
    for epoch in range(WARM_UP_EPOCHS):  # what a method gathers per epoch (targets, pseudo-labels)
        method.losses(batch, StepContext(epoch, epoch, 1.0))
        method.end_of_epoch(epoch + 1)
    epoch = method.run_epochs(method.config.epochs) - 1  # late: past every ramp and first generation
    gradients, teacher_touched = [], False
    for weight in (1.0, 0.0):
        torch.manual_seed(2)  # the same noise (dropout, shake gates, perturbations) at both weights
        for network in (method.student, method.teacher):
            network.zero_grad(set_to_none=True)
        result = method.losses(batch, StepContext(epoch, 100, weight))
        result.loss.backward()
        gradients.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                    for p in method.student.parameters()]))
        teacher_touched |= any(p.grad is not None and bool(p.grad.abs().sum() > 0)
                               for p in method.teacher.parameters())
    return float((gradients[0] - gradients[1]).norm()), teacher_touched


@pytest.mark.parametrize("name", registry.method_names())
def test_the_unsupervised_part_alone_teaches_the_student_and_not_the_teacher(name):
    norm, teacher_touched = unsupervised_gradient(build(name))
    assert not teacher_touched, f"{name}: the teacher's parameters got a gradient"
    if name in SUPERVISED_ONLY:
        assert norm == 0.0, f"{name} has no unsupervised part, yet its weight changed the gradient"
    else:
        assert norm > 1e-6, f"{name}: the unsupervised part of the loss gives the student no gradient"


class TeacherAgainstItself(MeanTeacher):
    """USB's defect: the consistency compares the teacher's predictions with themselves."""

    def losses(self, batch, step):
        student = self.student
        self.student = _Detached(self.teacher)
        try:
            consistency_only = super().losses(batch, step)
        finally:
            self.student = student
        logits, _ = student(batch.student_input)
        class_loss = self.class_loss_only(logits, batch.targets)
        consistency_only.loss = class_loss + consistency_only.loss.detach()
        return consistency_only

    @staticmethod
    def class_loss_only(logits, targets):
        labeled = targets.ne(NO_LABEL)
        return torch.nn.functional.cross_entropy(logits[labeled], targets[labeled], reduction="sum") / len(targets)


class _Detached(torch.nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        with torch.no_grad():
            return self.network(x)


def test_the_check_fails_for_a_mean_teacher_whose_consistency_compares_the_teacher_with_itself():
    norm, _ = unsupervised_gradient(build("mean_teacher", TeacherAgainstItself))
    assert norm == 0.0
    sound, _ = unsupervised_gradient(build("mean_teacher"))
    assert sound > 1e-6
