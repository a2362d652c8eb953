"""Append-only run logs: one JSON object per line, flushed and synced per record.

A crash loses at most the record being written; a torn last line is ignored on reading and
dropped when a run resumes. The original kept its logs in memory and wrote a pandas msgpack
only every 300 s, so short runs lost rows; we keep every row.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from mt_repro.config.files import json_depth
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.fileio import atomic_write
from mt_repro.core.limits import LINE_BYTES, LOG_BYTES, NESTING, regular_file


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
    """The complete rows of a run log (none if there is no log). The file must be a regular
    file within LOG_BYTES, each line within LINE_BYTES and nested no deeper than NESTING
    (checked on the text, before json parses it: json's parser recurses)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    size = regular_file(path, "log").st_size
    LOG_BYTES.check(size, f"log {path}")
    limit = LINE_BYTES.value
    rows = []
    try:
        with open(path, "rb") as f:
            for number in itertools.count(1):
                data = f.readline(limit + 1)
                if not data:
                    break
                if len(data) > limit:
                    raise BadInput(f"log {path}: line {number} is longer than {limit:,} bytes, the limit "
                                   f"for {LINE_BYTES.what} (raise it with {LINE_BYTES.variable}=N if the "
                                   "file is genuine)")
                if not data.endswith(b"\n"):
                    break  # torn final write
                rows.append(_row(data, path, number))
    except OSError as exc:
        raise BadInput(f"{path} cannot be read: {exc.strerror or exc}") from None
    return rows


def _row(data: bytes, path: Path, number: int) -> dict[str, Any]:
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"log {path} is not a jsonl run log: line {number} is not UTF-8 text "
                       f"(byte {exc.start})") from None
    NESTING.check_depth(json_depth(line), f"log {path} is not a jsonl run log: line {number}")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInput(f"log {path} is not a jsonl run log: line {number}: {exc.msg}") from None
    except RecursionError:  # not reached after the depth check; kept as a last line
        raise BadInput(f"log {path} is not a jsonl run log: line {number} is nested too deeply") from None
    if not isinstance(row, dict):
        raise BadInput(f"log {path} is not a jsonl run log: line {number} is not an object")
    return row


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
