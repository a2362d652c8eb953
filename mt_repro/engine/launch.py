"""Running a grid of runs (a paper table, an ablation): one after another, or in local
processes, one per device slot.

* ``serial``: in this process, with progress bars.
* ``local``: ``devices`` lists the slots, e.g. ``cuda:0,cuda:1,cuda:2,cuda:3``, or
  ``cuda:0,cuda:0`` for two small runs on one GPU, or ``cpu,cpu``. Each slot is a spawned
  worker process that takes the next run off a queue. A CUDA slot's process sees only its GPU
  (``CUDA_VISIBLE_DEVICES``, set before torch touches CUDA), and a CPU slot gets its share of
  the cores as torch threads (``mt_repro.core.threads``).
* ``torchrun``: as ``local``, but each slot is ``procs_per_run`` devices and a run spans them:
  it goes through ``torchrun --standalone`` with one process per device (``mt_repro.engine.
  distributed``), e.g. ``cuda:0,cuda:1,cuda:2,cuda:3`` with 2 processes per run trains two
  runs at once on two GPUs each (``cpu,cpu`` with 2: one run in two gloo processes). The new
  run's settings are written to its ``config.json`` first, and the processes take the run up as
  ``mt-repro resume`` does; their output goes to ``launch.log`` in the run directory.
* ``slurm``: one job per run, submitted as one array job through submitit (``SlurmSettings``:
  partition, time limit, GPUs and CPUs per run, setup lines). A job that Slurm preempts or
  times out is requeued and resumes its run from the last checkpoint. The launch returns once
  the jobs are submitted (``mt-repro table N --status`` follows them), or waits for them.
  ``executor="local"`` runs the same jobs through submitit's local executor, on a machine
  without Slurm (the suite tests the path that way).

Either way every run is trained into its directory or, if the directory holds one already,
resumed from its last checkpoint; finished runs are skipped. A run that fails writes its error
to ``failed.txt`` in its directory (``mt-repro table N --status`` reads it; it is removed when
the run starts again). A run that fails for its input (``BadInput``: data or a label file that
is not what it should be, which the other runs share) stops the grid at once. After any other
failure (divergence, memory, a crash) the other runs go on, and the launch raises at the end,
naming the failures. The workers ignore Ctrl-C (this process takes it and stops them), and they die with
this process (``PR_SET_PDEATHSIG`` on Linux). A launcher that is killed therefore leaves
interrupted runs, and launching the same grid again resumes them.

A run's numbers do not depend on the launcher, only on its settings, device and thread count.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mt_repro.config.saved import read_saved, to_saved
from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput, MtReproError, RunFailed, printable
from mt_repro.core.fileio import write_text_atomic
from mt_repro.core.threads import choose_threads
from mt_repro.engine import distributed, runs
from mt_repro.engine.threads import network_parameters, use_threads
from mt_repro.engine.trainer import CONFIG_FILE, SUMMARY_FILE

log = logging.getLogger(__name__)

FAILED_FILE = "failed.txt"
TORCHRUN_LOG = "launch.log"   # --launcher torchrun: the output of a run's processes
LAUNCHERS = ("serial", "local", "torchrun", "slurm")


@dataclass(frozen=True)
class GridRun:
    """One run of a grid: its directory, the settings to start it with, and what a resume
    changes (where its data is now)."""

    directory: Path
    config: Any
    label: str
    resume_overrides: dict = field(default_factory=dict)


@dataclass
class LaunchCounts:
    started: int = 0
    resumed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    jobs: list = field(default_factory=list)   # --launcher slurm: the submitit jobs


def parse_devices(text: str | None, launcher: str = "local") -> list[str]:
    """``--devices``: comma-separated ``cpu``, ``cuda`` or ``cuda:N`` slots (a device may repeat)."""
    if not text:
        raise BadInput(f"--launcher {launcher} needs --devices, e.g. --devices cuda:0,cuda:1 or --devices cpu,cpu")
    slots = [item.strip() for item in text.split(",")]
    for slot in slots:
        kind, _, index = slot.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
            raise BadInput(f"--devices: {slot!r} is not a device (cpu, cuda or cuda:N)")
        if kind == "cuda" and index and torch.cuda.is_available() and int(index) >= torch.cuda.device_count():
            raise BadInput(f"--devices: {slot} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    return slots


def device_slots(devices: list[str], procs_per_run: int) -> list[tuple[str, ...]]:
    """``--launcher torchrun``: ``devices`` in slots of ``procs_per_run``, one run at a time on
    each, one process per device of its slot."""
    if procs_per_run < 1:
        raise BadInput(f"--procs-per-run must be at least 1, got {procs_per_run}")
    if len(devices) % procs_per_run:
        raise BadInput(f"--devices lists {len(devices)} device(s), not a multiple of --procs-per-run {procs_per_run}")
    slots = [tuple(devices[i:i + procs_per_run]) for i in range(0, len(devices), procs_per_run)]
    for slot in slots:
        kinds = {device.split(":")[0] for device in slot}
        if len(kinds) > 1:
            raise BadInput(f"--devices: the slot {','.join(slot)} mixes cpu and cuda; one run's processes share a kind")
        if kinds == {"cuda"} and (len(set(slot)) < len(slot) or "cuda" in slot):
            raise BadInput(f"--devices: the processes of one run each take their own GPU: name them "
                           f"cuda:0,cuda:1,... (got {','.join(slot)})")
    return slots


@dataclass(frozen=True)
class SlurmSettings:
    """How ``--launcher slurm`` submits each run."""

    folder: Path                  # submitit's job files and the jobs' stdout/stderr
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_run: int = 1
    cpus_per_run: int = 8
    setup: tuple[str, ...] = ()   # shell lines run before each job (module load, conda activate, ...)
    procs_per_run: int = 1        # tasks of a run's job: one process per GPU, as under torchrun
    array_parallelism: int = 256
    executor: str = "slurm"       # or "local": submitit's local executor
    wait: bool = False            # wait for every job, and count their outcomes


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C during a grid: launching the same grid again skips its finished runs and resumes
    the interrupted ones, so that, not ``mt-repro resume`` of one run, is how it goes on."""


