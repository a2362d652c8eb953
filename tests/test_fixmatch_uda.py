"""FixMatch and UDA: the confidence mask and its threshold, UDA's sharpening, that the loss is
taught on the strong view while the target comes from the weak view without gradient, the
runs they refuse, and the strong view (``strong_input``) of the per-image pipeline: a function
of the run's seed and the epoch that leaves the draws of the two weak views as they were."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mt_repro.config import TrainConfig
from mt_repro.config.convnet import ConvNetConfig
from mt_repro.core.errors import BadInput
from mt_repro.core.types import NO_LABEL, Batch, StepContext
from mt_repro.methods import registry
from mt_repro.methods.fixmatch import FixMatch, fixmatch_cost
from mt_repro.methods.uda import UDA, sharpened_target, uda_cost


class Linear(nn.Module):
    """logits = flattened input @ w for both heads: no batch norm, so that no image's gradient
    reaches another's through the batch statistics."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(weight.clone())

    def forward(self, x):
        z = x.reshape(len(x), -1) @ self.w
        return z, z


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def toy_config(method: str, **changes) -> TrainConfig:
    values = dict(dataset="digits", arch="digits_convnet", labeled_batch_size=1, batch_size=4,
                  consistency=1.0, consistency_rampup=0, method=method, **changes)
    config = TrainConfig(**values).validate()
    registry.check_config(config)
    return config


# Three unlabeled rows: confident (p ≈ 0.98), unconfident (uniform), confident at p ≈ 0.88.
WEAK = torch.tensor([[6.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 4.0, 2.0]])
STRONG = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.5, 0.5, 0.0]])


# --- the costs ---------------------------------------------------------------------------------------
def test_fixmatch_cost_is_the_strong_views_cross_entropy_on_the_confident_arg_max():
    cost, mask = fixmatch_cost(WEAK, STRONG, threshold=0.95)
    assert mask.tolist() == [True, False, False]
    expected = -np.log(softmax(STRONG.numpy())[0, 0])
    assert float(cost) == pytest.approx(expected, rel=1e-6)
    cost, mask = fixmatch_cost(WEAK, STRONG, threshold=0.8)  # the third row's 0.87 now counts
    assert mask.tolist() == [True, False, True]
    assert float(cost) == pytest.approx(expected - np.log(softmax(STRONG.numpy())[2, 1]), rel=1e-6)


def test_the_threshold_keeps_a_probability_equal_to_it():
    weak = torch.tensor([[np.log(3.0), 0.0, 0.0]])  # p = 3/5 = 0.6 exactly
    p = float(F.softmax(weak, dim=1).max())
    assert fixmatch_cost(weak, STRONG[:1], threshold=p)[1].tolist() == [True]
    assert fixmatch_cost(weak, STRONG[:1], threshold=float(np.nextafter(np.float32(p), np.float32(1.0))))[1].tolist() == [False]
    assert uda_cost(weak, STRONG[:1], 0.4, threshold=p)[1].tolist() == [True]


def test_uda_sharpens_with_the_temperature():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.3, -0.2]])
    for temperature in (0.4, 1.0, 2.0):
        assert np.allclose(sharpened_target(z, temperature).numpy(), softmax(z.numpy() / temperature), atol=1e-7)
    assert (sharpened_target(z, 0.4).max(dim=1).values > F.softmax(z, dim=1).max(dim=1).values).all()


def test_uda_cost_is_the_kl_to_the_sharpened_target_masked_by_the_unsharpened_confidence():
    cost, mask = uda_cost(WEAK, STRONG, temperature=0.4, threshold=0.8)
    assert mask.tolist() == [True, False, True]
    target, prediction = softmax(WEAK.numpy() / 0.4), softmax(STRONG.numpy())
    kl = (target * (np.log(target) - np.log(prediction))).sum(axis=1)
    assert float(cost) == pytest.approx(kl[0] + kl[2], rel=1e-5)
    # a row whose sharpened target is confident but whose prediction is not stays out
    unsure = torch.tensor([[1.0, 0.0, 0.0]])  # p = 0.58, sharpened 0.86
    assert float(sharpened_target(unsure, 0.4).max()) > 0.8
    assert uda_cost(unsure, STRONG[:1], 0.4, 0.8)[1].tolist() == [False]


