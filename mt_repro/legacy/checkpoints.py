"""Old checkpoints, read without running their code, and brought into our format.

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

What old files hold that ours do not, and how :func:`normalize` brings it into our layout
without losing a value: ``best_prec1`` as a Python float (0.3), a 0-dim or 1-element tensor
(0.4+) or a numpy scalar becomes a float (a widening conversion, exact); optimizer states keyed
by ``id(param)`` (0.3) are re-keyed by parameter index as torch >= 0.4 does (the mapping is the
order of ``param_groups``, which is how ``Optimizer.load_state_dict`` pairs them anyway);
state-dict keys get the ``module.`` prefix DataParallel gave them; BatchNorm layers saved before
torch 0.4.1 lack ``num_batches_tracked``, which is added as 0 when porting (what
``BatchNorm._load_from_state_dict`` does; it only matters with ``momentum=None``); any other
top-level key is kept under ``mt_repro.legacy_extras``.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import pickletools
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

from mt_repro import __version__
from mt_repro.engine import checkpoint as ckpt
from mt_repro.errors import BadInput, RunFailed

Warn = Callable[[str], None]

FORMAT_ZIP = "zip"
FORMAT_LEGACY = "legacy"
FORMAT_TAR = "legacy-tar"
FORMAT_DESCRIPTIONS = {
    FORMAT_ZIP: "zip archive (torch >= 1.6)",
    FORMAT_LEGACY: "legacy pickle stream (torch 0.1.10 to 1.5, or _use_new_zipfile_serialization=False)",
    FORMAT_TAR: "legacy tar archive (torch <= 0.1.9)",
}

ORIGINAL_KEYS = ("epoch", "global_step", "arch", "state_dict", "ema_state_dict", "best_prec1", "optimizer")
STATE_DICTS = ("state_dict", "ema_state_dict")
EXTRAS_KEY = "mt_repro"
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

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


# --- reading ------------------------------------------------------------------------------
@dataclass
class RawCheckpoint:
    """What the file holds, as loaded, before any normalisation."""

    obj: Any
    source: str
    format: str
    globals: list[str]            # every global the file's pickles import, in order of appearance
    trusted_globals: list[str]    # those outside ALLOWED_GLOBALS (non-empty only with trust=True)


def _stderr_warning(message: str) -> None:
    print(f"mt-repro: warning: {message}", file=sys.stderr)


def read_checkpoint(path: str | Path | IO[bytes], *, trust: bool = False,
                    warn: Warn = _stderr_warning) -> RawCheckpoint:
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
                       f"({_short(str(exc))})") from None
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


# --- normalising --------------------------------------------------------------------------
@dataclass
class Normalized:
    """A checkpoint in our layout (``state``), and what was changed to get there (``notes``)."""

    state: dict[str, Any]
    raw: RawCheckpoint
    notes: list[str] = field(default_factory=list)
    best_prec1_stored_as: str | None = None


def normalize(raw: RawCheckpoint) -> Normalized:
    """Our checkpoint dict from any original-layout checkpoint (see the module docstring)."""
    try:
        return _normalize(raw)
    except BadInput:
        raise
    except Exception as exc:  # a layout no torch wrote, e.g. nesting deep enough to recurse
        raise BadInput(f"checkpoint {raw.source} has an unexpected layout ({type(exc).__name__}: "
                       f"{_short(str(exc))})") from None


def load_any_checkpoint(path: str | Path, *, trust: bool = False,
                        warn: Warn = _stderr_warning) -> dict[str, Any]:
    """Any Mean Teacher checkpoint (torch 0.3 to today, ours included) as our checkpoint dict."""
    return normalize(read_checkpoint(path, trust=trust, warn=warn)).state


def _normalize(raw: RawCheckpoint) -> Normalized:
    obj, source = raw.obj, raw.source
    if not isinstance(obj, Mapping):
        raise BadInput(f"checkpoint {source} holds a {_type_name(obj)}, not a checkpoint dict")
    if all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
        raise BadInput(f"checkpoint {source} is a bare state dict ({len(obj)} tensors), not a Mean "
                       "Teacher checkpoint: it has no ema_state_dict (the teacher's weights)")
    for key in STATE_DICTS:
        if key not in obj:
            what = "the teacher's weights" if key == "ema_state_dict" else "the student's weights"
            present = ", ".join(map(str, list(obj)[:10])) or "nothing"
            raise BadInput(f"checkpoint {source} has no {key} ({what}); it holds {present}")
    result = Normalized({}, raw)
    state = result.state
    for key in ("epoch", "global_step"):
        if key in obj:
            state[key] = _integer(obj[key], f"{source}: {key}")
    if obj.get("arch") is not None:
        if not isinstance(obj["arch"], str):
            raise BadInput(f"checkpoint {source}: arch is a {_type_name(obj['arch'])}, not a name")
        state["arch"] = obj["arch"]
    for key in STATE_DICTS:
        state[key] = _state_dict(obj[key], key, source, result.notes)
    if "best_prec1" in obj:
        state["best_prec1"], result.best_prec1_stored_as = _best_prec1(obj["best_prec1"], source)
    if obj.get("optimizer") is not None:
        state["optimizer"] = _optimizer(obj["optimizer"], source, result.notes)
    extras = {k: v for k, v in obj.items() if k not in ORIGINAL_KEYS and k != EXTRAS_KEY}
    ours = obj.get(EXTRAS_KEY)
    mt_extras: dict[str, Any] = dict(ours) if isinstance(ours, Mapping) else {}
    if ours is not None and not isinstance(ours, Mapping):
        extras[EXTRAS_KEY] = ours
    mt_extras.setdefault("version", __version__)
    if extras:
        mt_extras["legacy_extras"] = {str(k): _plain(v, str(k), result.notes) for k, v in extras.items()}
        result.notes.append(f"kept {', '.join(map(str, extras))} under {EXTRAS_KEY}.legacy_extras")
    state[EXTRAS_KEY] = mt_extras
    return result


def _short(value: Any) -> str:
    """A value's repr on one line, cut to 60 characters (error messages are one line)."""
    return " ".join(repr(value).split())[:60]


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _integer(value: Any, where: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise BadInput(f"checkpoint {where} is {_short(value)}, not an integer")


def _best_prec1(value: Any, source: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise BadInput(f"checkpoint {source}: best_prec1 is a bool, not a number")
    if isinstance(value, (np.floating, np.integer)):  # before float: np.float64 is a float
        return float(value), f"a numpy {type(value).__name__} scalar"
    if isinstance(value, (int, float)):
        return float(value), f"a Python {type(value).__name__}"
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        shape = "0-dim" if value.dim() == 0 else f"{list(value.shape)}"
        return float(value.item()), f"a {shape} tensor ({str(value.dtype).replace('torch.', '')})"
    raise BadInput(f"checkpoint {source}: best_prec1 is {_type_name(value)}"
                   f"{' of shape ' + str(list(value.shape)) if hasattr(value, 'shape') else ''}, "
                   "expected a number")


def _state_dict(value: Any, key: str, source: str, notes: list[str]) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping):
        raise BadInput(f"checkpoint {source}: {key} is a {_type_name(value)}, not a state dict")
    result: dict[str, torch.Tensor] = {}
    added = 0
    for name, tensor in value.items():
        if not isinstance(name, str):
            raise BadInput(f"checkpoint {source}: {key} has a key {_short(name)} that is not a name")
        if not isinstance(tensor, torch.Tensor):
            raise BadInput(f"checkpoint {source}: {key}: {name} is a {_type_name(tensor)}, not a tensor")
        if not name.startswith(ckpt.PREFIX):
            name = ckpt.PREFIX + name
            added += 1
        if name in result:
            raise BadInput(f"checkpoint {source}: {key} has {name[len(ckpt.PREFIX):]} both with "
                           f"and without the {ckpt.PREFIX!r} prefix")
        result[name] = tensor.detach() if isinstance(tensor, torch.nn.Parameter) else tensor
    if added:
        notes.append(f"{key}: added the {ckpt.PREFIX!r} prefix to {added} of {len(result)} keys")
    return result


def _optimizer(value: Any, source: str, notes: list[str]) -> dict[str, Any]:
    where = f"checkpoint {source}: optimizer"
    if not isinstance(value, Mapping) or not isinstance(value.get("param_groups"), list) \
            or not isinstance(value.get("state", {}), Mapping):
        raise BadInput(f"{where} is not an optimizer state dict (state, param_groups)")
    groups, index = [], {}
    for number, group in enumerate(value["param_groups"]):
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):
            raise BadInput(f"{where}: param group {number} has no list of params")
        ids = []
        for pid in group["params"]:
            if not isinstance(pid, int) or isinstance(pid, bool) or pid in index:
                raise BadInput(f"{where}: param group {number} lists {_short(pid)}, which is not "
                               "a parameter id or appears twice")
            index[pid] = len(index)
            ids.append(index[pid])
        groups.append({**_plain(dict(group), "optimizer", notes), "params": ids})
    state = {}
    for pid, values in value.get("state", {}).items():
        if pid not in index:
            raise BadInput(f"{where}: state for parameter id {_short(pid)} that no param group lists")
        state[index[pid]] = _plain(values, "optimizer state", notes)
    if any(pid != i for i, pid in enumerate(index)):
        notes.append("optimizer: parameters re-keyed from id(param) (torch 0.3) to their index, "
                     "in param_groups order")
    return {"state": state, "param_groups": groups}


