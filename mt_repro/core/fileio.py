"""Files that are never seen half-written.

Everything the toolkit writes for a later run or reader (checkpoints, configs, summaries, log
rewrites, converted logs, caches, patched sources) goes through ``atomic_write``: the bytes go
to a hidden temporary file in the same directory, are synced, and the file is renamed over the
target in one step. A crash at any moment leaves either the old file or the new one, never a
truncated one, and no temporary file survives an exception. The file gets the permissions
``open`` would have given it: a new file ``0o666`` less the process's umask, a replaced one its
former permissions.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

TEMPORARY_SUFFIX = ".partial"


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, mode_from: str | os.PathLike | None = None,
                 newline: str | None = None, sync: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on leaving the block, sync it (unless
    ``sync`` is false: then a killed process still leaves no half file, only a power loss could)
    and rename it to ``path`` with the permission bits of ``mode_from`` if given, else those of
    the file it replaces, else ``0o666`` less the umask (as ``open`` creates files). On an
    exception the temporary file is removed and ``path`` is untouched. ``OSError`` (disk full,
    read-only directory) propagates for the caller to word."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": newline})) as f:
            with _ignored(OSError):  # file systems without permissions (FAT) refuse
                os.fchmod(f.fileno(), _permissions_for(path))
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if mode_from is not None:
            os.chmod(temporary, os.stat(mode_from).st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        with _ignored(OSError):
            os.unlink(temporary)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux:
    ``/proc/self/status``); elsewhere set and restored at once, which another thread creating a
    file at that instant could notice."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _permissions_for(path: Path) -> int:
    """What ``open(path, "w")`` would leave: the replaced file's permissions, or a new file's."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o666 & ~current_umask()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, mode_from: str | os.PathLike | None = None) -> None:
    with atomic_write(path, mode_from=mode_from) as f:
        f.write(data)


def link_atomic(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Make ``destination`` the same file as ``source`` (a hard link, a copy where links fail),
    replacing any previous file in one rename."""
    destination = Path(destination)
    fd, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=TEMPORARY_SUFFIX,
                                     dir=destination.parent)
    os.close(fd)
    try:
        os.unlink(temporary)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    except BaseException:
        with _ignored(OSError):
            os.unlink(temporary)
        raise


@contextmanager
def _ignored(*kinds: type[BaseException]):
    try:
        yield
    except kinds:
        pass
