"""Append-only run logs: one JSON object per line, flushed and synced per record.

A crash loses at most the record being written; a torn last line is ignored on reading and
dropped when a run resumes. The original kept its logs in memory and wrote a pandas msgpack
only every 300 s, so short runs lost rows; we keep every row.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.fileio import atomic_write


class RunLog:
    def __init__(self, path: str | os.PathLike, index: str = "epoch"):
        self.path = Path(path)
        self.index = index
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, index_value: float, values: dict[str, Any]) -> None:
        row = {self.index: index_value, **values}
        line = json.dumps(row, default=_jsonable, allow_nan=True) + "\n"
        try:
            with open(self.path, "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise RunFailed(f"cannot append to {self.path}: {exc.strerror or exc}; "
                            "the last checkpoint is intact, continue with --resume") from None

    def rows(self) -> list[dict[str, Any]]:
        return read_rows(self.path)

    def truncate(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Keep only the complete rows for which ``keep`` is true (atomic rewrite); return the count."""
        rows = [row for row in self.rows() if keep(row)]
        try:
            with atomic_write(self.path, "w") as f:
                f.writelines(json.dumps(row, allow_nan=True) + "\n" for row in rows)
        except OSError as exc:
            raise RunFailed(f"cannot rewrite {self.path}: {exc.strerror or exc}") from None
        return len(rows)


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break  # torn final write
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadInput(f"log {path} is not a jsonl run log: line {number}: {exc.msg}") from None
                if not isinstance(row, dict):
                    raise BadInput(f"log {path} is not a jsonl run log: line {number} is not an object")
                rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} cannot be read: {exc}") from None
    return rows


def read_runlog(path: str | os.PathLike, index: str = "epoch") -> pd.DataFrame:
    """A log as the original's DataFrame: indexed by (fractional) epoch, one column per value."""
    rows = read_rows(path)
    frame = pd.DataFrame(rows)
    if index in frame:
        frame = frame.set_index(index)
    return frame


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"cannot log {type(value).__name__}")
