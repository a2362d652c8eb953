"""Grids on local processes (``mt_repro.engine.launch``, ``--launcher local --devices``): the
same results as one run after another, a killed launcher resumed, failures recorded."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.data import synthetic
from mt_repro.engine import launch

GRID = "svhn_250_vary_logit_distance_cost"   # 24 runs
TINY = ["width=0.0625", "batch_size=20", "training_length=30", "evaluation_span=10", "print_span=5",
        "rampup_length=2", "rampdown_length=2", "test_phase=true"]
TIMINGS = ("batch_time", "data_time")


@pytest.fixture(scope="module")
def svhn(tmp_path_factory):
    directory = tmp_path_factory.mktemp("svhn")
    synthetic.write_svhn_mat(directory, n_train=800, n_test=40, seed=3)
    return directory


def ablation_argv(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [arg for item in TINY for arg in ("--set", item)]
    return [sys.executable, "-m", "mt_repro.cli", "ablation", GRID, "--data", str(data), "--out", str(out),
            "--device", "cpu", "--no-progress", *sets, *extra]


def results(out: Path) -> dict[str, object]:
    """Every run's summary errors and steps, and its evaluation logs without timings."""
    found = {}
    for summary in sorted(out.rglob("summary.json")):
        run = summary.parent
        values = json.loads(summary.read_text())
        logs = [[{k: v for k, v in json.loads(line).items() if not k.startswith(TIMINGS)}
                 for line in (run / name).read_text().splitlines()]
                for name in ("validation.jsonl", "ema_validation.jsonl")]
        found[run.relative_to(out).as_posix()] = (values["student_error1"], values["teacher_error1"],
                                                  values["global_step"], logs)
    return found


