"""The methods beside Mean Teacher: the method interface and registry, each method's loss on a
batch small enough to check by hand (or against plain numpy written here), Temporal
Ensembling's targets against a numpy EMA, Deep Mutual Learning with three students, both
minibatch compositions, ``--method`` on the paper's commands, and a short digits run of each."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_one_line_error, straight_and_resumed
from mt_repro.config import TrainConfig
from mt_repro.config.methods import method_settings, settings_names
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.types import Batch, StepContext
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import runs
from mt_repro.engine.schedules import PerEpochSchedule
from mt_repro.engine.trainer import Trainer
from mt_repro.methods import registry
from mt_repro.methods.ict import ict_cost, mixup_class_cost
from mt_repro.methods.interface import Method, MethodHooks
from mt_repro.methods.pseudo_label import pseudo_label_cost

# Found by the registry's scan of mt_repro/methods/: a method added there (one module, one
# settings file) joins the checks below and the digits smoke test without being named here.
ALL_METHODS = registry.method_names()
# The methods Mean Teacher is compared with, which the framework promises.
COMPARED_METHODS = {"ict", "mean_teacher", "mixmatch", "mutual_learning", "pi_model", "pseudo_label",
                    "pseudo_label_epoch", "self_training", "temporal_ensembling", "vat"}


class TwoHeadLinear(nn.Module):
    """logits = flattened input @ w, returned for both heads: predictions a test can redo in numpy."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(weight.clone())

    def forward(self, x):
        z = x.reshape(len(x), -1) @ self.w
        return z, z


def toy_config(method: str, **changes) -> TrainConfig:
    values = dict(dataset="digits", arch="digits_convnet", labeled_batch_size=1, batch_size=2,
                  consistency=1.0, consistency_rampup=0, method=method)
    values.update(changes)
    config = TrainConfig(**values).validate()
    registry.check_config(config)  # the method, its options, and the method's word on the config
    return config


def losses(method, student_input, teacher_input, targets, epoch: int = 0, **extras):
    """One step of ``method`` on a minibatch, with the consistency weight the run's schedule
    gives ``epoch`` (as the engine computes it)."""
    weight = PerEpochSchedule(method.config, method).at(epoch, 0, 1, 0).consistency_weight
    return method.losses(Batch(student_input, teacher_input, targets, extras), StepContext(epoch, 0, weight))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """Summed KL(p || q) over rows."""
    return float((p * (np.log(p) - np.log(q))).sum())


# --- interface and registry ---------------------------------------------------------------------
def test_every_method_is_registered_with_a_settings_file_and_the_interface():
    assert COMPARED_METHODS <= set(ALL_METHODS)
    assert settings_names() == ALL_METHODS  # every module has its settings file and vice versa
    for name in ALL_METHODS:
        settings = method_settings(name)
        assert settings.source
        cls = registry.method_class(name)
        assert cls.method_name == name and cls.reported_model in ("student", "teacher")
        registry.method_options(name)  # the [options] table fits the method's Options
        base = dict(dataset="digits", arch="digits_convnet", labeled_batch_size=1, batch_size=8, method=name)
        for table in ("resnet", "digits"):  # each run table fits the settings and the method
            registry.check_config(TrainConfig.from_dict({**base, **settings.table(table)}).validate())


def test_mean_teacher_satisfies_the_interface_unchanged_in_behaviour():
    from mt_repro.methods.mean_teacher import MeanTeacher

    config = toy_config("mean_teacher")
    method = MeanTeacher(config, TwoHeadLinear(torch.ones(4, 5)), TwoHeadLinear(torch.ones(4, 5)))
    assert isinstance(method, Method)
    assert method.state_dict() == {} and method.extra_parameters() == [] and method.sample_extras == ()
    assert MeanTeacher.reported_model == "teacher" and MeanTeacher.updates_teacher


def test_a_class_lacking_the_interface_is_refused_at_registration():
    class Incomplete:
        def losses(self, *args):
            pass

    with pytest.raises(TypeError, match="lacks check_config"):
        registry.register("incomplete")(Incomplete)

    class AsksTooMuch(MethodHooks):
        sample_extras = ("labels_of_the_future",)

        def losses(self, *args):
            pass


    with pytest.raises(TypeError, match="unknown sample extras"):
        registry.register("asks_too_much")(AsksTooMuch)
    assert "incomplete" not in registry.method_names() and "asks_too_much" not in registry.method_names()