def _plain(value: Any, where: str, notes: list[str]) -> Any:
    """A value our checkpoints can hold (loadable with weights_only): tensors, numbers, strings,
    containers. Objects (e.g. an ``argparse.Namespace``, only with trust) become their fields."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach() if isinstance(value, torch.nn.Parameter) else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value)) if value.dtype.kind in "biuf" else value.tolist()
    if isinstance(value, Mapping):
        return {_plain(k, where, notes): _plain(v, where, notes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, where, notes) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (set, frozenset)):
        return [_plain(v, where, notes) for v in value]
    if hasattr(value, "__dict__"):
        notes.append(f"{where}: kept the fields of {_type_name(value)} as a dict")
        return _plain(dict(vars(value)), where, notes)
    notes.append(f"{where}: kept {_type_name(value)} as its text")
    return repr(value)


# --- porting ------------------------------------------------------------------------------
@dataclass
class PortReport:
    source: str
    destination: str
    format: str
    arch: str
    arch_from: str
    num_classes: int
    epoch: int
    global_step: int
    best_prec1: float | None
    best_prec1_stored_as: str | None
    tensors: dict[str, int]
    optimizer: str | None
    trusted_globals: list[str]
    notes: list[str]

    def lines(self) -> list[str]:
        best = ("absent" if self.best_prec1 is None
                else f"{self.best_prec1!r} (stored as {self.best_prec1_stored_as})")
        out = [f"ported {self.source} -> {self.destination}",
               f"  format          {FORMAT_DESCRIPTIONS[self.format]}",
               f"  arch            {self.arch} ({self.arch_from}), {self.num_classes} classes",
               f"  epoch           {self.epoch}",
               f"  global_step     {self.global_step}",
               f"  best_prec1      {best}"]
        for key, count in self.tensors.items():
            out.append(f"  {key:<15} {count} tensors ported")
        out.append(f"  optimizer state {'yes: ' + self.optimizer if self.optimizer else 'no'}")
        if self.trusted_globals:
            out.append(f"  trusted         {', '.join(self.trusted_globals)}")
        out += [f"  note: {note}" for note in self.notes]
        return out


def port_checkpoint(old: str | Path, new: str | Path, *, arch: str | None = None,
                    num_classes: int | None = None, trust: bool = False,
                    warn: Warn = _stderr_warning) -> PortReport:
    """Read ``old`` (any torch since 0.1.10), check it against ``arch``, write ours to ``new``."""
    normalized = normalize(read_checkpoint(old, trust=trust, warn=warn))
    state, notes = normalized.state, normalized.notes
    for key in ("epoch", "global_step"):
        if key not in state:
            raise BadInput(f"checkpoint {old} has no {key}; our checkpoints need it to resume")
    arch, arch_from = _resolve_arch(state, arch, str(old))
    num_classes = _resolve_num_classes(state, num_classes, str(old))
    model = _meta_model(arch, num_classes)
    expected = model.state_dict()
    for key in STATE_DICTS:
        added = complete_and_verify(state[key], expected, key, arch)
        if added:
            notes.append(f"{key}: added {added} BatchNorm num_batches_tracked counters (0), which "
                         "torch < 0.4.1 did not save")
    optimizer = None
    if "optimizer" in state:
        optimizer = verify_optimizer(state["optimizer"], model, arch)
    state["arch"] = arch
    state[EXTRAS_KEY]["ported_from"] = {"file": str(old), "format": normalized.raw.format,
                                        "trusted_globals": list(normalized.raw.trusted_globals)}
    try:
        ckpt.save_atomic(state, new)
    except RunFailed as exc:  # an unwritable destination is the user's input here
        raise BadInput(str(exc)) from None
    return PortReport(
        source=str(old), destination=str(new), format=normalized.raw.format, arch=arch,
        arch_from=arch_from, num_classes=num_classes, epoch=state["epoch"],
        global_step=state["global_step"], best_prec1=state.get("best_prec1"),
        best_prec1_stored_as=normalized.best_prec1_stored_as,
        tensors={key: len(state[key]) for key in STATE_DICTS}, optimizer=optimizer,
        trusted_globals=list(normalized.raw.trusted_globals), notes=notes)


def _resolve_arch(state: dict[str, Any], arch: str | None, source: str) -> tuple[str, str]:
    from mt_repro import models

    stored = state.get("arch")
    if arch is None:
        if stored is None:
            raise BadInput(f"checkpoint {source} does not say its architecture: pass --arch "
                           f"(one of {', '.join(models.available())})")
        arch, arch_from = stored, "from the checkpoint"
    else:
        arch_from = "given" if stored in (None, arch) else f"given; the checkpoint says {stored}"
    if arch not in models.available():
        raise BadInput(f"unknown architecture {arch!r}; choose one of {', '.join(models.available())}")
    return arch, arch_from


def _resolve_num_classes(state: dict[str, Any], num_classes: int | None, source: str) -> int:
    if num_classes is not None:
        if num_classes <= 0:
            raise BadInput(f"--num-classes must be positive, got {num_classes}")
        return num_classes
    head = state["state_dict"].get(ckpt.PREFIX + "fc1.weight")
    if head is None or head.dim() != 2:
        raise BadInput(f"checkpoint {source}: cannot tell the number of classes (no 2-d "
                       "fc1.weight); pass --num-classes")
    return int(head.shape[0])


def _meta_model(arch: str, num_classes: int) -> torch.nn.Module:
    """The architecture's shapes, without allocating weights or drawing random numbers."""
    from mt_repro import models

    with torch.device("meta"):
        return models.create_model(arch, num_classes)


