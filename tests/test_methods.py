import math

import numpy as np
import pytest
import torch
from torch import nn

from mt_repro.config import TrainConfig
from mt_repro.core import ramps
from mt_repro.core.metrics import accuracy
from mt_repro.engine.ema import separate_teacher
from mt_repro.engine.ema import update_after_step as update_teacher
from mt_repro.engine.schedules import consistency_weight, learning_rate
from mt_repro.methods import losses


def create_teacher(build):
    return separate_teacher(None, None, build)


def test_softmax_mse_is_squared_probability_difference_over_classes():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    expected = ((s.softmax(1) - t.softmax(1)) ** 2).sum() / 4
    assert torch.allclose(losses.softmax_mse_loss(s, t), expected)


def test_softmax_kl_is_kl_teacher_to_student_summed():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    p = t.softmax(1)
    expected = (p * (p.log() - s.log_softmax(1))).sum()
    assert torch.allclose(losses.softmax_kl_loss(s, t), expected, atol=1e-6)


def test_symmetric_mse_sends_gradients_both_ways():
    a = torch.randn(3, 10, requires_grad=True)
    b = torch.randn(3, 10, requires_grad=True)
    loss = losses.symmetric_mse_loss(a, b)
    assert torch.allclose(loss, ((a - b) ** 2).sum() / 10)
    loss.backward()
    assert torch.allclose(a.grad, -b.grad)


def test_classification_cost_sums_over_labeled_only():
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, -1, 2, -1])
    expected = nn.functional.cross_entropy(logits[[0, 2]], targets[[0, 2]], reduction="sum")
    assert torch.allclose(losses.classification_cost(logits, targets), expected)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        losses.softmax_mse_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_ramps():
    assert ramps.sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5))
    assert ramps.sigmoid_rampup(5, 5) == 1.0 and ramps.sigmoid_rampup(9, 5) == 1.0
    assert ramps.sigmoid_rampup(3, 0) == 1.0
    assert ramps.sigmoid_rampup(2.5, 5) == pytest.approx(math.exp(-5 * 0.25))
    assert ramps.linear_rampup(1, 4) == 0.25 and ramps.linear_rampup(4, 4) == 1.0
    assert ramps.cosine_rampdown(0, 10) == 1.0 and ramps.cosine_rampdown(10, 10) == pytest.approx(0)
    assert ramps.cosine_rampdown(5, 10) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ramps.cosine_rampdown(11, 10)


def test_learning_rate_uses_the_fractional_epoch():
    cfg = TrainConfig(lr=0.2, initial_lr=0.1, lr_rampup=2, lr_rampdown_epochs=10)
    # Halfway through epoch 0 of a 2-epoch warm-up: a quarter of the way from 0.1 to 0.2.
    expected = (0.1 + 0.25 * 0.1) * 0.5 * (math.cos(math.pi * 0.5 / 10) + 1)
    assert learning_rate(cfg, 0 + 50 / 100) == pytest.approx(expected)
    assert learning_rate(cfg, 10 + 0 / 100) == pytest.approx(0.0)
    no_rampdown = TrainConfig(lr=0.2, lr_rampdown_epochs=None)
    assert learning_rate(no_rampdown, 3 + 7 / 10) == pytest.approx(0.2)


def test_consistency_weight_steps_once_per_epoch():
    cfg = TrainConfig(consistency=100.0, consistency_rampup=5)
    assert consistency_weight(cfg, 0) == pytest.approx(100 * math.exp(-5))
    assert consistency_weight(cfg, 2) == pytest.approx(100 * math.exp(-5 * 0.6 ** 2))
    assert consistency_weight(cfg, 7) == 100.0


def test_teacher_update_is_a_true_average_at_first():
    # alpha = min(1 - 1/(step+1), decay): after steps 1..n the teacher is the plain mean of the
    # students of steps 1..n (step 1 weighs the initial teacher by 1/2, as the original did).
    student, teacher = nn.Linear(2, 1), create_teacher(lambda: nn.Linear(2, 1))
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        teacher.weight.fill_(0.0)
    for step in range(1, 6):
        with torch.no_grad():
            student.weight.fill_(float(step))
        update_teacher(student, teacher, 0.99, step)
    # step 1: alpha 1/2 -> 0.5; then alpha = step/(step+1) gives a running mean over [0, 1..5].
    assert teacher.weight[0, 0].item() == pytest.approx(np.mean([0, 1, 2, 3, 4, 5]))


def test_teacher_update_caps_alpha_at_ema_decay_and_skips_buffers():
    student, teacher = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        student.weight.fill_(2.0)
        student.running_mean.fill_(5.0)
    update_teacher(student, teacher, 0.9, 1000)
    assert torch.allclose(teacher.weight, torch.full((3,), 0.9 * 1 + 0.1 * 2))
    assert torch.all(teacher.running_mean == 0)


def test_accuracy_counts_labeled_samples_only():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    targets = torch.tensor([1, 1, -1, -1])
    top1, top2 = (float(p) for p in accuracy(logits, targets, topk=(1, 2)))
    assert top1 == pytest.approx(50.0) and top2 == pytest.approx(100.0)
