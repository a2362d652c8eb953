"""Finished runs, read back as (cell, final test error): ours, and the original code's.

A run directory is recognised by one of these files (``find_runs`` looks for them in the given
directories and everywhere below them):

* ``summary.json``: a run of ours, of either recipe (``mt_repro.engine.trainer``). The cell comes from the summary: ``dataset``, ``arch``,
  ``n_labeled``, and, where present, ``method`` (default ``mean_teacher``: the ResNet runs before
  the method registry did not write it) and ``extra_unlabeled`` (default 0). The error is the final
  evaluation's: ``teacher_error1`` for Mean Teacher (the paper reports the EMA model; likewise
  for the methods whose papers report an EMA), else ``student_error1``; when the summary lacks it, and for top-5 (ImageNet), the last row of
  ``ema_validation.jsonl`` / ``validation.jsonl`` (``error1/avg``, ``error5/avg``).
* ``ema_validation.msgpack`` (the original PyTorch code's log, read as is) or
  ``ema_validation.csv`` (the same log converted by ``mt-repro port-log``): a run of the original
  PyTorch code (Table 4). The directory must keep the original's layout,
  ``<runner>/<date>/<run>/``, because that is where the original recorded the cell: the runner
  (``cifar10_test`` or ``imagenet_valid``) gives the experiment, the run name ``<labels>_<seed>``
  the labels. The error is the last row's ``error1/avg`` / ``error5/avg``. The original saved a
  log only when 300 s had passed since its last save (``pytorch/mean_teacher/run_context.py``), so
  the file may end before the last evaluation: the epoch of the row used is kept and a note says
  when it is not the run's last.

The original TensorFlow code's directories (``results/<runner>/<date>/<data seed>/``) do not record
the labels or the model of a run, so they cannot be assigned to a cell and are not read.

Whether a run of ours is comparable with the paper comes from its summary's ``provenance``
(``mt_repro.engine.provenance``): a run that trained another number of steps than the paper's
recipe, on a synthetic stand-in, with another network, width or label count, or with any setting
of the recipe changed, is *not comparable*, and ``not_comparable`` says why. Such a run is judged
against the cell of its recipe (``recipe_key``) when its own cell is none of the paper's (a
smaller network, the label file of a stand-in). A summary written before runs recorded their
provenance is checked from its ``config.json`` (recipe, settings and steps; its data only for the
stand-in marker, at the path it names); one without either is *provenance unknown*, said in a
note, and judged as it is. Runs of the original code are the paper's recipe.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mt_repro.config.saved import read_saved
from mt_repro.core.errors import BadInput
from mt_repro.engine import provenance as provenance_of
from mt_repro.engine.runs import read_run_config
from mt_repro.logs.pandas_msgpack import read_legacy_log
from mt_repro.logs.runlog import read_rows
from mt_repro.methods.registry import method_class, method_names
from mt_repro.paper.results import CellKey, all_labels

SUMMARY = "summary.json"
ORIGINAL_LOGS = ("ema_validation.msgpack", "ema_validation.csv")
# Network families as the paper's rows name them, by the ``arch`` of a run.
ARCHITECTURES = {"cifar_shakeshake26": "shakeshake26", "resnext152": "resnext152", "convnet13": "convnet13",
                 "cifar_shakeshake_mini": "shakeshake_mini"}
METHOD_ALIASES = {"pi": "pi_model"}   # the ConvNet runner's name for the Pi model
DEFAULT_METHOD = "mean_teacher"
LOG_COLUMNS = {"test_error_pct": "error1/avg", "top5_error_pct": "error5/avg"}
# The original PyTorch runners behind Table 4 (pytorch/experiments/cifar10_test.py and
# imagenet_valid.py): their dataset, network and epochs per label count.
ORIGINAL_RUNNERS = {"cifar10_test": ("cifar10", "shakeshake26", {4000: 300, 1000: 180}),
                    "imagenet_valid": ("imagenet", "resnext152", {128000: 60})}
IMAGENET_LABELS = 128000   # imagenet_valid.py always used the 10% label file


@dataclass(frozen=True)
class RunResult:
    path: Path
    key: CellKey
    errors: dict[str, float]       # metric -> final error (percent) of the reported network
    network: str                   # "teacher" or "student": whose error ``errors`` holds
    source: str                    # "mt-repro" or "original code"
    global_step: int | None = None   # training steps of our runs, to catch mixed configurations
    evaluated_at: float | None = None  # epoch of the original code's evaluation that was read
    notes: tuple[str, ...] = field(default=())
    provenance: dict | None = None      # recorded in its summary, or derived from its config.json
    not_comparable: tuple[str, ...] = field(default=())   # how it differs from the paper's recipe
    recipe_key: CellKey | None = None   # the cell of the paper's recipe it was made from


def reported_network(method: str) -> str:
    """The network a method's paper reports: Mean Teacher's EMA model (the teacher), the others'
    own network (or their EMA, where their papers say so: ICT, MixMatch)."""
    return method_class(method).reported_model if method in method_names() else "student"


def published_method(method: str) -> str:
    """The method whose published numbers a run of ``method`` stands beside: its own, or the
    algorithm it computes otherwise (``published_as``)."""
    if method not in method_names():
        return method
    return getattr(method_class(method), "published_as", None) or method


def find_runs(paths: list[str | os.PathLike]) -> list[RunResult]:
    """Every run in ``paths`` or below them, each once."""
    directories: dict[Path, None] = {}
    for given in map(Path, paths):
        if not given.exists():
            raise BadInput(f"{given} does not exist")
        if given.is_file():
            raise BadInput(f"{given} is a file; give run directories (or directories holding them)")
        found = {p.parent for name in (SUMMARY, *ORIGINAL_LOGS) for p in given.rglob(name)}
        if _is_run(given):
            found.add(given)
        if not found:
            raise BadInput(f"{given} holds no finished run: no {SUMMARY} (ours) or "
                           f"{' / '.join(ORIGINAL_LOGS)} (the original code's) in it or below it")
        for directory in sorted(found):
            directories.setdefault(directory.resolve(), None)
    return [read_run(directory) for directory in directories]


def _is_run(directory: Path) -> bool:
    return any((directory / name).is_file() for name in (SUMMARY, *ORIGINAL_LOGS))


def read_run(directory: str | os.PathLike) -> RunResult:
    directory = Path(directory)
    if (directory / SUMMARY).is_file():
        return _read_ours(directory)
    return _read_original(directory)


# --- ours ---------------------------------------------------------------------------------
def _read_ours(directory: Path) -> RunResult:
    path = directory / SUMMARY
    summary = read_saved(path, "run summary")   # (a regular file, bounded in size and nesting)
    if not isinstance(summary, dict) or not isinstance(summary.get("dataset"), str) \
            or not isinstance(summary.get("arch"), str):
        raise BadInput(f"{path} is not a run summary (no dataset/arch)")
    dataset = summary["dataset"]
    method = summary.get("method", DEFAULT_METHOD)
    if not isinstance(method, str):
        raise BadInput(f"{path}: method should be a name, got {method!r}")
    method = METHOD_ALIASES.get(method, method)
    n_labels = summary.get("n_labeled")
    if n_labels == "all":
        n_labels = all_labels(dataset)
    if not _is_count(n_labels):
        raise BadInput(f"{path} does not say how many labels the run had (n_labeled)")
    extra = summary.get("extra_unlabeled", 0)
    if not _is_count(extra):
        raise BadInput(f"{path}: extra_unlabeled should be a number of images, got {extra!r}")
    key = CellKey(dataset, ARCHITECTURES.get(summary["arch"], summary["arch"]), method, n_labels, extra)

    # A protocol's cells report the EMA model whatever the method, as USB and TorchSSL evaluate
    # every algorithm (semilearn/core/algorithmbase.py's evaluate applies the EMA weights first).
    network = "teacher" if summary.get("protocol") else reported_network(method)
    rows = read_rows(directory / ("ema_validation.jsonl" if network == "teacher" else "validation.jsonl"))
    last = rows[-1] if rows else {}
    errors = {metric: float(last[column]) for metric, column in LOG_COLUMNS.items() if _is_number(last.get(column))}
    if _is_number(summary.get(f"{network}_error1")):
        errors["test_error_pct"] = float(summary[f"{network}_error1"])
    if not errors:
        raise BadInput(f"{directory} has no final test error of its {network} ({network}_error1 in "
                       f"{SUMMARY}, or an evaluation in its log)")
    step = summary.get("global_step")
    step = step if _is_count(step) else _last_step(directory)
    record, notes = _provenance(directory, summary, n_labels, step)
    recipe = record.get("recipe") if record else None
    recipe_key = None if recipe is None else CellKey(dataset, ARCHITECTURES.get(recipe["arch"], recipe["arch"]),
                                                     method, recipe["n_labels"], extra)
    reasons = tuple(differs_from_recipe(record, n_labels)) if record else ()
    return RunResult(directory, key, errors, network, "mt-repro", global_step=step, notes=notes,
                     provenance=record, not_comparable=reasons, recipe_key=recipe_key)


def _last_step(directory: Path) -> int | None:
    """The step of the last row of a run's logs (a summary without ``global_step``)."""
    steps = [row.get("step") for name in ("training.jsonl", "ema_validation.jsonl")
             for row in read_rows(directory / name)[-1:]]
    steps = [step for step in steps if _is_count(step)]
    return max(steps) if steps else None