def launch(grid: list[GridRun], *, launcher: str = "serial", devices: list[str] | None = None,
           threads: int | None = None, progress: bool = True, say: Callable[[str], None] = log.info,
           slurm: SlurmSettings | None = None, procs_per_run: int | None = None) -> LaunchCounts:
    """Train, resume or skip every run of ``grid``; raises ``RunFailed`` at the end if any failed,
    ``GridInterrupted`` on a Ctrl-C.
    ``threads``: torch threads per run (``--threads``; per process under torchrun), else chosen
    for each run's network and the processes that share the cores (``mt_repro.core.threads``).
    ``procs_per_run``: ``torchrun``'s processes per run (default: every device, one run at a time)."""
    if launcher not in LAUNCHERS:
        raise BadInput(f"--launcher {launcher!r}: one of {', '.join(LAUNCHERS)}")
    try:
        return _launch(grid, launcher, devices, threads, progress, say, slurm, procs_per_run)
    except GridInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise GridInterrupted(*exc.args) from exc


def _launch(grid: list[GridRun], launcher: str, devices: list[str] | None, threads: int | None, progress: bool,
            say: Callable[[str], None], slurm: SlurmSettings | None, procs_per_run: int | None) -> LaunchCounts:
    counts = LaunchCounts()
    todo = []
    for run in grid:
        if (run.directory / SUMMARY_FILE).is_file():
            counts.skipped += 1
        else:
            todo.append(run)
    if launcher == "serial":
        for number, run in enumerate(todo, 1):
            resume = (run.directory / CONFIG_FILE).is_file()
            say(f"[{number}/{len(todo)}] {'resuming' if resume else 'starting'} {run.label}: {run.directory}")
            outcome = _run_one(run, None, threads, 1, progress, say_threads=True)
            _count(counts, run, outcome, resume)
    elif launcher == "local":
        _launch_local(todo, [(device,) for device in devices or []], threads, counts, say)
    elif launcher == "torchrun":
        devices = devices or []
        slots = device_slots(devices, procs_per_run or max(1, len(devices)))
        _refuse_one_process_runs(todo, "--launcher torchrun", "use --launcher local")
        _launch_local(todo, slots, threads, counts, say)
    else:
        settings = slurm or SlurmSettings(Path("slurm"))
        if settings.procs_per_run > 1:
            _refuse_one_process_runs(todo, "--procs-per-run", f"give it 1 (got {settings.procs_per_run})")
        _launch_slurm(todo, settings, threads, counts, say)
    if counts.failed:
        raise RunFailed(f"{len(counts.failed)} of {len(grid)} runs failed (each wrote {FAILED_FILE}); "
                        f"the first: {counts.failed[0]}")
    return counts


