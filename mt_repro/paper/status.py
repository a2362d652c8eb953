"""Where a table's runs stand (``mt-repro table N --status``), and what they would cost
(``--dry-run``), read from the run directories and from committed benchmark results; the
same for a protocol's cells (``mt-repro protocol … --status`` / ``--dry-run``).

A run's state comes from its directory alone, so it can be asked from any machine that sees
the directories, whatever launched the runs:

* *done*: ``summary.json``, with the reported network's final test error;
* *failed*: ``failed.txt``, the error the run stopped with (``mt_repro.engine.launch`` writes
  it, and removes it when the run is started again);
* *running* or *interrupted*: ``config.json`` without a summary, at the step of its last
  training log row; *running* if the log was written in the last ``RUNNING_WITHIN_S`` seconds
  (a guess from the clock: a run that logs less often reads as interrupted);
* *pending*: nothing yet.

Device-hours are the planned steps divided by the steps per second ``mt-repro bench`` measured
for the run's network, minibatch and mode on a device (``step_rates.csv``, transcribed from the
dated files in ``benchmarks/results/``); a run with no such measurement has no estimate, and
the plan says so rather than guess.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mt_repro.core.errors import BadInput, printable
from mt_repro.core.limits import read_text, regular_file
from mt_repro.engine.launch import FAILED_FILE
from mt_repro.engine.trainer import CONFIG_FILE, SUMMARY_FILE
from mt_repro.logs.runlog import read_rows
from mt_repro.paper.runs import read_run
from mt_repro.paper.tables import PlannedRun, planned_runs

RUNNING_WITHIN_S = 600
STATES = ("done", "running", "interrupted", "failed", "pending")


@dataclass(frozen=True)
class RunState:
    run: PlannedRun
    state: str     # one of STATES
    detail: str    # the error %, the step reached, or the failure's line


def run_states(table: int, out_dir: str | Path, seeds: int | None = None, now: float | None = None) -> list[RunState]:
    out_dir = Path(out_dir)
    now = time.time() if now is None else now
    return [_state(run, out_dir / run.directory, now) for run in planned_runs(table, seeds)]


def _state(run: PlannedRun, directory: Path, now: float) -> RunState:
    return RunState(run, *directory_state(directory, run.steps, now))


def directory_state(directory: Path, steps: int, now: float | None = None) -> tuple[str, str]:
    """(state, detail) of the run in ``directory``, planned for ``steps`` steps: a table's run
    or a protocol's cell alike (one of ``STATES``; the module's docstring says which is which)."""
    now = time.time() if now is None else now
    summary = directory / SUMMARY_FILE
    if summary.exists() or summary.is_symlink():
        try:
            regular_file(summary, "run summary")   # (read_run would take a link to a device for no summary)
            result = read_run(directory)
        except BadInput as exc:
            return "failed", _shortened(f"finished, but its summary cannot be read: {exc}")
        errors = ", ".join(f"{value:.2f} % {'top-5' if metric.startswith('top5') else 'test'} error"
                           for metric, value in sorted(result.errors.items(), key=lambda item: item[0] != "test_error_pct"))
        return "done", f"{errors} ({result.network})"
    failed = directory / FAILED_FILE
    if failed.exists() or failed.is_symlink():
        try:
            lines = [line for line in read_text(failed, "failure record").splitlines() if line.strip()]
        except BadInput as exc:
            return "failed", f"(its {FAILED_FILE}: {exc})"
        return "failed", _shortened(printable(lines[-1])) if lines else "failed (no message)"
    if (directory / CONFIG_FILE).is_file():
        log = directory / "training.jsonl"
        try:
            rows = read_rows(log)
        except BadInput as exc:
            return "interrupted", f"its training log cannot be read: {exc}"
        step = rows[-1].get("step") if rows else None
        where = f"at step {step:,} of {steps:,}" if isinstance(step, int) else "started, no step logged yet"
        if rows and isinstance(rows[-1].get("epoch"), (int, float)):
            where += f" (epoch {int(rows[-1]['epoch'])})"
        recent = log.exists() and now - log.stat().st_mtime < RUNNING_WITHIN_S
        return "running" if recent else "interrupted", where
    return "pending", ""


def _shortened(line: str, limit: int = 300) -> str:
    """A file's line as a status detail: at most ``limit`` characters."""
    return line if len(line) <= limit else line[:limit] + f"... ({len(line):,} characters)"


def describe_states(states: list[RunState]) -> list[str]:
    """One line per run, then the count of each state."""
    width = max((len(s.run.key.describe()) for s in states), default=0)
    return describe_rows([(f"{s.run.key.describe():{width}s}  {_seed(s.run):9s}", s.state, s.detail) for s in states])


def describe_rows(rows: list[tuple[str, str, str]], noun: str = "runs") -> list[str]:
    """One line per (run's name, state, detail), then the count of each state."""
    width = max((len(name) for name, _, _ in rows), default=0)
    lines = [f"{name:{width}s} {state:11s} {detail}".rstrip() for name, state, detail in rows]
    counts = {state: sum(row[1] == state for row in rows) for state in STATES}
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items() if n) + f" ({len(rows)} {noun})")
    return lines


def _seed(run: PlannedRun) -> str:
    """``seed 10``; ``seed 0 #2`` for the second run of a seed (ImageNet's two runs of label file 00)."""
    return f"seed {run.data_seed}" + (f" #{run.run_index + 1}" if run.run_index else "")


# --- the cost of a plan ----------------------------------------------------------------------
@dataclass(frozen=True)
class StepRate:
    device: str
    arch: str
    batch_size: int
    mode: str
    steps_per_s: float
    source: str     # the committed result file it was measured in


def step_rates() -> list[StepRate]:
    text = resources.files(__package__).joinpath("step_rates.csv").read_text()
    return [StepRate(row["device"], row["arch"], int(row["batch_size"]), row["mode"], float(row["steps_per_s"]),
                     row["source"]) for row in csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))]


def device_hours(runs: list[PlannedRun]) -> list[str]:
    """Lines of device-hours per device and mode, for the runs whose network (the paper's name
    of it) and minibatch have a measured step rate; the others named."""
    return planned_device_hours([(run.key.architecture, run.images_per_step, run.steps) for run in runs])


def planned_device_hours(plans: list[tuple[str, int, int]]) -> list[str]:
    """``device_hours`` of runs given as (network, images per step, steps)."""
    rates = step_rates()
    estimates: dict[tuple[str, str], float] = {}
    sources: dict[tuple[str, str], set[str]] = {}
    unmeasured: dict[str, int] = {}
    for arch, images_per_step, steps in plans:
        matching = [r for r in rates if r.arch == arch and r.batch_size == images_per_step]
        if not matching:
            label = f"{arch} at batch {images_per_step}"
            unmeasured[label] = unmeasured.get(label, 0) + 1
        for rate in matching:
            key = (rate.device, rate.mode)
            estimates[key] = estimates.get(key, 0.0) + steps / rate.steps_per_s / 3600
            sources.setdefault(key, set()).add(rate.source)
    lines = []
    for (device, mode), hours in estimates.items():
        counted = len(plans) - sum(unmeasured.values())
        lines.append(f"  {device}, {mode} mode: {hours:,.1f} device-hours for the {counted} measured run(s) "
                     f"(steps / measured steps/s; {', '.join(sorted(sources[(device, mode)]))})")
    for label, count in unmeasured.items():
        lines.append(f"  {count} run(s) of {label}: no committed benchmark, no estimate")
    return lines
