"""``--launcher slurm`` against a real Slurm: a single-node cluster of Debian's ``slurm-wlm`` and
``munge`` that the test starts itself (``tests/slurm/single_node.sh``, as root, on ports of its
own), never a cluster it finds: the suite must not submit jobs to a user's cluster.

Where slurm-wlm is not installed or the test does not run as root, it is skipped and says why;
``.ci/run`` installs slurm-wlm and munge where it can. A grid of two runs goes in as one array
job; one task is cancelled mid-run with ``scancel`` and one is requeued mid-run with ``scontrol
requeue``: the requeued task resumes its run from its checkpoint, the cancelled run is resumed
by submitting the grid again, and both runs end as the same runs one after another do.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mt_repro.engine import launch
from test_launch import digits_grid, run_results

SCRIPT = Path(__file__).parent / "slurm" / "single_node.sh"
EPOCHS = 25   # about 20 s a run: long enough that a job killed 2 s after scancel is killed mid-run


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory, monkeypatch_module):
    if os.environ.get("MT_REPRO_TEST_SLURM") != "1":
        pytest.skip("opt-in: MT_REPRO_TEST_SLURM=1 starts a single-node Slurm (root, slurm-wlm + munge); "
                    "its timing needs a machine not busy with the rest of the suite")
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"no single-node Slurm here: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm of tests/slurm/single_node.sh is started as root")
    state = tmp_path_factory.mktemp("slurm")
    ports = free_ports(2)
    started = subprocess.run(["sh", str(SCRIPT), "start", str(state), *map(str, ports)],
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        subprocess.run(["sh", str(SCRIPT), "stop", str(state)], timeout=60)
        pytest.skip(f"the single-node Slurm did not start: {started.stderr.strip()[-500:]}")
    monkeypatch_module.setenv("SLURM_CONF", str(state / "slurm.conf"))
    try:   # a cluster that cannot run a job is this machine's trouble, not the launcher's
        probe = subprocess.run(["sbatch", "--wait", "--wrap", "true", "-o", str(state / "probe.out")],
                               capture_output=True, text=True, timeout=90)
        failure = probe.stderr.strip()[-500:] if probe.returncode else None
    except subprocess.TimeoutExpired:
        failure = "a one-line job did not end within 90 s"
    if failure is not None:
        stop(state)
        pytest.skip(f"the single-node Slurm runs no job: {failure}")
    yield state
    stop(state)


def stop(state: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    subprocess.run(["sh", str(SCRIPT), "stop", str(state)], timeout=60, env=environ)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def wait_for(condition, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def job_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
    return out.strip() or "GONE"


@pytest.mark.slow
def test_an_array_job_cancelled_and_requeued_mid_run_gives_the_serial_results(slurm_cluster, tmp_path):
    serial = digits_grid(tmp_path / "serial", 2, epochs=EPOCHS)
    launch.launch(serial, launcher="serial", progress=False)

    grid = digits_grid(tmp_path / "slurm", 2, epochs=EPOCHS)
    settings = launch.SlurmSettings(tmp_path / "jobs", time_min=20, gpus_per_run=0, cpus_per_run=1)
    said = []
    cancelled, requeued = launch.launch(grid, launcher="slurm", slurm=settings, say=said.append).jobs
    array = str(cancelled.job_id).split("_")[0]
    assert f"as array job {array}" in said[-1] and str(requeued.job_id) == f"{array}_1"

    first = grid[0].directory / "checkpoints" / "checkpoint.2.ckpt"
    wait_for(first.exists, "the first run's second checkpoint")
    subprocess.run(["scancel", str(cancelled.job_id)], check=True, capture_output=True)
    second = grid[1].directory / "checkpoints" / "checkpoint.4.ckpt"
    wait_for(second.exists, "the second run's fourth checkpoint")
    subprocess.run(["scontrol", "requeue", str(requeued.job_id)], check=True, capture_output=True)
    # Slurm holds a requeued job back for about two minutes (its begin time); not worth waiting for
    wait_for(lambda: job_state(str(requeued.job_id)) == "PENDING", "the requeued job to be pending again")
    subprocess.run(["scontrol", "update", f"jobid={requeued.job_id}", "StartTime=now"], check=True, capture_output=True)

    # The requeued task runs again (same job) and resumes its run; the cancelled one is gone.
    wait_for(lambda: (grid[1].directory / "summary.json").exists(), "the requeued run to finish", 600)
    shown = subprocess.run(["scontrol", "show", "job", str(requeued.job_id)], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown, shown
    wait_for(lambda: job_state(str(cancelled.job_id)) == "GONE", "the cancelled job to end")
    assert not (grid[0].directory / "summary.json").exists()
    steps = [row["step"] for row in _rows(grid[1].directory)]
    assert steps == sorted(set(steps)), "the requeued run resumed, it did not start again"

    again = launch.launch(digits_grid(tmp_path / "slurm", 2, epochs=EPOCHS), launcher="slurm",
                          slurm=dataclasses.replace(settings, wait=True))
    assert again.skipped == 1 and (again.resumed, again.started, again.failed) == (1, 0, [])
    for ours, theirs in zip(grid, serial):
        assert run_results(ours.directory) == run_results(theirs.directory)


@pytest.mark.slow
def test_a_run_of_two_tasks_trains_as_under_torchrun(slurm_cluster, tmp_path):
    """--procs-per-run 2: the job's two tasks are the run's two processes (gloo here), and the
    run ends as the same run of --launcher torchrun on two devices."""
    grid = digits_grid(tmp_path / "slurm", 1, epochs=EPOCHS // 5)
    settings = launch.SlurmSettings(tmp_path / "jobs", time_min=20, gpus_per_run=0, cpus_per_run=1,
                                    procs_per_run=2, wait=True)
    assert launch.launch(grid, launcher="slurm", slurm=settings).started == 1
    reference = digits_grid(tmp_path / "torchrun", 1, epochs=EPOCHS // 5)
    launch.launch(reference, launcher="torchrun", devices=["cpu", "cpu"])
    summary = json.loads((grid[0].directory / "summary.json").read_text())
    assert summary["provenance"]["processes"] == 2
    assert run_results(grid[0].directory) == run_results(reference[0].directory)


def _rows(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "training.jsonl").read_text().splitlines()]