# --- the step ---------------------------------------------------------------------------------------
def batch_of(weak: torch.Tensor, other: torch.Tensor, strong: torch.Tensor, targets: torch.Tensor) -> Batch:
    return Batch(weak, other, targets, {"strong_input": strong})


def images(seed: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["fixmatch", "uda"])
def test_the_step_is_the_labeled_mean_plus_the_weighted_masked_mean_over_the_unlabeled(name):
    w = torch.randn(5, 6, generator=torch.Generator().manual_seed(0)) * 3
    config = toy_config(name, method_options="threshold=0.0")
    method = registry.method_class(name)(config, Linear(w), Linear(w))
    weak, other, strong = images(1), images(2), images(3)
    targets = torch.tensor([2, 0, NO_LABEL, NO_LABEL])
    result = method.losses(batch_of(weak, other, strong, targets), StepContext(0, 0, 0.5))
    z, zs = (weak @ w).numpy(), (strong @ w).numpy()
    supervised = -np.mean([np.log(softmax(z)[0, 2]), np.log(softmax(z)[1, 0])])
    if name == "fixmatch":
        guess = z[2:].argmax(axis=1)
        per_image = -np.log(softmax(zs[2:])[[0, 1], guess])
    else:
        target = softmax(z[2:] / 0.4)
        per_image = (target * (np.log(target) - np.log(softmax(zs[2:])))).sum(axis=1)
    assert result.values["class_loss"] == pytest.approx(supervised, rel=1e-5)
    assert result.values["cons_loss"] == pytest.approx(0.5 * per_image.mean(), rel=1e-5)
    assert result.loss.item() == pytest.approx(supervised + 0.5 * per_image.mean(), rel=1e-5)
    assert result.values["confident"] == 1.0 and result.labeled_minibatch_size == 2


@pytest.mark.parametrize("name", ["fixmatch", "uda"])
def test_the_loss_learns_on_the_strong_view_and_takes_the_target_from_the_weak_view_without_gradient(name):
    w = torch.randn(5, 6, generator=torch.Generator().manual_seed(0)) * 3
    method = registry.method_class(name)(toy_config(name, method_options="threshold=0.0"), Linear(w), Linear(w))
    targets = torch.tensor([2, NO_LABEL, NO_LABEL, NO_LABEL])
    weak, strong = images(1).requires_grad_(), images(3).requires_grad_()
    result = method.losses(batch_of(weak, images(2), strong, targets), StepContext(0, 0, 1.0))
    result.loss.backward()
    assert (weak.grad[1:] == 0).all() and weak.grad[0].abs().sum() > 0  # the weak view: the label only
    assert (strong.grad[0] == 0).all() and (strong.grad[1:].abs().sum(dim=1) > 0).all()  # the labeled: none
    # The weak view chooses the target: another weak view of the unlabeled images, another loss.
    moved = images(1).clone()
    moved[1:] = images(4)[1:]
    other = method.losses(batch_of(moved, images(2), images(3), targets), StepContext(0, 0, 1.0))
    assert float(other.values["cons_loss"]) != pytest.approx(float(result.values["cons_loss"]))


@pytest.mark.parametrize("cls", [FixMatch, UDA])
def test_nothing_confident_leaves_only_the_labels(cls):
    w = torch.zeros(5, 6)  # uniform predictions: below every threshold but 1/6
    method = cls(toy_config(cls.method_name), Linear(w), Linear(w))
    result = method.losses(batch_of(images(1), images(2), images(3), torch.tensor([1, NO_LABEL, NO_LABEL, NO_LABEL])),
                           StepContext(0, 0, 1.0))
    assert result.values["cons_loss"] == 0.0 and result.values["confident"] == 0.0
    assert result.loss.item() == pytest.approx(np.log(6.0), rel=1e-6)


