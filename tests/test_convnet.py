"""The paper's ConvNet half (Tables 1-3) on the one engine: model, schedule, costs, minibatch
streams, every experiment, every method with the ConvNet recipe, resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, interrupted_run
from mt_repro.config.compose import convnet_run
from mt_repro.config.convnet import ConvNetConfig, experiment_names, load_experiment
from mt_repro.core.ramps import sigmoid_rampdown, sigmoid_rampup, step_rampup
from mt_repro.data import arrays, synthetic
from mt_repro.engine import runs
from mt_repro.engine.ema import update_before_step
from mt_repro.engine.optimizers import TFAdam
from mt_repro.engine.schedules import PerStepSchedule
from mt_repro.engine.trainer import Trainer
from mt_repro.methods import losses as costs
from mt_repro.methods.registry import method_class, method_names
from mt_repro.models import parameter_count
from mt_repro.models.convnet13 import ConvNet13, WNConv2d, WNLinear, data_dependent_init, translate_batch

TINY = {"width": 0.0625, "batch_size": 20, "training_length": 3, "evaluation_span": 2, "print_span": 1,
        "rampup_length": 2, "rampdown_length": 2, "device": "cpu"}
OPTIONAL = ("batch_time", "data_time")   # timings differ from run to run


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


def schedule_at(step: int, config: ConvNetConfig):
    return PerStepSchedule(config, None).at(0, 0, 1, step)


def test_adam_and_ema_switches():
    s = ConvNetConfig()
    before, after = schedule_at(39999, s), schedule_at(40000, s)
    assert (before.betas[1], before.ema_decay) == (0.99, 0.99)
    assert (after.betas[1], after.ema_decay) == (0.999, 0.999)
    assert after.lr == pytest.approx(0.003) and after.consistency_weight == pytest.approx(100.0)
    assert after.betas[0] == pytest.approx(0.9)
    end = schedule_at(150000, s)
    down = math.exp(-12.5)
    assert end.betas[0] == pytest.approx(0.9 * down + 0.5 * (1 - down))
    assert end.lr == pytest.approx(0.003 * down)
    start = schedule_at(0, s)
    assert start.lr == pytest.approx(0.003 * math.exp(-5))
    assert set(start.logged) == {"lr", "adam_beta_1", "adam_beta_2", "ema_decay"}


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
    adam = TFAdam([weight], lr=0.1, eps=1e-8)
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
    update_before_step(student, teacher, 0.99, 0)
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


# --- 3. the three methods of the original ----------------------------------------------------------
@pytest.fixture(scope="module")
def svhn_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("svhn")
    synthetic.write_svhn_mat(directory, n_train=200, n_test=40, n_extra=60, seed=1)
    return directory


def config_for(data_dir, method="mean_teacher", experiment="svhn_final_eval", n_labeled=100, **changes):
    return convnet_run(experiment, n_labeled=n_labeled, method=method, run={"data_dir": str(data_dir)},
                       overrides={**TINY, **changes})


def built(config, out) -> Trainer:
    torch.manual_seed(0)
    return Trainer(config, out, progress=False).build()


def one_step(trainer: Trainer):
    """One training step of the trainer's first epoch, as ``fit`` takes it."""
    trainer.train_mode()
    batch = next(iter(trainer.data.epoch(0, 0, 1)))
    return trainer.step(batch, 0, trainer.state.global_step, trainer.data.steps_per_epoch)[1]


def test_pi_and_mean_teacher_differ_only_in_the_target(svhn_dir, tmp_path, monkeypatch):
    seen = {}
    real = costs.consistency_costs

    def spy(logits, target, *args):
        seen.setdefault("calls", []).append((logits.detach().clone(), target.detach().clone(), target.requires_grad))
        return real(logits, target, *args)

    monkeypatch.setattr(costs, "consistency_costs", spy)
    mt, pi = built(config_for(svhn_dir), tmp_path / "mt"), built(config_for(svhn_dir, "pi_model"), tmp_path / "pi")
    for name, p in mt.method.student.state_dict().items():
        assert torch.equal(p, pi.method.student.state_dict()[name]), name
    torch.manual_seed(1)
    one_step(mt)
    torch.manual_seed(1)
    one_step(pi)
    (mt_logits, mt_target, mt_grad), (pi_logits, pi_target, pi_grad) = seen["calls"]
    assert torch.equal(mt_logits, pi_logits)          # the same student pass
    assert not torch.equal(mt_target, pi_target)      # another target pass
    assert not mt_grad and pi_grad                    # the Π target carries gradients
    # the second pass is the original's separate tower: the student's evaluation means saw one pass
    for name, buffer in mt.method.student.named_buffers():
        assert torch.equal(buffer, pi.method.student.state_dict()[name]), name
    assert any(float(b.abs().max()) > 0 for b in pi.method.student.buffers())
    assert pi.method.student.dropout == 0.5  # restored after the secondary pass


