"""Reading ``torch.save`` files ourselves, so that we alone decide what a checkpoint loads.

Every checkpoint the toolkit reads (ours for ``--resume`` and ``evaluate``, old ones for
``inspect`` and ``port-checkpoint``) goes through :func:`load`. It never calls ``torch.load``
on a zip or legacy-stream file, and it never executes a global outside :data:`ALLOWED_GLOBALS`:

* **zip** (torch >= 1.6): the central directory is parsed here, byte by byte, and refused if two
  names are equal or equal but for case, a record is compressed, a local header disagrees with
  the directory, records overlap, a record is not one ``torch.save`` writes, ``data.pkl`` is
  above :data:`PICKLE_BYTES`, or the tensors' records add up to more than
  :data:`CHECKPOINT_BYTES`. Each storage record must be referenced by the pickle with exactly
  its size, and every referenced storage must have its record; nothing is decompressed.
* **legacy** (torch 0.1.10 to 1.5, ``_use_new_zipfile_serialization=False``): five pickles
  (magic number, protocol version, system info, the object, the storage keys), then for each
  key an 8-byte little-endian element count and the raw bytes. Each count must be the one the
  pickle declared, fit in the bytes left in the file, and every key must be referenced.

The pickles are run twice by our own unpickler (Python's, with our opcode handlers): first a
**dry run** in which every global is an inert stand-in (so it lists exactly the globals the
file imports, the storages it references and where each pickle ends, running nothing), then
the **load**, whose ``find_class`` returns only the allowed objects (our checked wrappers
around torch's tensor rebuilders) and refuses any other name. ``BUILD`` is allowed only on
``OrderedDict`` (a state dict's ``_metadata``) and numpy dtypes. With ``trust=True`` the load
also imports the names the dry run found (and no other), so a warning can name exactly what is
called before anything is. Tensors are rebuilt only on storages read here, one read per record,
with their offset, sizes and strides checked against the storage.
"""
from __future__ import annotations

import _codecs
import _compat_pickle
import io
import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import numpy as np
import torch

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import (CHECKPOINT_BYTES, ITEMS, LINE_BYTES, NESTING, PICKLE_BYTES, check_nesting,
                                 regular_file)

FORMAT_ZIP = "zip"
FORMAT_LEGACY = "legacy"

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization's legacy magic, unchanged since 0.1.10
PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {"Float": torch.float32, "Double": torch.float64, "Half": torch.float16,
                   "BFloat16": torch.bfloat16, "Long": torch.int64, "Int": torch.int32,
                   "Short": torch.int16, "Char": torch.int8, "Byte": torch.uint8, "Bool": torch.bool}


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
class Loaded:
    obj: Any
    format: str
    globals: list[str]           # every global the pickles import, in order of appearance
    unsafe: list[str] = field(default_factory=list)  # those outside ALLOWED_GLOBALS (trust only)


# --- the file ---------------------------------------------------------------------------------
class _File:
    """A checkpoint open for reading: its name for messages, its size, reads at offsets."""

    def __init__(self, f: IO[bytes], source: str):
        self.f, self.source = f, source
        f.seek(0, os.SEEK_END)
        self.size = f.tell()
        f.seek(0)

    def bad(self, what: str) -> BadInput:
        return BadInput(f"checkpoint {self.source} {what}")

    def read_at(self, offset: int, length: int) -> bytes:
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise self.bad("is corrupt or truncated (ends inside a record)")
        return data

    def tensor_at(self, offset: int, length: int) -> torch.Tensor:
        """``length`` bytes from ``offset`` in one read, straight into a new uint8 tensor."""
        if offset < 0 or offset + length > self.size:
            raise self.bad("is corrupt or truncated (a storage ends past the end of the file)")
        out = torch.empty(length, dtype=torch.uint8)
        if length:
            self.f.seek(offset)
            view = memoryview(out.numpy()).cast("B")
            done = 0
            while done < length:  # readinto may return short on pipes and some file objects
                n = self.f.readinto(view[done:])
                if not n:
                    raise self.bad("is corrupt or truncated (ends inside a storage)")
                done += n
        return out