def _refuse_one_process_runs(todo: list[GridRun], what: str, remedy: str) -> None:
    """Several processes per run are the ResNet recipe's (one per GPU); a ConvNet run trains in
    one, which is said before any run starts."""
    for run in todo:
        config = runs.read_run_config(run.directory) if (run.directory / CONFIG_FILE).is_file() else run.config
        if not isinstance(config, TrainConfig):
            raise BadInput(f"{what}: {run.label} is a ConvNet run, which trains in one process; {remedy}")


@dataclass(frozen=True)
class _Outcome:
    resumed: bool
    summary: dict | None = None
    error: str | None = None       # a failure's one line
    seconds: float = 0.0
    bad_input: str | None = None   # the failure was the input's (BadInput, its message): the grid stops


def _count(counts: LaunchCounts, run: GridRun, outcome: _Outcome, resumed: bool) -> None:
    if outcome.bad_input is not None:
        raise BadInput(f"{run.directory}: {outcome.bad_input}")
    if outcome.error is not None:
        counts.failed.append(f"{run.directory}: {outcome.error}")
    elif resumed:
        counts.resumed += 1
    else:
        counts.started += 1


def _run_one(run: GridRun, device: str | None, threads: int | None, sharing: int, progress: bool,
             say_threads: bool = False) -> _Outcome:
    """Start or resume ``run`` (on ``device`` if given) with its thread count (``sharing``: runs
    that share the cores; said if ``say_threads``), recording a failure in its directory."""
    failed = run.directory / FAILED_FILE
    failed.unlink(missing_ok=True)
    resume = (run.directory / CONFIG_FILE).is_file()
    start = time.time()
    try:
        config = runs.read_run_config(run.directory) if resume else run.config
        use_threads(config, given=threads, processes=sharing, say=say_threads)
        if resume:
            overrides = {**run.resume_overrides, **({"device": device} if device else {})}
            summary = runs.resume(run.directory, overrides=overrides or None, progress=progress)
        else:
            config = run.config if device is None else dataclasses.replace(run.config, device=device)
            summary = runs.train(config, run.directory, progress=progress)
    except Exception as exc:   # recorded for `table --status`; the grid goes on
        return _failed(run, exc, resume)
    return _Outcome(resume, dict(summary or {}), seconds=time.time() - start)


def _failed(run: GridRun, exc: Exception, resumed: bool) -> _Outcome:
    """``exc`` as the run's ``failed.txt`` line (written by the run's first process) and outcome."""
    line = printable(f"{type(exc).__name__}: {exc}").splitlines()[0] if str(exc) else type(exc).__name__
    if distributed.from_environment().is_main:
        _record_failure(run, line)
    if not isinstance(exc, MtReproError):
        log.exception(f"{run.directory}: {line}")
    return _Outcome(resumed, error=line, bad_input=str(exc) if isinstance(exc, BadInput) else None)


def _record_failure(run: GridRun, line: str) -> None:
    run.directory.mkdir(parents=True, exist_ok=True)
    (run.directory / FAILED_FILE).write_text(line + "\n")