# --- provenance -----------------------------------------------------------------------------
def _provenance(directory: Path, summary: dict, n_labels: int, step: int | None) -> tuple[dict | None, tuple[str, ...]]:
    """The run's provenance (checked) and what a note should say about it."""
    path = directory / SUMMARY
    if "provenance" in summary:
        return check_provenance(summary["provenance"], path), ()
    config_path = directory / "config.json"
    if not config_path.is_file():
        return None, (f"provenance unknown: {directory} records no provenance (its summary is older than "
                      "provenance records) and has no config.json: its recipe, length and data are not checked",)
    try:
        config = read_run_config(directory)
    except BadInput as exc:
        return None, (f"provenance unknown: {directory} records no provenance and its config.json cannot be "
                      f"read ({exc}): its recipe, length and data are not checked",)
    declared = config.declared_labels
    labels = n_labels if declared is None else declared
    record = provenance_of.provenance(config, n_labels=labels, trained_steps=step, planned_steps=None, hashed=False)
    record["code"] = record["torch"] = None   # unknown: not the versions reading it now
    return record, (f"{directory} records no provenance (its summary is older than provenance records): "
                    "its recipe, settings and steps are checked from its config.json, its data only for the "
                    "stand-in marker",)


def check_provenance(value, path: Path) -> dict:
    """A summary's ``provenance``, checked for the fields ``differs_from_recipe`` reads:
    ``BadInput`` naming the first one that is not what runs write."""
    def bad(field: str, expected: str, got) -> BadInput:
        return BadInput(f"{path}: provenance {field} should be {expected}, got {got!r:.80}")

    if not isinstance(value, dict):
        raise bad("", "an object", value)
    steps, data, recipe = value.get("steps"), value.get("data"), value.get("recipe")
    counts = isinstance(steps, dict) and all(steps.get(k) is None or _is_count(steps[k]) for k in ("trained", "recipe"))
    if not counts:
        raise bad("steps", "{trained, planned, recipe} step counts", steps)
    if not isinstance(data, dict) or not isinstance(data.get("synthetic"), bool):
        raise bad("data", "{path, content_hash, synthetic}", data)
    if recipe is not None:
        good = (isinstance(recipe, dict) and isinstance(recipe.get("name"), str)
                and isinstance(recipe.get("arch"), str) and _is_count(recipe.get("n_labels"))
                and isinstance(recipe.get("differences"), dict)
                and all(isinstance(d, dict) and {"paper", "run"} <= set(d) for d in recipe["differences"].values()))
        if not good:
            raise bad("recipe", "null or {name, arch, n_labels, steps, differences}", recipe)
    return value


