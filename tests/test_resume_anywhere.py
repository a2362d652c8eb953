"""A run directory resumes from any working directory, with `--resume` of a training command or
`mt-repro resume DIR`; data given again is checked to be the run's by content; the digits demo's
grid resumes as a whole; a Ctrl-C says how to go on.

The runs are the smallest of the ConvNet tests (tests/test_convnet.py) on a synthetic CIFAR-10
stand-in: 4 steps, a checkpoint at every evaluation (every 2 steps). An interruption is a
KeyboardInterrupt raised inside a training step, as a Ctrl-C would; the pseudo-terminal test
sends a real one.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error
from mt_repro.cli import main
from mt_repro.data import synthetic
from mt_repro.engine.trainer import Trainer

STEPS = 4


def run_args(data, out, *extra) -> list[str]:
    return ["cifar10", "--arch", "convnet13", "--labels", "1000", "--data", str(data), "--steps", str(STEPS),
            "--set", "n_labeled=100", "--set", "width=0.0625", "--set", "batch_size=20",
            "--set", "evaluation_span=2", "--set", "print_span=1", "--set", "rampup_length=2",
            "--set", "rampdown_length=2", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def interrupted_at(step: int, method: str | None = None):
    """Trainer.train_step that raises KeyboardInterrupt when the run (of ``method``) is about to
    take step ``step``."""
    real_step = Trainer.train_step

    def step_or_interrupt(self, batch, hp, epoch):
        if self.state.global_step == step - 1 and method in (None, self.config.method):
            raise KeyboardInterrupt
        return real_step(self, batch, hp, epoch)

    return step_or_interrupt


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory) -> Path:
    """Where the runs are started from: the data lies here, named relatively."""
    directory = tmp_path_factory.mktemp("start")
    synthetic.write_cifar_tarball(directory / "c.tar.gz", n_train=200, n_test=40)
    return directory


@pytest.fixture(scope="module")
def whole_run(start_dir) -> Path:
    out = start_dir / "whole"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(start_dir)
        assert main(run_args("c.tar.gz", "whole")) == 0
    return out


@pytest.fixture(scope="module")
def interrupted_master(start_dir) -> tuple[Path, str]:
    """A run started with relative paths from ``start_dir`` and interrupted before its step 3
    (its last checkpoint: step 2), and what the command printed on stderr."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(start_dir)
        patch.setattr(Trainer, "train_step", interrupted_at(3))
        code = main(run_args("c.tar.gz", "part"))
    assert code == 1
    return start_dir / "part"


@pytest.fixture
def interrupted(interrupted_master, tmp_path) -> Path:
    """A copy of the interrupted run, for one test to continue."""
    return Path(shutil.copytree(interrupted_master, tmp_path / "part"))


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["ema_state_dict"]


