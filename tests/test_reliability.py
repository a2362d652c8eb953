"""Failures during a run: a full disk, a read-only directory, a diverging loss."""
from __future__ import annotations

import errno
import json
import os

import pytest

from conftest import assert_one_line_error
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine.trainer import Trainer


def run_args(tree, out, *extra):
    return ["cifar10", "--data", tree, "--label-file", tree.parent / "labels.txt", "--gpus", 1,
            "--workers", 0, "--seed", 0, "--device", "cpu", "--no-progress", "--out", out,
            "--set", "arch=cifar_shakeshake_mini", "--set", "batch_size=8", "--set", "labeled_batch_size=2",
            "--set", "lr_rampdown_epochs=4", "--set", "checkpoint_epochs=1", *extra]


def fail_on_call(number: int, error: OSError, real):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise error
        return real(*args, **kwargs)

    return wrapper


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(cli, tiny_tree, tmp_path, monkeypatch):
    real_save = ckpt.torch.save

    def save_then_fill_the_disk(state, f):
        real_save(state, f)
        if state["epoch"] == 2:
            f.write(b"\0" * 10)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", save_then_fill_the_disk)
    out = tmp_path / "run"
    line = assert_one_line_error(cli(*run_args(tiny_tree, out, "--epochs", 3)),
                                 "cannot write checkpoint", "No space left on device",
                                 "the previous checkpoint is intact", code=1)
    assert "checkpoint.2.ckpt" in line
    assert ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert not (out / "checkpoints" / "checkpoint.2.ckpt").exists()
    assert not list((out / "checkpoints").glob(".*partial"))


def test_disk_full_while_logging(cli, tiny_tree, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_prepare = Trainer._prepare_out_dir

    def prepare_on_a_full_disk(self, *args, **kwargs):
        real_prepare(self, *args, **kwargs)
        (out / "training.jsonl").symlink_to("/dev/full")  # every write: ENOSPC, from the kernel

    monkeypatch.setattr(Trainer, "_prepare_out_dir", prepare_on_a_full_disk)
    assert_one_line_error(cli(*run_args(tiny_tree, out, "--epochs", 1)),
                          "cannot append to", "training.jsonl", "No space left on device", code=1)


def test_read_only_file_system_mid_run(cli, tiny_tree, tmp_path, monkeypatch):
    real_replace = os.replace
    state = {"checkpoints": 0}

    def replace(source, destination):
        if str(destination).endswith(".ckpt"):
            state["checkpoints"] += 1
            if state["checkpoints"] == 3:  # checkpoint.1, last.ckpt, then checkpoint.2
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "run"
    assert_one_line_error(cli(*run_args(tiny_tree, out, "--epochs", 3)), "Read-only file system", code=1)
    assert ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(cli, tiny_tree, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert_one_line_error(cli(*run_args(tiny_tree, out, "--epochs", 1)), "cannot write", str(out))
    finally:
        out.chmod(0o755)


def test_diverged_run_resumes_from_the_last_good_checkpoint_with_a_lower_lr(cli, tiny_tree, tmp_path):
    out = tmp_path / "run"
    assert cli(*run_args(tiny_tree, out, "--epochs", 1))[0] == 0
    # Continue for two more epochs with an absurd learning rate: the loss explodes.
    line = assert_one_line_error(cli("cifar10", "--resume", out, "--epochs", 3, "--set", "lr=1e9",
                                     "--no-progress"), "training diverged at step", code=1)
    assert "loss" in line and "last good checkpoint is kept" in line
    assert json.loads((out / "config.json").read_text())["lr"] == 1e9
    assert ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 1
    # Resume with a sane learning rate: it continues from epoch 1 and finishes.
    code, stdout, err = cli("cifar10", "--resume", out, "--set", "lr=0.05", "--no-progress")
    assert code == 0, err
    assert "resuming with lr=0.05" in stdout
    final = ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert final["epoch"] == 3 and final["mt_repro"]["config"]["lr"] == 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher_error1"] is not None and summary["epochs"] == 3


def test_resume_with_an_invalid_override(cli, tiny_tree, tmp_path):
    out = tmp_path / "run"
    assert cli(*run_args(tiny_tree, out, "--epochs", 1))[0] == 0
    assert_one_line_error(cli("cifar10", "--resume", out, "--set", "lr=fast"), "lr='fast' is not a valid float")
    assert_one_line_error(cli("cifar10", "--resume", out, "--set", "batch_size=4", "--set", "labeled_batch_size=4"),
                          "labeled_batch_size")