def open_checkpoint(path: str | os.PathLike) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BadInput(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None


# --- zip --------------------------------------------------------------------------------------
@dataclass
class _Record:
    name: str
    offset: int        # of the data
    size: int
    crc: int


_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_METADATA = {"version", "byteorder", ".format_version", ".storage_alignment"}


def _zip_directory(file: _File) -> tuple[str, dict[str, _Record]]:
    """The archive's prefix and its records (by name after the prefix), every check done."""
    tail_start = max(0, file.size - (_EOCD.size + 0xFFFF))
    tail = file.read_at(tail_start, file.size - tail_start)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        raise file.bad("is corrupt or truncated (no zip end-of-directory record)")
    (_, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment) = _EOCD.unpack_from(tail, at)
    eocd = tail_start + at
    if eocd + _EOCD.size + comment != file.size:
        raise file.bad("is corrupt or truncated (bytes after the zip directory)")
    if 0xFFFF in (n_disk, n_total) or 0xFFFFFFFF in (cd_size, cd_offset):
        if eocd < _LOCATOR64.size:
            raise file.bad("is corrupt or truncated (no zip64 directory locator)")
        sig, _, eocd64, _ = _LOCATOR64.unpack(file.read_at(eocd - _LOCATOR64.size, _LOCATOR64.size))
        if sig != 0x07064B50 or eocd64 + _EOCD64.size > eocd - _LOCATOR64.size:
            raise file.bad("is corrupt or truncated (bad zip64 directory locator)")
        (sig, _, _, _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset) = _EOCD64.unpack(
            file.read_at(eocd64, _EOCD64.size))
        if sig != 0x06064B50:
            raise file.bad("is corrupt or truncated (bad zip64 end-of-directory record)")
        end = eocd64
    else:
        end = eocd
    if disk or cd_disk or n_disk != n_total:
        raise file.bad("is a multi-disk zip archive, which torch.save never writes: refused")
    if cd_offset + cd_size > end:
        raise file.bad("is corrupt or truncated (the zip directory lies past its end record)")
    ITEMS.check(n_total, f"zip directory of checkpoint {file.source}")
    PICKLE_BYTES.check(cd_size, f"zip directory of checkpoint {file.source}")
    directory = file.read_at(cd_offset, cd_size)

    records: dict[str, _Record] = {}
    folded: dict[str, str] = {}
    names: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    prefix = None
    pos = 0
    for _ in range(n_total):
        if pos + _CENTRAL.size > len(directory):
            raise file.bad("is corrupt or truncated (zip directory shorter than its entry count)")
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len, disk_start,
         _, _, local) = _CENTRAL.unpack_from(directory, pos)
        if sig != 0x02014B50:
            raise file.bad("is corrupt or truncated (bad zip directory entry)")
        pos += _CENTRAL.size
        raw_name = directory[pos:pos + name_len]
        extra = directory[pos + name_len:pos + name_len + extra_len]
        pos += name_len + extra_len + comment_len
        if pos > len(directory):
            raise file.bad("is corrupt or truncated (zip directory entry past its end)")
        csize, usize, local = _zip64_fields(file, extra, csize, usize, local)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if name in names:
            raise file.bad(f"has two zip records named {name!r}: refused")
        if name.casefold() in folded:
            raise file.bad(f"has zip records {folded[name.casefold()]!r} and {name!r}, whose names differ "
                           "only in case (readers disagree on which is loaded): refused")
        folded[name.casefold()] = name
        names.add(name)
        if method != 0 or csize != usize:
            raise file.bad(f"has a compressed zip record {name!r} (torch.save stores records "
                           "uncompressed): refused, nothing was decompressed")
        if flags & 0x1 or disk_start:
            raise file.bad(f"has an encrypted or split zip record {name!r}: refused")
        head, sep, rest = name.partition("/")
        if not sep or not head or (prefix is not None and head != prefix):
            raise file.bad(f"has a zip record {name!r} outside the archive's one folder: refused")
        prefix = head
        if not (rest == "data.pkl" or rest in _METADATA or rest.startswith(".data/")
                or (rest.startswith("data/") and rest[5:] and "/" not in rest[5:])):
            raise file.bad(f"has a zip record {name!r} that torch.save does not write: refused")
        data_offset = _local_header(file, local, raw_name, flags, method, crc, usize)
        spans.append((local, data_offset + usize, name))
        records[rest] = _Record(name, data_offset, usize, crc)
    if pos != len(directory):
        raise file.bad("is corrupt or truncated (zip directory size disagrees with its entries)")
    spans.sort()
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise file.bad(f"has overlapping zip records {a!r} and {b!r}: refused")
    if spans and spans[-1][1] > cd_offset:
        raise file.bad("has a zip record that overlaps the zip directory: refused")
    if prefix is None or "data.pkl" not in records:
        raise file.bad("is corrupt or truncated (a zip archive without data.pkl: not written by torch.save)")
    return prefix, records


