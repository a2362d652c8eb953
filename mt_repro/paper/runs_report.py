"""``mt-repro report DIR...``: what the runs in some directories measured, as a table, and
their results under the common corruptions (``mt-repro evaluate --corruptions``).

``compare`` judges runs against the paper's numbers; ``report`` only says what the runs hold,
any runs: the digits demo's, a grid's, one run. Every file is read as untrusted, within the
limits of ``mt_repro.config.saved.read_saved``.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from mt_repro.engine import robustness
from mt_repro.config.saved import read_saved
from mt_repro.core.errors import BadInput
from mt_repro.core.tables import aligned
from mt_repro.paper.runs import RunResult, find_runs

CORRUPTIONS_DIR = "corruptions"   # beside a run's checkpoints: robustness.default_out_dir


@dataclass
class Report:
    runs: list[RunResult]
    robustness: list[tuple[Path, robustness.Robustness]]
    base: Path   # paths are shown relative to it

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.runs:
            out += _runs_table(self.runs, self.base) + [""] + _groups_table(self.runs)
        for path, result in self.robustness:
            out += ["", f"{_relative(path, self.base)}:"] + result.lines()
        return out


def build_report(paths: list[str | os.PathLike]) -> Report:
    """The runs in ``paths`` or below them, and every corruption result (``corruptions/*.json``)."""
    given = [Path(p) for p in paths]
    for path in given:
        if not path.exists():
            raise BadInput(f"{path} does not exist")
        if not path.is_dir():
            raise BadInput(f"{path} is a file; give run directories (or directories holding them)")
    records = sorted({p.resolve(): None for path in given for p in _corruption_records(path)})
    try:
        runs = find_runs(given)
    except BadInput:
        if not records:
            raise
        runs = []
    base = Path(os.path.commonpath([str(p.resolve()) for p in given]))
    results = [(path, robustness.from_json(read_saved(path, "corruption results"), str(path))) for path in records]
    return Report(runs, results, base)


def _corruption_records(path: Path):
    if path.name == CORRUPTIONS_DIR:
        yield from path.glob("*.json")
    for directory in path.rglob(CORRUPTIONS_DIR):
        if directory.is_dir():
            yield from directory.glob("*.json")


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base)) or "."
    except ValueError:
        return str(path)


def _error(run: RunResult) -> float | None:
    return run.errors.get("test_error_pct")


def _runs_table(runs: list[RunResult], base: Path) -> list[str]:
    header = ["run", "dataset", "network", "method", "labels", "steps", "reported", "test error %"]
    rows = [[_relative(r.path, base), r.key.dataset, r.key.architecture, r.key.method,
             "all" if r.key.n_labels is None else str(r.key.n_labels),
             "" if r.global_step is None else str(r.global_step), r.network,
             "" if _error(r) is None else f"{_error(r):.2f}"] for r in runs]
    return aligned([header] + rows, rule=True, right_align=False)


def _groups_table(runs: list[RunResult]) -> list[str]:
    """Mean ± std (n - 1) of the runs of each dataset, network, method and labels."""
    groups: dict[tuple, list[float]] = {}
    for run in runs:
        if _error(run) is not None:
            groups.setdefault((run.key.dataset, run.key.architecture, run.key.method, run.key.n_labels),
                              []).append(_error(run))
    header = ["dataset", "network", "method", "labels", "runs", "test error % (mean ± std)"]
    rows = []
    for (dataset, arch, method, labels), errors in groups.items():
        spread = f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
        mean = statistics.fmean(errors)
        rows.append([dataset, arch, method, "all" if labels is None else str(labels), str(len(errors)),
                     "nan" if math.isnan(mean) else f"{mean:.2f}{spread}"])
    return aligned([header] + rows, rule=True, right_align=False)
