"""The paper's ConvNet half (Tables 1-3): model, schedule, costs, minibatches, every experiment."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from mt_repro.convnet_config import ConvNetSettings, experiment_names, load_experiment
from mt_repro.data import synthetic
from mt_repro.engine import convnet_trainer as ct
from mt_repro.methods import convnet_training as costs
from mt_repro.methods.ramps import sigmoid_rampdown, sigmoid_rampup, step_rampup
from mt_repro.models import parameter_count
from mt_repro.models.convnet13 import ConvNet13, WNConv2d, WNLinear, data_dependent_init, translate_batch

TINY = {"width": 0.0625, "batch_size": 20, "training_length": 3, "evaluation_span": 2, "print_span": 1,
        "rampup_length": 2, "rampdown_length": 2, "device": "cpu"}


# --- 1. schedule and costs against hand-worked values -------------------------------------------
def test_ramps_at_their_edges():
    assert sigmoid_rampup(0, 40000) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(20000, 40000) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(40000, 40000) == 1.0 and sigmoid_rampup(50000, 40000) == 1.0
    assert sigmoid_rampdown(124999, 25000, 150000) == 1.0  # before the ramp-down
    assert sigmoid_rampdown(125000, 25000, 150000) == 1.0  # its first step: phase 0
    assert sigmoid_rampdown(150000, 25000, 150000) == pytest.approx(math.exp(-12.5))
    assert sigmoid_rampdown(137500, 25000, 150000) == pytest.approx(math.exp(-12.5 * 0.25))
    assert step_rampup(39999, 40000) == 0.0 and step_rampup(40000, 40000) == 1.0
    assert sigmoid_rampdown(40000, 0, 40000) == 1.0  # train_*.py runners: no ramp-down


def test_adam_and_ema_switches():
    s = ConvNetSettings()
    before, after = costs.step_hyperparameters(39999, s), costs.step_hyperparameters(40000, s)
    assert (before.adam_beta_2, before.ema_decay) == (0.99, 0.99)
    assert (after.adam_beta_2, after.ema_decay) == (0.999, 0.999)
    assert after.learning_rate == pytest.approx(0.003) and after.cons_coefficient == pytest.approx(100.0)
    assert after.adam_beta_1 == pytest.approx(0.9)
    end = costs.step_hyperparameters(150000, s)
    down = math.exp(-12.5)
    assert end.adam_beta_1 == pytest.approx(0.9 * down + 0.5 * (1 - down))
    assert end.learning_rate == pytest.approx(0.003 * down)
    start = costs.step_hyperparameters(0, s)
    assert start.learning_rate == pytest.approx(0.003 * math.exp(-5))


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


LOGITS = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0]])
TARGET = np.array([[0.5, 1.5, 0.0, 0.0], [2.0, -1.0, 1.0, 0.0]])


@pytest.mark.parametrize("trust", [0.0, 1.0, 0.5])
def test_consistency_costs_match_numpy(trust):
    p, q = softmax(LOGITS), softmax(TARGET)
    k = 4
    if trust == 0:
        expected = ((p - q) ** 2).mean(axis=1)
    else:
        mp, mq = trust * p + (1 - trust) / k, trust * q + (1 - trust) / k
        expected = (mq * np.log(mq / mp)).sum(axis=1) * 2 * (1 - 1 / k) / k ** 2 / trust ** 2
    mask = torch.tensor([True, False])
    got = costs.consistency_costs(torch.tensor(LOGITS), torch.tensor(TARGET), 7.0, mask, trust)
    np.testing.assert_allclose(got.numpy(), expected * 7.0 * np.array([1.0, 0.0]), rtol=1e-12)


def test_residual_cost_and_masking_of_labeled_samples():
    got = costs.residual_costs(torch.tensor(LOGITS), torch.tensor(TARGET), 0.01)
    np.testing.assert_allclose(got.numpy(), 0.01 * ((LOGITS - TARGET) ** 2).sum(axis=1))
    labels = torch.tensor([3, -1, 0, -1])
    assert costs.consistency_mask(labels, False).tolist() == [False, True, False, True]
    assert costs.consistency_mask(labels, True).all()
    class_costs = costs.classification_costs(torch.zeros(4, 4), labels)
    np.testing.assert_allclose(class_costs.numpy(), [math.log(4), 0, math.log(4), 0])


def test_minimised_cost_sums_over_samples_and_averages_over_the_three_kinds():
    class_costs, cons_costs, res_costs = np.array([1.0, 0.0, 2.0, 0.0]), np.array([0.5, 0.25, 0.0, 1.0]), np.full(4, 0.1)
    got = costs.total_cost(*(torch.tensor(c) for c in (class_costs, cons_costs, res_costs)))
    # model.py total_costs: stacked to 3 x 4, summed over the 4 samples, mean of the 3 sums
    assert got.item() == pytest.approx((3.0 + 1.75 + 0.4) / 3)
    assert got.item() != pytest.approx((class_costs + cons_costs + res_costs).mean())


def test_tf_adam_bias_correction_uses_the_initial_betas_first():
    """Gradient 1 on one weight; betas (0.9, 0.99), then (0.5, 0.999), then (0.5, 0.999):
    TensorFlow's powers are β(0), β(0)·β(0), β(0)·β(0)·β(1) at updates 0, 1, 2."""
    weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    adam = ct.TFAdam([weight], lr=0.1, eps=1e-8)
    schedule = [(0.9, 0.99), (0.5, 0.999), (0.5, 0.999)]
    powers = [(0.9, 0.99), (0.81, 0.9801), (0.405, 0.9791199)]
    theta, m, v = 0.0, 0.0, 0.0
    for (b1, b2), (p1, p2) in zip(schedule, powers):
        weight.grad = torch.ones(1, dtype=torch.float64)
        adam.param_groups[0]["betas"] = (b1, b2)
        adam.step()
        m, v = m + (1 - m) * (1 - b1), v + (1 - v) * (1 - b2)
        theta -= 0.1 * math.sqrt(1 - p2) / (1 - p1) * m / (math.sqrt(v) + 1e-8)
        assert weight.item() == pytest.approx(theta, rel=1e-12)
    assert weight.item() == pytest.approx(-0.1 - 0.1 * math.sqrt(0.0199) / 0.19 * 0.55 / math.sqrt(0.01099)
                                          - 0.1 * math.sqrt(1 - 0.9791199) / 0.595 * 0.775 / math.sqrt(0.01197901),
                                          rel=1e-6)