def differs_from_recipe(record: dict, n_labels: int) -> list[str]:
    """How a run with provenance ``record`` and ``n_labels`` labels differs from the paper's
    recipe: one phrase each, none for a run that follows it."""
    recipe = record.get("recipe")
    data = record["data"]
    reasons = []
    if recipe is None:
        return reasons   # no recipe of the paper: the cell is none of the paper's either
    trained, steps = record["steps"].get("trained"), recipe.get("steps")
    if trained is not None and steps is not None and trained != steps:
        reasons.append(f"trained {trained:,} of the recipe's {steps:,} steps")
    if data.get("synthetic"):
        reasons.append(f"synthetic stand-in data ({data.get('path')})")
    if n_labels != recipe["n_labels"]:
        reasons.append(f"{n_labels:,} labels (the recipe's cell: {recipe['n_labels']:,})")
    changed = dict(recipe["differences"])
    changed.pop("training_length", None)   # said by the steps
    for name, what in (("arch", "network"), ("width", "width")):
        if name in changed:
            change = changed.pop(name)
            reasons.append(f"{what} {_value(change['run'])} (the paper's: {_value(change['paper'])})")
    if changed:
        reasons.append(f"settings changed from {recipe['name']}: "
                       + ", ".join(f"{k} {_value(d['paper'])} -> {_value(d['run'])}" for k, d in changed.items()))
    return reasons