def _zip64_fields(file: _File, extra: bytes, csize: int, usize: int, local: int) -> tuple[int, int, int]:
    if 0xFFFFFFFF not in (csize, usize, local):
        return csize, usize, local
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        pos += 4 + length
        if tag != 1:
            continue
        values = []
        for wanted in (usize, csize, local):
            if wanted == 0xFFFFFFFF:
                if len(body) < 8 * (len(values) + 1):
                    break
                values.append(struct.unpack_from("<Q", body, 8 * len(values))[0])
            else:
                values.append(None)
        else:
            u, c, o = (v if v is not None else w for v, w in zip(values, (usize, csize, local)))
            return c, u, o
    raise file.bad("is corrupt or truncated (a zip64 entry without its sizes)")


def _local_header(file: _File, offset: int, raw_name: bytes, flags: int, method: int, crc: int,
                  size: int) -> int:
    """Where the record's data starts, after checking its local header against the directory."""
    head = file.read_at(offset, _LOCAL.size) if offset + _LOCAL.size <= file.size else b""
    if len(head) != _LOCAL.size:
        raise file.bad("is corrupt or truncated (a zip record's local header is missing)")
    (sig, _, l_flags, l_method, _, _, l_crc, l_csize, l_usize, name_len, extra_len) = _LOCAL.unpack(head)
    name = file.read_at(offset + _LOCAL.size, name_len) if sig == 0x04034B50 else b""
    what = raw_name.decode("utf-8", "replace")
    if sig != 0x04034B50 or name != raw_name or l_flags != flags or l_method != method:
        raise file.bad(f"has a zip record {what!r} whose local header disagrees with the zip directory: refused")
    data = offset + _LOCAL.size + name_len + extra_len
    described = (l_crc, l_csize, l_usize)
    if flags & 0x8:  # sizes in a data descriptor after the data (what torch writes)
        if described not in ((0, 0, 0), (crc, size, size)):
            raise file.bad(f"has a zip record {what!r} whose local header disagrees with the zip directory: refused")
        descriptor = file.read_at(data + size, 24) if data + size + 24 <= file.size else b""
        if descriptor[:4] == b"PK\x07\x08":
            descriptor = descriptor[4:]
        short = struct.unpack_from("<III", descriptor) if len(descriptor) >= 12 else None
        long = struct.unpack_from("<IQQ", descriptor) if len(descriptor) >= 20 else None
        if (crc, size, size) not in (short, long):
            raise file.bad(f"has a zip record {what!r} whose data descriptor disagrees with the zip directory: refused")
    elif described != (crc, size, size) and not (l_csize == l_usize == 0xFFFFFFFF and l_crc == crc):
        raise file.bad(f"has a zip record {what!r} whose local header disagrees with the zip directory: refused")
    if data + size > file.size:
        raise file.bad(f"is corrupt or truncated (zip record {what!r} ends past the end of the file)")
    return data


# --- the unpickler ----------------------------------------------------------------------------
class _Stub:
    """What the dry run gives for every global: accepts any call or state, runs nothing."""

    global_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return type(self)()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def add(self, value):
        pass


