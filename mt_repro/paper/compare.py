"""Our runs against the paper, cell by cell, with a verdict a reviewer can accept.

For each cell (dataset, model family, method, labels, extra images) with runs: our mean and
sample standard deviation over n runs, the paper's mean ± std over its n runs, the difference,
and Welch's t-test of the two means (``scipy.stats.ttest_ind_from_stats``, unequal variances).
Verdict: fewer than 2 runs of ours, or a paper number without a spread -> "not enough runs";
p >= ALPHA -> "reproduced" (no significant difference); otherwise "worse" (our error higher) or
"better". Not rejecting equality is not proof of it: with 2-3 runs only large differences are
detected, which is why n is shown beside every verdict.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

from mt_repro.errors import BadInput
from mt_repro.paper.results import CellKey, PaperNumber, check_table_number, paper_numbers
from mt_repro.paper.runs import RunResult

ALPHA = 0.05
REPRODUCED, WORSE, BETTER, NOT_ENOUGH = "reproduced", "worse", "better", "not enough runs"


@dataclass(frozen=True)
class CellComparison:
    paper: PaperNumber
    runs: tuple[RunResult, ...]
    mean: float
    std: float | None
    t: float | None
    p: float | None
    verdict: str

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def difference(self) -> float:
        return self.mean - self.paper.mean


def welch(mean: float, std: float, n: int, paper: PaperNumber) -> tuple[float, float]:
    from scipy import stats

    result = stats.ttest_ind_from_stats(mean, std, n, paper.mean, paper.std, paper.n_runs, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def compare(runs: list[RunResult], table: int | None = None) -> list[CellComparison]:
    numbers = [n for n in paper_numbers() if n.runnable and (table is None or n.table == check_table_number(table))]
    by_key: dict[CellKey, PaperNumber] = {}
    for number in numbers:
        by_key.setdefault(number.key, number)  # Tables 1 and 3 share cells: the same number
    cells: dict[CellKey, list[RunResult]] = {}
    for run in runs:
        if run.key not in by_key:
            raise BadInput(_no_cell_message(run, table, numbers))
        cells.setdefault(run.key, []).append(run)
    comparisons = []
    for key, cell_runs in cells.items():
        paper = by_key[key]
        missing = [r.path for r in cell_runs if paper.metric not in r.errors]
        if missing:
            raise BadInput(f"{missing[0]} has no {paper.metric} to compare with the paper's")
        values = [r.errors[paper.metric] for r in cell_runs]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else None
        t = p = None
        if std is None or paper.std is None or not paper.n_runs or paper.n_runs < 2:
            verdict = NOT_ENOUGH
        elif std == 0 and paper.std == 0:
            verdict = REPRODUCED if mean == paper.mean else (WORSE if mean > paper.mean else BETTER)
        else:
            t, p = welch(mean, std, len(values), paper)
            verdict = REPRODUCED if p >= ALPHA else (WORSE if mean > paper.mean else BETTER)
        comparisons.append(CellComparison(paper, tuple(cell_runs), mean, std, t, p, verdict))
    comparisons.sort(key=lambda c: (c.paper.table, c.paper.key))
    return comparisons


def _no_cell_message(run: RunResult, table: int | None, numbers: list[PaperNumber]) -> str:
    where = f"Table {table}" if table else "the paper"
    datasets = sorted({n.key.dataset for n in numbers})
    if table and run.key.dataset not in datasets:
        return (f"mixed datasets: {where} is about {', '.join(datasets)}, but {run.path} is a "
                f"{run.key.dataset} run")
    return f"{run.path} ({run.key.describe()}) matches no result of {where}"


# --- output -------------------------------------------------------------------------------
HEADER = ["table", "cell", "metric", "ours mean", "ours std", "n", "paper mean", "paper std", "paper n",
          "difference", "t", "p", "verdict", "paper number checked"]


def rows(comparisons: list[CellComparison]) -> list[list[str]]:
    def number(value, digits=2):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    return [[str(c.paper.table), c.paper.key.describe(), c.paper.metric, number(c.mean), number(c.std), str(c.n),
             number(c.paper.mean), number(c.paper.std), str(c.paper.n_runs or ""), f"{c.difference:+.2f}",
             number(c.t), number(c.p, 3), c.verdict, c.paper.checked] for c in comparisons]


def terminal_table(comparisons: list[CellComparison]) -> str:
    shown = [0, 1, 3, 4, 5, 6, 7, 9, 11, 12]
    table = [[HEADER[i] for i in shown]] + [[row[i] for i in shown] for row in rows(comparisons)]
    widths = [max(len(r[i]) for r in table) for i in range(len(shown))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(comparisons: list[CellComparison]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(comparisons)]
    return "\n".join(lines)


def csv_text(comparisons: list[CellComparison]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows(comparisons))
    return buffer.getvalue()


def all_reproduced(comparisons: list[CellComparison]) -> bool:
    return bool(comparisons) and all(c.verdict == REPRODUCED for c in comparisons)