def _shape(shape) -> str:
    return str(list(shape))


def complete_and_verify(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        key: str, arch: str) -> int:
    """Check a ``module.``-prefixed state dict against a model's, in the model's order.

    Adds the ``num_batches_tracked`` counters torch < 0.4.1 did not save (returns how many);
    raises ``BadInput`` naming the first missing or unexpected key or shape mismatch.
    """
    added = 0
    for name, reference in expected.items():
        tensor = state.get(ckpt.PREFIX + name)
        if tensor is None:
            if name.endswith(".num_batches_tracked"):
                state[ckpt.PREFIX + name] = torch.tensor(0, dtype=torch.long)
                added += 1
                continue
            raise BadInput(f"{key}: {name} is missing; {arch} expects it with shape {_shape(reference.shape)}")
        if tensor.shape != reference.shape:
            raise BadInput(f"{key}: {name} has shape {_shape(tensor.shape)}, "
                           f"{arch} expects {_shape(reference.shape)}")
        if tensor.is_floating_point() != reference.is_floating_point():
            raise BadInput(f"{key}: {name} holds {tensor.dtype}, {arch} expects {reference.dtype}")
    for name, tensor in state.items():
        if name[len(ckpt.PREFIX):] not in expected:
            raise BadInput(f"{key}: unexpected {name[len(ckpt.PREFIX):]} (shape "
                           f"{_shape(tensor.shape)}), which {arch} does not have")
    return added


