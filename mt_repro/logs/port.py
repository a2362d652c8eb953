"""``mt-repro port-log``: a log of the original (pandas <= 0.25 msgpack) or of ours (jsonl) as
CSV or Parquet, for today's tools."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import atomic_write
from mt_repro.core.limits import regular_file
from mt_repro.logs import pandas_msgpack
from mt_repro.logs.runlog import read_runlog

__all__ = ["PortReport", "port_log", "read_log", "write_table"]

DEFAULT_INDEX_LABEL = "epoch"  # what the index of both log kinds is
TABLE_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class PortReport:
    source: Path
    destination: Path
    kind: str
    rows: int
    columns: int
    index_label: str
    first: object
    last: object
    objects: int = 1

    def line(self) -> str:
        span = f"{self.index_label} {self.first} to {self.last}" if self.rows else "no rows"
        joined = f", {self.objects} objects concatenated" if self.objects > 1 else ""
        return (f"wrote {self.destination}: {self.rows} rows, {self.columns} columns, {span} "
                f"(from {self.kind} {self.source}{joined})")


def read_log(path: str | os.PathLike) -> tuple[pd.DataFrame, str, int]:
    """A log as a DataFrame, what kind of log it was, and how many objects it held: ``*.jsonl``
    is one of our run logs, anything else is read as the original's pandas msgpack."""
    path = Path(path)
    regular_file(path, "log")  # not a FIFO, a device, a directory
    if path.suffix == ".jsonl":
        try:
            return read_runlog(path), "run log", 1
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"log {path} is not a jsonl run log: {str(exc).splitlines()[0][:120]}") from None
    objects = pandas_msgpack.read_legacy_objects(path)
    return pandas_msgpack.combine_log_objects(objects, str(path)), "pandas msgpack log", len(objects)


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> str:
    """``frame`` as ``path`` (``.csv`` or ``.parquet``), its index a column named after it (or
    ``epoch``); returns that name. Written beside the target and renamed into place."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise BadInput(f"{path}: the new log must end in .csv or .parquet")
    if path.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise BadInput("writing Parquet needs pyarrow (pip install pyarrow); or write .csv")
    label = DEFAULT_INDEX_LABEL if frame.index.name is None else str(frame.index.name)
    if label in frame.columns:
        raise BadInput(f"the log has a column named {label!r} already, so its index cannot be written "
                       "under that name")
    named = frame.rename_axis(label)
    if not path.parent.is_dir():
        raise BadInput(f"cannot write {path}: directory {path.parent} does not exist")
    try:
        if path.suffix == ".csv":
            with atomic_write(path) as f:  # bytes: UTF-8 whatever the locale, as to_csv(path) wrote
                named.to_csv(f, encoding="utf-8")
        else:
            with atomic_write(path) as f:
                _to_parquet(named, f, path)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return label


def _to_parquet(frame: pd.DataFrame, file, path: Path) -> None:
    import pyarrow  # optional: only for Parquet output (checked above)

    # Parquet column names are text; the original's are, but check rather than let pyarrow fail.
    if not all(isinstance(name, str) for name in frame.columns):
        frame = frame.rename(columns=str)
    try:
        frame.to_parquet(file, engine="pyarrow")
    except (pyarrow.ArrowException, ValueError, TypeError) as exc:
        raise BadInput(f"cannot write {path} as Parquet ({str(exc).splitlines()[0][:120]}); "
                       "write .csv instead") from None


def port_log(old: str | os.PathLike, new: str | os.PathLike) -> PortReport:
    """Read the log ``old`` and write it as ``new`` (``.csv``/``.parquet``)."""
    old, new = Path(old), Path(new)
    if new.suffix not in TABLE_SUFFIXES:  # before reading: a typo should not cost a long read
        raise BadInput(f"{new}: the new log must end in .csv or .parquet")
    frame, kind, objects = read_log(old)
    label = write_table(frame, new)
    return PortReport(old, new, kind, len(frame), len(frame.columns), label, *_index_range(frame.index),
                      objects=objects)


def _index_range(index: pd.Index) -> tuple[object, object]:
    if not len(index):
        return None, None
    try:
        return _plain(index.min()), _plain(index.max())
    except TypeError:  # labels that do not compare (mixed types): first and last instead
        return _plain(index[0]), _plain(index[-1])


def _plain(value: object) -> object:
    """numpy scalars print as np.float64(1.5) in numpy 2; the report shows 1.5."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value