def assert_same_run(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert all(torch.equal(first[k], second[k]) for k in first)
    for log in ("training.jsonl", "validation.jsonl", "ema_validation.jsonl"):
        steps = [json.loads(line)["step"] for line in (b / log).read_text().splitlines()]
        assert steps == [json.loads(line)["step"] for line in (a / log).read_text().splitlines()], log
        assert steps == sorted(set(steps)), log   # each step once


# --- 1. from any working directory, through every way in ------------------------------------------------
def test_a_run_records_absolute_paths_and_its_datas_hash(interrupted_master, start_dir):
    config = json.loads((interrupted_master / "config.json").read_text())
    assert config["data_dir"] == str(start_dir / "c.tar.gz")
    inputs = json.loads((interrupted_master / "inputs.json").read_text())
    assert inputs["data_dir"]["path"] == str(start_dir / "c.tar.gz")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", inputs["data_dir"]["content_hash"])


def test_ctrl_c_names_the_resume_command(cli, start_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(start_dir)
    monkeypatch.setattr(Trainer, "train_step", interrupted_at(3))
    code, _, err = cli(*run_args("c.tar.gz", tmp_path / "run"))
    assert code == 1
    assert err.strip().splitlines()[-1] == f"mt-repro: interrupted; continue with: mt-repro resume {tmp_path / 'run'}"


def test_cifar10_resume_of_a_convnet_run_from_another_directory(cli, interrupted, whole_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # not where it was started: its data is named relatively there
    code, out, err = cli("cifar10", "--resume", interrupted, "--no-progress")
    assert code == 0, err
    assert f"resuming {interrupted} at epoch 0.2, step 2" in out.splitlines()
    assert_same_run(whole_run, interrupted)


def test_cifar10_resume_accepts_the_runs_own_arch_and_data(cli, interrupted, whole_run, start_dir):
    code, _, err = cli("cifar10", "--resume", interrupted, "--arch", "convnet13", "--data", start_dir / "c.tar.gz",
                       "--no-progress")
    assert code == 0, err
    assert_same_run(whole_run, interrupted)


def test_cifar10_resume_refuses_another_arch(cli, interrupted):
    assert_one_line_error(cli("cifar10", "--resume", interrupted, "--arch", "cifar_shakeshake26"),
                          "run", "is a convnet13 run")


def test_mt_repro_resume_of_a_convnet_run(cli, interrupted, whole_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("resume", interrupted)
    assert code == 0, err
    assert "done: 1 epochs, 4 steps" in out
    assert_same_run(whole_run, interrupted)
    code, out, _ = cli("resume", interrupted)   # finished: left as it is
    assert code == 0 and out.strip() == f"run {interrupted} finished at epoch 1 (step 4); nothing to resume (its summary is kept)"


def test_a_finished_run_lengthened_inside_its_last_pass(cli, whole_run, tmp_path):
    """4 steps end inside the first pass of the stream (10 minibatches); 6 go on from step 4."""
    run = Path(shutil.copytree(whole_run, tmp_path / "run"))
    code, out, err = cli("resume", run, "--steps", "6", "--no-progress")
    assert code == 0, err
    assert f"resuming {run} at epoch 0.4, step 4" in out.splitlines()
    assert json.loads((run / "summary.json").read_text())["global_step"] == 6
    steps = [json.loads(line)["step"] for line in (run / "training.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# --- 2. data given again: the run's (moved) or refused ----------------------------------------------------
def test_resume_with_other_data_is_refused(cli, interrupted, tmp_path):
    other = synthetic.write_cifar_tarball(tmp_path / "other.tar.gz", n_train=200, n_test=40, seed=1)
    line = assert_one_line_error(cli("resume", interrupted, "--data", other), f"--data {other} is not the data run",
                                 "differs from", "inputs.json")
    assert "another --out" in line
    line = assert_one_line_error(cli("cifar10", "--resume", interrupted, "--data", other), "is not the data run")
    assert not (interrupted / "summary.json").exists()


def test_resume_with_the_same_data_moved(cli, interrupted, whole_run, start_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "copy.tar.gz"
    moved.parent.mkdir()
    shutil.copy(start_dir / "c.tar.gz", moved)
    config = json.loads((interrupted / "config.json").read_text())
    config["data_dir"] = str(tmp_path / "gone.tar.gz")   # where it was: no longer there
    (interrupted / "config.json").write_text(json.dumps(config))
    assert_one_line_error(cli("resume", interrupted), f"data {tmp_path / 'gone.tar.gz'} of run",
                          "does not exist", "pass --data PATH")
    code, _, err = cli("resume", interrupted, "--data", moved, "--no-progress")
    assert code == 0, err
    assert_same_run(whole_run, interrupted)
    assert json.loads((interrupted / "config.json").read_text())["data_dir"] == str(moved)
    assert json.loads((interrupted / "inputs.json").read_text())["data_dir"]["path"] == str(moved)


def test_label_file_does_not_apply_to_a_convnet_run(cli, interrupted, start_dir):
    assert_one_line_error(cli("resume", interrupted, "--label-file", start_dir / "c.tar.gz"),
                          "--label-file does not apply")


# --- 3. run directories written before paths were absolute ----------------------------------------------
def test_an_old_run_directory_resumes_from_where_it_was_started(cli, interrupted, whole_run, start_dir, tmp_path,
                                                                 monkeypatch):
    config = json.loads((interrupted / "config.json").read_text())
    config["data_dir"] = "c.tar.gz"   # relative, as runs recorded it before
    (interrupted / "config.json").write_text(json.dumps(config))
    (interrupted / "inputs.json").unlink()
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli("resume", interrupted), f"data c.tar.gz of run {interrupted} does not exist here "
                          f"({tmp_path / 'c.tar.gz'})", "resume from there, or pass --data PATH")
    monkeypatch.chdir(start_dir)
    code, _, err = cli("resume", interrupted, "--no-progress")
    assert code == 0, err
    assert_same_run(whole_run, interrupted)
    assert json.loads((interrupted / "config.json").read_text())["data_dir"] == str(start_dir / "c.tar.gz")
    assert (interrupted / "inputs.json").is_file()   # recorded from now on


# --- 4. the digits demo's grid ---------------------------------------------------------------------------
# one run at a time, in this process: the interruption below is patched into this process's trainer
DIGITS = ("--seeds", "1", "--epochs", "2", "--jobs", "1", "--no-progress")


def table_rows(text: str) -> list[str]:
    """The demo's table and notes, less the time it took (and the lines about each run before them)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("test error %"))
    return [re.sub(r"; \d+ s (in all|of training, \d+ s wall time .*)$", "", line)
            for line in lines[start:] if not line.startswith("table written")]


def test_digits_grid_interrupted_then_resumed_gives_the_uninterrupted_table(cli, tmp_path, monkeypatch):
    code, whole, err = cli("digits", *DIGITS, "--out", tmp_path / "whole")
    assert code == 0, err
    real_step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", interrupted_at(30, "mean_teacher"))  # in its 2nd epoch of 24 steps
    code, _, err = cli("digits", *DIGITS, "--out", tmp_path / "part")
    assert code == 1
    assert err.strip().splitlines()[-1] == f"mt-repro: interrupted; continue with: mt-repro resume {tmp_path / 'part'}"
    monkeypatch.setattr(Trainer, "train_step", real_step)
    code, resumed, err = cli("digits", "--resume", tmp_path / "part", "--jobs", "1")
    assert code == 0, err
    assert table_rows(resumed) == table_rows(whole)
    for run in ("supervised_0", "mean_teacher_0"):
        for log in ("training.jsonl", "ema_validation.jsonl"):
            part = [json.loads(line)["step"] for line in (tmp_path / "part" / run / log).read_text().splitlines()]
            assert part == [json.loads(line)["step"] for line in (tmp_path / "whole" / run / log).read_text().splitlines()]
            assert part == sorted(set(part)), (run, log)   # no step twice
    code, again, err = cli("resume", tmp_path / "part")   # all finished: kept, the same table
    assert code == 0, err
    assert "finished already, its result kept" in again and table_rows(again) == table_rows(whole)


def test_digits_resume_refuses_other_options_and_a_directory_without_a_demo(cli, tmp_path):
    assert_one_line_error(cli("digits", "--resume", tmp_path, "--seeds", "2"), "--seeds: --resume continues the demo")
    assert_one_line_error(cli("digits", "--resume", tmp_path), "holds no digits demo")


def test_ctrl_c_in_a_grid_command_names_the_same_command(cli, monkeypatch, tmp_path):
    """table and ablation, run again, keep their finished runs and resume the interrupted one."""
    from mt_repro.apps import training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "ablation_command", interrupted)
    code, _, err = cli("ablation", "svhn_250_vary_trust", "--data", tmp_path / "my svhn", "--no-progress")
    assert code == 1
    assert err.strip().splitlines()[-1] == ("mt-repro: interrupted; continue with the same command: mt-repro "
                                            f"ablation svhn_250_vary_trust --data '{tmp_path / 'my svhn'}' --no-progress")


def test_a_ctrl_c_while_a_checkpoint_is_written_takes_effect_once_it_is_written(tmp_path, monkeypatch):
    """Interrupted inside, torch's writer fails the file (or aborts the process at exit)."""
    import signal

    from mt_repro.engine import checkpoint as ckpt

    real_save = torch.save

    def save_with_a_ctrl_c(obj, f):
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, f)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)   # Python's own, as in mt-repro
    try:
        monkeypatch.setattr(torch, "save", save_with_a_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            ckpt.save_atomic({"w": torch.arange(5000.0)}, tmp_path / "last.ckpt")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["w"], torch.arange(5000.0))


# --- 5. a real Ctrl-C, through a terminal ------------------------------------------------------------------
def ctrl_c_on_a_terminal(argv: list[str], ready) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, type Ctrl-C once ``ready()``; (exit code, output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the command, on the terminal
        os.execve(sys.executable, argv, env)
    output, sent = b"", False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if not sent and ready():
            os.write(terminal, b"\x03")   # Ctrl-C: the terminal sends SIGINT to the command's processes
            sent = True
        readable, _, _ = select.select([terminal], [], [], 0.2)
        if readable:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:   # the command has ended: its side of the terminal is closed
                break
            if not chunk:
                break
            output += chunk
    else:
        os.kill(pid, 9)
        pytest.fail(f"the command did not end: {output.decode(errors='replace')[-2000:]}")
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    assert sent, text
    return os.waitstatus_to_exitcode(status), text


def test_ctrl_c_in_a_terminal_prints_the_resume_command(start_dir, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mt_repro.cli", *run_args(start_dir / "c.tar.gz", out)]
    argv[argv.index("--steps") + 1] = "100000"
    code, text = ctrl_c_on_a_terminal(argv, lambda: (out / "checkpoints" / "last.ckpt").exists())
    assert code == 1, text
    assert f"mt-repro: interrupted; continue with: mt-repro resume {out}" in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_ctrl_c_of_the_digits_grid_in_parallel_processes_then_resume_gives_the_same_table(tmp_path, cli):
    """Two runs at a time in worker processes: one Ctrl-C stops them all with one line, and
    the grid resumed gives the table of an uninterrupted serial run."""
    grid = ("--seeds", "2", "--epochs", "3", "--no-progress")
    code, whole, err = cli("digits", *grid, "--jobs", "1", "--threads", "1", "--out", tmp_path / "whole")
    assert code == 0, err
    out = tmp_path / "part"
    argv = [sys.executable, "-m", "mt_repro.cli", "digits", *grid, "--jobs", "2", "--threads", "1", "--out", str(out)]
    started = lambda: sum((out / run / "config.json").exists() for run in ("supervised_0", "mean_teacher_0")) == 2
    code, text = ctrl_c_on_a_terminal(argv, started)
    assert code == 1, text
    assert text.strip().splitlines()[-1] == f"mt-repro: interrupted; continue with: mt-repro resume {out}"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    code, resumed, err = cli("resume", out, "--no-progress")
    assert code == 0, err
    assert table_rows(resumed) == table_rows(whole)


def test_resume_of_a_directory_whose_config_is_no_regular_file_says_so(cli, tmp_path):
    (tmp_path / "run").mkdir()
    os.symlink("/dev/zero", tmp_path / "run" / "config.json")
    assert_one_line_error(cli("resume", tmp_path / "run"), "config.json is a character device, not a regular file")
    assert_one_line_error(cli("resume", tmp_path / "none"), "is not a run directory (no config.json)")