def verify_optimizer(optimizer: dict[str, Any], model: torch.nn.Module, arch: str) -> str:
    """Check param count and per-parameter state shapes against ``model``; a one-line summary."""
    params = list(model.named_parameters())
    ids = [pid for group in optimizer["param_groups"] for pid in group["params"]]
    if len(ids) != len(params):
        raise BadInput(f"optimizer: its param groups list {len(ids)} parameters, {arch} has {len(params)}")
    kinds: set[str] = set()
    for pid, (name, param) in zip(ids, params):
        for kind, value in optimizer["state"].get(pid, {}).items():
            kinds.add(str(kind))
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise BadInput(f"optimizer: {kind} of parameter {pid} ({name}) has shape "
                               f"{_shape(value.shape)}, {arch} expects {_shape(param.shape)}")
    groups = len(optimizer["param_groups"])
    return (f"{groups} param group{'s' if groups != 1 else ''}, state for "
            f"{len(optimizer['state'])} of {len(ids)} parameters"
            f"{' (' + ', '.join(sorted(kinds)) + ')' if kinds else ''}")


def load_models(state: dict[str, Any], arch: str, num_classes: int,
                device: torch.device | str = "cpu") -> tuple[torch.nn.Module, torch.nn.Module]:
    """Student and teacher of ``arch`` holding a normalised checkpoint's weights, in eval mode."""
    built = []
    for key in STATE_DICTS:
        model = _meta_model(arch, num_classes)
        complete_and_verify(state[key], model.state_dict(), key, arch)
        model = model.to_empty(device=device)
        model.load_state_dict(ckpt.without_prefix(state[key]))
        built.append(model.eval())
    return built[0], built[1]


