"""What a data file or directory holds, as one string: a run records it when it starts, so that
a later ``--resume --data PATH`` can tell the same data (moved, copied) from other data.

``content_hash(path)`` is ``sha256:<hex>`` over a file's bytes, or over a directory's files in
sorted order of their relative names (each name, its size and its bytes, so that moving bytes
from one file to the next changes the hash). Reading is streamed. A directory whose files add
up to more than ``ARCHIVE_BYTES`` (the largest dataset archive we accept, 4 GiB by default;
ImageNet's tree is 150 GB) is hashed over its names and sizes alone, ``sha256-listing:<hex>``:
reading it all would take longer than many runs. Hashes are remembered for the process while a
file's size and modification time are unchanged, so a grid of runs on the same data reads it once.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import ARCHIVE_BYTES, regular_file

CHUNK = 1 << 20
CONTENT, LISTING = "sha256", "sha256-listing"

_known: dict[tuple, str] = {}   # (path, stat signature of what was hashed) -> hash


def content_hash(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` (or, for a directory over ``ARCHIVE_BYTES``, ``sha256-listing:<hex>``)
    of ``path``; ``BadInput`` naming the path when it cannot be read."""
    path = Path(path)
    try:
        if path.is_dir():
            files = _files_of(path)
            signature = tuple((name, info.st_size, info.st_mtime_ns) for name, _, info in files)
            key = (str(path.resolve()), signature)
            if key not in _known:
                _known[key] = _directory_hash(files)
        else:
            info = regular_file(path, "data")   # a FIFO or a device would never end
            key = (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)
            if key not in _known:
                digest = hashlib.sha256()
                _update_with_file(digest, path)
                _known[key] = f"{CONTENT}:{digest.hexdigest()}"
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    return _known[key]


def _files_of(directory: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(relative POSIX name, path, stat) of every regular file under ``directory``, sorted by
    name; links to files count as the files they name, links to directories are not followed
    (a link cycle would never end)."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in names:
            path = Path(root) / name
            try:
                info = path.stat()
            except OSError:
                continue   # a dangling link holds no data
            if os.path.isfile(path):
                found.append((path.relative_to(directory).as_posix(), path, info))
    return sorted(found, key=lambda item: item[0])


def _directory_hash(files: list[tuple[str, Path, os.stat_result]]) -> str:
    total = sum(info.st_size for _, _, info in files)
    whole = total <= ARCHIVE_BYTES.value
    digest = hashlib.sha256()
    for name, path, info in files:
        encoded = name.encode("utf-8", "surrogateescape")
        digest.update(len(encoded).to_bytes(8, "little") + encoded + info.st_size.to_bytes(8, "little"))
        if whole:
            _update_with_file(digest, path)
    return f"{CONTENT if whole else LISTING}:{digest.hexdigest()}"


def _update_with_file(digest, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
