"""What a reader of an untrusted file will accept, decided before it allocates.

Every reader of a file that may come from elsewhere (tarballs, batch pickles, ``.mat`` files,
msgpack and jsonl logs, TOML and JSON configs, label files, images, checkpoints, legacy sources)
takes its budget from here: a file must be a regular file, its declared sizes are checked
against a limit before anything of that size is allocated, and nested structures, columns and
lines are bounded. Each limit has a name, a default chosen well above what any real file of the
kind needs, and an environment variable that raises it (``MT_REPRO_LIMIT_<NAME>``, in bytes or
a count) for the rare real file that exceeds it; the error names that variable.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mt_repro.core.errors import BadInput

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Limit:
    name: str
    default: int
    what: str  # what it bounds, for the documentation and the error

    @property
    def variable(self) -> str:
        return f"MT_REPRO_LIMIT_{self.name.upper()}"

    @property
    def value(self) -> int:
        """The default, or the environment's override (read on every use, so tests and users can
        change it without restarting)."""
        text = os.environ.get(self.variable)
        if text is None:
            return self.default
        try:
            value = int(text)
        except ValueError:
            raise BadInput(f"{self.variable}={text!r} is not a whole number") from None
        if value <= 0:
            raise BadInput(f"{self.variable}={text!r} must be positive")
        return value

    def check(self, amount: int, subject: str) -> None:
        """Refuse ``amount`` above the limit: ``subject`` is what declared it ("tar member x")."""
        if amount > self.value:
            raise BadInput(f"{subject} declares {_amount(amount, self)}, more than the limit of "
                           f"{_amount(self.value, self)} for {self.what} (raise it with "
                           f"{self.variable}=N if the file is genuine)")

    def check_depth(self, depth: int, subject: str) -> None:
        """Refuse a nesting ``depth`` above the limit (a depth limit: NESTING, SOURCE_NESTING)."""
        if depth > self.value:
            raise BadInput(f"{subject} is nested more than {self.value} levels deep: refused "
                           f"(raise the limit with {self.variable}=N if the file is genuine)")


def _amount(value: int, limit: Limit) -> str:
    if not limit.name.endswith("bytes"):
        return f"{value:,}"
    for unit, size in (("GiB", GiB), ("MiB", MiB)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:,} bytes"


# Sizes of whole files and of what they decompress to.
ARCHIVE_BYTES = Limit("archive_bytes", 4 * GiB,
                      "the decompressed contents of a dataset archive (CIFAR-10's is 178 MiB)")
MEMBER_BYTES = Limit("member_bytes", 4 * GiB,
                     "one member of an archive, or one array of a data file (SVHN's extra images are 1.5 GiB)")
CHECKPOINT_BYTES = Limit("checkpoint_bytes", 8 * GiB, "a checkpoint's tensors")
PICKLE_BYTES = Limit("pickle_bytes", 256 * MiB, "the pickled structure of a checkpoint (not its tensors)")
TEXT_FILE_BYTES = Limit("text_file_bytes", 64 * MiB, "a text file: a label file, a config")
SOURCE_BYTES = Limit("source_bytes", 2 * MiB,
                     "one legacy source file (the original's largest is under 20 KB; the rewriter's syntax "
                     "trees take far more memory and time than the text)")
LOG_BYTES = Limit("log_bytes", 2 * GiB, "a training log (msgpack or jsonl)")
IMAGE_PIXELS = Limit("image_pixels", 64 * MiB, "the pixels of one image")
# Shapes of what those files hold.
NESTING = Limit("nesting", 64, "the nesting depth of a config, a log row or a checkpoint's extras")
COLUMNS = Limit("columns", 10_000, "the columns of one log frame")
LINE_BYTES = Limit("line_bytes", 1 * MiB, "one line of a text file or a jsonl log")
SOURCE_NESTING = Limit("source_nesting", 200, "the depth of a legacy source file's syntax tree")
ITEMS = Limit("items", 50_000_000, "the entries of one container in a log or a checkpoint")
LOG_STRUCTURE_BYTES = Limit("log_structure_bytes", 128 * MiB,
                            "the maps, arrays and text msgpack builds for one object of a log")

LIMITS: tuple[Limit, ...] = (ARCHIVE_BYTES, MEMBER_BYTES, CHECKPOINT_BYTES, PICKLE_BYTES, TEXT_FILE_BYTES,
                             SOURCE_BYTES, LOG_BYTES, LOG_STRUCTURE_BYTES, IMAGE_PIXELS, NESTING, SOURCE_NESTING,
                             COLUMNS, LINE_BYTES, ITEMS)
"""Every limit, for the README's table and the tests."""


def regular_file(path: str | os.PathLike, what: str) -> os.stat_result:
    """The ``stat`` of ``path`` if it is a regular file (after following links); otherwise one
    line naming what it is. A FIFO would block forever, ``/dev/zero`` never ends."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"{what} {path} is {_file_kind(info.st_mode)}, not a regular file: refused")
    return info


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def read_bytes(path: str | os.PathLike, what: str, limit: Limit = TEXT_FILE_BYTES) -> bytes:
    """The whole of a regular file no larger than ``limit``; never reads more than the limit
    even if the file grows while it is read."""
    info = regular_file(path, what)
    limit.check(info.st_size, f"{what} {path}")
    try:
        with open(path, "rb") as f:
            data = f.read(limit.value + 1)
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    limit.check(len(data), f"{what} {path}")
    return data


def read_text(path: str | os.PathLike, what: str, limit: Limit = TEXT_FILE_BYTES) -> str:
    """A UTF-8 text file, bounded as :func:`read_bytes`; undecodable bytes are one line."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} {path} cannot be read as UTF-8 text (byte {exc.start})") from None


def check_nesting(value: Any, subject: str, limit: Limit = NESTING) -> None:
    """Refuse containers (dict, list, tuple, set) nested deeper than ``limit``, walked without
    recursion, so that no later recursive walk (json, repr, our normalisation) can overflow."""
    bound = limit.value
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values()) + list(item.keys())
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(item)
        else:
            continue
        if id(item) in seen:  # a structure that contains itself is refused by its depth below
            continue
        seen.add(id(item))
        if depth + 1 > bound:
            limit.check_depth(depth + 1, subject)
        stack.extend((child, depth + 1) for child in children)