# --- inspecting ---------------------------------------------------------------------------
LOG_SUFFIXES = (".msgpack", ".jsonl")


def inspect_file(path: str | Path, *, trust: bool = False, warn: Warn = _stderr_warning) -> list[str]:
    """What a checkpoint or run log holds, as lines of text; builds no model."""
    path = Path(path)
    if path.suffix in LOG_SUFFIXES:
        return describe_log(path)
    raw = read_checkpoint(path, trust=trust, warn=warn)
    try:
        return describe_checkpoint(raw)
    except Exception as exc:  # a layout no torch wrote
        raise BadInput(f"checkpoint {path} has an unexpected layout ({type(exc).__name__}: "
                       f"{_short(str(exc))})") from None


def describe_log(path: Path) -> list[str]:
    if not path.is_file():
        raise BadInput(f"log {path} does not exist")
    if path.suffix == ".msgpack":
        from mt_repro.logs.pandas_msgpack import read_legacy_log

        frame, kind = read_legacy_log(path), "legacy pandas msgpack log (the original's)"
    else:
        from mt_repro.logs.runlog import read_runlog

        try:
            frame = read_runlog(path)
        except (ValueError, OSError) as exc:
            raise BadInput(f"log {path} cannot be read: {str(exc).splitlines()[0][:160]}") from None
        kind = "run log (mt-repro jsonl)"
    lines = [f"{path}: {kind}", f"  rows            {len(frame)}",
             f"  columns         {len(frame.columns)}: {', '.join(map(str, frame.columns))}"]
    if len(frame):
        lines.append(f"  index           {frame.index.name or '(unnamed)'} from {frame.index.min()} "
                     f"to {frame.index.max()}")
    return lines


