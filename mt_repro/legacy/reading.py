"""Old checkpoints, read without running their code.

The original ``pytorch/main.py`` saved ``{epoch, global_step, arch, state_dict, ema_state_dict,
best_prec1, optimizer}`` with ``torch.save``. Depending on the PyTorch that wrote it, the file is

* ``legacy``: the pickle stream of torch 0.1.10 to 1.5 (and of ``torch.save(...,
  _use_new_zipfile_serialization=False)`` since): five pickles (magic number, protocol version,
  system info, the object, the storage keys) followed by the raw storages. Tensors are
  ``torch._utils._rebuild_tensor`` (0.3) or ``_rebuild_tensor_v2`` (0.4+) calls on storages given
  by persistent ids ``('storage', torch.[cuda.]FloatStorage, key, location, size, view)``;
* ``zip``: the format of torch >= 1.6, the same pickle as ``<archive>/data.pkl`` beside one
  record per storage;
* ``legacy-tar``: torch <= 0.1.9 (before the original code existed). It is read only with
  ``trust=True``, by ``torch.load``.

Zip and legacy files are read by :mod:`mt_repro.core.torch_files`, our own reader (also used
for our checkpoints): it checks the container, runs the pickle once with inert stand-ins for
every global (so the globals it reports are exactly those the file imports), refuses any global
outside :data:`ALLOWED_GLOBALS`, naming it, then loads with an unpickler that can import only
those. ``trust=True`` also imports the names the first pass found, after a warning naming them.
"""
from __future__ import annotations

import sys
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import torch

from mt_repro.core import torch_files
from mt_repro.core.errors import BadInput, one_line
from mt_repro.core.limits import PICKLE_BYTES, regular_file
from mt_repro.core.torch_files import ALLOWED_GLOBALS, UnsafeCheckpoint

__all__ = ["ALLOWED_GLOBALS", "UnsafeCheckpoint", "RawCheckpoint", "read_checkpoint", "scan_globals",
           "detect_format", "FORMAT_DESCRIPTIONS"]

Warn = Callable[[str], None]

FORMAT_ZIP = torch_files.FORMAT_ZIP
FORMAT_LEGACY = torch_files.FORMAT_LEGACY
FORMAT_TAR = "legacy-tar"
FORMAT_DESCRIPTIONS = {
    FORMAT_ZIP: "zip archive (torch >= 1.6)",
    FORMAT_LEGACY: "legacy pickle stream (torch 0.1.10 to 1.5, or _use_new_zipfile_serialization=False)",
    FORMAT_TAR: "legacy tar archive (torch <= 0.1.9)",
}


@dataclass
class RawCheckpoint:
    """What the file holds, as loaded, before any normalisation."""

    obj: Any
    source: str
    format: str
    globals: list[str]            # every global the file's pickles import, in order of appearance
    trusted_globals: list[str]    # those outside ALLOWED_GLOBALS (non-empty only with trust=True)


def stderr_warning(message: str) -> None:
    print(f"mt-repro: warning: {one_line(message)}", file=sys.stderr)


def read_checkpoint(path: str | Path | IO[bytes], *, trust: bool = False,
                    warn: Warn = stderr_warning) -> RawCheckpoint:
    """Load any torch checkpoint file without executing its code (unless ``trust``).

    Every failure is :class:`BadInput` with one line: missing file, truncated or corrupt data,
    an unknown format, a container or storage that does not add up, or
    (:class:`UnsafeCheckpoint`) a global outside the allow-list.
    """
    if hasattr(path, "read"):
        return _read(path, getattr(path, "name", "<stream>"), trust, warn)
    path = Path(path)
    regular_file(path, "checkpoint")
    try:
        with torch_files.open_checkpoint(path) as f:
            return _read(f, str(path), trust, warn)
    except OSError as exc:
        raise BadInput(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None


def _read(f: IO[bytes], source: str, trust: bool, warn: Warn) -> RawCheckpoint:
    fmt = detect_format(f, source)
    if fmt == FORMAT_TAR:
        return _read_tar(f, source, trust, warn)
    loaded = torch_files.load(f, source, fmt, trust=trust, warn=warn)
    return RawCheckpoint(loaded.obj, source, fmt, loaded.globals, loaded.unsafe)


def _read_tar(f: IO[bytes], source: str, trust: bool, warn: Warn) -> RawCheckpoint:
    """torch <= 0.1.9: the globals of its ``pickle`` record are listed (by the same dry run);
    the file is loaded, by torch.load with its full pickle, only with ``trust``."""
    names = _tar_globals(f, source)
    unsafe = [name for name in dict.fromkeys(names) if name not in ALLOWED_GLOBALS]
    if unsafe and not trust:
        raise UnsafeCheckpoint(source, unsafe)
    if not trust:
        raise BadInput(f"checkpoint {source} is a {FORMAT_DESCRIPTIONS[FORMAT_TAR]}, which "
                       "PyTorch cannot read without running its pickle: refused. Only if you "
                       "trust the file: --trust")
    imports = f"; it imports {', '.join(unsafe)}" if unsafe else ""
    warn(f"--trust: loading {source} with Python's full pickle ({FORMAT_DESCRIPTIONS[FORMAT_TAR]}"
         f"{imports}). A malicious file can run any code this way; use --trust only on files you made or trust")
    f.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(f, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:  # e.g. a whole model pickled with its classes
        raise BadInput(f"checkpoint {source} needs code that is not installed here "
                       f"({short(str(exc))})") from None
    except Exception as exc:  # torch's readers raise many types on damaged files
        raise torch_files.corrupt(source, exc) from None
    return RawCheckpoint(obj, source, FORMAT_TAR, names, unsafe)


def _tar_globals(f: IO[bytes], source: str) -> list[str]:
    f.seek(0)
    try:
        with tarfile.open(fileobj=f, mode="r:") as archive:
            member = archive.getmember("pickle")
            if not member.isfile():
                raise ValueError("its pickle record is not a file")
            PICKLE_BYTES.check(member.size, f"pickle record of checkpoint {source}")
            stream = archive.extractfile(member)
            data = stream.read() if stream is not None else b""
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged tar
        raise torch_files.corrupt(source, exc) from None
    return torch_files.scan_pickle(data, source)


def detect_format(f: IO[bytes], source: str = "<stream>") -> str:
    """``zip``, ``legacy-tar`` or ``legacy`` (any other content fails later as corrupt)."""
    f.seek(0)
    head = f.read(4)
    f.seek(0)
    if not head:
        raise BadInput(f"checkpoint {source} is empty")
    if head == b"PK\x03\x04":
        return FORMAT_ZIP
    try:
        with tarfile.open(fileobj=f, mode="r:"):
            is_tar = True
    except Exception:  # noqa: BLE001 - anything that is not a readable tar is not one
        is_tar = False
    f.seek(0)
    return FORMAT_TAR if is_tar else FORMAT_LEGACY


def scan_globals(path: str | Path) -> list[str]:
    """The globals (``module.name``) a checkpoint's pickles import, in order, without loading it:
    exactly those its load would ask for (the pickle is run with inert stand-ins)."""
    regular_file(path, "checkpoint")
    with torch_files.open_checkpoint(path) as f:
        fmt = detect_format(f, str(path))
        if fmt == FORMAT_TAR:
            return _tar_globals(f, str(path))
        return torch_files.scan(f, str(path), fmt)


def short(value: Any) -> str:
    """A value's repr on one line, cut to 60 characters (error messages are one line)."""
    return " ".join(repr(value).split())[:60]


def type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