def test_teacher_is_a_plain_ema_of_the_weights():
    student, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in teacher.parameters()]
    ct.update_teacher(student, teacher, 0.99)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters()):
        torch.testing.assert_close(t, 0.99 * t0 + 0.01 * s)


# --- 2. weight normalisation ------------------------------------------------------------------
def test_data_dependent_init_gives_unit_pre_activations():
    torch.manual_seed(0)
    model = ConvNet13(num_logits=2, width=0.25)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append((m, o.detach())))
             for m in model.modules() if isinstance(m, (WNConv2d, WNLinear))]
    data_dependent_init(model, torch.randn(64, 3, 32, 32) * 40 + 120)
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 11
    for module, out in outputs:
        dims = (0, 2, 3) if out.dim() == 4 else (0,)
        torch.testing.assert_close(out.mean(dim=dims), torch.zeros(out.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(out.var(dim=dims, unbiased=False), torch.ones(out.shape[1]), atol=1e-3, rtol=0)
    assert all(float(m.eval_mean.abs().max()) == 0 for m, _ in outputs)  # untouched by the init


def test_second_head_is_initialised_from_data_even_with_one_logit():
    torch.manual_seed(0)
    model = ConvNet13(num_logits=1, width=0.0625)
    data_dependent_init(model, torch.randn(16, 3, 32, 32))
    assert not torch.equal(model.fc2.g, torch.ones_like(model.fc2.g))  # as the original's tower
    model.eval()
    primary, cons = model(torch.randn(4, 3, 32, 32))
    assert torch.equal(primary, cons)


def test_eval_mode_subtracts_the_ema_of_batch_means():
    torch.manual_seed(0)
    layer = WNConv2d(3, 4, 3)
    x = torch.randn(8, 3, 6, 6) + 2
    layer.train()
    raw = torch.nn.functional.conv2d(x, layer.g.view(-1, 1, 1, 1) * layer._normalized_V(), padding="same")
    layer(x)
    torch.testing.assert_close(layer.eval_mean, 0.001 * raw.mean(dim=(0, 2, 3)))
    layer.eval()
    expected = raw - layer.eval_mean.view(1, -1, 1, 1) + layer.b.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)


def test_parameter_count_equals_the_tensorflow_model():
    def conv(k, cin, cout):
        return k * k * cin * cout + 2 * cout  # V, g, b

    expected = (conv(3, 3, 128) + 2 * conv(3, 128, 128) + conv(3, 128, 256) + 2 * conv(3, 256, 256)
                + conv(3, 256, 512) + conv(1, 512, 256) + conv(1, 256, 128) + 2 * (128 * 10 + 2 * 10))
    assert parameter_count(ConvNet13()) == expected == 3_123_112


def test_noise_only_in_training_and_fresh_on_every_pass():
    torch.manual_seed(0)
    model = ConvNet13(width=0.0625, flip_horizontally=True)
    x = torch.randn(6, 3, 32, 32)
    data_dependent_init(model, x)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


def test_translation_reflects_like_tensorflow():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    out = translate_batch(image, torch.tensor([1]), torch.tensor([-2]))
    rows = [1, 0, 1, 2]            # y - 1, reflected about row 0
    cols = [2, 3, 2, 1]            # x + 2, reflected about column 3
    assert out[0, 0].tolist() == image[0, 0][rows][:, cols].tolist()


# --- 3. the three models ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def svhn_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("svhn")
    synthetic.write_svhn_mat(directory, n_train=200, n_test=40, n_extra=60, seed=1)
    return directory


def trainer(svhn_dir, tmp_path, model, **changes):
    settings = load_experiment("svhn_final_eval").settings(n_labeled=100, model=model,
                                                           overrides={**TINY, **changes})
    torch.manual_seed(0)
    data = ct.load_data(settings, svhn_dir)
    t = ct.ConvNetTrainer(settings, data, tmp_path / model, progress=False, echo=lambda s: None)
    t.initialize()
    return t


def test_pi_and_mean_teacher_differ_only_in_the_target(svhn_dir, tmp_path, monkeypatch):
    seen = {}
    real = costs.consistency_costs

    def spy(logits, target, *args):
        seen.setdefault("calls", []).append((logits.detach().clone(), target.detach().clone(), target.requires_grad))
        return real(logits, target, *args)

    monkeypatch.setattr(costs, "consistency_costs", spy)
    mt, pi = trainer(svhn_dir, tmp_path, "mean_teacher"), trainer(svhn_dir, tmp_path, "pi")
    for name, p in mt.student.state_dict().items():
        assert torch.equal(p, pi.student.state_dict()[name]), name
    torch.manual_seed(1)
    mt.train_step()
    torch.manual_seed(1)
    pi.train_step()
    (mt_logits, mt_target, mt_grad), (pi_logits, pi_target, pi_grad) = seen["calls"]
    assert torch.equal(mt_logits, pi_logits)          # the same student pass
    assert not torch.equal(mt_target, pi_target)      # another target pass
    assert not mt_grad and pi_grad                    # the Π target carries gradients
    # the second pass is the original's separate tower: the student's evaluation means saw one pass
    for name, buffer in mt.student.named_buffers():
        assert torch.equal(buffer, pi.student.state_dict()[name]), name
    assert any(float(b.abs().max()) > 0 for b in pi.student.buffers())


def test_logged_loss_is_the_minimised_total_cost(svhn_dir, tmp_path):
    t = trainer(svhn_dir, tmp_path, "mean_teacher", logit_distance_cost=0.01, num_logits=2,
                consistency_trust=0.5)
    assert t.data.train_x.dtype == torch.uint8  # SVHN pixels stay uint8 in memory
    values = t.train_step()
    batch = t.s.batch_size
    parts = values["class_loss"] + values["cons_loss"] + values["res_loss"]
    assert values["res_loss"] > 0 and values["cons_loss"] > 0
    assert values["loss"] == pytest.approx(parts * batch / 3, rel=1e-5)


def test_supervised_sees_only_labeled_images(svhn_dir, tmp_path):
    settings = load_experiment("svhn_supervised_final_eval").settings(
        n_labeled=100, overrides={**TINY, "n_labeled_per_batch": 20})
    data = ct.load_data(settings, svhn_dir)
    batches = ct.Minibatches(data, settings, np.random.RandomState(0))
    seen = set()
    for _ in range(20):
        index, targets = batches.next()
        assert (targets != -1).all() and len(index) == 20
        seen |= set(index.tolist())
    assert seen == set(np.flatnonzero(data.train_y != -1).tolist())
    assert settings.max_consistency_cost == 0.0


def test_mixed_minibatches_hide_labels_of_the_unlabeled_part(svhn_dir):
    settings = load_experiment("svhn_final_eval").settings(n_labeled=100, overrides=TINY)
    data = ct.load_data(settings, svhn_dir)
    batches = ct.Minibatches(data, settings, np.random.RandomState(0))
    index, targets = batches.next()
    assert (targets[:1] != -1).all() and (targets[1:] == -1).all() and len(index) == 20


# --- 4. every experiment of the original, a few steps --------------------------------------------
@pytest.fixture(scope="module")
def cifar_tarball(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return synthetic.write_cifar_tarball(root / "cifar-10-python.tar.gz", n_train=200, n_test=40)


@pytest.fixture(scope="module")
def svhn_validation_dir(tmp_path_factory):
    """Enough training images for the ablations' validation split (7325 held out)."""
    directory = tmp_path_factory.mktemp("svhn_large")
    synthetic.write_svhn_mat(directory, n_train=7525, n_test=10, seed=2)
    return directory


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_trains_and_records_its_settings(name, svhn_dir, cifar_tarball, tmp_path, monkeypatch):
    monkeypatch.setenv("MT_REPRO_CACHE_DIR", str(cifar_tarball.parent / "cache"))
    experiment = load_experiment(name)
    model, n_labeled = experiment.models[0], 100  # the tiny data has 200 training images
    original = experiment.settings(n_labeled=n_labeled, model=model)
    changes = dict(TINY)
    if original.n_labeled_per_batch == original.batch_size:  # labeled-only minibatches
        changes["n_labeled_per_batch"] = TINY["batch_size"]
    for key, value in (experiment.ablation.get("values") or [{}])[-1].items():
        changes[key] = value
    if not experiment.test_phase:  # the ablations: their validation split is tested once, below
        changes["test_phase"] = True
    settings = experiment.settings(n_labeled=n_labeled, model=model, overrides=changes)
    data_dir = cifar_tarball if experiment.dataset == "cifar10" else svhn_dir
    summary = ct.train(settings, data_dir, tmp_path / "run", progress=False, echo=lambda s: None)
    assert summary["global_step"] == 3 and summary["arch"] == "convnet13"
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    differing = {k for k, v in original.to_dict().items() if recorded[k] != v}
    assert differing <= set(changes), differing  # everything else is the original's setting


def test_ablations_evaluate_on_the_original_validation_split(svhn_validation_dir, tmp_path):
    experiment = load_experiment("svhn_250_vary_trust")
    (seed, changes), *_ = experiment.ablation_runs()
    assert not experiment.test_phase and seed == 1000
    settings = experiment.settings(n_labeled=100, data_seed=seed,
                                   overrides={**TINY, **changes, "training_length": 1})
    data = ct.load_data(settings, svhn_validation_dir)
    assert len(data.eval_y) == 7325 and len(data.train_y) == 7525 - 7325 and data.n_labeled == 100
    summary = ct.train(settings, svhn_validation_dir, tmp_path / "run", progress=False, echo=lambda s: None)
    assert summary["global_step"] == 1
    rows = json_rows(tmp_path / "run" / "ema_validation.jsonl")
    assert rows[-1]["n"] == 7325


def test_resume_continues_bit_for_bit(svhn_dir, tmp_path, monkeypatch):
    settings = load_experiment("svhn_final_eval").settings(n_labeled=100, overrides={**TINY, "training_length": 4})
    whole = ct.train(settings, svhn_dir, tmp_path / "whole", progress=False, echo=lambda s: None)
    real_step = ct.ConvNetTrainer.train_step

    def interrupted(self):
        if self.step == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(ct.ConvNetTrainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ct.train(settings, svhn_dir, tmp_path / "part", progress=False, echo=lambda s: None)
    monkeypatch.setattr(ct.ConvNetTrainer, "train_step", real_step)
    resumed = ct.resume(tmp_path / "part", svhn_dir, progress=False, echo=lambda s: None)
    a = torch.load(tmp_path / "whole" / ct.CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "part" / ct.CHECKPOINT, weights_only=True)
    for key in ("student", "teacher"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert whole["teacher_error1"] == resumed["teacher_error1"]
    steps = [row["step"] for row in json_rows(tmp_path / "part" / "training.jsonl")]
    assert steps == [row["step"] for row in json_rows(tmp_path / "whole" / "training.jsonl")]


def json_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- 5. bad input --------------------------------------------------------------------------------
def test_bad_input(cli, svhn_dir, tmp_path):
    assert_one_line_error(cli("ablation", "svhn_250_vary_nothing"), "no ConvNet experiment", "known:")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "consistency_trust=1.5",
                              "--out", tmp_path / "r"), "consistency_trust must be in [0, 1]")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "n_labeled_per_batch=50",
                              "--set", "batch_size=40", "--out", tmp_path / "r"), "n_labeled_per_batch")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "n_labeled_per_batch=100",
                              "--set", "batch_size=200", "--set", "n_labeled=50", "--out", tmp_path / "r"),
                          "100 labeled images per minibatch, but only 50 are labeled")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "widht=2"), "unknown setting 'widht'")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "ema_consistency=false",
                              "--out", tmp_path / "r"), "ema_consistency false contradicts model 'mean_teacher'")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--model", "supervised",
                              "--set", "n_labeled_per_batch=vary", "--out", tmp_path / "r"),
                          "supervised-only trains on labeled minibatches")
    assert_one_line_error(cli("cifar10", "--labels", "4000", "--steps", "3"), "--steps applies to --arch convnet13")
    assert_one_line_error(cli("cifar10", "--labels", "2000"), "for other label counts or models use --arch convnet13")
    assert_one_line_error(cli("cifar10", "--arch", "convnet13", "--epochs", "3"), "--epochs apply to the ResNet run")
    assert_one_line_error(cli("svhn", "--labels", "100", "--extra", "100000", "--data", svhn_dir,
                              "--set", "width=0.0625", "--out", tmp_path / "x"), "extra file has only 60")