def test_the_papers_settings_and_the_reported_teacher():
    assert registry.method_options("fixmatch").threshold == 0.95
    assert registry.method_options("uda") == registry.method_class("uda").Options(temperature=0.4, threshold=0.8)
    for cls in (FixMatch, UDA):
        assert cls.reported_model == "teacher" and cls.sample_extras == ("strong_input",) and cls.updates_teacher
    with pytest.raises(BadInput, match="temperature must be positive"):
        toy_config("uda", method_options="temperature=0")
    with pytest.raises(BadInput, match=r"threshold must be in \[0, 1\]"):
        toy_config("fixmatch", method_options="threshold=1.5")


# --- what they refuse ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fixmatch", "uda"])
def test_runs_without_a_strong_view_are_refused_before_anything_is_built(name):
    toy_config(name, mode="fast")   # loaded per image (tests/test_fast_mode.py)
    with pytest.raises(BadInput, match="the ConvNet recipe feeds raw arrays"):
        registry.check_config(ConvNetConfig(method=name).validate())


def test_a_dataset_without_a_weak_translation_and_flip_has_no_strong_view():
    from mt_repro.data import loaders
    from mt_repro.data.registry import get_dataset

    with pytest.raises(BadInput, match="imagenet has no strong view"):
        loaders._strong_view(get_dataset("imagenet"))


# --- the strong view of the per-image pipeline ----------------------------------------------------
def digits_config(tmp_path, **changes) -> TrainConfig:
    from mt_repro.apps import digits_demo
    from mt_repro.config.compose import load_demo_config
    from mt_repro.data import digits
    from mt_repro.data.labels import write_label_file

    label_file = tmp_path / "labels.txt"
    write_label_file(label_file, digits.label_file_entries(100, 0))
    config = digits_demo.demo_configs(load_demo_config(), "fixmatch", 100, label_file, 0, 2, tmp_path)
    return config.replace(**{"checkpoint_epochs": 1, **changes}).validate()


def one_epoch(config, extras, epoch: int = 0, steps: int = 5):
    from mt_repro.core.rng import seed_everything
    from mt_repro.data.loaders import training_data

    seed_everything(0)
    data = training_data(config, extras=extras)
    batches = []
    for batch in data.epoch(epoch):
        batches.append(batch)
        if len(batches) == steps:
            break
    return batches


def test_the_strong_view_is_its_own_draw_and_leaves_the_weak_views_draws_alone(tmp_path):
    config = digits_config(tmp_path)
    plain = one_epoch(config, ())
    strong = one_epoch(config, ("strong_input",))
    for a, b in zip(plain, strong):  # the same minibatches and weak views, drawn from the global generators
        assert torch.equal(a.targets, b.targets) and torch.equal(a.student_input, b.student_input)
        assert torch.equal(a.teacher_input, b.teacher_input) and a.extras == {}
    view = strong[0].extras["strong_input"]
    assert view.shape == strong[0].student_input.shape == (64, 1, 8, 8) and view.dtype == torch.float32
    assert not torch.equal(view, strong[0].student_input)
    again = one_epoch(config, ("strong_input",))
    assert all(torch.equal(a.extras["strong_input"], b.extras["strong_input"]) for a, b in zip(strong, again))
    later = one_epoch(config, ("strong_input",), epoch=1)
    other_seed = one_epoch(config.replace(seed=1), ("strong_input",))
    for different in (later, other_seed):
        assert not torch.equal(different[0].extras["strong_input"], view)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_worker_processes_draw_their_own_reproducible_strong_views(tmp_path):
    config = digits_config(tmp_path, workers=2)
    first, second = (one_epoch(config, ("strong_input",), steps=4) for _ in range(2))
    views = [b.extras["strong_input"] for b in first]
    assert all(torch.equal(v, b.extras["strong_input"]) for v, b in zip(views, second))


def test_a_fixmatch_run_resumes_with_the_same_strong_views(tmp_path, monkeypatch):
    from conftest import straight_and_resumed

    config = digits_config(tmp_path, epochs=2, lr_rampdown_epochs=3)
    _, _, (a, b) = straight_and_resumed(config, tmp_path, monkeypatch)
    for key in ("state_dict", "ema_state_dict"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