@pytest.mark.parametrize("options, fragment", [
    ("epsilon=2,eps=1", "unknown option(s) eps of method vat"),
    ("epsilon=big", "epsilon='big' is not a valid float"),
    ("epsilon", "expects name=value"),
    ("epsilon=-1", "epsilon and xi must be positive"),
    ("entropy_minimization=true,entropy_weight=-0.5", "vat: entropy_weight must be at least 0 (got -0.5)"),
])
def test_method_options_are_checked_when_the_config_is(options, fragment):
    with pytest.raises(BadInput, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        toy_config("vat", method_options=options)
    assert registry.method_options("vat", "epsilon=2, power_iterations=2").epsilon == 2.0


# --- Pseudo-Label ---------------------------------------------------------------------------------
@pytest.mark.parametrize("wait_free", [False, True])
def test_pseudo_label_uses_only_confident_unlabeled_samples(wait_free):
    logits = torch.tensor([[10.0, 0.0, 0.0],    # labeled: never pseudo-labeled
                           [0.0, 9.0, 0.0],     # unlabeled, confident: class 1
                           [1.0, 1.2, 0.9]], dtype=torch.float64, requires_grad=True)  # unlabeled, unsure
    targets = torch.tensor([0, -1, -1])
    cost, confident = pseudo_label_cost(logits, targets, threshold=0.95, wait_free=wait_free)
    p = math.exp(9) / (math.exp(9) + 2)
    assert confident == 1 and cost.item() == pytest.approx(-math.log(p), rel=1e-9)
    cost.backward()   # the gradient reaches the chosen row only
    assert logits.grad[0].abs().sum() == 0 and logits.grad[2].abs().sum() == 0 and logits.grad[1].abs().sum() > 0
    none, zero = pseudo_label_cost(logits, torch.tensor([0, 1, 2]), 0.95, wait_free=wait_free)
    assert zero == 0 and none.item() == 0.0 and none.requires_grad


def test_a_sum_over_chosen_rows_is_the_same_with_the_others_zeroed_as_with_them_left_out():
    from mt_repro.methods.losses import chosen_cross_entropy, sum_of_chosen_rows

    torch.manual_seed(0)
    logits, classes = torch.randn(64, 10, dtype=torch.float64), torch.randint(0, 10, (64,))
    chosen = torch.rand(64) < 0.3
    values = torch.rand(64, 10, dtype=torch.float64)
    for mask in (chosen, torch.zeros(64, dtype=torch.bool), torch.ones(64, dtype=torch.bool)):
        gathered = chosen_cross_entropy(logits, classes, mask, wait_free=False)
        torch.testing.assert_close(chosen_cross_entropy(logits, classes, mask, wait_free=True), gathered)
        torch.testing.assert_close(sum_of_chosen_rows(values, mask, wait_free=True),
                                   sum_of_chosen_rows(values, mask, wait_free=False))
    expected = sum(F.cross_entropy(logits[i:i + 1], classes[i:i + 1]).item() for i in range(64) if chosen[i])
    assert chosen_cross_entropy(logits, classes, chosen, wait_free=True).item() == pytest.approx(expected, rel=1e-12)


def test_pseudo_label_step_averages_each_part_over_its_own_samples():
    from mt_repro.methods.pseudo_label import PseudoLabel, PseudoLabelOptions

    # 2-d inputs, 5 classes: image [a, b] gives logits [a, b, 0, 0, 0]
    eye = torch.eye(2, 5, dtype=torch.float64)
    method = PseudoLabel(toy_config("pseudo_label", consistency=2.0), TwoHeadLinear(eye), TwoHeadLinear(eye),
                         PseudoLabelOptions(threshold=0.9))
    images = torch.tensor([[5.0, 0.0], [0.0, 6.0], [0.3, 0.0], [0.0, 5.0]], dtype=torch.float64)
    targets = torch.tensor([-1, -1, -1, 3])  # unlabeled: sure (0), sure (1), unsure; labeled: class 3
    result = losses(method, images, images, targets, 0)
    confident = [-math.log(math.exp(5) / (math.exp(5) + 4)), -math.log(math.exp(6) / (math.exp(6) + 4))]
    # Lee's Eq. 15: the labeled mean (1 sample) + α × the mean over the 3 unlabeled samples
    assert result.values["pseudo_labeled"] == 2
    assert result.values["class_loss"] == pytest.approx(-math.log(1 / (math.exp(5) + 4)), rel=1e-6)
    assert result.values["cons_loss"] == pytest.approx(2.0 * sum(confident) / 3, rel=1e-6)
    assert result.loss.item() == pytest.approx(result.values["class_loss"] + result.values["cons_loss"], rel=1e-6)


def test_epoch_pseudo_labels_come_from_the_previous_epoch():
    from mt_repro.methods.pseudo_label_epoch import EpochPseudoLabel, EpochPseudoLabelOptions

    # 2-d inputs, 5 classes: image [a, b] gives logits [a, b, 0, 0, 0]
    model = TwoHeadLinear(torch.eye(2, 5))
    method = EpochPseudoLabel(toy_config("pseudo_label_epoch", consistency=2.0), model,
                              TwoHeadLinear(torch.eye(2, 5)), EpochPseudoLabelOptions(threshold=0.9))
    images = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.3, 0.0], [5.0, 0.0]])  # sure, sure, unsure; labeled
    targets, indices = torch.tensor([-1, -1, -1, 0]), torch.tensor([0, 1, 2, 3])
    first = losses(method, images, images, targets, 0, indices=indices)
    assert first.values["cons_loss"] == 0.0 and first.values["pseudo_labeled"] == 0  # none yet
    method.end_of_epoch(1)
    with torch.no_grad():
        model.w.copy_(torch.eye(2, 5)[[1, 0]])  # the network now predicts the other class
    second = losses(method, images, images, targets, 1, indices=indices)
    # sample 0 keeps pseudo-label 0 and sample 1 label 1 from epoch 0; sample 2 has none, and the
    # labeled sample 3 is never pseudo-labeled
    ce = -math.log(1 / (math.exp(5) + 4))  # both now give their pseudo-label's logit 0, the other 5
    assert second.values["pseudo_labeled"] == 2
    # the mean over the 3 unlabeled samples (Lee's Eq. 15), and the labeled one's own mean
    assert second.values["cons_loss"] == pytest.approx(2.0 * 2 * ce / 3, rel=1e-6)
    assert second.values["class_loss"] == pytest.approx(ce, rel=1e-6)


# --- Π-model and ICT -------------------------------------------------------------------------------
def test_pi_model_consistency_has_gradients_through_both_passes():
    from mt_repro.methods.pi_model import PiModel, PiOptions

    torch.manual_seed(0)
    student, teacher = TwoHeadLinear(torch.randn(4, 6)), TwoHeadLinear(torch.randn(4, 6))
    method = PiModel(toy_config("pi_model", consistency=10.0), student, teacher,
                     PiOptions(scale_by_labeled_fraction=False))
    a, b, targets = torch.randn(2, 4), torch.randn(2, 4), torch.tensor([1, -1])
    result = losses(method, a, b, targets, epoch=0)
    expected_cons = 10.0 * ((F.softmax(a @ student.w, 1) - F.softmax(b @ student.w, 1)) ** 2).sum() / 6 / 2
    assert result.values["cons_loss"] == pytest.approx(expected_cons.item(), rel=1e-6)
    assert result.values["class_loss"] == pytest.approx(F.cross_entropy((a @ student.w)[:1], targets[:1]).item() / 2)
    result.loss.backward()
    assert student.w.grad is not None and teacher.w.grad is None


def test_pi_model_weight_is_scaled_by_the_labeled_fraction_seen():
    from mt_repro.methods.pi_model import PiModel

    torch.manual_seed(0)
    method = PiModel(toy_config("pi_model", consistency=10.0), TwoHeadLinear(torch.randn(4, 5)),
                     TwoHeadLinear(torch.randn(4, 5)))
    x = torch.randn(4, 4)
    losses(method, x, x, torch.tensor([1, -1, -1, -1]), 0, indices=torch.tensor([0, 1, 2, 3]))
    result = losses(method, x, x, torch.tensor([2, 0, -1, -1]), 0, indices=torch.tensor([4, 5, 2, 3]))
    assert result.values["cons_weight"] == pytest.approx(10.0 * 3 / 6)  # images 0, 4, 5 of 0..5 labeled