def test_logged_loss_is_the_minimised_total_cost(svhn_dir, tmp_path):
    t = built(config_for(svhn_dir, logit_distance_cost=0.01, num_logits=2, consistency_trust=0.5), tmp_path)
    assert t.data.train_x.dtype == torch.uint8  # SVHN pixels stay uint8 in memory
    values = one_step(t).values
    batch = t.config.batch_size
    parts = values["class_loss"] + values["cons_loss"] + values["res_loss"]
    assert values["res_loss"] > 0 and values["cons_loss"] > 0
    assert values["loss"] == pytest.approx(parts * batch / 3, rel=1e-5)


def test_the_teacher_is_a_copy_of_the_initialised_student_with_its_own_dropout(svhn_dir, tmp_path):
    t = built(config_for(svhn_dir, teacher_dropout_probability=0.2), tmp_path)
    for name, value in t.method.student.state_dict().items():
        assert torch.equal(value, t.method.teacher.state_dict()[name]), name
    assert (t.method.student.dropout, t.method.teacher.dropout) == (0.5, 0.2)
    assert not any(p.requires_grad for p in t.method.teacher.parameters())


def test_supervised_sees_only_labeled_images(svhn_dir):
    config = config_for(svhn_dir, "supervised", "svhn_supervised_final_eval", n_labeled_per_batch=20)
    data = arrays.training_data(config)
    batches = arrays.Minibatches(data.train_y, config.n_labeled_per_batch, config.batch_size, np.random.RandomState(0))
    seen = set()
    for _ in range(20):
        index, targets = batches.next()
        assert (targets != -1).all() and len(index) == 20
        seen |= set(index.tolist())
    assert seen == set(np.flatnonzero(data.train_y != -1).tolist())
    assert config.max_consistency_cost == 0.0


def test_mixed_minibatches_hide_labels_of_the_unlabeled_part(svhn_dir):
    config = config_for(svhn_dir)
    data = arrays.training_data(config)
    batches = arrays.Minibatches(data.train_y, config.n_labeled_per_batch, config.batch_size, np.random.RandomState(0))
    index, targets = batches.next()
    assert (targets[:1] != -1).all() and (targets[1:] == -1).all() and len(index) == 20
    # an epoch is a pass of the stream over all images: 200 // 19 minibatches
    assert data.steps_per_epoch == 200 // 19


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
def test_every_experiment_trains_and_records_its_settings(name, svhn_dir, cifar_tarball, tmp_path):
    experiment = load_experiment(name)
    method, n_labeled = experiment.methods[0], 100  # the tiny data has 200 training images
    original = convnet_run(name, n_labeled=n_labeled, method=method)
    changes = dict(TINY)
    if original.n_labeled_per_batch == original.batch_size:  # labeled-only minibatches
        changes["n_labeled_per_batch"] = TINY["batch_size"]
    elif isinstance(original.n_labeled_per_batch, int) and original.n_labeled_per_batch >= TINY["batch_size"]:
        changes["n_labeled_per_batch"] = TINY["batch_size"] // 2  # the quick runners' 50 of 100, in proportion
    for key, value in (experiment.ablation.get("values") or [{}])[-1].items():
        changes[key] = value
    if not experiment.test_phase:  # the ablations: their validation split is tested once, below
        changes["test_phase"] = True
    data_dir = cifar_tarball if experiment.dataset == "cifar10" else svhn_dir
    config = convnet_run(name, n_labeled=n_labeled, method=method, run={"data_dir": str(data_dir)}, overrides=changes)
    summary = runs.train(config, tmp_path / "run", progress=False)
    assert summary["global_step"] == 3 and summary["arch"] == "convnet13" and summary["recipe"] == "tensorflow"
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded.pop("recipe") == "tensorflow"
    differing = {k for k, v in original.to_dict().items() if recorded[k] != v}
    assert differing <= set(changes) | {"data_dir"}, differing  # everything else is the original's setting


@pytest.mark.slow
def test_ablations_evaluate_on_the_original_validation_split(svhn_validation_dir, tmp_path):
    experiment = load_experiment("svhn_250_vary_trust")
    (seed, changes), *_ = experiment.ablation_runs()
    assert not experiment.test_phase and seed == 1000
    config = convnet_run("svhn_250_vary_trust", n_labeled=100, data_seed=seed, run={"data_dir": str(svhn_validation_dir)},
                         overrides={**TINY, **changes, "training_length": 1})
    data = arrays.training_data(config)
    assert len(data.eval_y) == 7325 and len(data.train_y) == 7525 - 7325 and data.n_labeled == 100
    summary = runs.train(config, tmp_path / "run", progress=False)
    assert summary["global_step"] == 1
    rows = json_rows(tmp_path / "run" / "ema_validation.jsonl")
    assert rows[-1]["labeled_minibatch_size/sum"] == 7325


