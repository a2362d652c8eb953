"""Files that are never seen half-written, and the crash points the kill tests use.

Everything the toolkit writes for a later run to read (checkpoints, configs, summaries, log
rewrites, caches) goes through ``atomic_write``: the bytes go to a hidden temporary file in the
same directory, are synced, and the file is renamed over the target in one step. A crash at any
moment leaves either the old file or the new one, never a truncated one.

``crash_point(name)`` is a test hook, inert unless ``$MT_REPRO_CRASH_AT`` is set: with
``MT_REPRO_CRASH_AT=<name>:<n>`` the process kills itself with SIGKILL the n-th time it passes
that point, so tests can interrupt a run exactly inside a checkpoint write, a log row or an
evaluation, where random timing would rarely land.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

CRASH_ENV = "MT_REPRO_CRASH_AT"
_passes: Counter[str] = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _passes[name] += 1
    if _passes[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; on leaving the block, sync it and rename it to
    ``path``. On an exception the temporary file is removed and ``path`` is untouched.
    ``OSError`` (disk full, read-only directory) propagates for the caller to word."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        crash_point("before-rename")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)
