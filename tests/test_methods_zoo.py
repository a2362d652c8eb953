"""The methods beside Mean Teacher: each loss on a batch small enough to check by hand, the
registry, and a short digits run of each through the CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_line_error
from mt_repro.config import TrainConfig
from mt_repro.methods import registry
from mt_repro.methods.ict import ict_cost
from mt_repro.methods.pseudo_label import pseudo_label_cost


def test_every_method_is_registered_with_a_settings_file():
    assert registry.method_names() == ["ict", "mean_teacher", "pi_model", "pseudo_label"]
    for name in registry.method_names():
        assert registry.method_settings(name)["source"]


def test_pseudo_label_uses_only_confident_unlabeled_samples():
    logits = torch.tensor([[10.0, 0.0, 0.0],    # labeled: never pseudo-labeled
                           [0.0, 9.0, 0.0],     # unlabeled, confident: class 1
                           [1.0, 1.2, 0.9]], dtype=torch.float64)  # unlabeled, unsure: skipped
    targets = torch.tensor([0, -1, -1])
    cost, confident = pseudo_label_cost(logits, targets, threshold=0.95)
    p = math.exp(9) / (math.exp(9) + 2)
    assert confident == 1 and cost.item() == pytest.approx(-math.log(p), rel=1e-9)
    none, zero = pseudo_label_cost(logits, torch.tensor([0, 1, 2]), 0.95)
    assert zero == 0 and none.item() == 0.0


def test_ict_matches_a_hand_mixup():
    class Linear(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=(1, 2, 3)).view(-1, 1) * torch.tensor([[1.0, -1.0]]), None

    images = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    teacher = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    lam, permutation = 0.3, torch.tensor([1, 0])
    got = ict_cost(Linear(), teacher, images, lam, permutation)
    mixed = np.array([0.3 * 1 + 0.7 * -2, 0.3 * -2 + 0.7 * 1])
    student = np.stack([1 / (1 + np.exp(-2 * mixed)), 1 - 1 / (1 + np.exp(-2 * mixed))], axis=1)
    target = 0.3 * teacher.numpy() + 0.7 * teacher.numpy()[[1, 0]]
    assert got.item() == pytest.approx(((student - target) ** 2).sum() / 2, rel=1e-6)


def test_pi_model_consistency_has_gradients_through_both_passes():
    from mt_repro.methods.pi_model import PiModel

    torch.manual_seed(0)

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4, 6))

        def forward(self, x):
            return x @ self.w, None

    student, teacher = Noisy(), Noisy()
    config = TrainConfig(consistency=10.0, consistency_rampup=0, method="pi_model", dataset="digits",
                         arch="digits_convnet", labeled_batch_size=1, batch_size=2)
    method = PiModel(config, student, teacher)
    a, b, targets = torch.randn(2, 4), torch.randn(2, 4), torch.tensor([1, -1])
    result = method.losses(a, b, targets, epoch=0)
    expected_cons = 10.0 * ((F.softmax(a @ student.w, 1) - F.softmax(b @ student.w, 1)) ** 2).sum() / 6 / 2
    assert result.values["cons_loss"] == pytest.approx(expected_cons.item(), rel=1e-6)
    assert result.values["class_loss"] == pytest.approx(F.cross_entropy((a @ student.w)[:1], targets[:1]).item() / 2)
    result.loss.backward()
    assert student.w.grad is not None and teacher.w.grad is None


@pytest.mark.parametrize("method", ["pi_model", "pseudo_label", "ict"])
def test_each_method_runs_on_the_digits(cli, tmp_path, method):
    code, out, err = cli("digits", "--method", method, "--seeds", 1, "--epochs", 2, "--out", tmp_path,
                         "--no-progress")
    assert code == 0, err
    assert method.replace("_", " ") in out and "supervised" in out
    summary = (tmp_path / f"{method}_0" / "summary.json").read_text()
    assert '"teacher_error1"' in summary


def test_unknown_method(cli, tmp_path):
    assert_one_line_error(cli("digits", "--method", "mixmatch2", "--out", tmp_path), "unknown method 'mixmatch2'")
    from mt_repro.errors import BadInput

    with pytest.raises(BadInput, match="method 'nope' is not one of ict, mean_teacher"):
        TrainConfig(dataset="digits", arch="digits_convnet", labeled_batch_size=1, batch_size=2,
                    method="nope").validate()