def comparable(path):
    return [{k: v for k, v in row.items() if not k.startswith(OPTIONAL)} for row in json_rows(path)]


def assert_same_run(a, b):
    first = torch.load(a / "checkpoints" / "last.ckpt", weights_only=True)
    second = torch.load(b / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("state_dict", "ema_state_dict"):
        for name in first[key]:
            assert torch.equal(first[key][name], second[key][name]), (key, name)
    for log in ("training.jsonl", "validation.jsonl", "ema_validation.jsonl"):
        assert comparable(a / log) == comparable(b / log), log


def test_resume_continues_bit_for_bit(svhn_dir, tmp_path, monkeypatch):
    config = config_for(svhn_dir, training_length=4)
    whole = runs.train(config, tmp_path / "whole", progress=False)
    interrupted_run(config, tmp_path / "part", 3, monkeypatch)  # after the checkpoint of step 2
    resumed = runs.resume(tmp_path / "part", progress=False)
    assert whole["teacher_error1"] == resumed["teacher_error1"]
    assert_same_run(tmp_path / "whole", tmp_path / "part")


def test_resume_inside_an_epoch_keeps_the_methods_epoch_state(svhn_dir, tmp_path, monkeypatch):
    """Temporal Ensembling updates its targets at the end of each pass of the stream (10 steps
    here); a checkpoint every 3 steps falls inside passes: what the pass has gathered so far,
    and the epoch's meters, are part of it."""
    config = config_for(svhn_dir, "temporal_ensembling", training_length=14, evaluation_span=3)
    runs.train(config, tmp_path / "whole", progress=False)
    interrupted_run(config, tmp_path / "part", 13, monkeypatch)  # last checkpoint: step 12, in epoch 1
    runs.resume(tmp_path / "part", progress=False)
    assert_same_run(tmp_path / "whole", tmp_path / "part")


def test_a_run_directory_of_the_former_convnet_trainer_resumes(svhn_dir, tmp_path, monkeypatch):
    """config.json with ``model`` and ``ema_consistency`` and the former checkpoint layout
    (``step, student, teacher, ...``), as mt-repro wrote them before its ConvNet runs shared the
    engine: read and continued as they are."""
    config = config_for(svhn_dir, "pi_model", training_length=4)
    runs.train(config, tmp_path / "whole", progress=False)
    interrupted_run(config, tmp_path / "old", 3, monkeypatch)
    old = tmp_path / "old"
    values = json.loads((old / "config.json").read_text())
    del values["recipe"], values["method"], values["method_options"], values["arch"], values["data_dir"]
    del values["mode"], values["compile"], values["out_dir"]
    values.update(model="pi", ema_consistency=False)
    (old / "config.json").write_text(json.dumps(values))
    state = torch.load(old / "checkpoints" / "last.ckpt", weights_only=True)
    extras = state["mt_repro"]
    former = {"step": state["global_step"], "student": {k[7:]: v for k, v in state["state_dict"].items()},
              "teacher": {k[7:]: v for k, v in state["ema_state_dict"].items()}, "optimizer": state["optimizer"],
              "batches": extras["data_state"]["streams"], "numpy": extras["data_state"]["numpy"],
              "rng": extras["rng"], "last_eval": extras["last_eval"], "settings": values}
    torch.save(former, old / "checkpoints" / "last.ckpt")
    with pytest.raises(Exception, match="needs --data|does not exist"):
        runs.resume(old, progress=False)  # the former config.json did not keep the data's place
    runs.resume(old, overrides={"data_dir": str(svhn_dir)}, progress=False)
    assert json.loads((old / "config.json").read_text())["method"] == "pi_model"
    first = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    second = torch.load(old / "checkpoints" / "last.ckpt", weights_only=True)
    for name in first["state_dict"]:
        assert torch.equal(first["state_dict"][name], second["state_dict"][name]), name


def json_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- 5. every method with the ConvNet recipe ----------------------------------------------------------
REFUSED = {"self_training": "measures its runs in steps", "fixmatch": "needs a strong view", "uda": "needs a strong view",
           "moco": "feeds raw arrays", "mean_teacher_usb": "is USB's step"}


@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_with_the_convnet_recipe_or_says_why_not(method, svhn_dir, tmp_path):
    config = config_for(svhn_dir, method, n_labeled_per_batch=20 if method == "supervised" else 1)
    if method in REFUSED:
        with pytest.raises(Exception, match=REFUSED[method]):
            runs.train(config, tmp_path / "run", progress=False)
        return
    summary = runs.train(config, tmp_path / "run", progress=False)
    assert summary["global_step"] == 3 and summary["method"] == method
    rows = json_rows(tmp_path / "run" / "training.jsonl")
    assert all(math.isfinite(row["loss"]) for row in rows) and len(rows) == 3
    assert method_class(method).reported_model in ("student", "teacher")


def test_fast_mode_with_the_convnet_recipe(svhn_dir, tmp_path):
    summary = runs.train(config_for(svhn_dir, mode="fast"), tmp_path / "run", progress=False)
    assert summary["global_step"] == 3 and summary["teacher_error1"] is not None


# --- 6. bad input --------------------------------------------------------------------------------
def test_bad_input(cli, svhn_dir, tmp_path):
    assert_one_line_error(cli("ablation", "svhn_250_vary_nothing"), "no ablation 'svhn_250_vary_nothing'", "the ablations:")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "consistency_trust=1.5",
                              "--out", tmp_path / "r"), "consistency_trust must be in [0, 1]")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "n_labeled_per_batch=50",
                              "--set", "batch_size=40", "--out", tmp_path / "r"), "n_labeled_per_batch")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "n_labeled_per_batch=100",
                              "--set", "batch_size=200", "--set", "n_labeled=50", "--out", tmp_path / "r"),
                          "100 labeled images per minibatch, but only 50 are labeled")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "widht=2"), "unknown setting 'widht'")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--set", "ema_consistency=false"),
                          "unknown setting 'ema_consistency'")  # the method says it now
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--method", "pi_model",
                              "--set", "consistency_trust=0.5", "--out", tmp_path / "r"),
                          "the Pi model needs consistency_trust 0")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--method", "pi_model",
                              "--model", "pi"), "give --method, not both")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--method", "self_training",
                              "--out", tmp_path / "r"), "self_training chains whole trainings")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--method", "nope"),
                          "unknown method 'nope'")
    assert_one_line_error(cli("svhn", "--labels", "100", "--data", svhn_dir, "--method", "supervised",
                              "--set", "n_labeled_per_batch=vary", "--out", tmp_path / "r"),
                          "supervised-only trains on labeled minibatches")
    assert_one_line_error(cli("cifar10", "--labels", "4000", "--steps", "3"), "--steps applies to --arch convnet13")
    assert_one_line_error(cli("cifar10", "--labels", "2000"), "for other label counts use --arch convnet13")
    assert_one_line_error(cli("cifar10", "--arch", "convnet13", "--epochs", "3"), "--epochs apply to the ResNet run")
    assert_one_line_error(cli("svhn", "--labels", "100", "--extra", "100000", "--data", svhn_dir,
                              "--set", "width=0.0625", "--out", tmp_path / "x"), "extra file has only 60")