def _count(n: int) -> str:
    return f"{n:,}"


def describe_checkpoint(raw: RawCheckpoint) -> list[str]:
    obj = raw.obj
    lines = [f"{raw.source}: checkpoint, {FORMAT_DESCRIPTIONS[raw.format]}"]
    if raw.trusted_globals:
        lines.append(f"  trusted         {', '.join(raw.trusted_globals)} (loaded with --trust)")
    if not isinstance(obj, Mapping):
        return lines + [f"  holds           a {_type_name(obj)}"]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return lines + ["  holds           a bare state dict", *_describe_state_dict("tensors", obj)]
    lines.append(f"  keys            {', '.join(map(str, obj))}")
    for key in ("arch", "epoch", "global_step"):
        if key in obj:
            lines.append(f"  {key:<15} {_scalar_text(obj[key])}")
    if "best_prec1" in obj:
        value = obj["best_prec1"]
        try:
            number, stored = _best_prec1(value, raw.source)
            lines.append(f"  best_prec1      {number!r} (stored as {stored})")
        except BadInput:
            lines.append(f"  best_prec1      {_type_name(value)} (not a number)")
    for key in STATE_DICTS:
        if key in obj:
            if isinstance(obj[key], Mapping):
                lines += _describe_state_dict(key, obj[key])
            else:
                lines.append(f"  {key:<15} a {_type_name(obj[key])}, not a state dict")
    if "optimizer" in obj:
        lines += _describe_optimizer(obj["optimizer"])
    if isinstance(obj.get(EXTRAS_KEY), Mapping):
        lines.append(f"  {EXTRAS_KEY:<15} {_describe_extras(obj[EXTRAS_KEY])}")
    others = [k for k in obj if k not in ORIGINAL_KEYS and k != EXTRAS_KEY]
    for key in others:
        lines.append(f"  {str(key):<15} a {_type_name(obj[key])}")
    return lines


def _scalar_text(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return f"{value.item()!r} (a tensor)"
    if isinstance(value, np.generic):
        return f"{value.item()!r} (a numpy scalar)"
    return str(value) if isinstance(value, (str, int, float)) else f"a {_type_name(value)}"


def _describe_state_dict(key: str, state: Mapping) -> list[str]:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    buffers = {k: v for k, v in tensors.items() if str(k).rsplit(".", 1)[-1] in BN_BUFFERS}
    params = {k: v for k, v in tensors.items() if k not in buffers}
    names = [str(k) for k in state]
    prefixed = sum(n.startswith(ckpt.PREFIX) for n in names)
    prefix = ("all keys prefixed 'module.'" if names and prefixed == len(names)
              else "no 'module.' prefix" if not prefixed else f"{prefixed} of {len(names)} keys prefixed 'module.'")
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in tensors.values()})
    line = (f"  {key:<15} {len(tensors)} tensors: {_count(sum(v.numel() for v in params.values()))} "
            f"parameters in {len(params)}, {len(buffers)} BatchNorm buffers; {prefix}; "
            f"{'/'.join(dtypes) or 'no tensors'}")
    if len(tensors) != len(state):
        line += f"; {len(state) - len(tensors)} values that are not tensors"
    missing_counters = (any(str(k).endswith("running_mean") for k in buffers)
                        and not any(str(k).endswith("num_batches_tracked") for k in buffers))
    if missing_counters:
        line += "; no num_batches_tracked (saved by torch < 0.4.1)"
    return [line]


def _describe_optimizer(value: Any) -> list[str]:
    if not isinstance(value, Mapping) or not isinstance(value.get("param_groups"), list):
        return [f"  optimizer       a {_type_name(value)}, not an optimizer state dict"]
    groups = value["param_groups"]
    state = value.get("state", {})
    kinds = sorted({str(k) for v in state.values() if isinstance(v, Mapping) for k in v})
    lines = [f"  optimizer       {len(groups)} param group{'s' if len(groups) != 1 else ''}, state "
             f"for {len(state)} parameters{' (' + ', '.join(kinds) + ')' if kinds else ''}"]
    for number, group in enumerate(groups):
        if isinstance(group, Mapping):
            settings = "  ".join(f"{k}={v!r}" for k, v in group.items() if k != "params")
            params = group.get("params")
            count = len(params) if isinstance(params, list) else "no list of"
            lines.append(f"    group {number}: {count} params  {settings}")
    return lines