def test_the_labeled_fraction_counts_from_the_hosts_copy_and_keeps_its_checkpoint_format():
    from mt_repro.core.types import Batch, HostCopy
    from mt_repro.methods.base import LabeledFraction

    targets, indices = torch.tensor([1, -1, 2, -1]), torch.tensor([7, 3, 0, 7])
    x = torch.zeros(4, 1)
    # the host's copy is what is read: its indices, not the (here different) tensor's
    batch = Batch(x, x, targets, {"indices": indices + 100}, host=HostCopy.of(targets, indices))
    fraction = LabeledFraction()
    fraction.record(batch)
    assert fraction.value() == pytest.approx(2 / 3)   # images 0, 3, 7 seen; 7 and 0 with a label
    state = fraction.state_dict()   # torch bool tensors, as checkpoints always held them
    assert state["seen"].dtype == torch.bool and state["seen"].tolist() == [True, False, False, True] + [False] * 3 + [True]
    again = LabeledFraction()
    again.load_state_dict(state)
    assert again.value() == fraction.value()
    with pytest.raises(ValueError, match="needs the samples' indices"):
        LabeledFraction().record(Batch(x, x, targets, {}))


@pytest.mark.parametrize("mix_targets", ["logits", "probabilities"])
def test_ict_matches_a_hand_mixup(mix_targets):
    class Linear(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=(1, 2, 3)).view(-1, 1) * torch.tensor([[1.0, -1.0]]), None

    images = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    teacher_logits = torch.tensor([[2.0, -0.5], [-1.0, 1.5]])
    lam, permutation = 0.3, torch.tensor([1, 0])
    got = ict_cost(Linear(), teacher_logits, images, lam, permutation, mix_targets)
    mixed = np.array([0.3 * 1 + 0.7 * -2, 0.3 * -2 + 0.7 * 1])
    student = np.stack([1 / (1 + np.exp(-2 * mixed)), 1 - 1 / (1 + np.exp(-2 * mixed))], axis=1)
    t = teacher_logits.numpy()
    if mix_targets == "logits":  # the authors' main.py: softmax of the mixed logits
        target = softmax(0.3 * t + 0.7 * t[[1, 0]])
    else:  # the paper's formula: mix of the probabilities
        target = 0.3 * softmax(t) + 0.7 * softmax(t)[[1, 0]]
    assert got.item() == pytest.approx(((student - target) ** 2).sum() / 2, rel=1e-6)


def test_ict_mixed_logits_give_the_sharper_target():
    teacher_logits = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])
    identity = lambda x: (x.view(-1, 2), None)  # noqa: E731
    images = torch.zeros(2, 2)
    targets = {}
    for mix in ("logits", "probabilities"):
        # the student predicts (0.5, 0.5): its cost is the target's distance from the middle
        targets[mix] = ict_cost(identity, teacher_logits, images, 0.7, torch.tensor([1, 0]), mix).item()
    assert targets["logits"] > targets["probabilities"]
    with pytest.raises(BadInput, match="mix_targets must be one of logits, probabilities"):
        toy_config("ict", method_options="mix_targets=labels")


def test_ict_mixes_the_labels_with_their_images_when_asked():
    images = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    lam, permutation = 0.25, torch.tensor([2, 0, 1])
    got = mixup_class_cost(TwoHeadLinear(torch.eye(2)), images, labels, lam, permutation)
    mixed = 0.25 * images.numpy() + 0.75 * images.numpy()[[2, 0, 1]]  # logits = the mixed pixels
    log_p = np.log(softmax(mixed))
    rows = np.arange(3)
    expected = -(0.25 * log_p[rows, [0, 1, 1]] + 0.75 * log_p[rows, [1, 0, 1]]).sum()
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ict_supervised_mixup_replaces_the_plain_class_loss():
    from mt_repro.methods.ict import ICT, ICTOptions

    torch.manual_seed(0)
    x, targets = torch.randn(5, 4), torch.tensor([1, 3, 0, -1, -1])
    plain = ICT(toy_config("ict"), TwoHeadLinear(torch.randn(4, 5)), TwoHeadLinear(torch.randn(4, 5)),
                ICTOptions(alpha=1.0))
    mixed = ICT(toy_config("ict"), plain.student, plain.teacher, ICTOptions(alpha=1.0, supervised_alpha=1.0))
    np.random.seed(0)
    torch.manual_seed(0)
    with_mixup = losses(mixed, x, x, targets, 0).values["class_loss"]
    np.random.seed(0)
    lam = float(np.random.beta(1.0, 1.0))
    torch.manual_seed(0)
    permutation = torch.randperm(3)
    assert not torch.equal(permutation, torch.arange(3))  # else the mixup would change nothing
    expected = mixup_class_cost(plain.student, x[:3], targets[:3], lam, permutation).item() / 3  # mean over labeled
    assert with_mixup == pytest.approx(expected, rel=1e-6)
    assert losses(plain, x, x, targets, 0).values["class_loss"] != pytest.approx(with_mixup)
    with pytest.raises(BadInput, match="supervised_alpha at least 0"):
        toy_config("ict", method_options="supervised_alpha=-0.5")


