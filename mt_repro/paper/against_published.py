"""Our runs against the other published numbers of their cell (``published.csv``: the FixMatch
paper, TorchSSL, USB, Oliver et al. 2018), as ``compare`` judges runs against the Mean Teacher
paper: our mean ± std over n runs beside each number of the chosen source for the same dataset,
network, method and label count, and Welch's t-test where the source gives a spread and a run
count (``compare.verdict_of``; TorchSSL's ± is a standard error, made a standard deviation by
× √n; a spread the source leaves unstated is not tested against).

No test is made, and the row says why, where

* the published number is marked invalid in ``published.csv`` (USB's Mean Teacher rows: its
  consistency term has no gradient), or the source gives no spread and run count;
* our runs are not the protocol's runs: a synthetic stand-in for the data, a run that stopped
  before its planned steps, or (for the sources of the 2^20-step protocol) a run planned for
  other than the protocol's 1,048,576 steps.

The number each source reports is said beside it (``selection``: USB and TorchSSL report the
best test error over training, FixMatch the median of the last 20 checkpoints, Oliver et al.
the test error of the model best on validation); ours is the final reported network's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mt_repro.core.errors import BadInput
from mt_repro.core.tables import aligned
from mt_repro.paper.compare import ALPHA, BETTER, NOT_COMPARABLE, NOT_ENOUGH, REPRODUCED, WORSE, verdict_of
from mt_repro.paper.published import PublishedNumber, published_numbers
from mt_repro.paper.runs import RunResult, published_method

INVALID = "published number invalid"
# num_train_iter of USB's classic_cv settings (configs/protocols/usb.toml), the protocol
# FixMatch made standard and TorchSSL and USB kept
PROTOCOL_STEPS = 2 ** 20
PROTOCOL_SOURCES = ("fixmatch", "torchssl", "usb")
METRIC = "test_error_pct"


@dataclass(frozen=True)
class PublishedComparison:
    published: PublishedNumber
    runs: tuple[RunResult, ...]
    values: tuple[float, ...]
    mean: float
    std: float | None
    p: float | None
    verdict: str
    reasons: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)


def sources() -> list[str]:
    return sorted({number.source for number in published_numbers()})


def check_source(source: str) -> None:
    known = sources()
    if source not in known:
        raise BadInput(f"--published {source!r}: one of {', '.join(known)}")


def compare_published(runs: list[RunResult], source: str) -> list[PublishedComparison]:
    """One comparison per published number of ``source`` and method of ours whose runs are of
    its cell, in the order of ``published.csv``: runs of another computation of the number's
    algorithm (``published_as``: mean_teacher_usb beside Mean Teacher's rows) are compared
    apart from that method's own. ``BadInput`` for an unknown source or runs matching none."""
    check_source(source)
    by_key: dict = {}
    for run in runs:
        by_key.setdefault(run.key, []).append(run)
    comparisons = []
    for number in published_numbers(source):
        if number.metric != METRIC:
            continue
        comparisons += [_compare_cell(number, cell_runs) for key, cell_runs in by_key.items()
                        if key._replace(method=published_method(key.method)) == number.key]
    if not comparisons:
        cells = ", ".join(sorted({_describe(run.key) for run in runs}))
        raise BadInput(f"no number of {source} is of the cells of these runs ({cells}); "
                       f"`mt-repro published --source {source}` lists its numbers")
    return comparisons


def _compare_cell(number: PublishedNumber, runs: list[RunResult]) -> PublishedComparison:
    missing = [run.path for run in runs if METRIC not in run.errors]
    if missing:
        raise BadInput(f"{missing[0]} has no final test error to compare with {number.source}'s")
    values = [run.errors[METRIC] for run in runs]
    reasons = tuple(f"{run.path}: {'; '.join(why)}" for run in runs if (why := _not_the_protocol(run, number)))
    if not number.valid:
        mean, std, _, _, _ = verdict_of(values, number)
        return PublishedComparison(number, tuple(runs), tuple(values), mean, std, None, INVALID,
                                   (number.invalid_reason,))
    mean, std, _, p, verdict = verdict_of(values, _spread_as_std(number))
    if reasons:
        p, verdict = None, NOT_COMPARABLE
    return PublishedComparison(number, tuple(runs), tuple(values), mean, std, p, verdict, reasons)


@dataclass(frozen=True)
class _Reference:   # what compare.verdict_of reads of a number
    mean: float
    std: float | None
    n_runs: int | None


def _spread_as_std(number: PublishedNumber) -> _Reference:
    """The number with its spread as a standard deviation: TorchSSL's ± is a standard error
    (× √n); one whose spread is unstated has none to test against."""
    std = number.std
    if number.spread == "stderr" and std is not None and number.n_runs:
        std = std * math.sqrt(number.n_runs)
    elif number.spread not in ("std", "stderr"):
        std = None
    return _Reference(number.mean, std, number.n_runs)


def _not_the_protocol(run: RunResult, number: PublishedNumber) -> list[str]:
    record = run.provenance or {}
    steps, data = record.get("steps") or {}, record.get("data") or {}
    why = []
    if data.get("synthetic"):
        why.append(f"synthetic stand-in data ({data.get('path')})")
    trained, planned = steps.get("trained"), steps.get("planned")
    if trained is not None and planned is not None and trained < planned:
        why.append(f"stopped at step {trained:,} of its {planned:,}")
    if number.source in PROTOCOL_SOURCES and planned is not None and planned != PROTOCOL_STEPS:
        why.append(f"planned for {planned:,} steps (the protocol's: {PROTOCOL_STEPS:,})")
    return why


def _describe(key) -> str:
    extra = f" + {key.extra_unlabeled:,} extra images" if key.extra_unlabeled else ""
    return f"{key.dataset} {key.architecture} {key.method} {key.n_labels} labels{extra}"


COLUMNS = ("cell", "source's row", "theirs", "selection", "ours", "n", "p", "verdict")


def lines(comparisons: list[PublishedComparison]) -> list[str]:
    """The terminal table, then why any row has no test."""
    rows = [COLUMNS]
    for c in comparisons:
        theirs = f"{c.published.mean:.2f}" + (f" ± {c.published.std:.2f}" if c.published.std is not None else "")
        ours = f"{c.mean:.2f}" + (f" ± {c.std:.2f}" if c.std is not None else "")
        rows.append((_describe(c.runs[0].key), f"{c.published.row} ({c.published.table})", theirs,
                     c.published.selection, ours, str(c.n), "" if c.p is None else f"{c.p:.3g}", c.verdict))
    out = aligned(rows, rule=True, right_align=False)
    explained = [(c, c.reasons) for c in comparisons if c.reasons]
    if explained:
        out += ["", "Not tested:"]
        for c, reasons in explained:
            out += [f"  {c.published.row}, {_describe(c.runs[0].key)}:"] + [f"    {r}" for r in reasons]
    out += [f"ours: the final test error of each run's reported network; p: Welch's t-test, {REPRODUCED} "
            f"at p >= {ALPHA}, else {WORSE} / {BETTER}; {NOT_ENOUGH} without a spread on both sides"]
    return out


def all_reproduced(comparisons: list[PublishedComparison]) -> bool:
    judged = [c for c in comparisons if c.verdict != INVALID]
    return bool(judged) and all(c.verdict == REPRODUCED for c in judged)
