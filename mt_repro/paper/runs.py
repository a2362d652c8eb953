"""Finished runs, read back as (cell, final test error): ours, and the original PyTorch code's.

* Our run directories hold ``summary.json`` (dataset, architecture, labels) and the evaluation
  logs ``ema_validation.jsonl`` (teacher) / ``validation.jsonl`` (student). The error compared is
  the last evaluation's: the teacher's for Mean Teacher (the paper reports the EMA model), the
  student's for the other methods. Keys a summary lacks take defaults: method ``mean_teacher``,
  no extra images.
* The original PyTorch code's run directories, ``results/<runner>/<date>/<labels>_<seed>/``
  with ``ema_validation.msgpack``, are read directly (no conversion needed): the runner's name
  gives the experiment (``cifar10_test``, ``imagenet_valid``), the directory name the labels.
  Beware: the original saved a log only when 300 s had passed since its last save, so its file
  may lack the final evaluation; the last row present is used, and its epoch is reported.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mt_repro.errors import BadInput
from mt_repro.paper.results import CellKey

ARCHITECTURES = {"cifar_shakeshake26": "shakeshake26", "resnext152": "resnext152", "convnet13": "convnet13",
                 "cifar_shakeshake_mini": "shakeshake_mini"}
METRIC_COLUMNS = {"test_error_pct": "error1/avg", "top5_error_pct": "error5/avg"}
# The original PyTorch runners whose results the paper reports (Table 4).
ORIGINAL_RUNNERS = {"cifar10_test": ("cifar10", "shakeshake26"), "imagenet_valid": ("imagenet", "resnext152")}
IMAGENET_LABELS = 128000


@dataclass(frozen=True)
class RunResult:
    path: Path
    key: CellKey
    errors: dict[str, float]     # metric -> final error (percent) of the reported model
    evaluated_at: float          # epoch of that evaluation
    source: str                  # "mt-repro" or "original code"


def find_runs(paths: list[str | os.PathLike]) -> list[RunResult]:
    """Every run directory in ``paths`` or below them (a run is a directory with our
    ``summary.json`` or the original's ``ema_validation.msgpack``)."""
    results = []
    for given in map(Path, paths):
        if not given.exists():
            raise BadInput(f"{given} does not exist")
        if given.is_file():
            raise BadInput(f"{given} is a file; give run directories (or directories holding them)")
        found = sorted({p.parent for pattern in ("summary.json", "ema_validation.msgpack")
                        for p in given.rglob(pattern)} | ({given} if _is_run(given) else set()))
        if not found:
            raise BadInput(f"{given} holds no finished run (no summary.json or ema_validation.msgpack "
                           "in it or below it)")
        results += [read_run(directory) for directory in found]
    return results


def _is_run(directory: Path) -> bool:
    return (directory / "summary.json").is_file() or (directory / "ema_validation.msgpack").is_file()


def read_run(directory: Path) -> RunResult:
    if (directory / "summary.json").is_file():
        return _read_ours(directory)
    return _read_original(directory)


def _read_ours(directory: Path) -> RunResult:
    from mt_repro.logs.runlog import read_rows

    try:
        summary = json.loads((directory / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{directory / 'summary.json'} cannot be read: {exc}") from None
    if not isinstance(summary, dict) or "dataset" not in summary or "arch" not in summary:
        raise BadInput(f"{directory / 'summary.json'} is not a run summary (no dataset/arch)")
    method = summary.get("method", "mean_teacher")
    n_labels = summary.get("n_labeled")
    if not isinstance(n_labels, int):
        raise BadInput(f"{directory / 'summary.json'} does not say how many labels the run had")
    key = CellKey(summary["dataset"], ARCHITECTURES.get(summary["arch"], summary["arch"]), method,
                  n_labels, int(summary.get("extra_unlabeled", 0)))
    log = "ema_validation.jsonl" if method == "mean_teacher" else "validation.jsonl"
    rows = read_rows(directory / log)
    if not rows:
        raise BadInput(f"{directory} has no evaluation in {log}: the run has not been evaluated")
    last = rows[-1]
    errors = {metric: float(last[column]) for metric, column in METRIC_COLUMNS.items()
              if last.get(column) is not None}
    return RunResult(directory, key, errors, float(last.get("epoch", 0)), "mt-repro")


def _read_original(directory: Path) -> RunResult:
    from mt_repro.logs.pandas_msgpack import read_legacy_log

    runner = directory.parent.parent.name
    if runner not in ORIGINAL_RUNNERS:
        raise BadInput(f"{directory}: an original run directory must sit in results/<runner>/<date>/ "
                       f"with runner {' or '.join(ORIGINAL_RUNNERS)}, found {runner!r}")
    dataset, architecture = ORIGINAL_RUNNERS[runner]
    if dataset == "imagenet":
        n_labels = IMAGENET_LABELS
    else:
        try:
            n_labels = int(directory.name.split("_")[0])
        except ValueError:
            raise BadInput(f"{directory}: expected a run directory named <labels>_<data seed>") from None
    frame = read_legacy_log(directory / "ema_validation.msgpack")
    if frame.empty:
        raise BadInput(f"{directory / 'ema_validation.msgpack'} holds no evaluation")
    last = frame.iloc[-1]
    errors = {metric: float(last[column]) for metric, column in METRIC_COLUMNS.items() if column in last}
    return RunResult(directory, CellKey(dataset, architecture, "mean_teacher", n_labels, 0), errors,
                     float(frame.index[-1]), "original code")
