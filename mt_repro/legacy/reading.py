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
* ``legacy-tar``: torch <= 0.1.9 (before the original code existed). PyTorch cannot read it
  with ``weights_only=True``; it is read only with ``trust=True``.

Reading: a static scan of every pickle in the file (``pickletools.genops``, which parses and
executes nothing) lists the globals the file would import; any global outside
:data:`ALLOWED_GLOBALS` refuses the file, naming it. Then ``torch.load(weights_only=True)``
reads it, with :func:`torch.serialization.safe_globals` adding only what numpy scalars need.
PyTorch's weights-only unpickler is the security boundary (it also restricts BUILD, SETITEM and
APPEND to known types); our scan narrows its default allow-list to what Mean Teacher
checkpoints hold, names the offending global, and catches imports the unpickler would only
report as an unsupported opcode. ``trust=True`` falls back to Python's full pickle, with a
warning naming what the file imports.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import pickletools
import sys
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

from mt_repro.core.errors import BadInput

Warn = Callable[[str], None]

FORMAT_ZIP = "zip"
FORMAT_LEGACY = "legacy"
FORMAT_TAR = "legacy-tar"
FORMAT_DESCRIPTIONS = {
    FORMAT_ZIP: "zip archive (torch >= 1.6)",
    FORMAT_LEGACY: "legacy pickle stream (torch 0.1.10 to 1.5, or _use_new_zipfile_serialization=False)",
    FORMAT_TAR: "legacy tar archive (torch <= 0.1.9)",
}


_STORAGE_DTYPES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")


def _allowed_globals() -> dict[str, str]:
    allowed = {
        "collections.OrderedDict":
            "state dicts are OrderedDicts; since torch 0.4 they carry a _metadata OrderedDict",
        "torch._utils._rebuild_tensor":
            "how torch 0.1.10-0.3 pickled a tensor: (storage, offset, size, stride)",
        "torch._utils._rebuild_tensor_v2":
            "how torch >= 0.4 pickles a tensor: the same plus requires_grad and (empty) hooks",
        "torch._utils._rebuild_parameter":
            "an nn.Parameter, in state dicts saved with keep_vars=True",
        "_codecs.encode":
            "bytes under pickle protocol 2 (the raw value of a numpy scalar)",
        "numpy.core.multiarray.scalar":
            "best_prec1 saved as a numpy scalar (numpy 1.x name): a dtype and its raw bytes",
        "numpy._core.multiarray.scalar":
            "the same, as numpy >= 2 names it",
        "numpy.dtype":
            "the dtype of such a scalar",
    }
    for kind in _STORAGE_DTYPES:
        why = ("the dtype tag of a storage's persistent id: it only says how to read raw bytes "
               "that follow in the file")
        allowed[f"torch.{kind}Storage"] = why
        allowed[f"torch.cuda.{kind}Storage"] = why + " (saved from a GPU; loaded onto the CPU)"
    return allowed


ALLOWED_GLOBALS: dict[str, str] = _allowed_globals()
"""Every global a checkpoint may import, with why: nothing here runs code of the file's choice."""


def _numpy_safe_globals() -> list:
    """What ``torch.load(weights_only=True)`` needs beyond its defaults for numpy scalars."""
    core = getattr(np, "_core", None) or np.core
    entries: list = [(core.multiarray.scalar, "numpy.core.multiarray.scalar"),
                     (core.multiarray.scalar, "numpy._core.multiarray.scalar"),
                     (np.dtype, "numpy.dtype")]
    # A dtype is rebuilt by a call then a BUILD; torch allows BUILD only on allow-listed types.
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType"):
        cls = getattr(getattr(np, "dtypes", None), name, None)
        if cls is not None:
            entries.append((cls, f"numpy.dtypes.{name}"))
    return entries


class UnsafeCheckpoint(BadInput):
    """A checkpoint that imports globals outside :data:`ALLOWED_GLOBALS`."""

    def __init__(self, source: str, names: list[str]):
        self.names = names
        more = f" (and {', '.join(names[1:])})" if len(names) > 1 else ""
        super().__init__(
            f"checkpoint {source} needs {names[0]}{more}, which is not on the allow-list of what "
            "a checkpoint may hold (tensors, storages, OrderedDict, numbers, strings, numpy "
            "scalars): refused, nothing was run. Only if you trust the file: --trust")


@dataclass
class RawCheckpoint:
    """What the file holds, as loaded, before any normalisation."""

    obj: Any
    source: str
    format: str
    globals: list[str]            # every global the file's pickles import, in order of appearance
    trusted_globals: list[str]    # those outside ALLOWED_GLOBALS (non-empty only with trust=True)


def stderr_warning(message: str) -> None:
    print(f"mt-repro: warning: {message}", file=sys.stderr)