class _StorageType:
    """An allowed storage class (``torch.FloatStorage``...): only a dtype tag in a persistent id."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype
        self.itemsize = torch.empty(0, dtype=dtype).element_size()

    def __repr__(self):
        return self.name


_OPCODE_BUILD = pickle.BUILD[0]


class _Unpickler(pickle._Unpickler):  # Python's own VM: iterative, and its opcodes overridable
    """One pickle: ``dry`` gives a stand-in for each global; otherwise ``table`` maps the names
    it may import to what they load as (``trusted``: names it may import for real)."""

    def __init__(self, data: IO[bytes], source: str, *, dry: bool, table: dict[str, Any],
                 trusted: frozenset[str] = frozenset(), full: bool = False,
                 persistent: Callable[[Any], Any]):
        super().__init__(data, encoding="latin1")  # torch.load's encoding for Python 2 pickles
        self.source, self.dry, self.table, self.trusted, self.full = source, dry, table, trusted, full
        self.names: list[str] = []
        self.persistent = persistent
        self.stubs: dict[str, type] = {}
        if not full:
            self.dispatch = {**self.dispatch, _OPCODE_BUILD: _Unpickler._restricted_build}

    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise pickle.UnpicklingError("a global named by something other than strings")
        full = _mapped_name(module, name) if self.proto < 3 and self.fix_imports else f"{module}.{name}"
        self.names.append(full)
        if self.dry:
            if full not in self.stubs:
                self.stubs[full] = type("Stub", (_Stub,), {"global_name": full})
            return self.stubs[full]
        if full in self.table:
            return self.table[full]
        if full in self.trusted:
            return super().find_class(module, name)
        if self.full:
            raise BadInput(f"checkpoint {self.source} imports {full} only when loaded, not when "
                           "scanned (its names are computed while loading): refused even with --trust")
        raise UnsafeCheckpoint(self.source, [full])

    def persistent_load(self, pid):
        return self.persistent(pid)

    def _restricted_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if self.dry and isinstance(inst, _Stub):
            return
        if type(inst) is OrderedDict and isinstance(state, dict) and set(state) <= {"_metadata"}:
            check_nesting(state, f"checkpoint {self.source}", NESTING)
            inst.__dict__.update(state)  # the _metadata of a state dict
            return
        if isinstance(inst, np.dtype) and _dtype_state_ok(inst, state):
            inst.__setstate__(state)
            return
        raise BadInput(f"checkpoint {self.source} cannot be read as plain data (it sets the state of a "
                       f"{type(inst).__name__}): it is damaged, or holds objects that only --trust can "
                       "load (use it only if you trust the file)")


def _mapped_name(module: str, attr: str) -> str:
    """``module.attr`` as Python's unpickler resolves it: protocol 0-2 pickles use Python 2
    names (``__builtin__.exec``, and Python 3 writes ``subprocess.Popen`` as ``commands.Popen``)."""
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"


class _Bounded:
    """The pickles of a legacy stream, read from the file in chunks as the unpickler asks,
    never more than is left or than :data:`PICKLE_BYTES` (a declared length is not an allocation)."""

    CHUNK = 1 << 20

    def __init__(self, file: _File):
        self.file, self.pos, self.buffer = file, 0, bytearray()

    def _fill(self, end: int) -> None:
        if end <= len(self.buffer):
            return
        end = min(max(end, len(self.buffer) + self.CHUNK), self.file.size, max(end, PICKLE_BYTES.value))
        if end > PICKLE_BYTES.value:
            PICKLE_BYTES.check(end, f"the pickles of checkpoint {self.file.source}")
        self.buffer += self.file.read_at(len(self.buffer), end - len(self.buffer))

    def read(self, n: int = -1) -> bytes:
        n = max(0, min(n, self.file.size - self.pos))
        self._fill(self.pos + n)
        data = bytes(self.buffer[self.pos:self.pos + n])
        self.pos += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        end = self.buffer.find(b"\n", self.pos)
        while end < 0 and len(self.buffer) < self.file.size and len(self.buffer) - self.pos < LINE_BYTES.value:
            self._fill(len(self.buffer) + 1)
            end = self.buffer.find(b"\n", self.pos)
        stop = end + 1 if end >= 0 else min(len(self.buffer), self.pos + LINE_BYTES.value)
        data = bytes(self.buffer[self.pos:stop])
        self.pos += len(data)
        return data


def _run(unpickler: _Unpickler) -> Any:
    try:
        return unpickler.load()
    except BadInput:
        raise
    except RecursionError:
        raise BadInput(f"checkpoint {unpickler.source} is nested too deeply to read: refused") from None
    except Exception as exc:  # the pickle VM on untrusted bytes: any failure means a broken file
        raise corrupt(unpickler.source, exc) from None


def corrupt(source: str, exc: BaseException) -> BadInput:
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return BadInput(f"checkpoint {source} is corrupt or truncated ({line[:160]})")


# --- what the allowed globals load as ----------------------------------------------------------
_DTYPE_NAMES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}


def _numpy_dtype(name, align=False, copy=False):
    if not isinstance(name, str) or name not in _DTYPE_NAMES or not isinstance(align, bool) \
            or not isinstance(copy, bool):
        raise pickle.UnpicklingError(f"numpy.dtype({name!r}) is not a plain number type")
    return np.dtype(name, align, copy)


def _dtype_state_ok(dtype: np.dtype, state: Any) -> bool:
    canonical = np.dtype(dtype.str.lstrip("<>|=")).__reduce__()[2]
    return (isinstance(state, tuple) and len(state) == len(canonical) and state[0] == canonical[0]
            and state[1] in ("<", ">", "|", "=") and state[2:] == canonical[2:])


def _numpy_scalar(dtype, data=None):
    if isinstance(data, str):  # a Python 2 pickle's str, decoded as latin1: its raw bytes
        data = data.encode("latin1")
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or dtype.names is not None \
            or dtype.hasobject or dtype.shape != () or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    return _SCALAR(dtype, data)


_SCALAR = (getattr(np, "_core", None) or np.core).multiarray.scalar


def _latin1(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1", "iso8859-1") \
            or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode other than protocol 2's bytes (latin1)")
    return _codecs.encode(text, encoding)


class _Storages:
    """Storages made from the file's bytes, and the tensors rebuilt on them (checked first)."""

    def __init__(self, source: str):
        self.source = source
        self.made: dict[int, tuple[torch.storage.TypedStorage, int, int]] = {}  # id -> (storage, start, numel)

    def add(self, untyped: torch.UntypedStorage, kind: _StorageType, start: int = 0,
            numel: int | None = None) -> torch.storage.TypedStorage:
        typed = torch.storage.TypedStorage(wrap_storage=untyped, dtype=kind.dtype, _internal=True)
        total = untyped.nbytes() // kind.itemsize
        self.made[id(typed)] = (typed, start, total - start if numel is None else numel)
        return typed

    def view(self, storage, offset, size, stride) -> tuple[torch.storage.TypedStorage, int, tuple, tuple]:
        entry = self.made.get(id(storage))
        if entry is None or entry[0] is not storage:
            raise pickle.UnpicklingError("a tensor on something that is not one of the file's storages")
        ok = _ints(offset) and isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) \
            and len(size) == len(stride) <= 64 and all(_ints(v) for v in (*size, *stride))
        if not ok:
            raise pickle.UnpicklingError("a tensor whose offset, size or stride are not counts")
        _, start, numel = entry
        elements = 1
        for s in size:
            elements *= s
        last = offset + sum((s - 1) * st for s, st in zip(size, stride)) if elements else offset - 1
        if last >= numel:
            raise BadInput(f"checkpoint {self.source} has a tensor (offset {offset}, size {list(size)}, "
                           f"stride {list(stride)}) outside its storage of {numel} elements: refused")
        return storage, start + offset, tuple(size), tuple(stride)

    def table(self) -> dict[str, Any]:
        def rebuild_tensor(storage, offset, size, stride):
            return torch._utils._rebuild_tensor(*self.view(storage, offset, size, stride))

        def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
            if not isinstance(requires_grad, bool) or not _empty(hooks) or metadata not in (None, {}):
                raise pickle.UnpicklingError("a tensor with backward hooks or metadata")
            return torch._utils._rebuild_tensor_v2(*self.view(storage, offset, size, stride),
                                                   requires_grad, OrderedDict())

        def rebuild_parameter(data, requires_grad, hooks):
            if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool) or not _empty(hooks):
                raise pickle.UnpicklingError("a parameter that is not a tensor without hooks")
            return torch._utils._rebuild_parameter(data, requires_grad, OrderedDict())

        table: dict[str, Any] = {
            "collections.OrderedDict": OrderedDict,
            "torch._utils._rebuild_tensor": rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": rebuild_parameter,
            "_codecs.encode": _latin1,
            "numpy.core.multiarray.scalar": _numpy_scalar,
            "numpy._core.multiarray.scalar": _numpy_scalar,
            "numpy.dtype": _numpy_dtype,
        }
        for kind, dtype in _STORAGE_DTYPES.items():
            for name in (f"torch.{kind}Storage", f"torch.cuda.{kind}Storage"):
                table[name] = _StorageType(name, dtype)
        return table


