"""Momentum Contrast as a pre-training stage: its loss against InfoNCE written out by hand, the
queue's ring, the key encoder's momentum update, the shuffled batch norm putting keys back in
place, a resumed run equal to a straight one, the kNN monitor and the linear probe, a run started
from a pre-trained encoder (``init_from``), the digits demo's ``--pretrain``, and bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_line_error, straight_and_resumed
from mt_repro import models
from mt_repro.config import TrainConfig
from mt_repro.core.errors import BadInput
from mt_repro.core.networks import HEADS, encoder_state, feature_size, representation
from mt_repro.core.types import Batch, StepContext
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import runs
from mt_repro.engine.evaluation import knn_predictions, linear_probe
from mt_repro.methods import registry
from mt_repro.methods.moco import KeyQueue, MoCo, info_nce, momentum_update


def moco_config(**changes) -> TrainConfig:
    values = dict(dataset="digits", arch="digits_convnet", batch_size=8, labeled_batch_size=None,
                  sampling="uniform", consistency=1.0, consistency_rampup=0, method="moco",
                  method_options="queue_size=16,momentum=0.9,temperature=0.5")
    values.update(changes)
    config = TrainConfig(**values).validate()
    registry.check_config(config)
    return config


def built(config: TrainConfig) -> MoCo:
    torch.manual_seed(0)
    student, teacher = models.create_model("digits_convnet", 10), models.create_model("digits_convnet", 10)
    return MoCo(config, student, teacher)


# --- the loss, the queue, the momentum ----------------------------------------------------------------
def test_info_nce_is_the_cross_entropy_of_the_positive_among_the_queue_by_hand():
    generator = np.random.default_rng(0)
    q = generator.normal(size=(3, 4))
    k = generator.normal(size=(3, 4))
    queue = generator.normal(size=(4, 5))
    q, k = q / np.linalg.norm(q, axis=1, keepdims=True), k / np.linalg.norm(k, axis=1, keepdims=True)
    queue /= np.linalg.norm(queue, axis=0, keepdims=True)
    tau = 0.07
    expected = 0.0
    for i in range(3):  # -log( exp(q·k+/τ) / (exp(q·k+/τ) + Σ_j exp(q·n_j/τ)) ), averaged
        positive = math.exp(float(q[i] @ k[i]) / tau)
        negatives = sum(math.exp(float(q[i] @ queue[:, j]) / tau) for j in range(5))
        expected -= math.log(positive / (positive + negatives)) / 3
    loss, logits = info_nce(*(torch.tensor(a) for a in (q, k, queue)), tau)
    assert logits.shape == (3, 6)
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_the_queue_is_a_ring_the_newest_keys_replacing_the_oldest():
    torch.manual_seed(0)
    queue = KeyQueue(dim=2, size=6)
    assert torch.allclose(queue.keys.norm(dim=0), torch.ones(6))   # random unit keys to begin with
    first, second, third = (torch.full((3, 2), float(v)) for v in (1, 2, 3))
    queue.enqueue(first)
    assert torch.equal(queue.keys[:, :3], first.t()) and queue.position == 3
    queue.enqueue(second)
    assert torch.equal(queue.keys, torch.cat([first, second]).t()) and queue.position == 0
    queue.enqueue(third)   # the oldest (first) go
    assert torch.equal(queue.keys, torch.cat([third, second]).t()) and queue.position == 3
    with pytest.raises(ValueError, match="not a multiple"):
        queue.enqueue(torch.zeros(4, 2))
    restored = KeyQueue(dim=2, size=6)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys) and restored.position == 3
    with pytest.raises(BadInput, match="dim × queue_size"):
        KeyQueue(dim=3, size=6).load_state_dict(queue.state_dict())


def test_the_key_encoder_moves_towards_the_query_encoder_by_the_momentum():
    torch.manual_seed(0)
    query, key = models.create_model("digits_convnet", 10), models.create_model("digits_convnet", 10)
    before = {n: t.clone() for n, t in key.state_dict().items()}
    momentum_update(key, query, 0.99)
    queries = dict(query.named_parameters())
    for name, parameter in key.named_parameters():
        assert torch.allclose(parameter, 0.99 * before[name] + 0.01 * queries[name], atol=1e-7), name
    for name, buffer in key.named_buffers():  # running statistics are each encoder's own
        assert torch.equal(buffer, before[name]), name


def test_a_step_enqueues_its_keys_moves_the_key_encoder_and_teaches_only_the_query_side():
    method = built(moco_config())
    assert all(torch.equal(a, b) for a, b in zip(method.teacher.state_dict().values(),
                                                 method.student.state_dict().values()))  # a copy to begin with
    images = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    view_q, view_k = images + 0.1, images - 0.1
    old_queue = method.queue.keys.clone()
    for network in (method.student, method.teacher):   # no dropout: the keys can be computed again below
        network.eval()
    result = method.losses(Batch(view_q, view_k, torch.full((8,), -1), {}), StepContext(0, 0, 1.0))
    result.loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is None for p in method.key_head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.query_head.parameters())
    assert method.extra_parameters() == list(method.query_head.parameters())
    with torch.no_grad():   # the enqueued keys are this step's, unit length, in the minibatch's order
        keys = F.normalize(method.key_head(representation(method.teacher, view_k)), dim=1)
    assert torch.allclose(method.queue.keys[:, :8].t(), keys, atol=1e-5)
    assert torch.equal(method.queue.keys[:, 8:], old_queue[:, 8:]) and method.queue.position == 8
    # the loss is InfoNCE against the queue as it was, and the top-1 is the positive's rank
    assert 0 <= result.values["top1"] <= 100 and result.values["contrastive_loss"] > 0


def test_the_shuffled_batch_norm_puts_every_key_back_in_its_place():
    method = built(moco_config(method_options="queue_size=16,bn_splits=4"))
    images = torch.randn(8, 1, 8, 8)
    method.teacher.eval()   # running statistics: each image's projection no longer depends on its group
    with torch.no_grad():
        shuffled = method._projected(method.teacher, method.key_head, images, torch.randperm(8))
        plain = method._projected(method.teacher, method.key_head, images, None)
    assert torch.allclose(shuffled, plain, atol=1e-6)


def test_sharded_networks_are_the_batch_norm_groups():
    from mt_repro.engine.distributed import ShardedModel

    def sharded_moco(options):
        torch.manual_seed(0)
        student, teacher = (ShardedModel(models.create_model("digits_convnet", 10), 2) for _ in range(2))
        return MoCo(moco_config(method_options=options), student, teacher)

    for options in ("queue_size=16", "queue_size=16,bn_splits=2"):   # both: the 2 shards, keys shuffled
        method = sharded_moco(options)
        assert method.groups == 2 and method._key_shuffle(8, torch.device("cpu")) is not None
    with pytest.raises(BadInput, match=r"in 2 shards, which are its batch-norm groups: bn_splits must be 1 or 2 \(got 4\)"):
        sharded_moco("queue_size=16,bn_splits=4")
    assert built(moco_config())._key_shuffle(8, torch.device("cpu")) is None   # one group: nothing to shuffle


def test_the_gradient_check_of_every_method_covers_moco():
    from test_gradient_property import build, unsupervised_gradient

    norm, teacher_touched = unsupervised_gradient(build("moco"))
    assert norm > 1e-6 and not teacher_touched


@pytest.mark.parametrize("options, fragment", [
    ("head=deep", "head must be one of linear, mlp"),
    ("queue_size=20", "queue_size (20) must be a multiple of batch_size (8)"),
    ("bn_splits=3", "must be a multiple of bn_splits (3)"),
    ("momentum=1", "momentum must be in [0, 1)"),
    ("temperature=0", "temperatures positive"),
])
def test_bad_moco_options_are_refused_with_the_reason(options, fragment):
    with pytest.raises(BadInput, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        moco_config(method_options=options)


def test_moco_refuses_the_convnet_recipe():
    from mt_repro.config.convnet import ConvNetConfig

    with pytest.raises(BadInput, match="feeds raw arrays"):
        MoCo.check_config(ConvNetConfig(method="moco"))


# --- the encoder's evaluations ----------------------------------------------------------------------
def test_the_knn_votes_with_the_exponentiated_similarity_of_the_k_nearest():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    query = torch.tensor([[1.0, 0.05]])
    votes = knn_predictions(bank, labels, query, num_classes=3, k=2, temperature=0.5)
    similarity = F.normalize(query, dim=1) @ F.normalize(bank, dim=1).t()
    expected = torch.zeros(1, 3)
    expected[0, 0], expected[0, 1] = (similarity[0, 0] / 0.5).exp(), (similarity[0, 1] / 0.5).exp()
    assert torch.allclose(votes, expected)   # the third, farthest, has no vote with k = 2


def test_the_linear_probe_separates_separable_features_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 6, generator=generator)

    class Features(torch.nn.Module):   # the pooled features are the input itself
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.fc1(x), self.fc1(x)

    def batches(n, informative):
        labels = torch.arange(n) % 3
        x = torch.randn(n, 6, generator=generator) + (centres[labels] if informative else 0)
        return [(x, labels)]

    cpu = torch.device("cpu")
    assert linear_probe(Features(), batches(60, True), batches(300, True), cpu, 3) < 5.0
    assert linear_probe(Features(), batches(60, False), batches(300, False), cpu, 3) > 40.0


@pytest.mark.parametrize("name", models.list_models())
def test_every_architecture_has_the_two_heads_on_its_pooled_features(name):
    model = models.create_model(name, 10)
    names = {module_name for module_name, _ in model.named_children()}
    assert names & set(HEADS) in ({"fc1", "fc2"}, {"classifier"})
    assert not any(key.split(".")[0] in HEADS for key in encoder_state(model.state_dict()))
    info = models.get_model(name)
    if info.init_from_data is None and info.input_size[1] <= 96:   # small enough for a pass on the CPU
        model.eval()
        with torch.no_grad():
            features = representation(model, torch.randn(2, *info.input_size))
        assert features.shape == (2, feature_size(model))


# --- runs: resume, init_from, the demo -------------------------------------------------------------
def digits_moco_config(tmp_path, **changes):
    from test_methods_zoo import digits_config

    config = digits_config(tmp_path, method="moco", sampling="uniform", labeled_batch_size=None,
                           logit_distance_cost=-1.0, consistency=1.0, consistency_rampup=0,
                           method_options="queue_size=128,bn_splits=4,knn_k=10")
    return config.replace(**changes).validate()


def test_a_resumed_moco_run_equals_a_straight_one_bit_for_bit(tmp_path, monkeypatch):
    config = digits_moco_config(tmp_path, epochs=2, lr_rampdown_epochs=3)
    summary, resumed, (a, b) = straight_and_resumed(config, tmp_path, monkeypatch)
    assert summary["evaluation"] == "knn" and 0 <= summary["student_error1"] <= 100
    assert resumed["student_error1"] == summary["student_error1"]
    for key in ("state_dict", "ema_state_dict"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    state_a, state_b = (s["mt_repro"]["method_state"] for s in (a, b))
    assert torch.equal(state_a["queue"]["keys"], state_b["queue"]["keys"])
    assert state_a["queue"]["position"] == state_b["queue"]["position"]
    for head in ("query_head", "key_head"):
        assert all(torch.equal(state_a[head][k], state_b[head][k]) for k in state_a[head])


def test_a_run_from_a_pretrained_encoder_takes_its_encoder_and_keeps_its_own_heads(tmp_path):
    pretrained = digits_moco_config(tmp_path, epochs=1, lr_rampdown_epochs=2)
    runs.train(pretrained, tmp_path / "moco", progress=False)
    checkpoint = tmp_path / "moco" / "checkpoints" / "last.ckpt"
    from test_methods_zoo import digits_config

    one_epoch = dict(epochs=1, evaluation_epochs=1)
    scratch = runs.start(digits_config(tmp_path, **one_epoch), tmp_path / "scratch", progress=False)
    started = runs.start(digits_config(tmp_path, **one_epoch, init_from=str(checkpoint)), tmp_path / "from",
                         progress=False)
    encoder = encoder_state(ckpt.without_prefix(ckpt.load_checkpoint(checkpoint)["state_dict"]))
    for network in (started.method.student, started.method.teacher):
        state = network.state_dict()
        assert all(torch.equal(state[k], v) for k, v in encoder.items())
    for head in ("fc1", "fc2"):   # initialised as a run from scratch initialises them: the same draws
        assert torch.equal(getattr(started.method.student, head).weight, getattr(scratch.method.student, head).weight)
    assert "init_from" in json.loads((tmp_path / "from" / "inputs.json").read_text())
    summary = started.fit()
    assert summary["evaluation"] == "classifier" and math.isfinite(summary["teacher_error1"])


def test_init_from_refuses_what_does_not_fit(tmp_path, cli):
    from test_methods_zoo import digits_config

    with pytest.raises(BadInput, match="does not exist|no such|cannot"):
        runs.start(digits_config(tmp_path, init_from=str(tmp_path / "absent.ckpt")), tmp_path / "a", progress=False)
    other = tmp_path / "other.ckpt"
    model = models.create_model("cifar_shakeshake26", 10)
    ckpt.save_atomic(ckpt.build_checkpoint(epoch=0, global_step=0, arch="cifar_shakeshake26", student=model,
                                           teacher=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                                           best_prec1=0.0, config={}), other)
    with pytest.raises(BadInput, match="holds a cifar_shakeshake26 network; this run trains digits_convnet"):
        runs.start(digits_config(tmp_path, init_from=str(other)), tmp_path / "b", progress=False)

    # the ConvNet runs initialise from the data: --init-from is refused there, saying so
    assert_one_line_error(cli("svhn", "--init-from", other, "--data", tmp_path), "the ConvNet runs initialise")


def test_the_digits_demo_pretrains_trains_every_row_from_the_encoder_and_probes_it(cli, tmp_path):
    code, out, err = cli("digits", "--pretrain", "moco", "--seeds", 1, "--epochs", 1, "--out", tmp_path,
                         "--no-progress")
    assert code == 0, err
    for row in ("supervised", "mean teacher", "moco → supervised", "moco → mean teacher",
                "linear probe, random encoder", "linear probe, moco encoder"):
        assert f"\n{row}  " in out, row
    assert "moco → mean teacher - mean teacher:" in out and "linear probe, moco - random encoder:" in out
    moco = json.loads((tmp_path / "moco_0" / "summary.json").read_text())
    started = json.loads((tmp_path / "mean_teacher_from_moco_0" / "config.json").read_text())
    assert moco["evaluation"] == "knn" and moco["n_labeled"] == 100
    assert started["init_from"] == str(tmp_path / "moco_0" / "checkpoints" / "last.ckpt")
    # again: every run is kept, the table is the same
    code, again, err = cli("digits", "--pretrain", "moco", "--seeds", 1, "--epochs", 1, "--out", tmp_path,
                           "--no-progress")
    assert code == 0, err
    assert again.split("\n\n")[0] == out.split("\n\n")[0]


def test_the_demo_says_where_a_pretraining_method_goes(cli, tmp_path):
    assert_one_line_error(cli("digits", "--method", "moco", "--out", tmp_path),
                          "moco is a pre-training method", "--pretrain moco")
    assert_one_line_error(cli("digits", "--pretrain", "mean_teacher", "--out", tmp_path),
                          "--pretrain mean_teacher: not a pre-training method", "moco")
    assert_one_line_error(cli("digits", "--pretrain", "mocha", "--out", tmp_path), "mocha")


def test_the_representation_of_a_sharded_network_is_every_chunks():
    from mt_repro.engine.distributed import ShardedModel

    inputs = torch.rand(8, 1, 8, 8)
    torch.manual_seed(0)
    network = models.create_model("digits_convnet", 10).train()
    sharded = representation(ShardedModel(network, 2), inputs)
    assert sharded.shape == (8, feature_size(network))
    # each chunk normalised by its own batch statistics, as two GPUs did (the same dropout draws)
    torch.manual_seed(0)
    again = models.create_model("digits_convnet", 10).train()
    assert torch.allclose(sharded, torch.cat([representation(again, inputs[:4]), representation(again, inputs[4:])]))