# --- local processes -------------------------------------------------------------------------
def _launch_local(todo: list[GridRun], slots: list[tuple[str, ...]], threads: int | None, counts: LaunchCounts,
                  say) -> None:
    """Each slot (one device, or a run's devices under torchrun) a worker process taking the
    next run off a queue."""
    if not todo:
        return
    slots = slots[:len(todo)]
    processes = sum(len(slot) for slot in slots)   # that share the cores
    context = multiprocessing.get_context("spawn")   # a forked torch may hang in its thread pool
    tasks, results = context.Queue(), context.Queue()
    for index, run in enumerate(todo):
        tasks.put((index, run))
    workers = []
    for slot in slots:
        tasks.put(None)
        worker = context.Process(target=_worker, args=(slot, threads, processes, tasks, results), daemon=True)
        worker.start()
        workers.append(worker)
    say(f"{len(todo)} run(s) on {len(workers)} slot(s): {', '.join('+'.join(slot) for slot in slots)}")
    finished = False
    try:
        for done in range(1, len(todo) + 1):
            index, slot, outcome = _next_result(results, workers)
            run = todo[index]
            what = f"failed: {outcome.error}" if outcome.error else f"{_error_text(outcome.summary)}, {outcome.seconds:.0f} s"
            say(f"[{done}/{len(todo)}] {run.label} on {'+'.join(slot)}: {what} ({run.directory})")
            _count(counts, run, outcome, outcome.resumed)
        finished = True
    except KeyboardInterrupt:
        say("stopping the runs: launch the same grid again to resume them from their last checkpoints")
        raise
    finally:
        for worker in workers:   # done: each exits after its last run; otherwise stopped now
            worker.join(timeout=60 if finished else 0)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=30)
        tasks.close()
        results.close()


def _next_result(results, workers) -> tuple[int, str, _Outcome]:
    """The next finished run; a worker that died without a word is a failed launch."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:   # check the workers are alive
            if all(not w.is_alive() for w in workers) and results.empty():
                codes = ", ".join(str(w.exitcode) for w in workers)
                raise RunFailed(f"every worker process stopped before the grid was done (exit codes {codes}); "
                                "launch it again to resume") from None


def _error_text(summary: dict | None) -> str:
    if not summary:
        return "done"
    parts = [f"{name.split('_')[0]} {summary[name]:.2f} %" for name in ("teacher_error1", "student_error1")
             if isinstance(summary.get(name), (int, float))]
    return "test error " + ", ".join(parts) if parts else "done"


def _worker(slot: tuple[str, ...], threads: int | None, processes: int, tasks, results) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kind = slot[0].split(":")[0]
    if kind == "cuda" and ":" in slot[0]:   # this slot's processes see its GPUs alone, as cuda:0, ...
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(device.split(":")[1] for device in slot)
    device = kind if kind == "cuda" else slot[0]
    logging.getLogger("mt_repro").setLevel(logging.WARNING)
    while (item := tasks.get()) is not None:
        index, run = item
        if len(slot) == 1:
            outcome = _run_one(run, device, threads, processes, progress=False)
        else:
            outcome = _run_torchrun(run, device, len(slot), threads, processes)
        results.put((index, slot, outcome))


def _run_torchrun(run: GridRun, device: str, nproc: int, threads: int | None, processes: int) -> _Outcome:
    """``run`` in ``nproc`` processes of ``torchrun --standalone`` on ``device`` (the slot's GPUs
    are this process's ``CUDA_VISIBLE_DEVICES``): a new run's settings go to its config.json,
    then every process takes the run up as ``mt-repro resume`` (which starts a run without a
    checkpoint from the beginning). The run's failure is the last error line of its processes."""
    (run.directory / FAILED_FILE).unlink(missing_ok=True)
    resume = (run.directory / CONFIG_FILE).is_file()
    start = time.time()
    try:
        config = runs.read_run_config(run.directory) if resume else dataclasses.replace(run.config, device=device)
        if not resume:
            run.directory.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run.directory / CONFIG_FILE, json.dumps(to_saved(config), indent=2) + "\n")
        per_process = choose_threads(network_parameters(config), given=threads, processes=processes).threads
    except Exception as exc:   # (the same record as _run_one's)
        return _failed(run, exc, resume)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "mt_repro.cli", "resume", str(run.directory), "--no-progress", "--threads", str(per_process),
               "--set", f"device={device}"]
    for option, key in (("--data", "data_dir"), ("--label-file", "labels")):
        if run.resume_overrides.get(key) is not None:
            command += [option, str(run.resume_overrides[key])]
    with open(run.directory / TORCHRUN_LOG, "w") as output:
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              preexec_fn=_terminate_with_parent).returncode
    if code != 0:
        errors = [line.split("mt-repro: error: ", 1)[1] for line in _tail(run.directory / TORCHRUN_LOG)
                  if "mt-repro: error: " in line]
        line = printable(errors[-1] if errors else f"torchrun exited with code {code} (its output: "
                         f"{run.directory / TORCHRUN_LOG})")[:300]
        _record_failure(run, line)
        return _Outcome(resume, error=line, bad_input=line if code == 2 else None)
    summary = read_saved(run.directory / SUMMARY_FILE, "run summary")
    return _Outcome(resume, dict(summary), seconds=time.time() - start)