def _ints(value: Any) -> bool:
    return type(value) is int and value >= 0


def _empty(hooks: Any) -> bool:
    return hooks is None or (type(hooks) in (dict, OrderedDict) and not hooks)


def _storage_type(kind: Any) -> _StorageType | None:
    """The allowed storage class a persistent id names (a stand-in in the dry run)."""
    name = kind.global_name if isinstance(kind, type) and issubclass(kind, _Stub) else \
        kind.name if isinstance(kind, _StorageType) else None
    if name is None:
        return None
    short = name.rsplit(".", 1)[-1]
    if name not in ALLOWED_GLOBALS or not short.endswith("Storage"):
        return None
    return _StorageType(name, _STORAGE_DTYPES[short[:-len("Storage")]])


@dataclass
class _Declared:
    kind: _StorageType
    numel: int
    views: dict[str, tuple[int, int]] = field(default_factory=dict)   # view key -> (offset, numel)


def _parse_pid(pid: Any, source: str, legacy: bool) -> tuple[str, _Declared, tuple | None]:
    """(key, its type and element count, view) of a storage's persistent id, or refused."""
    length = 6 if legacy else 5
    if not (isinstance(pid, tuple) and len(pid) == length and pid[0] == "storage"):
        raise BadInput(f"checkpoint {source} references a persistent object that is not a storage: refused")
    kind = _storage_type(pid[1])
    key, location, numel = pid[2], pid[3], pid[4]
    if kind is None or not isinstance(key, str) or not isinstance(location, str) or not _ints(numel):
        raise BadInput(f"checkpoint {source} references a storage by a malformed persistent id: refused")
    view = pid[5] if legacy else None
    if view is not None:
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                and _ints(view[1]) and _ints(view[2]) and view[1] + view[2] <= numel):
            raise BadInput(f"checkpoint {source} references a view outside its storage {key!r}: refused")
    return key, _Declared(kind, numel), view


