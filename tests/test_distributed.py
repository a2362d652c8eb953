"""Several processes (torchrun, gloo on the CPU) compute what one process computes with the
same per-shard batch-norm statistics; a missing peer ends the run with a clear error."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mt_repro.data import digits, synthetic
from mt_repro.data.labels import write_label_file
from mt_repro.engine.distributed import ProcessGroup, ShardedModel, from_environment
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.logs.runlog import read_rows

WORKER = Path(__file__).parent / "workers" / "shards_run.py"
LOSSES = ("loss", "class_loss", "cons_loss", "res_loss", "ema_class_loss")


def value(row, key):
    entry = row[key]
    return entry["val"] if isinstance(entry, dict) else entry


ROOT = Path(__file__).resolve().parents[1]


def run(args, env=None, timeout=300):
    # The checkout first on the path: the workers import this mt_repro even when not installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": path, **(env or {})})


@pytest.fixture(scope="module")
def label_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "100_0.txt"
    write_label_file(path, digits.label_file_entries(100, 0))
    return path


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_shards(tmp_path, label_file):
    env = {"OMP_NUM_THREADS": "1"}
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", WORKER,
               tmp_path / "ddp", label_file], env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([WORKER, tmp_path / "shards", label_file, "--shards", "2"], env)
    assert one.returncode == 0, one.stderr[-3000:]
    whole = run([WORKER, tmp_path / "whole", label_file], env)
    assert whole.returncode == 0, whole.stderr[-3000:]

    rows = {name: read_rows(tmp_path / name / "training.jsonl") for name in ("ddp", "shards", "whole")}
    assert len(rows["ddp"]) == len(rows["shards"]) == 24  # one row per step (print_freq 1)
    ddp = np.array([[value(r, k) for k in LOSSES] for r in rows["ddp"]])
    shards = np.array([[value(r, k) for k in LOSSES] for r in rows["shards"]])
    whole = np.array([[value(r, k) for k in LOSSES] for r in rows["whole"]])
    np.testing.assert_allclose(ddp, shards, rtol=1e-5, atol=1e-7)
    # Whole-minibatch statistics give other losses: the comparison can tell them apart.
    assert np.abs(ddp - whole).max() > 1e-3

    # Rank 0 alone wrote the run; its checkpoint holds the same networks (chunk 0's running
    # statistics) as the single process's.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "shards").iterdir())
    a = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "shards" / "checkpoints" / "last.ckpt", weights_only=False)
    for key in ("state_dict", "ema_state_dict"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name].float(), b[key][name].float(), rtol=1e-4, atol=1e-5)

    # Both processes resume the run from rank 0's checkpoint; rank 0 goes on writing its logs.
    resumed = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", WORKER,
                   tmp_path / "ddp", label_file, "--resume", "--steps-epochs", "2"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [row["step"] for row in read_rows(tmp_path / "ddp" / "training.jsonl")]
    assert steps == list(range(1, 49))
    assert torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 2


@pytest.mark.slow
def test_a_run_that_uses_one_head_trains_in_two_processes_as_in_one(tmp_path, label_file):
    """Without logit distance the second head's output is unused: its parameters get no
    gradient, which DDP must not wait for (it did: the second step stopped with "Expected to
    have finished reduction in the prior iteration"), and they stay as they began."""
    env, one_head = {"OMP_NUM_THREADS": "1"}, ["--logit-distance-cost", "-1"]
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", WORKER,
               tmp_path / "ddp", label_file, *one_head], env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([WORKER, tmp_path / "shards", label_file, "--shards", "2", *one_head], env)
    assert one.returncode == 0, one.stderr[-3000:]
    keys = ("loss", "class_loss", "cons_loss")
    rows = {name: np.array([[value(r, k) for k in keys] for r in read_rows(tmp_path / name / "training.jsonl")])
            for name in ("ddp", "shards")}
    assert len(rows["ddp"]) == 24
    np.testing.assert_allclose(rows["ddp"], rows["shards"], rtol=1e-5, atol=1e-7)
    a, b = (torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
            for name in ("ddp", "shards"))
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=1e-4, atol=1e-5)
    second_head = [k for k in a if k.split(".")[-2] == "fc2"]   # (saved as module.fc2.weight, as the original)
    assert second_head and all(torch.equal(a[k], b[k]) for k in second_head)   # untrained in both


