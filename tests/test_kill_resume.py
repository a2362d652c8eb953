"""Kill a training run with SIGKILL, again and again, and resume it: nothing lost, nothing doubled.

Each interrupted process is a real ``mt-repro cifar10`` subprocess killed either at a chosen
point (``workers/killed_run.py``: inside a training step, an evaluation, a log row half written,
a file written but not yet renamed) or after a random delay. After every
kill the run directory is checked for damage, then ``--resume`` continues it. The final student
and teacher weights must equal an uninterrupted run's bit for bit, and the logs must hold the
same rows, each once.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mt_repro.engine import checkpoint as ckpt
from mt_repro.logs.runlog import read_rows

pytestmark = pytest.mark.slow  # whole runs, killed and resumed

KILLED_RUN = Path(__file__).parent / "workers" / "killed_run.py"

TIMING_COLUMNS = ("data_time", "batch_time")
LOGS = ("training.jsonl", "validation.jsonl", "ema_validation.jsonl")


def run_command(tree: Path, out: Path) -> list[str]:
    return ["cifar10", "--data", str(tree),
            "--label-file", str(tree.parent / "labels.txt"), "--gpus", "1", "--epochs", "3",
            "--workers", "0", "--seed", "0", "--device", "cpu", "--no-progress", "--out", str(out),
            "--set", "arch=cifar_shakeshake_mini", "--set", "batch_size=8",
            "--set", "labeled_batch_size=2", "--set", "lr_rampdown_epochs=4",
            "--set", "print_freq=1", "--set", "checkpoint_epochs=1"]


def resume_command(out: Path) -> list[str]:
    return ["cifar10", "--resume", str(out), "--no-progress"]


def launch(arguments, crash_at=None, kill_after=None) -> int:
    """``mt-repro ARGUMENTS`` in a new process, killed at ``crash_at`` or after ``kill_after`` s."""
    argv = ([sys.executable, str(KILLED_RUN), crash_at] if crash_at else [sys.executable, "-m", "mt_repro.cli"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(argv + arguments, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert "Traceback" not in err, err
    return process.returncode


def assert_nothing_damaged(run: Path) -> None:
    """Every checkpoint loads, config and summary parse, a log may only end in one torn row."""
    if (run / "config.json").exists():
        json.loads((run / "config.json").read_text())
    if (run / "summary.json").exists():
        json.loads((run / "summary.json").read_text())
    for path in (run / "checkpoints").glob("*.ckpt"):
        ckpt.load_checkpoint(path)
    for name in LOGS:
        if (run / name).exists():
            lines = (run / name).read_text().split("\n")
            for line in lines[:-1]:
                json.loads(line)


def comparable_rows(run: Path, name: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k.split("/")[0] not in TIMING_COLUMNS}
            for row in read_rows(run / name)]


@pytest.fixture(scope="module")
def uninterrupted(tiny_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert launch(run_command(tiny_tree, out)) == 0
    return out


def test_killed_and_resumed_run_equals_an_uninterrupted_one(uninterrupted, tiny_tree, tmp_path):
    out = tmp_path / "run"
    # Where each process dies; the run has 3 epochs of 6 steps, 18 training-log rows, 2
    # evaluations (student, teacher) per epoch and one checkpoint file per epoch.
    crashes = [
        ("step", "step:4"),                   # epoch 1, before the first checkpoint
        ("log row torn", "log-row:3"),        # a row half written, no checkpoint yet
        ("evaluation", "evaluate:2"),         # the teacher's evaluation after epoch 1
        ("checkpoint written, not renamed", "before-rename:3"),  # config.json, then checkpoint.1, …
        ("step", "step:5"),
        ("log row torn", "log-row:4"),
        ("evaluation", "evaluate:1"),
        ("timer", None),
        ("timer", None),
    ]
    rng = random.Random(0)
    started = False
    for what, crash_at in crashes:
        argv = resume_command(out) if started else run_command(tiny_tree, out)
        code = launch(argv, crash_at=crash_at, kill_after=rng.uniform(2.0, 6.0) if crash_at is None else None)
        started = started or (out / "config.json").exists()
        if code == 0:
            break  # a timer that fired too late: the run is complete
        assert code == -signal.SIGKILL, (what, code)
        assert_nothing_damaged(out)
    else:
        assert launch(resume_command(out)) == 0
    assert_nothing_damaged(out)

    ours = ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")
    reference = ckpt.load_checkpoint(uninterrupted / "checkpoints" / "last.ckpt")
    for key in ("state_dict", "ema_state_dict"):
        assert ours[key].keys() == reference[key].keys()
        for name in reference[key]:
            assert torch.equal(ours[key][name], reference[key][name]), (key, name)
    assert ours["global_step"] == reference["global_step"] == 18
    for name in LOGS:
        assert comparable_rows(out, name) == comparable_rows(uninterrupted, name), name
    steps = [row["step"] for row in read_rows(out / "training.jsonl")]
    assert steps == sorted(set(steps))  # each row once
    assert json.loads((out / "summary.json").read_text())["teacher_error1"] == \
        json.loads((uninterrupted / "summary.json").read_text())["teacher_error1"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    from mt_repro.core.fileio import atomic_write

    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"new, half")
            raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(".*partial"))


def launch_and_read(arguments) -> tuple[int, str, str]:
    """``mt-repro ARGUMENTS`` in a new process, to its end: (exit code, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mt_repro.cli", *arguments], env=env, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def files_of(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def copied(run: Path, destination: Path) -> Path:
    for name, data in files_of(run).items():
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        (destination / name).write_bytes(data)
    return destination


def test_a_finished_run_resumed_keeps_its_summary_and_logs(uninterrupted, tmp_path):
    out = copied(uninterrupted, tmp_path / "run")
    before = files_of(out)
    code, stdout, stderr = launch_and_read(resume_command(out))
    assert code == 0, stderr
    assert stdout.strip() == f"run {out} finished at epoch 3 (step 18); nothing to resume (its summary is kept)"
    assert files_of(out) == before   # summary.json byte for byte, the logs and checkpoints unchanged


def test_a_second_run_into_the_same_out_is_refused_and_overwrite_starts_afresh(uninterrupted, tiny_tree, tmp_path):
    out = copied(uninterrupted, tmp_path / "run")
    before = files_of(out)
    code, _, stderr = launch_and_read(run_command(tiny_tree, out) + ["--epochs", "1"])
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "holds a run already" in stderr and "--overwrite" in stderr
    assert files_of(out) == before
    code, _, stderr = launch_and_read(run_command(tiny_tree, out) + ["--epochs", "1", "--overwrite"])
    assert code == 0, stderr
    for name in ("validation.jsonl", "ema_validation.jsonl"):
        assert [row["epoch"] for row in read_rows(out / name)] == [1], name   # each epoch once
    assert [row["step"] for row in read_rows(out / "training.jsonl")] == list(range(1, 7))
    names = {p.name for p in (out / "checkpoints").iterdir()}
    assert {"checkpoint.1.ckpt", "last.ckpt"} <= names <= {"checkpoint.1.ckpt", "last.ckpt", "best.ckpt"}  # none of 2, 3
    assert ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == 6