def test_ict_averages_each_part_over_its_own_samples():
    """The authors' main.py: mean cross-entropy over the labeled batch, the consistency ÷ the
    unlabeled batch; Mean Teacher's convention (÷ the whole minibatch) stays with the methods
    that use it, e.g. the Π-model."""
    from mt_repro.methods.ict import ICT, ICTOptions
    from mt_repro.methods.pi_model import PiModel, PiOptions

    torch.manual_seed(0)
    x, targets = torch.randn(5, 4), torch.tensor([1, 3, -1, -1, -1])
    method = ICT(toy_config("ict", consistency=2.0), TwoHeadLinear(torch.randn(4, 5)),
                 TwoHeadLinear(torch.randn(4, 5)), ICTOptions(alpha=1.0))
    np.random.seed(1)
    torch.manual_seed(1)
    result = losses(method, x, x, targets, 0)
    np.random.seed(1)
    lam = float(np.random.beta(1.0, 1.0))
    torch.manual_seed(1)
    permutation = torch.randperm(3)
    summed_cross_entropy = F.cross_entropy(method.student(x[:2])[0], targets[:2], reduction="sum").item()
    assert result.values["class_loss"] == pytest.approx(summed_cross_entropy / 2, rel=1e-6)
    teacher_logits = method.teacher(x[2:])[0].detach()
    consistency = ict_cost(method.student, teacher_logits, x[2:], lam, permutation).item()
    assert result.values["cons_loss"] == pytest.approx(2.0 * consistency / 3, rel=1e-6)

    pi = PiModel(toy_config("pi_model"), method.student, method.teacher, PiOptions(scale_by_labeled_fraction=False))
    assert losses(pi, x, x, targets, 0, indices=torch.arange(5)).values["class_loss"] == pytest.approx(
        summed_cross_entropy / 5, rel=1e-6)


# --- Temporal Ensembling ---------------------------------------------------------------------------
def test_temporal_ensembling_targets_equal_a_numpy_ema_with_bias_correction():
    from mt_repro.methods.temporal_ensembling import TemporalEnsembling, TemporalEnsemblingOptions

    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    n, dims, classes, alpha, weight = 6, 4, 5, 0.6, 5.0
    model = TwoHeadLinear(torch.randn(dims, classes))
    method = TemporalEnsembling(toy_config("temporal_ensembling", consistency=weight), model,
                                TwoHeadLinear(torch.randn(dims, classes)),
                                TemporalEnsemblingOptions(prediction_decay=alpha, scale_by_labeled_fraction=False))
    targets = torch.tensor([0, -1, 2, -1, -1, 1])
    w = model.w.detach().numpy().astype(np.float64)
    ensemble, updates = np.zeros((n, classes)), np.zeros(n)
    for epoch in range(4):
        images = torch.randn(n, dims)
        order = rng.permutation(n)
        # epoch 2 leaves sample order[0] out: its ensemble and its update count stay as they were
        seen = order[1:] if epoch == 2 else order
        for batch in (seen[:3], seen[3:]):
            index = torch.tensor(batch)
            result = losses(method, images[index], images[index], targets[index], epoch, indices=index)
            p = softmax(images[index].numpy().astype(np.float64) @ w)
            have = updates[batch] > 0
            bias = 1 - alpha ** np.maximum(updates[batch], 1)
            expected = weight * ((p - ensemble[batch] / bias[:, None]) ** 2)[have].sum() / classes / len(batch)
            assert result.values["cons_loss"] == pytest.approx(expected, rel=1e-5, abs=1e-12)
        method.end_of_epoch(epoch + 1)
        z = softmax(images.numpy().astype(np.float64) @ w)
        ensemble[seen] = alpha * ensemble[seen] + (1 - alpha) * z[seen]
        updates[seen] += 1
        got, has_target = method.predictions.targets(torch.arange(n))
        assert has_target.all()
        np.testing.assert_allclose(got.numpy(), ensemble / (1 - alpha ** updates)[:, None], rtol=1e-5)
    assert sorted(updates) == [3, 4, 4, 4, 4, 4]


def test_temporal_ensembling_keeps_the_last_prediction_of_a_sample_seen_twice():
    from mt_repro.methods.temporal_ensembling import PredictionEnsemble

    ensemble = PredictionEnsemble(decay=0.5)
    ensemble.record(torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    ensemble.record(torch.tensor([0]), torch.tensor([[0.2, 0.8]]))
    ensemble.end_epoch()
    targets, has = ensemble.targets(torch.tensor([0, 1]))
    assert has.all() and torch.allclose(targets, torch.tensor([[0.2, 0.8], [0.0, 1.0]]))


# --- VAT -------------------------------------------------------------------------------------------
def test_vat_direction_is_a_power_iteration_of_the_kl_curvature_and_its_cost_the_kl_there():
    from mt_repro.methods.vat import VATOptions, adversarial_direction, unit_vectors, vat_cost

    torch.manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.float64)
    model = TwoHeadLinear(w)
    x = torch.randn(2, 5, dtype=torch.float64)
    start = torch.randn(2, 5, dtype=torch.float64)
    assert torch.allclose(unit_vectors(start).norm(dim=1), torch.ones(2, dtype=torch.float64))

    W, X, d0 = w.numpy(), x.numpy(), start.numpy()
    p = softmax(X @ W)
    expected = []
    for i in range(2):  # KL(p || softmax(W(x + r))) ~ r' H r / 2 with H = W (diag p - p p') W'
        hessian = W @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ W.T
        v = hessian @ d0[i]
        expected.append(v / np.linalg.norm(v))
    expected = np.array(expected)
    got = adversarial_direction(model, x, torch.from_numpy(p), xi=1e-6, iterations=1, start=start)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)

    options = VATOptions(epsilon=0.7, xi=1e-6, power_iterations=1)
    cost = vat_cost(model, x, x @ w, options, start=start)
    assert cost.item() == pytest.approx(kl(p, softmax((X + 0.7 * expected) @ W)), rel=1e-4)


def test_vat_step_is_the_labeled_mean_cross_entropy_plus_the_mean_smoothness_cost():
    from mt_repro.methods.vat import VAT, VATOptions, vat_cost

    torch.manual_seed(0)
    model = TwoHeadLinear(torch.randn(5, 5, dtype=torch.float64))
    options = VATOptions(epsilon=0.5)
    method = VAT(toy_config("vat", consistency=3.0), model, TwoHeadLinear(torch.zeros(5, 5, dtype=torch.float64)),
                 options)
    x, targets = torch.randn(4, 5, dtype=torch.float64), torch.tensor([2, -1, -1, -1])
    torch.manual_seed(1)
    result = losses(method, x, x, targets, 0)
    torch.manual_seed(1)  # the same random start of the power iteration
    summed = vat_cost(model, x, model(x)[0], options).item()
    p = softmax(x.numpy() @ model.w.detach().numpy())
    # Miyato et al.: the labeled data's mean NLL (1 sample) + α × the mean cost over all 4 samples
    assert result.values["class_loss"] == pytest.approx(-np.log(p[0, 2]), rel=1e-9)
    assert result.values["cons_loss"] == pytest.approx(3.0 * summed / 4, rel=1e-9)
    assert result.loss.item() == pytest.approx(-np.log(p[0, 2]) + 3.0 * summed / 4, rel=1e-9)