class _Plan:
    """The storages the pickle references (from the dry run), checked against each other."""

    def __init__(self, source: str, legacy: bool):
        self.source, self.legacy = source, legacy
        self.declared: dict[str, _Declared] = {}

    def dry(self, pid: Any) -> _Stub:
        key, declared, view = _parse_pid(pid, self.source, self.legacy)
        known = self.declared.setdefault(key, declared)
        if (known.kind.dtype, known.numel) != (declared.kind.dtype, declared.numel):
            raise BadInput(f"checkpoint {self.source} declares storage {key!r} twice, differently: refused")
        if view is not None:
            if known.views.setdefault(view[0], view[1:]) != view[1:]:
                raise BadInput(f"checkpoint {self.source} declares view {view[0]!r} twice, differently: refused")
        return _Stub()


def _dry_run(data: IO[bytes], source: str, persistent: Callable[[Any], Any]) -> tuple[Any, list[str]]:
    unpickler = _Unpickler(data, source, dry=True, table={}, persistent=persistent)
    try:
        value = _run(unpickler)
    except BadInput as exc:
        exc.names = unpickler.names  # type: ignore[attr-defined]
        raise
    return value, unpickler.names


def _no_storage(source: str) -> Callable[[Any], Any]:
    def refuse(pid):
        raise BadInput(f"checkpoint {source} references a storage where none may be: refused")
    return refuse


# --- loading ----------------------------------------------------------------------------------
Warn = Callable[[str], None]


def load(f: IO[bytes], source: str, fmt: str, *, trust: bool = False, warn: Warn | None = None) -> Loaded:
    """The object a zip or legacy-stream checkpoint holds, read as the module docstring says.
    ``warn`` receives the ``--trust`` warning (naming the globals outside the allow-list) before
    anything of the file is run."""
    file = _File(f, source)
    if fmt == FORMAT_ZIP:
        obj, names, unsafe = _load_zip(file, trust, warn)
    elif fmt == FORMAT_LEGACY:
        obj, names, unsafe = _load_legacy(file, trust, warn)
    else:
        raise ValueError(fmt)
    check_nesting(obj, f"checkpoint {source}", NESTING)
    return Loaded(obj, fmt, names, unsafe)