def workers_of(pid: int) -> int:
    """Spawned worker processes of ``pid`` alive now (not its resource tracker)."""
    count = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        count += b"spawn_main" in cmdline
    return count


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the worker processes")
def test_a_grid_runs_two_at_a_time_and_a_killed_launch_resumes_to_the_serial_results(svhn, tmp_path):
    serial = tmp_path / "serial"
    done = subprocess.run(ablation_argv(svhn, serial), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = results(serial)
    assert len(expected) == 24

    local = tmp_path / "local"
    argv = ablation_argv(svhn, local, "--launcher", "local", "--devices", "cpu,cpu")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    most_workers, deadline = 0, time.monotonic() + 600
    # killed once 6 runs are done and another is mid-way
    while len(list(local.rglob("summary.json"))) < 6 or \
            len(list(local.rglob("config.json"))) <= len(list(local.rglob("summary.json"))):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        most_workers = max(most_workers, workers_of(process.pid))
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)   # the launcher, not its workers: they must die with it
    process.communicate()
    assert most_workers == 2
    time.sleep(1)
    finished_at_kill = len(list(local.rglob("summary.json")))
    assert 6 <= finished_at_kill < 24
    started = [p.parent for p in local.rglob("config.json")]
    assert len(started) > finished_at_kill   # runs were interrupted mid-way, left to resume

    again = subprocess.run(argv, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"24 runs, {finished_at_kill} were already finished" in again.stdout
    assert "Warning" not in again.stderr, again.stderr
    assert results(local) == expected


def digits_grid(tmp_path, n: int, broken: int | None = None, epochs: int = 1) -> list[launch.GridRun]:
    from mt_repro.apps import digits_demo
    from mt_repro.config.compose import load_demo_config
    from mt_repro.data import digits
    from mt_repro.data.labels import write_label_file

    tmp_path.mkdir(parents=True, exist_ok=True)
    labels = tmp_path / "labels.txt"
    write_label_file(labels, digits.label_file_entries(100, 0))
    grid = []
    for index in range(n):
        config = digits_demo.demo_configs(load_demo_config(), "supervised", 100, labels, 0, epochs, tmp_path,
                                          mode="fast").replace(checkpoint_epochs=1, seed=index)
        if index == broken:
            config = config.replace(labels=str(tmp_path / "no-such-labels.txt"))
        grid.append(launch.GridRun(tmp_path / f"run{index}", config, f"run {index}"))
    return grid


TORCHRUN_GRID = Path(__file__).parent / "workers" / "torchrun_grid.py"


def processes_naming(text: str) -> list[int]:
    """Processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the run's processes")
def test_torchrun_trains_each_run_in_two_processes_and_a_killed_launch_resumes(tmp_path):
    argv = [sys.executable, str(TORCHRUN_GRID)]
    whole = subprocess.run([*argv, str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "2 run(s) on 1 slot(s): cpu+cpu" in whole.stdout and "started 2, resumed 0" in whole.stdout
    for run in ("run0", "run1"):
        summary = json.loads((tmp_path / "whole" / run / "summary.json").read_text())
        assert summary["provenance"]["processes"] == 2
        assert "mt-repro: error" not in (tmp_path / "whole" / run / launch.TORCHRUN_LOG).read_text()

    killed = tmp_path / "killed"
    process = subprocess.Popen([*argv, str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (killed / "run0" / "checkpoints" / "checkpoint.2.ckpt").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)   # the launcher: its worker, torchrun and the run's processes follow
    process.communicate()
    deadline = time.monotonic() + 60
    while processes_naming(str(killed / "run0")):
        assert time.monotonic() < deadline, "the run's processes outlived the launcher"
        time.sleep(0.1)
    assert not (killed / "run0" / "summary.json").exists()

    again = subprocess.run([*argv, str(killed)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "started 1, resumed 1, skipped 0" in again.stdout
    for run in ("run0", "run1"):
        assert run_results(killed / run) == run_results(tmp_path / "whole" / run)

    # A Slurm job of two tasks per run (submitit's local executor here) trains the same runs.
    pytest.importorskip("submitit")
    grid = digits_grid(tmp_path / "slurm", 2, epochs=6)
    settings = launch.SlurmSettings(tmp_path / "jobs", executor="local", time_min=10, gpus_per_run=0,
                                    cpus_per_run=1, procs_per_run=2, wait=True)
    assert launch.launch(grid, launcher="slurm", slurm=settings).started == 2
    for run in ("run0", "run1"):
        assert json.loads((tmp_path / "slurm" / run / "summary.json").read_text())["provenance"]["processes"] == 2
        assert run_results(tmp_path / "slurm" / run) == run_results(tmp_path / "whole" / run)


def test_devices_in_slots_of_a_run_s_processes():
    assert launch.device_slots(["cuda:0", "cuda:1", "cuda:2", "cuda:3"], 2) == [("cuda:0", "cuda:1"),
                                                                               ("cuda:2", "cuda:3")]
    assert launch.device_slots(["cpu", "cpu"], 2) == [("cpu", "cpu")]
    for devices, procs, message in [
        (["cuda:0", "cuda:1", "cuda:2"], 2, "lists 3 device\\(s\\), not a multiple of --procs-per-run 2"),
        (["cuda:0", "cpu"], 2, "mixes cpu and cuda"),
        (["cuda:0", "cuda:0"], 2, "each take their own GPU"),
        (["cuda", "cuda"], 2, "each take their own GPU"),
        (["cpu"], 0, "--procs-per-run must be at least 1"),
    ]:
        with pytest.raises(BadInput, match=message):
            launch.device_slots(devices, procs)


def test_several_processes_per_run_refuse_the_convnet_runs_before_any_starts(cli, svhn, tmp_path):
    assert_one_line_error(cli("ablation", GRID, "--data", svhn, "--out", tmp_path, "--launcher", "torchrun",
                              "--devices", "cpu,cpu"),
                          "--launcher torchrun: data seed", "is a ConvNet run, which trains in one process; "
                          "use --launcher local")
    assert_one_line_error(cli("ablation", GRID, "--data", svhn, "--out", tmp_path, "--launcher", "slurm",
                              "--procs-per-run", "2", "--gpus-per-run", "2"),
                          "--procs-per-run: data seed", "is a ConvNet run, which trains in one process; give it 1")
    assert not list(tmp_path.rglob("config.json"))
    for argv, message in [(["--procs-per-run", "2"], "--procs-per-run 2 runs one process per GPU: give "
                                                      "--gpus-per-run 2 (got 1), or 0 on CPUs"),
                          (["--procs-per-run", "0"], "--procs-per-run must be at least 1, got 0")]:
        assert_one_line_error(cli("ablation", GRID, "--data", svhn, "--out", tmp_path, "--launcher", "slurm",
                                  *argv), message)


def test_a_failed_run_is_recorded_and_the_others_finish(tmp_path):
    from mt_repro.engine.trainer import remove_run_files

    grid = digits_grid(tmp_path, 3)
    diverging = grid[1].config.replace(lr=float("inf"))   # a run that fails on its own: it diverges
    grid[1] = launch.GridRun(grid[1].directory, diverging, grid[1].label)
    with pytest.raises(RunFailed, match=r"1 of 3 runs failed \(each wrote failed.txt\); the first: .*run1: "
                                        r"RunFailed: training diverged"):
        launch.launch(grid, launcher="local", devices=["cpu", "cpu"])
    assert (tmp_path / "run0" / "summary.json").is_file() and (tmp_path / "run2" / "summary.json").is_file()
    assert "training diverged" in (tmp_path / "run1" / launch.FAILED_FILE).read_text()
    remove_run_files(tmp_path / "run1")   # started again afresh, with a learning rate that works
    counts = launch.launch(digits_grid(tmp_path, 3), launcher="serial", progress=False)
    assert (counts.started, counts.skipped, counts.failed) == (1, 2, [])
    assert not (tmp_path / "run1" / launch.FAILED_FILE).exists()


@pytest.mark.parametrize("launcher, devices", [("serial", None), ("local", ["cpu", "cpu"])])
def test_a_run_whose_input_is_bad_stops_the_grid_with_exit_2(tmp_path, launcher, devices):
    grid = digits_grid(tmp_path, 4, broken=0)
    with pytest.raises(BadInput, match=r"run0: label file .*no-such-labels.txt does not exist"):
        launch.launch(grid, launcher=launcher, devices=devices, progress=False)
    assert "no-such-labels.txt" in (tmp_path / "run0" / launch.FAILED_FILE).read_text()
    if launcher == "serial":
        assert not any((tmp_path / f"run{i}").exists() for i in (1, 2, 3))


@pytest.mark.parametrize("text, message", [
    (None, "--launcher local needs --devices"), ("", "--launcher local needs --devices"),
    ("gpu0", "'gpu0' is not a device"), ("cuda:x", "'cuda:x' is not a device"), ("cpu:1", "'cpu:1' is not a device"),
])
def test_bad_device_lists(text, message):
    with pytest.raises(BadInput, match=message):
        launch.parse_devices(text)
    assert launch.parse_devices("cuda:0,cuda:0,cpu") == ["cuda:0", "cuda:0", "cpu"]


def test_devices_without_the_local_launcher_are_refused(cli, tmp_path):
    assert_one_line_error(cli("ablation", GRID, "--devices", "cpu,cpu", "--out", tmp_path),
                          "--devices lists the devices of --launcher local or torchrun")
    assert_one_line_error(cli("ablation", GRID, "--procs-per-run", "2", "--out", tmp_path),
                          "--procs-per-run: an option of --launcher torchrun or slurm, not of --launcher serial")
    assert_one_line_error(cli("table", "4", "--launcher", "torchrun", "--out", tmp_path),
                          "--launcher torchrun needs --devices")
    assert_one_line_error(cli("table", "1", "--launcher", "local", "--out", tmp_path),
                          "--launcher local needs --devices")
    assert_one_line_error(cli("ablation", GRID, "--slurm-partition", "gpu", "--wait", "--out", tmp_path),
                          "--slurm-partition, --wait: options of --launcher slurm, not of --launcher serial")


# --- Slurm through submitit (its local executor: the same jobs, on a machine without Slurm) ---
submitit = pytest.importorskip("submitit")


def run_results(directory: Path) -> tuple:
    summary = json.loads((directory / "summary.json").read_text())
    logs = [[{k: v for k, v in json.loads(line).items() if not k.startswith(TIMINGS)}
             for line in (directory / name).read_text().splitlines()]
            for name in ("training.jsonl", "validation.jsonl", "ema_validation.jsonl")]
    return summary["student_error1"], summary["teacher_error1"], summary["global_step"], logs


@pytest.fixture
def submitted(monkeypatch) -> dict:
    """submitit's executor replaced by one that records what it is given (jobs 4242_0, 4242_1, ...)."""
    seen = {}

    class Recorder:
        def __init__(self, folder, cluster):
            seen.update(folder=folder, cluster=cluster)

        def update_parameters(self, **parameters):
            seen.update(parameters)

        def map_array(self, fn, runs):
            seen["runs"] = runs
            return [type("Job", (), {"job_id": f"4242_{i}"})() for i in range(len(runs))]

    monkeypatch.setattr(submitit, "AutoExecutor", Recorder)
    return seen


@pytest.mark.slow
def test_slurm_jobs_give_the_serial_results_and_a_cancelled_job_resumes_when_submitted_again(tmp_path):
    """Through submitit's local executor: the jobs' runs equal serial runs; a job cancelled
    mid-run leaves its run interrupted, and the same grid submitted again resumes it from its
    checkpoint (what a requeued job does: ``GridJob.checkpoint`` resubmits the same run)."""
    serial = digits_grid(tmp_path / "serial", 2, epochs=6)
    launch.launch(serial, launcher="serial", progress=False)
    grid = digits_grid(tmp_path / "slurm", 2, epochs=6)
    settings = launch.SlurmSettings(tmp_path / "jobs", executor="local", time_min=10, gpus_per_run=0,
                                    cpus_per_run=1)
    first, second = launch.launch(grid, launcher="slurm", slurm=settings).jobs
    checkpoint = grid[0].directory / "checkpoints" / "checkpoint.2.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():   # cancelled once it has checkpointed twice, mid-run
        assert time.monotonic() < deadline and not first.done(), first.stderr()
        time.sleep(0.02)
    first.cancel(check=False)
    assert second.result().error is None
    deadline = time.monotonic() + 60
    while not first.done():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not (grid[0].directory / "summary.json").exists()
    again = launch.launch(digits_grid(tmp_path / "slurm", 2, epochs=6), launcher="slurm",
                          slurm=dataclasses.replace(settings, wait=True))
    assert again.skipped == 1 and (again.resumed, again.started, again.failed) == (1, 0, [])
    for ours, theirs in zip(grid, serial):
        assert run_results(ours.directory) == run_results(theirs.directory)
    requeued = launch.GridJob(None).checkpoint(grid[0])
    assert requeued.function.__class__ is launch.GridJob and requeued.args == (grid[0],)


def test_slurm_settings_reach_submitit(tmp_path, submitted):
    seen = submitted
    settings = launch.SlurmSettings(tmp_path / "jobs", partition="gpu", time_min=300, gpus_per_run=1,
                                    cpus_per_run=10, setup=("module load cuda",), array_parallelism=8)
    said = []
    counts = launch.launch(digits_grid(tmp_path, 3), launcher="slurm", slurm=settings, say=said.append)
    assert seen["cluster"] == "slurm" and seen["slurm_partition"] == "gpu" and seen["timeout_min"] == 300
    assert (seen["gpus_per_node"], seen["cpus_per_task"], seen["slurm_array_parallelism"]) == (1, 10, 8)
    assert seen["slurm_setup"] == ["module load cuda"] and len(seen["runs"]) == 3 and len(counts.jobs) == 3
    assert "submitted 3 run(s) as array job 4242" in said[-1]


def test_the_slurm_options_of_the_command_line(cli, svhn, tmp_path, submitted):
    seen = submitted
    code, out, err = cli("ablation", GRID, "--data", svhn, "--out", tmp_path, "--launcher", "slurm",
                         "--slurm-partition", "a100", "--slurm-time", "90", "--gpus-per-run", "1",
                         "--cpus-per-run", "6", "--slurm-setup", "module load cuda/12", "--slurm-setup",
                         "source ~/venv/bin/activate")
    assert code == 0, err
    assert seen["folder"] == str(tmp_path / "slurm-jobs") and seen["cluster"] == "slurm"
    assert (seen["slurm_partition"], seen["timeout_min"], seen["gpus_per_node"], seen["cpus_per_task"]) == \
        ("a100", 90, 1, 6)
    assert seen["slurm_setup"] == ["module load cuda/12", "source ~/venv/bin/activate"] and len(seen["runs"]) == 24
    assert_one_line_error(cli("ablation", GRID, "--data", svhn, "--out", tmp_path, "--launcher", "slurm",
                              "--slurm-time", "0"), "--slurm-time must be at least 1")