@pytest.mark.parametrize("weight", [1.0, 0.06])
def test_vat_with_entropy_minimization_adds_the_weighted_mean_entropy(weight):
    """VAT+EntMin adds the mean prediction entropy (Miyato et al.: weight 1; USB: 0.06)."""
    from mt_repro.methods.vat import VAT, VATOptions

    torch.manual_seed(0)
    model = TwoHeadLinear(torch.randn(5, 5, dtype=torch.float64))
    teacher = TwoHeadLinear(torch.zeros(5, 5, dtype=torch.float64))
    x, targets = torch.randn(4, 5, dtype=torch.float64), torch.tensor([2, -1, -1, -1])
    results = {}
    for entropy in (False, True):
        method = VAT(toy_config("vat", consistency=3.0), model, teacher,
                     VATOptions(epsilon=0.5, entropy_minimization=entropy, entropy_weight=weight))
        torch.manual_seed(1)
        results[entropy] = losses(method, x, x, targets, 0)
    p = softmax(x.numpy() @ model.w.detach().numpy())
    mean_entropy = float(-(p * np.log(p)).sum(axis=1).mean())
    assert results[True].values["entropy"] == pytest.approx(weight * mean_entropy, rel=1e-9)
    assert results[True].loss.item() == pytest.approx(results[False].loss.item() + weight * mean_entropy, rel=1e-9)


def test_vat_leaves_batch_norm_running_statistics_alone():
    from mt_repro.methods.base import frozen_statistics

    norm = nn.BatchNorm1d(3)
    before = norm.running_mean.clone()
    with frozen_statistics(norm):
        norm(torch.randn(8, 3) + 5)
    assert torch.equal(norm.running_mean, before) and norm.momentum == 0.1
    norm(torch.randn(8, 3) + 5)
    assert not torch.equal(norm.running_mean, before)


# --- MixMatch --------------------------------------------------------------------------------------
def test_mixmatch_pieces_by_hand():
    from mt_repro.methods.mixmatch import mix, mixmatch_costs, sharpen

    sharp = sharpen(torch.tensor([[0.6, 0.4]]), 0.5)
    assert torch.allclose(sharp, torch.tensor([[0.36 / 0.52, 0.16 / 0.52]]))
    inputs, targets = torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed_inputs, mixed_targets = mix(inputs, targets, 0.75, torch.tensor([1, 0]))
    assert torch.allclose(mixed_inputs, torch.tensor([[1.5], [2.5]]))
    assert torch.allclose(mixed_targets, torch.tensor([[0.75, 0.25], [0.25, 0.75]]))

    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, -1.0]])
    soft = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    supervised, unsupervised = mixmatch_costs(logits, soft, n_labeled=1)
    p = softmax(logits.numpy().astype(np.float64))
    assert supervised.item() == pytest.approx(-(soft.numpy()[0] * np.log(p[0])).sum(), rel=1e-6)
    assert unsupervised.item() == pytest.approx(((p[1:] - soft.numpy()[1:]) ** 2).sum() / 2 / 2, rel=1e-6)


def test_mixmatch_step_matches_a_numpy_replay():
    from mt_repro.methods.mixmatch import MixMatch, MixMatchOptions

    torch.manual_seed(0)
    w = torch.randn(3, 5)
    method = MixMatch(toy_config("mixmatch", consistency=7.0), TwoHeadLinear(w), TwoHeadLinear(w),
                      MixMatchOptions(temperature=0.5, alpha=0.75))
    view1, view2 = torch.randn(3, 3), torch.randn(3, 3)
    targets = torch.tensor([1, -1, -1])
    np.random.seed(5)
    torch.manual_seed(5)
    result = losses(method, view1, view2, targets, epoch=3)

    np.random.seed(5)
    torch.manual_seed(5)
    W, a, b = w.numpy().astype(np.float64), view1.numpy().astype(np.float64), view2.numpy().astype(np.float64)
    guess = (softmax(a[1:] @ W) + softmax(b[1:] @ W)) / 2
    guess = guess ** 2 / (guess ** 2).sum(axis=1, keepdims=True)  # T = 0.5
    inputs = np.concatenate([a[:1], a[1:], b[1:]])
    soft = np.concatenate([np.eye(5)[[1]], guess, guess])
    lam = np.random.beta(0.75, 0.75)
    lam = max(lam, 1 - lam)
    partner = torch.randperm(5).numpy()
    mixed_x, mixed_y = lam * inputs + (1 - lam) * inputs[partner], lam * soft + (1 - lam) * soft[partner]
    p = softmax(mixed_x @ W)
    supervised = -(mixed_y[0] * np.log(p[0])).sum()
    unsupervised = ((p[1:] - mixed_y[1:]) ** 2).sum() / 5 / 4
    assert result.values["class_loss"] == pytest.approx(supervised, rel=1e-5)
    assert result.values["cons_loss"] == pytest.approx(7.0 * unsupervised, rel=1e-5)


