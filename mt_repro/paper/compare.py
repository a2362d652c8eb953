"""Our runs against the paper, cell by cell, with a verdict a reviewer can check.

For each cell with runs: our mean and sample standard deviation (n - 1) over n runs, the paper's
mean ± std over its n runs, the difference, and Welch's t-test of the two means from those
summary statistics (``scipy.stats.ttest_ind_from_stats(..., equal_var=False)``, two-sided).
Verdicts:

* ``not enough runs``: fewer than 2 runs of ours (no spread, so no test);
* ``reproduced``: p >= ALPHA (0.05), no significant difference from the paper's mean;
* ``worse`` / ``better``: p < ALPHA and our mean error is higher / lower than the paper's;
* ``not comparable``: a run of the cell differs from the paper's recipe (fewer or more steps, a
  synthetic stand-in for the data, another network, width or label count, a changed setting:
  ``RunResult.not_comparable``, from its provenance); no test is made, and ``reasons`` says why.
  A run whose own cell is none of the paper's is judged in its recipe's cell (``recipe_key``),
  so a trial of the paper's recipe on a smaller network is not comparable rather than unknown.

Not rejecting equality is not proof of it: with 2-3 runs only large differences are detected,
which is why n stands beside every verdict.

Runs are pooled into a cell only when they are the same experiment; anything else is an error
(``BadInput``, exit 2) rather than a silently wrong mean. "Mixed" means:

* with ``--table N``, a run whose method and label count name a cell of Table N but whose
  dataset or network family is not that cell's (an SVHN run against CIFAR-10's Table 2, a ResNet
  CIFAR-10 run in Table 2's ConvNet cell);
* runs of one cell that trained for different numbers of steps (``global_step`` of our
  summaries), e.g. a shortened trial run beside full-length runs.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from scipy import stats

from mt_repro.core.errors import BadInput
from mt_repro.paper.results import (CellKey, PaperNumber, check_table_number, context_numbers, paper_numbers,
                                    scheduled_numbers)
from mt_repro.paper.runs import RunResult

ALPHA = 0.05
REPRODUCED, WORSE, BETTER, NOT_ENOUGH = "reproduced", "worse", "better", "not enough runs"
NOT_COMPARABLE = "not comparable"
VERDICT_ORDER = (REPRODUCED, WORSE, BETTER, NOT_ENOUGH, NOT_COMPARABLE)


@dataclass(frozen=True)
class CellComparison:
    paper: PaperNumber
    runs: tuple[RunResult, ...]
    values: tuple[float, ...]
    mean: float
    std: float | None
    t: float | None
    p: float | None
    verdict: str
    reasons: tuple[str, ...] = ()   # not comparable: "<run>: <how it differs>", one per such run

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def comparable(self) -> bool:
        return self.verdict != NOT_COMPARABLE

    @property
    def difference(self) -> float:
        return self.mean - self.paper.mean

    @property
    def context(self) -> list[PaperNumber]:
        return context_numbers(self.paper)


def welch(mean: float, std: float, n: int, paper: PaperNumber) -> tuple[float, float]:
    """Welch's t statistic and two-sided p of our mean against the paper's (unequal variances)."""
    result = stats.ttest_ind_from_stats(mean, std, n, paper.mean, paper.std, paper.n_runs, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def verdict_of(values: list[float], paper: PaperNumber) -> tuple[float, float | None, float | None, float | None, str]:
    """Mean, sample std, t, p and verdict of our ``values`` against ``paper``."""
    mean = statistics.fmean(values)
    if len(values) < 2 or paper.std is None or not paper.n_runs or paper.n_runs < 2:
        return mean, None if len(values) < 2 else statistics.stdev(values), None, None, NOT_ENOUGH
    std = statistics.stdev(values)
    t, p = welch(mean, std, len(values), paper)
    verdict = REPRODUCED if p >= ALPHA else (WORSE if mean > paper.mean else BETTER)
    return mean, std, t, p, verdict


def compare(runs: list[RunResult], table: int | None = None) -> list[CellComparison]:
    """One comparison per cell that has runs, in the paper's order."""
    cells = assign_cells(runs, table)
    order = {number: index for index, number in enumerate(paper_numbers())}
    comparisons = []
    for number, cell_runs in sorted(cells.items(), key=lambda item: order[item[0]]):
        missing = [r.path for r in cell_runs if number.metric not in r.errors]
        if missing:
            raise BadInput(f"{missing[0]} has no {number.metric} to compare with the paper's")
        values = [r.errors[number.metric] for r in cell_runs]
        mean, std, t, p, verdict = verdict_of(values, number)
        reasons = tuple(f"{r.path}: {'; '.join(r.not_comparable)}" for r in cell_runs if r.not_comparable)
        if reasons:   # no test: the runs are not the experiment the paper's number is of
            t, p, verdict = None, None, NOT_COMPARABLE
        comparisons.append(CellComparison(number, tuple(cell_runs), tuple(values), mean, std, t, p, verdict, reasons))
    return comparisons