# --- 7. commands ---------------------------------------------------------------------------------
def test_svhn_command_short_run_writes_summary_and_config(cli, svhn_dir, tmp_path):
    code, out, err = cli("svhn", "--labels", "100", "--model", "pi", "--data", svhn_dir, "--steps", "2",
                         "--set", "width=0.0625", "--set", "batch_size=20", "--set", "evaluation_span=1",
                         "--device", "cpu", "--no-progress", "--out", tmp_path / "run")
    assert code == 0, err
    assert "mt-repro: warning: --model is deprecated: use --method pi_model" in err  # the old flag still works
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["dataset"], summary["arch"], summary["method"]) == ("svhn", "convnet13", "pi_model")
    assert (summary["n_labeled"], summary["extra_unlabeled"], summary["data_seed"]) == (100, 0, 2000)
    assert summary["global_step"] == 2 and summary["experiment"] == "svhn_final_eval"
    assert summary["student_error1"] is not None and summary["teacher_error1"] is not None
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training_length"] == 2 and config["method"] == "pi_model" and config["recipe"] == "tensorflow"


def test_cifar10_convnet_reads_the_originals_npz(tmp_path):
    rng = np.random.RandomState(0)
    train_y, test_y = np.repeat(np.arange(10), 20), np.arange(10).repeat(2)
    path = tmp_path / "cifar10_gcn_zca_v2.npz"
    np.savez(path, train_x=rng.randn(200, 32, 32, 3), train_y=train_y.astype(np.uint8),
             test_x=rng.randn(20, 32, 32, 3), test_y=test_y.astype(np.uint8))
    data = arrays.training_data(config_for(path, experiment="cifar10_final_eval"))
    assert data.train_x.dtype == torch.float32 and data.train_x.shape == (200, 3, 32, 32)
    assert (data.train_y[:100] != -1).all() and (data.train_y[100:] == -1).all()
    assert data.eval_x.shape == (20, 3, 32, 32) and data.eval_y.tolist() == test_y.tolist()
