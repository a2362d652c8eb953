"""Other papers' and codebases' numbers for the WRN-28-2 protocol, from ``published.csv`` (package
data): FixMatch's Table 2, TorchSSL's README, USB's ``results/classic_cv.csv`` and Table 1 of
Oliver et al. 2018, one row per number, each with where it was read and how it was checked.

A row is one number as its source prints it: the source and its table, the row's name there
(``row``), the cell (dataset, network, method, labels, extra unlabeled images), the metric (error
in percent, ``test_error_pct`` or ``top5_error_pct`` as in ``paper_results.csv``), mean, spread
and number of runs (empty where the source gives none), and:

* ``selection``: which checkpoint the number is of (``SELECTIONS``); USB and TorchSSL report the
  best test accuracy seen during training, a number that favours them against a final one;
* ``spread``: what the ± is (``SPREADS``): a standard deviation, a standard error, or unstated;
* ``valid``: ``no`` for a number that does not measure what its row says, with the reason in
  ``invalid_reason`` (USB's Mean Teacher rows: its consistency term compares the teacher with
  itself, so they are supervised-only runs);
* ``reference``: the document the number was read in, with the commit or address of each copy;
* ``checked``: how the number was confirmed, ``+``-joined tokens of ``CHECKS``, in the manner
  of ``paper_results.csv``.

Sources print accuracies or error rates; every number here is an error rate, ``100 - accuracy``
where the source printed an accuracy (the row's ``note`` then gives the printed accuracy), with
the spread unchanged. Numbers no source at hand showed are left out rather than filled in
(README, "Other published numbers", lists them).
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from mt_repro.core.errors import BadInput

RESOURCE = "published.csv"
FIELDS = ("source", "table", "row", "dataset", "architecture", "method", "n_labels", "extra_unlabeled",
          "metric", "selection", "mean", "std", "spread", "n_runs", "valid", "invalid_reason",
          "reference", "checked", "note")

SOURCES = {
    "fixmatch": "Sohn et al. 2020, FixMatch (NeurIPS 2020, arXiv 2001.07685), Table 2",
    "torchssl": "TorchSSL README, 'Main Results' (github.com/TorchSSL/TorchSSL@f26e1d4)",
    "usb": "USB results/classic_cv.csv (github.com/microsoft/Semi-supervised-learning@1ef4cbe)",
    "oliver2018": "Oliver et al. 2018, Realistic Evaluation of Deep Semi-Supervised Learning Algorithms "
                  "(NeurIPS 2018, arXiv 1804.09170), Table 1",
}
# The datasets these protocols use (each a registered reader: a test keeps them so).
DATASETS = ("cifar10", "cifar100", "svhn", "stl10", "imagenet")
# The metric names of paper_results.csv (results.METRICS; a test keeps the two equal).
METRICS = ("test_error_pct", "top5_error_pct")
SELECTIONS = {
    "median-last-20": "median of the last 20 checkpoints (FixMatch)",
    "best-on-test": "best test accuracy seen during training",
    "best-on-validation": "test error of the checkpoint best on a validation set",
    "final": "the final model",
}
SPREADS = {"std": "standard deviation", "stderr": "standard error", "unstated": "the source does not say"}
CHECKS = {
    "csv": "parsed from the source's own results file at the recorded commit",
    "readme": "read from the source's own README table at the recorded commit",
    "quoted-yue-fan": "quoted as error rates in the README of github.com/YUE-FAN/FixMatch-PyTorch (d6424b5)",
    "quoted-kekmodel": "quoted as accuracies in the README of github.com/kekmodel/FixMatch-pytorch (040be3b)",
    "quoted-perrying": "quoted in the README of github.com/perrying/pytorch-consistency-regularization (0de3618)",
    "quoted-perrying-eval": "quoted in the README of github.com/perrying/realistic-ssl-evaluation-pytorch (00d6763)",
    "pwc": "listed as an accuracy among the paper's results on Papers with Code (paperswithcode2.com/paper/130774)",
    "hyperai": "listed as an accuracy among the paper's benchmarks on hyper.ai",
    "abstract": "the paper's abstract (arXiv)",
    "issue-semicls-3": "the spread quoted in github.com/TencentYoutuResearch/Classification-SemiCLS issue 3",
}
_METHOD_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class PublishedNumber:
    source: str
    table: str
    row: str
    dataset: str
    architecture: str
    method: str
    n_labels: int
    extra_unlabeled: int | None   # None: the source does not say whether SVHN's extra images were used
    metric: str
    selection: str
    mean: float
    std: float | None
    spread: str
    n_runs: int | None
    valid: bool
    invalid_reason: str
    reference: str
    checked: str
    note: str

    @property
    def key(self):
        """The cell as ``paper_results.csv`` names cells (``results.CellKey``), or None where the
        source does not say whether extra images were used: such a number matches no cell."""
        from mt_repro.paper.results import CellKey  # deferred: it imports torch, which listing numbers does not need

        if self.extra_unlabeled is None:
            return None
        return CellKey(self.dataset, self.architecture, self.method, self.n_labels, self.extra_unlabeled)

    def describe(self) -> str:
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        runs = f", {self.n_runs} runs" if self.n_runs else ""
        flag = "" if self.valid else " [invalid]"
        return f"{self.row} ({self.source}, {self.table}): {self.mean:.2f}{spread}{runs}{flag}"


def published_numbers(source: str | None = None, dataset: str | None = None, method: str | None = None,
                      *, path: str | Path | None = None) -> list[PublishedNumber]:
    """The numbers of one source, dataset and method (each None: all), from the package's
    ``published.csv``, or from ``path`` (a file in the same format)."""
    numbers = load_file(path) if path is not None else _package_numbers()
    return [n for n in numbers if (source is None or n.source == source)
            and (dataset is None or n.dataset == dataset) and (method is None or n.method == method)]


@lru_cache(maxsize=1)
def _package_numbers() -> tuple[PublishedNumber, ...]:
    text = resources.files("mt_repro.paper").joinpath(RESOURCE).read_text(encoding="utf-8")
    return parse(text, RESOURCE)


def load_file(path: str | Path) -> tuple[PublishedNumber, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse(text, str(path))


def parse(text: str, origin: str) -> tuple[PublishedNumber, ...]:
    """Every row of ``text`` (CSV with ``FIELDS``), checked; a bad row is a ``BadInput`` that names
    its line, so a wrong number cannot sit in the file unnoticed."""
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != FIELDS:
        raise BadInput(f"{origin}: the header must be {','.join(FIELDS)}, found {','.join(reader.fieldnames or ())}")
    numbers: list[PublishedNumber] = []
    seen: dict[tuple, int] = {}
    for row in reader:
        where = f"{origin} line {reader.line_num} ({row.get('source')}, {row.get('row')}, " \
                f"{row.get('dataset')} {row.get('n_labels')} labels)"
        if None in row or any(value is None for value in row.values()):
            raise BadInput(f"{where}: expected {len(FIELDS)} fields")
        number = _number(row, where)
        identity = (number.source, number.table, number.row, number.dataset, number.architecture, number.method,
                    number.n_labels, number.extra_unlabeled, number.metric)
        if identity in seen:
            raise BadInput(f"{where}: the same number as line {seen[identity]}")
        seen[identity] = reader.line_num
        numbers.append(number)
    return tuple(numbers)


def _number(row: dict[str, str], where: str) -> PublishedNumber:
    def fail(problem: str) -> BadInput:
        return BadInput(f"{where}: {problem}")

    def one_of(field: str, choices: Iterable[str]) -> str:
        choices = tuple(choices)
        if row[field] not in choices:
            raise fail(f"{field} {row[field]!r} is not one of {', '.join(choices)}")
        return row[field]

    def integer(field: str, *, minimum: int, optional: bool = False) -> int | None:
        if optional and row[field] == "":
            return None
        try:
            value = int(row[field])
        except ValueError:
            raise fail(f"{field} {row[field]!r} is not a whole number") from None
        if value < minimum:
            raise fail(f"{field} {value} is below {minimum}")
        return value

    def percent(field: str, *, optional: bool = False) -> float | None:
        if optional and row[field] == "":
            return None
        try:
            value = float(row[field])
        except ValueError:
            raise fail(f"{field} {row[field]!r} is not a number") from None
        if not math.isfinite(value) or not 0 <= value <= 100:
            raise fail(f"{field} {row[field]} is outside 0-100 (an error rate in percent)")
        return value

    source = one_of("source", SOURCES)
    dataset = one_of("dataset", DATASETS)
    metric = one_of("metric", METRICS)
    selection = one_of("selection", SELECTIONS)
    if not _METHOD_NAME.fullmatch(row["method"]):
        raise fail(f"method {row['method']!r} is not a method name (lower case, digits, _)")
    for field in ("table", "row", "architecture", "reference"):
        if not row[field].strip():
            raise fail(f"{field} is empty")
    std = percent("std", optional=True)
    if (std is None) != (row["spread"] == ""):
        raise fail("spread says what std is, so the two are given together or not at all")
    spread = one_of("spread", SPREADS) if std is not None else ""
    valid = one_of("valid", ("yes", "no")) == "yes"
    reason = row["invalid_reason"].strip()
    if not valid and not reason:
        raise fail("an invalid number needs its invalid_reason")
    if valid and reason:
        raise fail("invalid_reason is given but valid is yes")
    tokens = row["checked"].split("+") if row["checked"] else []
    if not tokens:
        raise fail("checked is empty: say how the number was confirmed")
    unknown = [t for t in tokens if t not in CHECKS]
    if unknown:
        raise fail(f"checked token(s) {', '.join(map(repr, unknown))} are not among {', '.join(CHECKS)}")
    return PublishedNumber(
        source=source, table=row["table"], row=row["row"], dataset=dataset, architecture=row["architecture"],
        method=row["method"], n_labels=integer("n_labels", minimum=1),
        extra_unlabeled=integer("extra_unlabeled", minimum=0, optional=True), metric=metric, selection=selection,
        mean=percent("mean"), std=std, spread=spread, n_runs=integer("n_runs", minimum=1, optional=True),
        valid=valid, invalid_reason=reason, reference=row["reference"], checked=row["checked"], note=row["note"])


def check_filters(source: str | None, dataset: str | None) -> None:
    """A source or dataset name that no row could have is a mistake, not an empty answer."""
    if source is not None and source not in SOURCES:
        raise BadInput(f"unknown source {source!r}; the sources are {', '.join(SOURCES)}")
    if dataset is not None and dataset not in DATASETS:
        raise BadInput(f"unknown dataset {dataset!r}; published numbers are for {', '.join(DATASETS)}")


COLUMNS = ("source", "dataset", "labels", "network", "method", "row", "metric", "error %", "±", "runs",
           "selection", "valid")
_SPREAD_MARK = {"std": "sd", "stderr": "se", "unstated": "?", "": ""}


def terminal_table(numbers: list[PublishedNumber]) -> str:
    """``numbers`` as aligned columns, then the reasons of the invalid ones and what the
    abbreviations mean."""
    if not numbers:
        return "no published numbers match"
    cells = [COLUMNS] + [_cells(n) for n in numbers]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons = sorted({(n.source, n.method, n.invalid_reason) for n in numbers if not n.valid})
    lines += [f"invalid ({source} {method}): {reason}" for source, method, reason in reasons]
    lines.append("± is a standard deviation (sd), a standard error (se) or unstated (?); every number is an "
                 "error rate, converted from accuracy where the source printed one. Provenance per number: "
                 "the reference and checked columns of mt_repro/paper/published.csv; (+N): N extra "
                 "unlabeled images.")
    return "\n".join(lines)


def _cells(n: PublishedNumber) -> tuple[str, ...]:
    spread = f"{n.std:.2f} {_SPREAD_MARK[n.spread]}" if n.std is not None else ""
    labels = str(n.n_labels) + (f" (+{n.extra_unlabeled})" if n.extra_unlabeled else "")
    return (n.source, n.dataset, labels, n.architecture, n.method, n.row,
            "top-5" if n.metric == "top5_error_pct" else "top-1", f"{n.mean:.2f}", spread,
            str(n.n_runs) if n.n_runs else "", n.selection, "yes" if n.valid else "NO")