# --- Deep Mutual Learning --------------------------------------------------------------------------
def test_mutual_learning_three_students_each_mimic_the_other_two():
    from mt_repro.methods.mutual_learning import mimicry_losses

    torch.manual_seed(0)
    logits = [torch.randn(4, 5, requires_grad=True) for _ in range(3)]
    p = [softmax(z.detach().numpy().astype(np.float64)) for z in logits]
    costs = mimicry_losses(logits)
    for k in range(3):
        others = [l for l in range(3) if l != k]
        assert costs[k].item() == pytest.approx(sum(kl(p[l], p[k]) for l in others) / 2, rel=1e-5)
        gradients = torch.autograd.grad(costs[k], logits, allow_unused=True)
        for l in range(3):  # only student k's own logits learn from its mimicry cost
            assert (gradients[l] is not None and gradients[l].abs().sum() > 0) == (l == k)

    ensemble = mimicry_losses(logits, ensemble_teacher=True)
    for k in range(3):
        mean_of_others = sum(p[l] for l in range(3) if l != k) / 2
        assert ensemble[k].item() == pytest.approx(kl(mean_of_others, p[k]), rel=1e-5)
        # KL's gradient in student k's logits is linear in the target (p_k - target), so the
        # two variants teach the same; only the cost's value differs.
        mean_gradient, = torch.autograd.grad(mimicry_losses(logits)[k], logits[k])
        ensemble_gradient, = torch.autograd.grad(ensemble[k], logits[k])
        torch.testing.assert_close(ensemble_gradient, mean_gradient)

    moved = [logits[0], logits[1], logits[2] + 1.5 * torch.randn(4, 5)]  # only student 2 changes
    changed = [a.item() != pytest.approx(b.item()) for a, b in zip(mimicry_losses(moved), costs)]
    assert changed == [True, True, True]


def test_mutual_learning_step_is_each_students_labeled_mean_cross_entropy_plus_its_mean_mimicry():
    from mt_repro import models
    from mt_repro.methods.mutual_learning import MutualLearning, MutualLearningOptions

    torch.manual_seed(0)
    student, teacher = models.create_model("digits_convnet", 10), models.create_model("digits_convnet", 10)
    method = MutualLearning(toy_config("mutual_learning", consistency=0.5), student, teacher,
                            MutualLearningOptions(students=3),
                            build_network=lambda: models.create_model("digits_convnet", 10))
    for network in (student, teacher):
        network.eval()  # no dropout: the predictions can be recomputed below
    images, targets = torch.randn(4, 1, 8, 8), torch.tensor([3, -1, 7, -1])
    result = losses(method, images, torch.randn(4, 1, 8, 8), targets, 0)
    with torch.no_grad():
        p = [softmax(net(images)[0].double().numpy()) for net in method.cohort]
    expected = 0.0
    for k in range(3):
        cross_entropy = -np.log(p[k][[0, 2], [3, 7]]).mean()  # over the 2 labeled samples
        mimicry = sum(kl(p[l], p[k]) for l in range(3) if l != k) / 2 / 4  # over all 4 samples
        expected += cross_entropy + 0.5 * mimicry
        if k == 0:
            assert result.values["class_loss"] == pytest.approx(cross_entropy, rel=1e-5)
            assert result.values["cons_loss"] == pytest.approx(0.5 * mimicry, rel=1e-5)
    assert result.loss.item() == pytest.approx(expected, rel=1e-5)


def test_mutual_learning_with_three_students_trains_and_resumes_the_whole_cohort(tmp_path):
    config = digits_config(tmp_path, method="mutual_learning", method_options="students=3", epochs=1)
    run = Trainer(config, tmp_path / "run", progress=False).build()
    method = run.method
    assert len(method.peers) == 2 and len(run.optimizer.param_groups) == 2
    assert {id(p) for p in run.optimizer.param_groups[1]["params"]} == {id(p) for p in method.peers.parameters()}
    before = [peer.fc1.weight.detach().clone() for peer in method.peers]
    assert not torch.equal(before[0], before[1])  # separately initialised
    run.fit()
    assert all(not torch.equal(b, peer.fc1.weight) for b, peer in zip(before, method.peers))
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    peers = state["mt_repro"]["method_state"]["peers"]
    assert torch.equal(peers["1.fc1.weight"], method.peers[1].fc1.weight)
    again = Trainer(config, tmp_path / "run", progress=False).build()
    again.load_state(state)
    assert torch.equal(again.method.peers[1].fc1.weight, method.peers[1].fc1.weight)


# --- self-training ---------------------------------------------------------------------------------
def test_self_training_distils_the_clean_teacher_with_temperature_from_the_second_generation():
    from mt_repro.methods.self_training import SelfTraining, SelfTrainingOptions

    torch.manual_seed(0)
    student, teacher = TwoHeadLinear(torch.randn(4, 5)), TwoHeadLinear(torch.randn(4, 5))
    method = SelfTraining(toy_config("self_training", consistency=2.0, epochs=2), student, teacher,
                          SelfTrainingOptions(temperature=2.0, generations=2))
    assert method.run_epochs(2) == 4  # two whole trainings of the run's 2 epochs
    noisy, other, clean = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    targets = torch.tensor([1, -1, -1])
    first = losses(method, noisy, other, targets, 1, clean_input=clean)
    assert first.values["cons_loss"] == 0.0 and first.values["generation"] == 0.0  # labels only
    method.end_of_epoch(1)
    assert not torch.equal(teacher.w, student.w)  # the teacher changes between generations only
    method.end_of_epoch(2)
    assert torch.equal(teacher.w, student.w)  # the student became the teacher
    with torch.no_grad():
        student.w.add_(0.5)
    result = losses(method, noisy, other, targets, 2, clean_input=clean)
    S, T, N, C = student.w.detach().numpy(), teacher.w.detach().numpy(), noisy.numpy(), clean.numpy()
    t = softmax(C[1:] @ T / 2.0)
    s = softmax(N[1:] @ S / 2.0)
    # Xie et al.'s Algorithm 1: each part is a mean over its own samples (2 unlabeled, 1 labeled)
    assert result.values["generation"] == 1.0
    assert result.values["cons_loss"] == pytest.approx(2.0 * 4.0 * kl(t, s) / 2, rel=1e-5)
    assert result.values["class_loss"] == pytest.approx(-np.log(softmax(N[:1] @ S)[0, 1]), rel=1e-5)
    assert not teacher.training  # the teacher predicts without noise
    method.end_of_epoch(4)
    assert not torch.equal(teacher.w, student.w)  # the run's end makes no new teacher


def test_self_training_weight_ramps_up_again_in_each_generation():
    from mt_repro.engine.schedules import consistency_weight
    from mt_repro.methods.self_training import SelfTraining, SelfTrainingOptions

    config = toy_config("self_training", consistency=2.0, consistency_rampup=3, epochs=4)
    method = SelfTraining(config, TwoHeadLinear(torch.randn(4, 5)), TwoHeadLinear(torch.randn(4, 5)),
                          SelfTrainingOptions(generations=3))
    batch = torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, -1])
    weights = [losses(method, *batch, epoch, clean_input=torch.randn(2, 4)).values["cons_weight"]
               for epoch in range(12)]   # the schedule's weight at the method's schedule_position
    ramp = [consistency_weight(config, e) for e in range(4)]
    assert ramp[0] < ramp[1] < ramp[2] < ramp[3] == 2.0
    assert weights == [0.0] * 4 + ramp + ramp