def _tail(path: Path, size: int = 64 * 1024) -> list[str]:
    """The lines of the last ``size`` bytes of ``path`` (the end of a long log is its error)."""
    with open(path, "rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - size))
        return file.read(size).decode(errors="replace").splitlines()


def _terminate_with_parent() -> None:
    """(In torchrun's process, before it starts.) SIGTERM when the worker dies, on which
    torchrun stops the run's processes."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the launcher dies, so that a killed launcher leaves
    no run training unseen (elsewhere workers are daemons, stopped when the launcher exits)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        except OSError:
            pass
        if os.getppid() == 1:   # the launcher died before the line above
            os._exit(1)


# --- Slurm, through submitit ---------------------------------------------------------------------
def _launch_slurm(todo: list[GridRun], settings: SlurmSettings, threads: int | None, counts: LaunchCounts,
                  say) -> None:
    if not todo:
        return
    try:
        import submitit  # only --launcher slurm needs it: an optional dependency
    except ImportError:
        raise BadInput("--launcher slurm needs submitit: pip install submitit") from None
    if settings.executor not in ("slurm", "local"):
        raise BadInput(f"--slurm-executor {settings.executor!r}: slurm or local")
    executor = submitit.AutoExecutor(folder=str(settings.folder),
                                     cluster="local" if settings.executor == "local" else "slurm")
    executor.update_parameters(name="mt-repro", timeout_min=settings.time_min, gpus_per_node=settings.gpus_per_run,
                               cpus_per_task=settings.cpus_per_run, tasks_per_node=settings.procs_per_run, nodes=1,
                               slurm_partition=settings.partition, slurm_setup=list(settings.setup),
                               slurm_array_parallelism=settings.array_parallelism)
    jobs = executor.map_array(GridJob(threads), todo)
    counts.jobs = jobs
    array = str(jobs[0].job_id).split("_")[0]
    say(f"submitted {len(jobs)} run(s) as {'array job ' + array if settings.executor == 'slurm' else 'local jobs'} "
        f"(job files in {settings.folder}); follow them with --status")
    if not settings.wait:
        return
    for job, run in zip(jobs, todo):
        try:
            outcome = job.results()[0]   # the run's first process (task) speaks for the run
        except Exception as exc:   # the job itself failed (killed, out of memory, a node gone)
            line = printable(str(exc)).strip().splitlines()
            outcome = _Outcome(False, error=f"job {job.job_id}: {line[-1] if line else type(exc).__name__}")
        _count(counts, run, outcome, outcome.resumed)


class GridJob:
    """One run of a grid as a submitit job: start it or resume it (``_run_one``). Preempted or
    timed out, the job asks to be requeued with the same run, which then resumes from its last
    checkpoint (submitit's ``checkpoint`` protocol)."""

    def __init__(self, threads: int | None):
        self.threads = threads

    def __call__(self, run: GridRun) -> _Outcome:
        import submitit  # (only ever called inside a submitit job)

        if submitit.JobEnvironment().num_tasks > 1:   # the job's tasks are the run's processes
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT as torchrun sets them; every task
            # sees every GPU of the job and takes the one of its local rank (distributed.device_for)
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return _run_one(run, None, self.threads, 1, progress=False)

    def checkpoint(self, run: GridRun):
        import submitit  # (only ever called inside a submitit job)

        return submitit.helpers.DelayedSubmission(self, run)