# --- 6. commands ---------------------------------------------------------------------------------
def test_svhn_command_short_run_writes_summary_and_config(cli, svhn_dir, tmp_path):
    code, out, err = cli("svhn", "--labels", "100", "--model", "pi", "--data", svhn_dir, "--steps", "2",
                         "--set", "width=0.0625", "--set", "batch_size=20", "--set", "evaluation_span=1",
                         "--device", "cpu", "--no-progress", "--out", tmp_path / "run")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["dataset"], summary["arch"], summary["method"]) == ("svhn", "convnet13", "pi_model")
    assert (summary["n_labeled"], summary["extra_unlabeled"], summary["data_seed"]) == (100, 0, 2000)
    assert summary["global_step"] == 2 and summary["config"] == "svhn_final_eval"
    assert summary["student_error1"] is not None and summary["teacher_error1"] is not None
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training_length"] == 2 and config["ema_consistency"] is False


def test_cifar10_convnet_reads_the_originals_npz(tmp_path):
    rng = np.random.RandomState(0)
    train_y, test_y = np.repeat(np.arange(10), 20), np.arange(10).repeat(2)
    path = tmp_path / "cifar10_gcn_zca_v2.npz"
    np.savez(path, train_x=rng.randn(200, 32, 32, 3), train_y=train_y.astype(np.uint8),
             test_x=rng.randn(20, 32, 32, 3), test_y=test_y.astype(np.uint8))
    settings = load_experiment("cifar10_final_eval").settings(n_labeled=100, overrides=TINY)
    data = ct.load_data(settings, path)
    assert data.train_x.dtype == torch.float32 and data.train_x.shape == (200, 3, 32, 32)
    assert (data.train_y[:100] != -1).all() and (data.train_y[100:] == -1).all()
    assert data.eval_x.shape == (20, 3, 32, 32) and data.eval_y.tolist() == test_y.tolist()