@pytest.mark.slow
def test_self_training_runs_each_generation_with_the_whole_learning_rate_schedule(tmp_path):
    from mt_repro.engine.schedules import learning_rate

    config = digits_config(tmp_path, method="self_training", epochs=2, lr_rampdown_epochs=3)
    trainer = Trainer(config, tmp_path / "run", progress=False).build()
    assert trainer.method.options.generations == 3 and trainer.run_epochs == 6
    assert [trainer.method.schedule_position(p) for p in (0, 1.5, 2, 3, 5.5)] == [0, 1.5, 0, 1, 1.5]
    steps = 10
    for epoch, step, position in [(0, 0, 0), (1, 5, 1.5), (2, 0, 0), (5, 5, 1.5)]:
        lr = trainer.schedule.at(epoch, step, steps, 0).lr
        assert lr == pytest.approx(learning_rate(config, position), rel=1e-12)
    assert trainer.schedule.at(2, 0, steps, 0).lr == config.lr  # a fresh start at the top
    assert not trainer.method.updates_teacher and trainer.teacher_update is None
    summary = trainer.fit()
    assert summary["epochs"] == 6 and summary["global_step"] == 6 * trainer.data.steps_per_epoch
    generations = [row["generation/avg"] for row in map(json.loads, (tmp_path / "run" / "training.jsonl").open())]
    assert generations[0] == 0.0 and generations[-1] == 2.0 and sorted(generations) == generations
    mean_teacher = Trainer(config.replace(method="mean_teacher"), tmp_path / "mt", progress=False).build()
    assert mean_teacher.method.schedule_position(5.5) == 5.5  # the others keep the run's schedule
    assert mean_teacher.run_epochs == 2


# --- entropy minimization --------------------------------------------------------------------------
def test_prediction_entropy_matches_numpy():
    from mt_repro.methods.losses import prediction_entropy

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = softmax(logits)
    expected = -(p * np.log(p)).sum()
    assert prediction_entropy(torch.tensor(logits)).item() == pytest.approx(expected, rel=1e-9)
    assert prediction_entropy(torch.tensor(logits[1:])).item() == pytest.approx(math.log(3), rel=1e-9)


def test_entropy_minimization_penalises_the_entropy_of_unlabeled_predictions_only():
    from mt_repro.methods.entropy_minimization import EntropyMinimization

    torch.manual_seed(0)
    student = TwoHeadLinear(torch.randn(4, 5))
    method = EntropyMinimization(toy_config("entropy_minimization", consistency=2.0), student,
                                 TwoHeadLinear(torch.randn(4, 5)))
    x, targets = torch.randn(4, 4), torch.tensor([3, -1, -1, 0])
    result = losses(method, x, x, targets, 0)
    p = softmax(x.numpy() @ student.w.detach().numpy())
    entropies = -(p * np.log(p)).sum(axis=1)
    # Grandvalet & Bengio's sums, both ÷ the minibatch of 4: λ·(H_1 + H_2)/4 beside Σ CE/4
    assert result.values["cons_loss"] == pytest.approx(2.0 * entropies[[1, 2]].sum() / 4, rel=1e-5)
    assert result.values["class_loss"] == pytest.approx(-np.log(p[[0, 3], [3, 0]]).sum() / 4, rel=1e-5)
    result.loss.backward()
    assert student.w.grad is not None and student.w.grad.abs().sum() > 0


# --- minibatch compositions ------------------------------------------------------------------------
def test_uniform_sampling_config_and_batches(tmp_path):
    with pytest.raises(BadInput, match="sampling 'uniform' draws minibatches from all training images"):
        toy_config("mean_teacher", sampling="uniform")
    with pytest.raises(BadInput, match="sampling 'random' is not one of two_stream, uniform"):
        toy_config("mean_teacher", sampling="random")
    from mt_repro.data.loaders import training_data

    config = digits_config(tmp_path, sampling="uniform", labeled_batch_size=None, method="temporal_ensembling")
    data = training_data(config, extras=("indices",))
    assert len(data.train_loader) == 1297 // config.batch_size
    batches = [(targets, extras["indices"]) for _, targets, extras in data.train_loader]
    labeled_counts = {int(t.ne(-1).sum()) for t, _ in batches}
    assert len(labeled_counts) > 1  # no fixed labeled share
    indices = torch.cat([i for _, i in batches])
    assert len(set(indices.tolist())) == len(indices) == len(batches) * config.batch_size  # one pass


def test_mean_teacher_accepts_a_uniform_minibatch_without_labels():
    from mt_repro.methods.mean_teacher import MeanTeacher

    w = torch.randn(4, 5)
    x, no_labels = torch.randn(2, 4), torch.tensor([-1, -1])
    uniform = toy_config("mean_teacher", sampling="uniform", labeled_batch_size=None)
    result = losses(MeanTeacher(uniform, TwoHeadLinear(w), TwoHeadLinear(w)), x, x, no_labels, 0)
    assert result.values["class_loss"] == 0.0 and result.labeled_minibatch_size == 0
    with pytest.raises(RunFailed, match="no labeled samples"):
        losses(MeanTeacher(toy_config("mean_teacher"), TwoHeadLinear(w), TwoHeadLinear(w)), x, x, no_labels, 0)


def test_the_faithful_path_gets_no_sample_extras(tmp_path):
    from mt_repro.data.loaders import training_data

    (views, target), = [training_data(digits_config(tmp_path)).train_loader.dataset[0]]
    assert len(views) == 2 and isinstance(target, int)


