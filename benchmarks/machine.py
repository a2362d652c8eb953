"""What the benchmarks record about the machine they ran on: its CPU, the load other processes
put on it while a measurement ran (``CpuMeter``), and the mt-repro revision measured. Imported by
the benchmark scripts, which are run from the repository root (their own directory is then on
``sys.path``)."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import mt_repro

HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    try:
        return sum(line.startswith("processor") for line in Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return os.cpu_count() or 0


class CpuMeter:
    """How much CPU *other* processes used while we measured, in cores (from /proc/stat)."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return busy, own.user + own.system, time.monotonic()

    def others(self) -> float | None:
        end = self._read()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        busy, own, wall = (b - a for a, b in zip(self.start, end))
        return max(busy - own, 0.0) / wall


def wait_for_idle(timeout: float) -> bool:
    """Wait until other processes have used under a tenth of a core for 15 s (or time out)."""
    deadline, idle_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        meter = CpuMeter()
        time.sleep(5)
        others = meter.others()
        if others is None:
            return False
        idle_since = (idle_since or time.monotonic()) if others < 0.1 else None
        if idle_since is not None and time.monotonic() - idle_since >= 10:
            return True
    return False


def mt_repro_revision() -> str:
    """Package version and, in a git checkout, the commit and whether mt_repro/ differs from it."""
    text = f"mt-repro {mt_repro.__version__}"
    try:
        run = dict(cwd=HERE.parent, capture_output=True, text=True, timeout=30, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mt_repro"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text}, commit {commit}" + (" with uncommitted changes in mt_repro/" if dirty else "")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
