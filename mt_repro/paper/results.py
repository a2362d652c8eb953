"""The numbers the paper reports (Tables 1-4), from ``paper_results.csv`` (package data).

Each row keeps where it comes from (``row_source``: this paper, or the paper it quotes) and how
it was confirmed (``checked``). Error rates are percentages; ``n_runs`` is how many runs the mean
and standard deviation are over (empty for numbers quoted from other papers).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

TABLES = (1, 2, 3, 4)
# "all labels" as the paper counts it: the whole training set.
ALL_LABELS = {"svhn": 73257, "cifar10": 50000, "imagenet": 1281167}


class CellKey(NamedTuple):
    """What makes two numbers comparable: the same data, model family, method and labels."""

    dataset: str
    architecture: str
    method: str
    n_labels: int
    extra_unlabeled: int

    def describe(self) -> str:
        extra = f" +{self.extra_unlabeled} extra" if self.extra_unlabeled else ""
        return f"{self.dataset} {self.n_labels} labels{extra}, {self.architecture}, {self.method}"


@dataclass(frozen=True)
class PaperNumber:
    table: int
    key: CellKey
    implementation: str
    row_source: str
    metric: str           # test_error_pct or top5_error_pct
    mean: float
    std: float | None
    n_runs: int | None
    checked: str

    @property
    def runnable(self) -> bool:
        """The paper's own result (not one it quotes), which its code produced."""
        return self.row_source.startswith("this paper") and self.implementation in ("tensorflow", "pytorch")


@lru_cache(maxsize=1)
def paper_numbers() -> tuple[PaperNumber, ...]:
    text = resources.files("mt_repro.paper").joinpath("paper_results.csv").read_text()
    numbers = []
    for row in csv.DictReader(text.splitlines()):
        key = CellKey(row["dataset"], row["architecture"], row["method"], int(row["n_labels"]),
                      int(row["extra_unlabeled"]))
        numbers.append(PaperNumber(
            table=int(row["table"]), key=key, implementation=row["implementation"],
            row_source=row["row_source"], metric=row["metric"], mean=float(row["mean"]),
            std=float(row["std"]) if row["std"] else None,
            n_runs=int(row["n_runs"]) if row["n_runs"] else None, checked=row["checked"]))
    return tuple(numbers)


def table_numbers(table: int) -> list[PaperNumber]:
    return [n for n in paper_numbers() if n.table == table]


def check_table_number(table: int) -> int:
    from mt_repro.errors import BadInput

    if table not in TABLES:
        raise BadInput(f"the paper has Tables {', '.join(map(str, TABLES))} with results, not Table {table}")
    return table