def _describe_extras(extras: Mapping) -> str:
    parts = []
    if "version" in extras:
        parts.append(f"version {extras['version']}")
    if isinstance(extras.get("config"), Mapping):
        parts.append(f"config ({len(extras['config'])} settings)")
    if isinstance(extras.get("rng"), Mapping):
        parts.append(f"rng states ({', '.join(map(str, extras['rng']))})")
    if isinstance(extras.get("ported_from"), Mapping):
        parts.append(f"ported from {extras['ported_from'].get('file')}")
    if isinstance(extras.get("legacy_extras"), Mapping):
        parts.append(f"legacy extras ({', '.join(map(str, extras['legacy_extras']))})")
    return "; ".join(parts) or f"keys {', '.join(map(str, extras))}"


# --- evaluating ---------------------------------------------------------------------------
@dataclass
class Evaluation:
    source: str
    arch: str
    epoch: int | None
    split: str
    images: int
    student: dict[str, float]
    teacher: dict[str, float]

    def lines(self) -> list[str]:
        epoch = "" if self.epoch is None else f", epoch {self.epoch}"
        out = [f"{self.source} ({self.arch}{epoch}) on {self.split}: {self.images} images"]
        for name, result in (("student", self.student), ("teacher", self.teacher)):
            out.append(f"  {name}  prec@1 {result['top1/avg']:.3f}  prec@5 {result['top5/avg']:.3f}")
        return out


def evaluate_checkpoint(path: str | Path, data_dir: str | Path, *, dataset: str = "cifar10",
                        eval_subdir: str | None = None, arch: str | None = None,
                        batch_size: int = 256, workers: int = 4, device: str = "auto",
                        trust: bool = False, warn: Warn = _stderr_warning) -> Evaluation:
    """Student and teacher precision@1/@5 on a split, as the original's validation computed it."""
    from torch.utils.data import DataLoader

    from mt_repro.config import DATASETS, TrainConfig
    from mt_repro.data.datasets import NUM_CLASSES, load_split
    from mt_repro.data.transforms import eval_transform
    from mt_repro.engine.trainer import evaluate_model, resolve_device

    if dataset not in DATASETS:
        raise BadInput(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    if batch_size <= 0 or workers < 0:
        raise BadInput("--batch-size must be positive and --workers >= 0")
    normalized = normalize(read_checkpoint(path, trust=trust, warn=warn))
    state = normalized.state
    arch, _ = _resolve_arch(state, arch, str(path))
    run_device = resolve_device(device)
    student, teacher = load_models(state, arch, NUM_CLASSES[dataset], run_device)
    subdir = eval_subdir or ("test" if dataset == "cifar10" else "val")
    config = TrainConfig(dataset=dataset, data_dir=str(data_dir), eval_subdir=subdir, arch=arch,
                         batch_size=batch_size, workers=workers, exclude_unlabeled=True)
    eval_set = load_split(config, subdir, eval_transform(dataset))
    if len(eval_set) == 0:
        raise BadInput(f"no images found in {Path(data_dir) / subdir}")
    loader = DataLoader(eval_set, batch_size=batch_size, shuffle=False,
                        num_workers=2 * workers,  # as the original's evaluation loader
                        pin_memory=run_device.type == "cuda", drop_last=False)
    return Evaluation(source=str(path), arch=arch, epoch=state.get("epoch"),
                      split=str(Path(data_dir) / subdir), images=len(eval_set),
                      student=evaluate_model(student, loader, run_device),
                      teacher=evaluate_model(teacher, loader, run_device))
