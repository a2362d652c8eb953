"""The numbers the paper reports (Tables 1-4), from ``paper_results.csv`` (package data).

One row per number, as the paper prints it: the table, the row's name (``row``), whose result it
is (``result_of``: this paper, or the paper it quotes), the cell (dataset, network family, method,
labels, extra unlabeled images), the metric (error rates in percent: ``test_error_pct``, or
``top5_error_pct`` for ImageNet), mean, standard deviation and number of runs (empty where the
paper gives none). ``scheduled`` says whether ``mt-repro table`` runs it and ``compare`` judges it
(the paper's own results, which its code produced); the other rows are context: results of other
papers, and the ConvNet Mean Teacher number that Table 4 repeats from Table 2.

``checked`` says how each number was confirmed, as ``+``-joined tokens:

* ``table-image``: read off an image of the paper's table (the four tables are reproduced as images
  in a third-party review of the paper: creatis-myriad.github.io, post of 2023-07-06);
* ``abstract``: the paper's abstract (arXiv 1703.01780, NIPS 2017);
* ``poster`` / ``readme``: the NIPS 2017 poster / README of github.com/CuriousAI/mean-teacher;
* ``quoted``: quoted with its deviation by a later paper (Xie et al. 2020, UDA, Table 3);
* ``issue-25``: github.com/CuriousAI/mean-teacher issue 25, which quotes the paper's appendix A.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

from mt_repro.core.errors import BadInput
from mt_repro.data.registry import get_dataset

TABLES = (1, 2, 3, 4)
METRICS = ("test_error_pct", "top5_error_pct")


class CellKey(NamedTuple):
    """What makes two numbers comparable: the same data, network family, method and labels."""

    dataset: str
    architecture: str
    method: str
    n_labels: int
    extra_unlabeled: int

    def describe(self) -> str:
        extra = f" +{self.extra_unlabeled} extra" if self.extra_unlabeled else ""
        return f"{self.dataset} {self.n_labels} labels{extra}, {self.architecture}, {self.method}"

    @property
    def column(self) -> tuple[str, int, int]:
        """The paper's column: dataset, labels and extra images (rows are methods and networks)."""
        return self.dataset, self.n_labels, self.extra_unlabeled


def all_labels(dataset: str) -> int:
    """"All labels" as the paper counts them: the whole published training set."""
    return get_dataset(dataset).train_size


@dataclass(frozen=True)
class PaperNumber:
    table: int
    row: str
    key: CellKey
    implementation: str   # the original code's half that produced it: tensorflow, pytorch or ""
    result_of: str
    metric: str
    mean: float
    std: float | None
    n_runs: int | None
    scheduled: bool      # ``mt-repro table`` runs it and ``compare`` judges runs against it
    checked: str

    def describe(self) -> str:
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        runs = f", {self.n_runs} runs" if self.n_runs else ""
        return f"{self.row} ({self.result_of}): {self.mean:.2f}{spread}{runs}"


@lru_cache(maxsize=1)
def paper_numbers() -> tuple[PaperNumber, ...]:
    text = resources.files("mt_repro.paper").joinpath("paper_results.csv").read_text(encoding="utf-8")
    numbers = []
    for row in csv.DictReader(text.splitlines()):
        key = CellKey(row["dataset"], row["architecture"], row["method"], int(row["n_labels"]),
                      int(row["extra_unlabeled"]))
        numbers.append(PaperNumber(
            table=int(row["table"]), row=row["row"], key=key, implementation=row["implementation"],
            result_of=row["result_of"], metric=row["metric"], mean=float(row["mean"]),
            std=float(row["std"]) if row["std"] else None,
            n_runs=int(row["n_runs"]) if row["n_runs"] else None,
            scheduled=row["scheduled"] == "yes", checked=row["checked"]))
    return tuple(numbers)


def scheduled_numbers(table: int | None = None) -> list[PaperNumber]:
    """The paper's own results (of one table, or of all), the ones runs are judged against."""
    return [n for n in paper_numbers() if n.scheduled and (table is None or n.table == table)]


def context_numbers(number: PaperNumber) -> list[PaperNumber]:
    """The rows of ``number``'s table that are not run here (other papers' results) in the same
    column and metric: shown beside a comparison for context, never judged."""
    return [n for n in paper_numbers() if n.table == number.table and not n.scheduled
            and n.key.column == number.key.column and n.metric == number.metric]


def check_table_number(table: int) -> int:
    if table not in TABLES:
        raise BadInput(f"the paper has Tables {', '.join(map(str, TABLES))} with results, not Table {table}")
    return table
