"""How many intra-op threads a command gives torch, chosen rather than defaulted.

Torch's default is one thread per core of the machine. For a network as small as the digits
ConvNet (66k parameters on 8x8 images) a step is a few hundred tiny kernels: its time is
per-kernel overhead, and extra threads only add synchronisation. With other processes busy on
the same cores it is far worse: every kernel waits for the slowest of its threads, so a run that
takes 11 s alone took 37 s with one busy process beside it at torch's default of 2 threads, and
18 s with one thread (2-core machine). A large network (shake-shake 26: 26M parameters) is
arithmetic-bound and wants every core.

The rule: a network below ``SMALL_MODEL_PARAMETERS`` parameters gets one thread per process;
a larger one the cores this process may run on (its affinity mask, as ``os.sched_getaffinity``
gives it: a container or ``taskset`` limit counts), shared among the processes a command runs at
once. ``--threads N`` or ``OMP_NUM_THREADS`` decide instead when given. Commands apply the
choice and say so in their first lines; the library (``mt_repro.engine.runs.train`` called from
Python) leaves torch's setting alone unless asked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from mt_repro.core.errors import BadInput

SMALL_MODEL_PARAMETERS = 1_000_000
THREADS_ENV = "OMP_NUM_THREADS"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one, as
    torch's DataLoader counts them), else all of the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int
    reason: str

    def describe(self) -> str:
        cores = f"{self.cores} core{'s' if self.cores != 1 else ''}"
        return f"torch threads: {self.threads} of {cores} ({self.reason})"


def requested_threads(given: int | None, environ=os.environ) -> tuple[int, str] | None:
    """``--threads`` if given, else ``OMP_NUM_THREADS`` if set: (count, where it came from)."""
    if given is not None:
        if given < 1:
            raise BadInput(f"--threads must be at least 1, got {given}")
        return given, "--threads"
    value = environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        count = int(value)
    except ValueError:
        raise BadInput(f"{THREADS_ENV}={value!r} is not a thread count: set it to a positive integer "
                       f"or unset it") from None
    if count < 1:
        raise BadInput(f"{THREADS_ENV}={value!r} is not a thread count: set it to a positive integer or unset it")
    return count, THREADS_ENV


def choose_threads(parameters: int, *, given: int | None = None, processes: int = 1,
                   cores: int | None = None, environ=os.environ) -> ThreadChoice:
    """Intra-op threads for one process of a command that runs ``processes`` at once, training
    a network of ``parameters`` parameters."""
    cores = available_cores() if cores is None else cores
    requested = requested_threads(given, environ)
    if requested is not None:
        count, source = requested
        return ThreadChoice(count, cores, f"as {source} says")
    size = _size(parameters)
    if parameters < SMALL_MODEL_PARAMETERS:
        return ThreadChoice(1, cores, f"a {size}-parameter network runs fastest on one; --threads N to choose")
    share = max(1, cores // max(1, processes))
    shared = f", shared by {processes} runs at once" if processes > 1 else ""
    return ThreadChoice(share, cores, f"a {size}-parameter network: every core{shared}; --threads N to choose")


def parallel_runs(runs: int, *, given_jobs: int | None = None, threads_per_run: int = 1,
                  cores: int | None = None) -> int:
    """How many runs of a grid a command trains at once: ``--jobs`` if given, else as many as
    the cores hold at ``threads_per_run`` threads each (never more than there are runs)."""
    if given_jobs is not None:
        if given_jobs < 1:
            raise BadInput(f"--jobs must be at least 1, got {given_jobs}")
        return min(given_jobs, max(1, runs))
    cores = available_cores() if cores is None else cores
    return max(1, min(runs, cores // max(1, threads_per_run)))


def _size(parameters: int) -> str:
    if parameters >= 1_000_000:
        return f"{parameters / 1e6:.1f}M"
    if parameters >= 1000:
        return f"{parameters / 1e3:.0f}k"
    return str(parameters)