def _value(value) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- the original code's --------------------------------------------------------------------
def _read_original(directory: Path) -> RunResult:
    runner = directory.parent.parent.name
    if runner not in ORIGINAL_RUNNERS:
        raise BadInput(f"{directory}: a run of the original code must keep its layout "
                       f"<runner>/<date>/<run>/ with runner {' or '.join(ORIGINAL_RUNNERS)}; found {runner!r}")
    dataset, architecture, epochs_by_labels = ORIGINAL_RUNNERS[runner]
    if dataset == "imagenet":
        n_labels = IMAGENET_LABELS
    else:
        try:
            n_labels = int(directory.name.split("_")[0])
        except ValueError:
            raise BadInput(f"{directory}: expected the original's run name <labels>_<data seed>") from None
    frame, log = _original_log(directory)
    if frame.empty:
        raise BadInput(f"{log} holds no evaluation")
    last = pd.to_numeric(frame.iloc[-1], errors="coerce")
    errors = {metric: float(last[column]) for metric, column in LOG_COLUMNS.items()
              if column in last.index and _is_number(float(last[column]))}
    if not errors:
        raise BadInput(f"{log} has no error1/avg column: not an evaluation log of the original code")
    epoch = float(frame.index[-1])
    notes = ()
    planned = epochs_by_labels.get(n_labels)
    if planned is not None and epoch < planned:
        notes = (f"{log} ends at epoch {epoch:g} of {planned} (the original saved its logs only every "
                 "300 s): its error is that epoch's",)
    return RunResult(directory, CellKey(dataset, architecture, "mean_teacher", n_labels, 0), errors, "teacher",
                     "original code", evaluated_at=epoch, notes=notes)


def _original_log(directory: Path):
    msgpack, ported = (directory / name for name in ORIGINAL_LOGS)
    if msgpack.is_file():
        return read_legacy_log(msgpack), msgpack
    try:
        frame = pd.read_csv(ported, index_col=0)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise BadInput(f"{ported} cannot be read as a CSV log: {str(exc).splitlines()[0][:160]}") from None
    try:
        frame.index = frame.index.astype(float)
    except (TypeError, ValueError):
        raise BadInput(f"{ported}: its first column should be the epoch (as `mt-repro port-log` writes it)") from None
    return frame, ported