def read_checkpoint(path: str | Path | IO[bytes], *, trust: bool = False,
                    warn: Warn = stderr_warning) -> RawCheckpoint:
    """Load any torch checkpoint file without executing its code (unless ``trust``).

    Every failure is :class:`BadInput` with one line: missing file, truncated or corrupt data,
    an unknown format, or (:class:`UnsafeCheckpoint`) a global outside the allow-list.
    """
    if hasattr(path, "read"):
        return _read(path, getattr(path, "name", "<stream>"), trust, warn)
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist" if not path.exists()
                       else f"checkpoint {path} is not a file")
    try:
        with open(path, "rb") as f:
            return _read(f, str(path), trust, warn)
    except OSError as exc:
        raise BadInput(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None


def _read(f: IO[bytes], source: str, trust: bool, warn: Warn) -> RawCheckpoint:
    fmt = detect_format(f, source)
    names: list[str] = []
    try:
        with warnings.catch_warnings():  # pickletools warns about odd escapes in damaged files
            warnings.simplefilter("ignore")
            _scan_globals(f, fmt, names)
    except Exception as exc:  # parsing untrusted bytes: any failure means a broken file
        unsafe = _unsafe(names)
        if unsafe and not trust:  # e.g. a bare malicious pickle, not a torch file at all
            raise UnsafeCheckpoint(source, unsafe) from None
        raise _corrupt(source, exc) from None
    unsafe = _unsafe(names)
    if unsafe and not trust:
        raise UnsafeCheckpoint(source, unsafe)
    if fmt == FORMAT_TAR:
        if not trust:
            raise BadInput(f"checkpoint {source} is a {FORMAT_DESCRIPTIONS[FORMAT_TAR]}, which "
                           "PyTorch cannot read without running its pickle: refused. Only if you "
                           "trust the file: --trust")
        why = f" ({FORMAT_DESCRIPTIONS[FORMAT_TAR]})"
    elif unsafe:
        why = f"; it imports {', '.join(unsafe)}"
    else:
        try:
            return RawCheckpoint(_torch_load(f, full_pickle=False), source, fmt, names, [])
        except pickle.UnpicklingError as exc:
            if not trust:
                raise BadInput(f"checkpoint {source} cannot be read as plain data "
                               f"({_weights_only_reason(exc)}): it is damaged, or holds objects that "
                               "only --trust can load (use it only if you trust the file)") from None
            why = f" ({_weights_only_reason(exc)})"
        except Exception as exc:  # torch's readers raise many types on damaged files
            raise _corrupt(source, exc) from None
    warn(f"--trust: loading {source} with Python's full pickle{why}. A malicious file can run "
         "any code this way; use --trust only on files you made or trust")
    try:
        return RawCheckpoint(_torch_load(f, full_pickle=True), source, fmt, names, unsafe)
    except (ImportError, AttributeError) as exc:  # e.g. a whole model pickled with its classes
        raise BadInput(f"checkpoint {source} needs code that is not installed here "
                       f"({short(str(exc))})") from None
    except Exception as exc:
        raise _corrupt(source, exc) from None


def _unsafe(names: list[str]) -> list[str]:
    return [name for name in dict.fromkeys(names) if name not in ALLOWED_GLOBALS]


def _torch_load(f: IO[bytes], full_pickle: bool) -> Any:
    f.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if full_pickle:
            return torch.load(f, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(f, map_location="cpu", weights_only=True)


def _corrupt(source: str, exc: BaseException) -> BadInput:
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return BadInput(f"checkpoint {source} is corrupt or truncated ({line[:160]})")


def _weights_only_reason(exc: BaseException) -> str:
    """The unpickler's own complaint, from inside torch's long multi-line message."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Check the documentation" not in ln]
    return (lines[0] if lines else type(exc).__name__)[:200]


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
    """The globals (``module.name``) a checkpoint's pickles import, without loading it."""
    found: list[str] = []
    with open(path, "rb") as f:
        _scan_globals(f, detect_format(f, str(path)), found)
    return found


def _scan_globals(f: IO[bytes], fmt: str, found: list[str]) -> None:
    """Append to ``found`` the globals of every pickle in the file, as far as it can be parsed."""
    f.seek(0)
    if fmt == FORMAT_ZIP:
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if not names or len(set(names)) != len(names):
                raise ValueError("not an archive written by torch.save (empty or duplicate records)")
            record = names[0].split("/", 1)[0] + "/data.pkl"
            info = archive.getinfo(record)  # KeyError: not a torch.save archive
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError("compressed records: not an archive written by torch.save")
            with archive.open(info) as stream:
                _pickle_globals(stream, found)
            return
    if fmt == FORMAT_TAR:
        with tarfile.open(fileobj=f, mode="r:") as archive:
            member = archive.extractfile("pickle")
            if member is None:
                raise ValueError("no pickle record in the tar archive")
            _pickle_globals(member, found)
            return
    for _ in range(5):  # magic number, protocol version, sys info, the object, storage keys
        _pickle_globals(f, found)


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "BINUNICODE8"}
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _pickle_globals(stream: IO[bytes], found: list[str]) -> None:
    """Append the globals imported by one pickle (up to its STOP), by every importing opcode.

    (EXT1/2/4 import only what ``copyreg.add_extension`` registered in this process, which we
    never do; they, OBJ and every opcode of protocols > 2 are refused by the unpickler.)
    """
    strings: list[str] = []
    memo: dict[int, str] = {}
    memo_next = 0
    last = None
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            found.append(_mapped_name(module, attr))
        elif name == "STACK_GLOBAL":
            found.append(_mapped_name(*strings[-2:]) if len(strings) >= 2 else "<STACK_GLOBAL import>")
        elif name in _STRING_OPS:
            strings.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
        elif name in _MEMO_OPS or name == "MEMOIZE":
            index = memo_next if name == "MEMOIZE" else arg
            if last in _STRING_OPS and strings:
                memo[index] = strings[-1]
            memo_next = max(memo_next, index + 1)
        elif name in ("GET", "BINGET", "LONG_BINGET") and arg in memo:
            strings.append(memo[arg])
        last = name


def _mapped_name(module: str, attr: str) -> str:
    """``module.attr`` as Python's unpickler resolves it: protocol 0-2 pickles use Python 2
    names (``__builtin__.exec``, and Python 3 writes ``subprocess.Popen`` as ``commands.Popen``)."""
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"




def short(value: Any) -> str:
    """A value's repr on one line, cut to 60 characters (error messages are one line)."""
    return " ".join(repr(value).split())[:60]


def type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