def assign_cells(runs: list[RunResult], table: int | None = None) -> dict[PaperNumber, list[RunResult]]:
    """The paper's number each run is judged against; ``BadInput`` for runs that fit no cell or
    would mix experiments in one."""
    if table is not None:
        check_table_number(table)
    candidates = scheduled_numbers(table)
    by_key: dict[CellKey, PaperNumber] = {}
    for number in candidates:
        by_key.setdefault(number.key, number)   # Tables 1 and 3 share cells; the first names them
    cells: dict[PaperNumber, list[RunResult]] = {}
    for run in runs:
        # a variant of the paper's recipe (a smaller network, a stand-in's label file) goes to
        # the cell of its recipe, where it is not comparable (differs_from_recipe says so)
        key = run.key if run.key in by_key or not run.not_comparable else run.recipe_key
        if key not in by_key:
            raise BadInput(_unmatched(run, table, candidates))
        cells.setdefault(by_key[key], []).append(run)
    for number, cell_runs in cells.items():
        lengths = sorted({r.global_step for r in cell_runs if r.global_step is not None})
        if len(lengths) > 1:
            short = next(r for r in cell_runs if r.global_step == lengths[0])
            long = next(r for r in cell_runs if r.global_step == lengths[-1])
            raise BadInput(f"mixed training lengths in the cell {number.key.describe()}: {short.path} trained "
                           f"{lengths[0]:,} steps, {long.path} {lengths[-1]:,}; compare runs of one configuration")
    return cells


def _unmatched(run: RunResult, table: int | None, candidates: list[PaperNumber]) -> str:
    key = run.key
    if table is not None:
        same_place = [n for n in candidates if (n.key.method, n.key.n_labels, n.key.extra_unlabeled)
                      == (key.method, key.n_labels, key.extra_unlabeled) and n.metric in run.errors]
        if same_place:
            cell = same_place[0]
            what = "datasets" if cell.key.dataset != key.dataset else "networks"
            return (f"mixed {what}: Table {table}'s cell '{cell.row}, {cell.key.n_labels} labels' is "
                    f"{cell.key.dataset} with {cell.key.architecture}, but {run.path} is {key.dataset} "
                    f"with {key.architecture}")
        elsewhere = [n.table for n in scheduled_numbers() if n.key == key]
        use = f": compare it with --table {elsewhere[0]}" if elsewhere else ""
        datasets = sorted({n.key.dataset for n in candidates})
        if key.dataset not in datasets:
            return (f"mixed datasets: Table {table} is about {', '.join(datasets)}, but {run.path} is a "
                    f"{key.dataset} run{use}")
        if elsewhere:
            return f"{run.path} ({key.describe()}) is a result of Table {elsewhere[0]}, not of Table {table}{use}"
        return f"{run.path} ({key.describe()}) matches no result of Table {table}"
    related = sorted({(n.key.architecture, n.table) for n in candidates
                      if (n.key.dataset, n.key.method, n.key.n_labels) == (key.dataset, key.method, key.n_labels)})
    hint = ""
    if related:
        hint = "; the paper's runs of that kind used " + ", ".join(f"{a} (Table {t})" for a, t in related)
    return f"{run.path} ({key.describe()}) matches no result of the paper{hint}"


def all_reproduced(comparisons: list[CellComparison]) -> bool:
    return bool(comparisons) and all(c.verdict == REPRODUCED for c in comparisons)


def verdict_counts(comparisons: list[CellComparison]) -> dict[str, int]:
    """How many cells got each verdict, in the order of VERDICT_ORDER (those with none left out)."""
    counts = {verdict: sum(c.verdict == verdict for c in comparisons) for verdict in VERDICT_ORDER}
    return {verdict: n for verdict, n in counts.items() if n}


def notes(comparisons: list[CellComparison]) -> list[str]:
    """What a reader of the verdicts should know about individual runs."""
    return [note for c in comparisons for run in c.runs for note in run.notes]