def _load_zip(file: _File, trust: bool, warn: Warn | None) -> tuple[Any, list[str], list[str]]:
    source = file.source
    prefix, records = _zip_directory(file)
    pickled = records["data.pkl"]
    PICKLE_BYTES.check(pickled.size, f"data.pkl of checkpoint {source}")
    stored = sum(r.size for k, r in records.items() if k.startswith("data/"))
    CHECKPOINT_BYTES.check(stored, f"checkpoint {source}")
    _check_byteorder(file, records)
    data = file.read_at(pickled.offset, pickled.size)
    plan = _Plan(source, legacy=False)
    _, names = _guarded_dry_run(io.BytesIO(data), source, plan.dry, trust)
    unsafe = _unsafe(names, source, trust, warn)
    storages = _Storages(source)
    for key, declared in plan.declared.items():
        record = records.get(f"data/{key}")
        need = declared.numel * declared.kind.itemsize
        if record is None:
            raise BadInput(f"checkpoint {source} references storage {key!r}, which has no record "
                           f"{prefix}/data/{key}: refused")
        if record.size != need:
            raise BadInput(f"checkpoint {source} has record {record.name} of {record.size:,} bytes, but "
                           f"its storage declares {need:,}: refused")
    unused = sorted(k[5:] for k in records if k.startswith("data/") and k[5:] not in plan.declared)
    if unused:
        raise BadInput(f"checkpoint {source} has storage record {prefix}/data/{unused[0]} that its pickle "
                       "never references: refused")
    made: dict[str, torch.storage.TypedStorage] = {}

    def persistent(pid):
        key, declared, _ = _parse_pid(pid, source, legacy=False)
        if key not in made:
            expected = plan.declared.get(key)
            if expected is None or (expected.kind.dtype, expected.numel) != (declared.kind.dtype, declared.numel):
                raise BadInput(f"checkpoint {source} references storage {key!r} differently when loaded "
                               "than when scanned: refused")
            record = records[f"data/{key}"]
            bytes_ = file.tensor_at(record.offset, record.size)
            made[key] = storages.add(bytes_.untyped_storage(), declared.kind)
        return made[key]

    return _load_pickle(io.BytesIO(data), source, storages, unsafe, trust, persistent), names, unsafe


def _guarded_dry_run(data: IO[bytes], source: str, persistent, trust: bool = False) -> tuple[Any, list[str]]:
    """The dry run; a failure after an unsafe import names the import (a bare malicious
    pickle), unless the user trusts the file: then the failure itself is the message."""
    try:
        return _dry_run(data, source, persistent)
    except BadInput as exc:
        names = getattr(exc, "names", [])
        bad = [n for n in dict.fromkeys(names) if n not in ALLOWED_GLOBALS]
        if bad and not trust:
            raise UnsafeCheckpoint(source, bad) from None
        raise


def _unsafe(names: list[str], source: str, trust: bool, warn: Warn | None) -> list[str]:
    unsafe = [n for n in dict.fromkeys(names) if n not in ALLOWED_GLOBALS]
    if unsafe and not trust:
        raise UnsafeCheckpoint(source, unsafe)
    if unsafe and warn is not None:
        warn(f"--trust: loading {source} with Python's full pickle; it imports {', '.join(unsafe)}. A "
             "malicious file can run any code this way; use --trust only on files you made or trust")
    return unsafe


def _load_pickle(data: IO[bytes], source: str, storages: _Storages, unsafe: list[str], full: bool,
                 persistent: Callable[[Any], Any]) -> Any:
    unpickler = _Unpickler(data, source, dry=False, table=storages.table(), trusted=frozenset(unsafe),
                           full=full, persistent=persistent)
    return _run(unpickler)


def _check_byteorder(file: _File, records: dict[str, _Record]) -> None:
    record = records.get("byteorder")
    if record is not None:
        order = file.read_at(record.offset, min(record.size, 16))
        if order != b"little":
            raise file.bad(f"was written on a {order.decode('latin-1')!r}-endian machine; only "
                           "little-endian checkpoints are read")