# --- runs ------------------------------------------------------------------------------------------
def digits_config(tmp_path, **changes) -> TrainConfig:
    from mt_repro.apps import digits_demo
    from mt_repro.config.compose import load_demo_config
    from mt_repro.data import digits
    from mt_repro.data.labels import write_label_file

    label_file = tmp_path / "labels.txt"
    write_label_file(label_file, digits.label_file_entries(100, 0))
    mean_teacher = digits_demo.demo_configs(load_demo_config(), "mean_teacher", 100, label_file, 0, 2, tmp_path)
    return mean_teacher.replace(**{"checkpoint_epochs": 1, **changes}).validate()


def test_temporal_ensembling_resumes_bit_for_bit(tmp_path, monkeypatch):
    config = digits_config(tmp_path, method="temporal_ensembling", epochs=2, lr_rampdown_epochs=3)
    _, _, (a, b) = straight_and_resumed(config, tmp_path, monkeypatch)
    for key in ("state_dict", "ema_state_dict"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    ensemble_a, ensemble_b = (s["mt_repro"]["method_state"]["predictions"]["ensemble"] for s in (a, b))
    assert ensemble_a.shape == (1297, 10) and torch.equal(ensemble_a, ensemble_b)


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m not in ("mean_teacher", "supervised")
                                    and not registry.method_class(m).pretraining])
def test_each_method_runs_on_the_digits(cli, tmp_path, method):
    """(Mean Teacher is the README demo's test; supervised-only is the baseline of every run; a
    pre-training method is the demo's --pretrain, tests/test_moco.py. In this process: the
    parallel processes' results are tests/test_threads.py's.)"""
    code, out, err = cli("digits", "--method", method, "--seeds", 1, "--epochs", 1, "--out", tmp_path,
                         "--no-progress", "--jobs", 1)
    assert code == 0, err
    assert method.replace("_", " ") in out and "supervised" in out
    config = json.loads((tmp_path / f"{method}_0" / "config.json").read_text())
    summary = json.loads((tmp_path / f"{method}_0" / "summary.json").read_text())
    # One epoch of 24 steps per training (self-training chains one per generation).
    assert config["epochs"] == 1 and summary["global_step"] == 24 * summary["epochs"]
    assert math.isfinite(summary["student_error1"])


@pytest.mark.slow
def test_digits_with_uniform_minibatches_has_the_same_number_of_steps(cli, tmp_path):
    code, out, err = cli("digits", "--method", "mean_teacher,pseudo_label", "--sampling", "uniform",
                         "--seeds", 1, "--epochs", 5, "--out", tmp_path, "--no-progress")
    assert code == 0, err
    assert "uniform sampling" in out
    for run in ("mean_teacher_uniform_0", "pseudo_label_uniform_0"):
        config = json.loads((tmp_path / run / "config.json").read_text())
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert config["sampling"] == "uniform" and config["epochs"] == 6  # 5 x 24 steps / 20 per epoch
        assert summary["global_step"] == 120


def test_unknown_method(cli, tmp_path):
    assert_one_line_error(cli("digits", "--method", "mixmatch2", "--out", tmp_path), "unknown method 'mixmatch2'")
    with pytest.raises(BadInput, match="unknown method 'nope'; known: .*ict, mean_teacher"):
        toy_config("nope")


# --- --method on the paper's commands --------------------------------------------------------------
@pytest.fixture
def captured_paper_run(monkeypatch):
    seen = {}

    def fake_train(config, out_dir, **_):
        seen["config"] = config
        return {"epochs": 0, "global_step": 0, "n_labeled_in_split": 0, "n_unlabeled": 0,
                "student_prec1": None, "student_error1": None, "teacher_prec1": None,
                "teacher_error1": None, "checkpoint": "-", "out_dir": str(out_dir)}

    monkeypatch.setattr(runs, "train", fake_train)
    return seen


def test_method_on_the_paper_command_brings_its_papers_settings(cli, tmp_path, captured_paper_run):
    label_file = tmp_path / "10.txt"
    label_file.write_text("")
    code, out, err = cli("cifar10", "--labels", 4000, "--label-file", label_file, "--method", "temporal_ensembling",
                         "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    config = captured_paper_run["config"]
    assert config.method == "temporal_ensembling" and config.consistency == 30.0 and config.consistency_rampup == 80
    assert config.arch == "cifar_shakeshake26" and config.labeled_batch_size == 31 * 4  # the run's own budget
    code, _, err = cli("cifar10", "--labels", 4000, "--label-file", label_file, "--method", "vat",
                       "--set", "consistency=0.3", "--set", "method_options=epsilon=2.5", "--out", tmp_path / "r2")
    assert code == 0, err
    config = captured_paper_run["config"]
    assert (config.method, config.consistency, config.consistency_rampup) == ("vat", 0.3, 0)
    assert config.method_options == "epsilon=2.5"


def test_method_on_the_paper_command_bad_input(cli, tmp_path, captured_paper_run):
    label_file = tmp_path / "10.txt"
    label_file.write_text("")
    assert_one_line_error(cli("cifar10", "--label-file", label_file, "--method", "nope"), "unknown method 'nope'")
    assert_one_line_error(cli("cifar10", "--resume", tmp_path, "--method", "vat"), "--method", "a resumed run keeps")
    assert_one_line_error(cli("cifar10", "--label-file", label_file, "--method", "self_training", "--gpus", "0"),
                          "--gpus must be positive")
    assert "config" not in captured_paper_run


def test_method_on_the_convnet_command_brings_its_convnet_settings(cli, tmp_path, captured_paper_run):
    code, _, err = cli("svhn", "--labels", 250, "--data", tmp_path, "--method", "mixmatch", "--out", tmp_path / "r")
    assert code == 0, err
    config = captured_paper_run["config"]
    assert config.recipe.name == "tensorflow" and config.method == "mixmatch"
    assert config.experiment == "svhn_final_eval" and config.n_labeled_per_batch == 1  # the runner's own
    assert config.max_consistency_cost == 75.0 and config.ema_decay_after_rampup == 0.999  # MixMatch's
    code, _, err = cli("cifar10", "--arch", "convnet13", "--labels", 4000, "--data", tmp_path, "--method", "pi_model",
                       "--out", tmp_path / "r2")
    assert code == 0, err
    config = captured_paper_run["config"]  # the runner's own Pi model, unchanged by Laine & Aila's weights
    assert config.max_consistency_cost == pytest.approx(0.002 * 4000) and config.method == "pi_model"