MOCO = "queue_size=128,momentum=0.99,temperature=0.1,knn_k=10"


@pytest.mark.slow
def test_moco_shuffles_batch_norm_across_processes_as_one_process_does_in_turn(tmp_path, label_file):
    """MoCo under torchrun: each process encodes its share of the keys' minibatch in an order
    drawn by rank 0, the gathered keys are put back; one process with two shards computes the
    same steps, queue and networks. bn_splits 2 and 1 both mean the two shards."""
    env = {"OMP_NUM_THREADS": "1"}
    moco = ["--method", "moco", "--method-options"]
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", WORKER,
               tmp_path / "ddp", label_file, *moco, MOCO + ",bn_splits=2"], env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([WORKER, tmp_path / "shards", label_file, "--shards", "2", *moco, MOCO], env)
    assert one.returncode == 0, one.stderr[-3000:]
    whole = run([WORKER, tmp_path / "whole", label_file, *moco, MOCO], env)
    assert whole.returncode == 0, whole.stderr[-3000:]

    keys = ("loss", "contrastive_loss", "top1")
    losses = {name: np.array([[value(r, k) for k in keys] for r in read_rows(tmp_path / name / "training.jsonl")])
              for name in ("ddp", "shards", "whole")}
    assert len(losses["ddp"]) == len(losses["shards"]) == 20   # 1297 images, minibatches of 64
    np.testing.assert_allclose(losses["ddp"], losses["shards"], rtol=1e-5, atol=1e-6)
    # one group over the whole minibatch (no shuffle) learns otherwise
    assert np.abs(losses["ddp"][:, 1] - losses["whole"][:, 1]).max() > 1e-3

    a, b = (torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False) for name in ("ddp", "shards"))
    for key in ("state_dict", "ema_state_dict"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name].float(), b[key][name].float(), rtol=1e-4, atol=1e-5)
    state_a, state_b = (c["mt_repro"]["method_state"] for c in (a, b))
    torch.testing.assert_close(state_a["queue"]["keys"], state_b["queue"]["keys"], rtol=1e-4, atol=1e-5)
    assert state_a["queue"]["position"] == state_b["queue"]["position"] == (20 * 64) % 128
    for head in ("query_head", "key_head"):
        for name in state_a[head]:
            torch.testing.assert_close(state_a[head][name], state_b[head][name], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_moco_run_of_the_cli_under_torchrun_speaks_once(tmp_path):
    synthetic.write_cifar_tarball(tmp_path / "c.tar.gz", n_train=256, n_test=32)
    labels = synthetic.balanced_labels(tmp_path / "c.tar.gz", 4)
    (tmp_path / "l.txt").write_text("".join(f"{k} {v}\n" for k, v in labels.items()))
    result = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mt_repro.cli",
                  "cifar10", "--labels", "1000", "--data", tmp_path / "c.tar.gz", "--label-file", tmp_path / "l.txt",
                  "--method", "moco", "--set", "arch=cifar_shakeshake_mini", "--set", "batch_size=64",
                  "--set", "method_options=queue_size=128", "--epochs", "1", "--device", "cpu",
                  "--out", tmp_path / "run", "--no-progress"], {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done: 1 epochs, 4 steps") == 1   # rank 1 prints nothing
    assert "student kNN error" in result.stdout
    rows = read_rows(tmp_path / "run" / "training.jsonl")
    assert rows and all(value(r, "contrastive_loss") > 0 for r in rows)   # rank 0 wrote its log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_an_unreachable_peer_times_out_with_a_clear_error(tmp_path, rank):
    synthetic.write_cifar_tarball(tmp_path / "c.tar.gz", n_train=100, n_test=10)
    labels = synthetic.balanced_labels(tmp_path / "c.tar.gz", 2)
    (tmp_path / "l.txt").write_text("".join(f"{k} {v}\n" for k, v in labels.items()))
    port = free_port()
    env = {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    result = run(["-c", "import sys; from mt_repro.cli import main; sys.exit(main(sys.argv[1:]))",
                  "cifar10", "--labels", "1000", "--data", tmp_path / "c.tar.gz", "--label-file",
                  tmp_path / "l.txt", "--epochs", "1", "--device", "cpu", "--set", "dist_timeout_s=2",
                  "--set", "arch=cifar_shakeshake_mini", "--out", tmp_path / "run", "--no-progress"],
                 env, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mt-repro: error: process ")
    assert f"process {rank} of 2 could not reach its peers at 127.0.0.1:{port} within 2 s" in lines[-1]
    assert "Traceback" not in result.stderr


def test_sharded_model_in_one_process():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    sharded = ShardedModel(net, 2)
    assert sharded.state_dict().keys() == net.state_dict().keys()
    x = torch.randn(8, 3, 5, 5)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    reference.load_state_dict(net.state_dict())
    out = sharded(x)
    torch.testing.assert_close(out[:4], reference(x[:4]))
    # Each half is normalised by its own statistics.
    second = torch.nn.functional.batch_norm(reference[0](x[4:]), None, None, net[1].weight, net[1].bias, training=True)
    torch.testing.assert_close(out[4:], second.flatten(1))
    # Running statistics: the first half's only (as DataParallel's first GPU).
    first_only = torch.nn.BatchNorm2d(4)
    first_only(reference[0](x[:4]))
    torch.testing.assert_close(net[1].running_mean, first_only.running_mean)
    assert int(net[1].num_batches_tracked) == 1
    out.sum().backward()  # gradients flow through both halves
    assert net[0].weight.grad is not None
    sharded.eval()
    torch.testing.assert_close(sharded(x), net(x))  # evaluation: the whole minibatch
    sharded.train()
    with pytest.raises(RunFailed, match="cannot be split into 2 equal shards"):
        sharded(torch.randn(7, 3, 5, 5))


def test_the_features_of_a_sharded_network_are_each_shards_own():
    from mt_repro.core.networks import representation
    from mt_repro.models import get_model

    torch.manual_seed(0)
    net = get_model("digits_convnet").builder(num_classes=10)
    for module in net.modules():   # no dropout: the shards' passes are repeatable one by one
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    sharded, x = ShardedModel(net, 2), torch.randn(8, 1, 8, 8)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    features = representation(sharded, x)
    after = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    halves = torch.cat([representation(net, x[:4]), representation(net, x[4:])])
    torch.testing.assert_close(features, halves)
    net.load_state_dict(state)
    representation(net, x[:4])   # the running statistics kept: the first shard's
    assert all(torch.equal(after[k], v) for k, v in net.state_dict().items())
    assert not torch.allclose(features, representation(net, x))   # whole-minibatch statistics differ


def test_process_group_from_the_environment():
    assert not from_environment({}).distributed
    group = from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert group == ProcessGroup(2, 4, 0) and group.distributed and not group.is_main
    with pytest.raises(BadInput, match="RANK 4 is outside"):
        from_environment({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(BadInput, match="must be integers"):
        from_environment({"WORLD_SIZE": "two"})
    with pytest.raises(BadInput, match="must equal the number of processes"):
        ShardedModel(torch.nn.Linear(2, 2), 3, ProcessGroup(0, 2, 0))


def test_methods_that_cannot_run_in_several_processes_are_refused(tmp_path, label_file, monkeypatch):
    from mt_repro.config import TrainConfig
    from mt_repro.engine.trainer import Trainer

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    config = TrainConfig(dataset="digits", train_subdir="train", eval_subdir="test", arch="digits_convnet",
                         labels=str(label_file), workers=0, batch_size=64, labeled_batch_size=16,
                         epochs=1, consistency=1.0, device="cpu", method="pi_model")
    with pytest.raises(BadInput, match="pi_model does not run under several processes"):
        Trainer(config, tmp_path / "run").build()


@pytest.mark.parametrize("changes, message", [
    ({"batch_shards": 0}, "batch_shards must be at least 1"),
    ({"batch_shards": 3}, "must be a multiple of batch_shards"),
    ({"dist_timeout_s": 0}, "dist_timeout_s must be positive"),
])
def test_bad_shard_settings(changes, message):
    from mt_repro.config import TrainConfig

    config = TrainConfig(dataset="digits", arch="digits_convnet", batch_size=64, labeled_batch_size=16, **changes)
    with pytest.raises(BadInput, match=message):
        config.validate()