def _load_legacy(file: _File, trust: bool, warn: Warn | None) -> tuple[Any, list[str], list[str]]:
    source = file.source
    reader = _Bounded(file)
    plan = _Plan(source, legacy=True)
    names: list[str] = []
    values = []
    ends = []
    for number in range(5):  # magic number, protocol version, sys info, the object, storage keys
        try:
            value, found = _dry_run(reader, source, plan.dry if number == 3 else _no_storage(source))
        except BadInput as exc:
            bad = [n for n in dict.fromkeys(names + getattr(exc, "names", [])) if n not in ALLOWED_GLOBALS]
            if bad and not trust:
                raise UnsafeCheckpoint(source, bad) from None
            raise
        names += found
        values.append(value)
        ends.append(reader.pos)
        if number == 0 and value != MAGIC_NUMBER:
            bad = [n for n in dict.fromkeys(names) if n not in ALLOWED_GLOBALS]
            if bad and not trust:
                raise UnsafeCheckpoint(source, bad)
            raise file.bad("is corrupt or truncated (not a torch.save file: wrong magic number)")
    magic, protocol, info, _, keys = values
    if protocol != PROTOCOL_VERSION:
        raise file.bad(f"is corrupt or truncated (legacy protocol version {protocol!r}, not {PROTOCOL_VERSION})")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise file.bad("was written on a big-endian machine or is damaged; only little-endian checkpoints are read")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise file.bad("is corrupt or truncated (its storage key list is not a list of distinct names)")
    unsafe = _unsafe(names, source, trust, warn)

    missing = [k for k in plan.declared if k not in set(keys)]
    if missing:
        raise BadInput(f"checkpoint {source} references storage {missing[0]!r}, which is not in its list "
                       "of stored storages (its tensors would be uninitialised memory): refused")
    # Where each storage's bytes are: count (int64 little-endian), then count * itemsize bytes.
    where: dict[str, int] = {}
    pos, total = ends[4], 0
    for key in keys:
        declared = plan.declared.get(key)
        if declared is None:
            raise BadInput(f"checkpoint {source} stores storage {key!r}, which its pickle never references: refused")
        if pos + 8 > file.size:
            raise file.bad(f"is corrupt or truncated (ends before storage {key!r})")
        count = int.from_bytes(file.read_at(pos, 8), "little")
        nbytes = count * declared.kind.itemsize
        if count != declared.numel:
            raise BadInput(f"checkpoint {source} stores {count:,} elements for storage {key!r}, whose pickle "
                           f"declares {declared.numel:,}: refused")
        total += nbytes
        CHECKPOINT_BYTES.check(total, f"checkpoint {source}")
        if pos + 8 + nbytes > file.size:
            raise file.bad(f"is corrupt or truncated (storage {key!r} declares {nbytes:,} bytes; "
                           f"{file.size - pos - 8:,} are left in the file)")
        where[key] = pos + 8
        pos += 8 + nbytes
    if pos != file.size:
        raise file.bad(f"is corrupt or truncated ({file.size - pos:,} bytes after its last storage)")

    storages = _Storages(source)
    roots: dict[str, torch.UntypedStorage] = {}
    made: dict[tuple[str, str | None], torch.storage.TypedStorage] = {}

    def persistent(pid):
        key, declared, view = _parse_pid(pid, source, legacy=True)
        expected = plan.declared.get(key)
        if expected is None or (expected.kind.dtype, expected.numel) != (declared.kind.dtype, declared.numel) \
                or (view is not None and expected.views.get(view[0]) != view[1:]):
            raise BadInput(f"checkpoint {source} references storage {key!r} differently when loaded than "
                           "when scanned: refused")
        slot = (key, None if view is None else view[0])
        if slot not in made:
            if key not in roots:
                roots[key] = file.tensor_at(where[key], declared.numel * declared.kind.itemsize).untyped_storage()
            start, numel = (0, None) if view is None else view[1:]
            made[slot] = storages.add(roots[key], declared.kind, start, numel)
        return made[slot]

    data = io.BytesIO(bytes(reader.buffer[ends[2]:ends[3]]))
    obj = _load_pickle(data, source, storages, unsafe, trust, persistent)
    return obj, names, unsafe


def scan(f: IO[bytes], source: str, fmt: str) -> list[str]:
    """The globals a zip or legacy checkpoint's pickles import (the dry run; nothing is loaded)."""
    file = _File(f, source)
    if fmt == FORMAT_ZIP:
        _, records = _zip_directory(file)
        pickled = records["data.pkl"]
        PICKLE_BYTES.check(pickled.size, f"data.pkl of checkpoint {source}")
        return _dry_run(io.BytesIO(file.read_at(pickled.offset, pickled.size)), source, lambda pid: _Stub())[1]
    reader = _Bounded(file)
    names: list[str] = []
    for _ in range(5):
        names += _dry_run(reader, source, lambda pid: _Stub())[1]
    return names


def scan_pickle(data: bytes, source: str) -> list[str]:
    """The globals one pickle imports (the dry run over it)."""
    return _guarded_dry_run(io.BytesIO(data), source, lambda pid: _Stub())[1]


def load_file(path: str | os.PathLike) -> Any:
    """A zip or legacy checkpoint file's object, nothing outside the allow-list (our own
    checkpoints: resume and evaluate)."""
    regular_file(path, "checkpoint")
    with open_checkpoint(path) as f:
        head = f.read(4)
        if not head:
            raise BadInput(f"checkpoint {path} is empty")
        try:
            return load(f, str(path), FORMAT_ZIP if head == b"PK\x03\x04" else FORMAT_LEGACY).obj
        except OSError as exc:
            raise BadInput(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
