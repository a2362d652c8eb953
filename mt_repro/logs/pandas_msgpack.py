"""The msgpack format of pandas <= 0.25 (``DataFrame.to_msgpack``), read and written without it.

The original code saved its logs with ``frame.to_msgpack(path, compress='zlib')``; pandas 1.0
removed that method and ``pandas.read_msgpack``, so those files no longer open. This module reads
them, and writes files that pandas 0.18 to 0.25 read, with nothing but the ``msgpack`` package,
numpy and (for ``compress='blosc'`` only) the ``blosc`` package.

The format, as ``pandas/io/packers.py`` and the msgpack fork vendored with it wrote it in the
pandas versions the original code ran on (checked against the sources of pandas 0.25 and of a
0.19-era pandas):

* A file is one or more msgpack objects back to back: ``to_msgpack(path, a, b)`` and
  ``to_msgpack(path, c, append=True)`` add objects, ``read_msgpack`` returned a list when there
  were several.
* Text is msgpack ``str`` (UTF-8) and bytes are ``bin`` (``use_bin_type=True``) since pandas 0.18;
  see below for the older layout. Tuples and lists
  are arrays; Python floats (numpy ``float64`` included) are doubles; other numpy scalars are maps
  ``{typ: 'np_scalar', dtype, data: repr(value)}``.
* A pandas object is a map with a ``typ`` key:

  - DataFrame: ``{typ: 'block_manager', klass: 'DataFrame', axes: [columns, index], blocks}``,
    each block ``{locs, values, shape, dtype, klass, compress}``: ``values`` holds the columns at
    positions ``locs`` (itself an ``ndarray`` map of int64) as a C-order array of shape
    ``(len(locs), n_rows)``; ``klass`` is the pandas class, e.g. ``FloatBlock``. Older pandas
    named a block's columns in ``items`` (an index) instead of ``locs``; both are read.
  - Index: ``{typ: 'index', klass, name, dtype, data, compress}`` (``klass`` ``Index``,
    ``Int64Index``, ``Float64Index``...); RangeIndex: ``{typ: 'range_index', klass, name, start,
    stop, step}``.
  - Series: ``{typ: 'series', klass, name, index, dtype, data, compress}``.
  - numpy array: ``{typ: 'ndarray', shape, ndim, dtype, data, compress}``.

* ``data``/``values`` of a numeric dtype are the array's bytes (native order: little-endian on
  every machine pandas ran on) in msgpack ext type 0, zlib- or blosc-compressed as ``compress``
  says. Object data is a plain msgpack array, never compressed, whatever ``compress`` says. Map
  keys come in any order.

The layout before pandas 0.18 (0.13 to 0.17.1, read here too; from the ``pandas/io/packers.py``
of those versions and pandas issues 9618 and 12170): msgpack had no bin or ext types then, so
text and bytes alike are raw strings, text encoded as Latin-1 (the packer's default; Python 2's
``str`` went as it was); ``dtype`` is numpy's type number (``dtype.num``: 0 bool, 1-10 the
integers, 11 float32, 12 float64, 17 object, as on 64-bit Linux); numeric ``data``/``values``
are the array's bytes, raw or zlib/blosc-compressed as ``compress`` says; blocks name their
columns by ``items`` (an index) and, from 0.16.2, by ``locs`` too. The first pandas msgpack
(0.13) wrote some numeric data as a plain array of numbers, which is read too. A file is read
as the newer layout first; a string that is not UTF-8 means the older one, and the file is
read again taking every raw string as bytes (keys and fields other than ``data``/``values`` as
text: UTF-8, else Latin-1). A numeric payload that arrives as text (old bytes that happen to be
valid UTF-8) is encoded back to exactly those bytes.

Reading is pure decoding: msgpack yields only plain values, and the decoder below turns the maps
it recognises into numpy arrays and pandas objects, checking every field; no pandas internals,
no pickles, no class looked up by name. Every malformed input raises :class:`BadInput`, and sizes
are checked before anything is allocated: decoded data is limited to :data:`MAX_DECODED_BYTES`.
The file must be a regular file within ``LOG_BYTES`` (``mt_repro.core.limits``); every length
msgpack reads is bounded by the file's size and ``ITEMS``/``MEMBER_BYTES`` before msgpack
allocates; the maps, arrays and text it builds for one object are counted as they are built
(``LOG_STRUCTURE_BYTES``), and each object is decoded before the next is read; a frame has at
most ``COLUMNS`` columns, and an array's declared size (shape x item size) is checked against
``MEMBER_BYTES`` and against the bytes present before numpy sees it.

Supported: DataFrames and Series of bool, (u)int 8 to 64, float 16 to 64 and object (str,
bytes, int, float, bool, None, numpy scalars) columns, indexed by Index, Int64Index,
UInt64Index, Float64Index or RangeIndex. Datetimes, categoricals, MultiIndex, Panel and sparse
objects, which the original's logs never contain, are refused by name (in the older layout, by
their dtype number).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Union

import msgpack
import numpy as np
import pandas as pd

from mt_repro.core.errors import BadInput, printable
from mt_repro.core.fileio import write_bytes_atomic
from mt_repro.core.limits import COLUMNS, ITEMS, LOG_BYTES, LOG_STRUCTURE_BYTES, MEMBER_BYTES, regular_file

__all__ = [
    "COMPRESSIONS", "MAX_DECODED_BYTES", "combine_log_objects", "decode_legacy", "encode_legacy",
    "read_legacy_log", "read_legacy_objects", "write_legacy_log",
]

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]
PandasObject = Union[pd.DataFrame, pd.Series]

COMPRESSIONS = (None, "zlib", "blosc")
# Far above any training log (10^6 rows x 30 columns is 240 MB) and far below what would take a
# machine down; a larger genuine file can pass ``max_decoded_bytes``.
MAX_DECODED_BYTES = 1 << 30
_EXT_NUMPY = 0  # the ext type code pandas gave raw array bytes
_ZLIB_MAX_RATIO = 1032  # deflate cannot expand data more than this (258-byte matches in 2 bits)
_BLOSC_HEADER = 16

# dtype names pandas wrote -> the dtype the bytes have (little-endian, as written).
_NUMERIC_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64")}
# pandas < 0.18 named dtypes by numpy's type number (``dtype.num``), as on 64-bit Linux (where
# the original code ran: C long and long long are both 64 bits there).
_DTYPE_NUMBERS = {number: np.dtype(name).newbyteorder("<") for number, name in (
    (0, "bool"), (1, "int8"), (2, "uint8"), (3, "int16"), (4, "uint16"), (5, "int32"), (6, "uint32"),
    (7, "int64"), (8, "uint64"), (9, "int64"), (10, "uint64"), (11, "float32"), (12, "float64"),
    (23, "float16"))}
_DTYPE_NUMBERS[17] = np.dtype(object)
_OTHER_DTYPE_NUMBERS = {13: "longdouble", 14: "complex64", 15: "complex128", 16: "clongdouble", 18: "bytes",
                        19: "str", 20: "void", 21: "datetime64", 22: "timedelta64"}
_BLOCK_CLASS = {"b": "BoolBlock", "i": "IntBlock", "u": "IntBlock", "f": "FloatBlock", "O": "ObjectBlock"}
_INDEX_CLASS = {"i": "Int64Index", "u": "UInt64Index", "f": "Float64Index"}
# What pandas <= 0.25 could write that this module refuses, and what it is, for the message.
_UNSUPPORTED_TYPS = {
    "multi_index": "a MultiIndex", "datetime_index": "a DatetimeIndex", "period_index": "a PeriodIndex",
    "interval_index": "an IntervalIndex", "interval_array": "an IntervalArray",
    "category": "a Categorical", "categorical": "a Categorical", "sparse_series": "a SparseSeries",
    "sparse_dataframe": "a SparseDataFrame", "timestamp": "a Timestamp", "nat": "NaT",
    "period": "a Period", "interval": "an Interval", "datetime": "a datetime",
    "datetime64": "a datetime64", "date": "a date", "timedelta": "a timedelta",
    "timedelta64": "a timedelta64", "np_complex": "a complex number", "block_index": "a sparse BlockIndex",
    "int_index": "a sparse IntIndex",
}


# --- public API -----------------------------------------------------------------------------
def read_legacy_log(source: Source, *, max_decoded_bytes: int = MAX_DECODED_BYTES) -> pd.DataFrame:
    """The DataFrame in a log written by ``DataFrame.to_msgpack`` (pandas <= 0.25).

    Same rows, columns, index and dtypes as the frame that was saved (object columns and
    labels stay ``object``; pandas 3 would otherwise infer its ``str`` dtype). A file holding
    several objects (``append=True``) gives their rows concatenated in file order, see
    :func:`combine_log_objects`; :func:`read_legacy_objects` gives them one by one.
    """
    objects = read_legacy_objects(source, max_decoded_bytes=max_decoded_bytes)
    return combine_log_objects(objects, _describe(source))


def read_legacy_objects(source: Source, *, max_decoded_bytes: int = MAX_DECODED_BYTES) -> list[PandasObject]:
    """Every object in a pandas <= 0.25 msgpack file, in order (``read_msgpack(path,
    iterator=True)``). ``source``: a path, the file's bytes, or a binary file object."""
    with _open_source(source) as (handle, size):
        return _decode_stream(handle, size, _describe(source), max_decoded_bytes)


def write_legacy_log(frame: pd.DataFrame, path: str | os.PathLike, compress: str | None = "zlib",
                     append: bool = False) -> None:
    """``frame.to_msgpack(path, compress=compress, append=append)`` as pandas 0.25 wrote it.

    Without ``append`` the file is replaced atomically (written beside it, then renamed), so a
    reader never sees half a log. Columns must be bool, int, uint, float or object (pandas' ``str``
    dtype is written as object); anything else raises :class:`BadInput` naming the column.
    """
    if not isinstance(frame, pd.DataFrame):
        raise BadInput(f"write_legacy_log writes a DataFrame, not a {type(frame).__name__}")
    _write_bytes(Path(path), encode_legacy(frame, compress=compress), append=append)


def combine_log_objects(objects: list[PandasObject], source: str = "the file") -> pd.DataFrame:
    """One DataFrame from the objects of a log file: the only one as it is, or several
    concatenated row-wise in file order (a Series is a one-column frame). Columns that some
    objects lack are filled with NaN, as :func:`pandas.concat` does."""
    frames = [obj.to_frame() if isinstance(obj, pd.Series) else obj for obj in objects]
    if not frames:
        raise BadInput(f"{source} holds no pandas object")
    if len(frames) == 1:
        return frames[0]
    try:
        return pd.concat(frames)
    except (ValueError, TypeError, pd.errors.InvalidIndexError) as exc:
        raise BadInput(f"{source}: its {len(frames)} objects cannot be concatenated "
                       f"({str(exc).splitlines()[0][:100]}); read_legacy_objects reads them one by one"
                       ) from None


def encode_legacy(*objects: PandasObject, compress: str | None = "zlib") -> bytes:
    """The bytes ``pandas.to_msgpack(None, *objects, compress=compress)`` returned."""
    if compress not in COMPRESSIONS:
        raise BadInput(f"compress={compress!r}: pandas msgpack knows 'zlib', 'blosc' or None")
    encoder = _Encoder(compress)
    packer = msgpack.Packer(use_bin_type=True, datetime=False)
    return b"".join(packer.pack(encoder.top(obj)) for obj in objects)


def decode_legacy(data: bytes, *, source: str = "data", max_decoded_bytes: int = MAX_DECODED_BYTES
                  ) -> list[PandasObject]:
    """The pandas objects in bytes of the pandas <= 0.25 msgpack format."""
    data = bytes(data)
    LOG_BYTES.check(len(data), source)
    return _decode_stream(io.BytesIO(data), len(data), source, max_decoded_bytes)


# --- reading: msgpack -> plain values ------------------------------------------------------
def _describe(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", None) or "data")


@contextlib.contextmanager
def _open_source(source: Source):
    """``(binary file, its size)``: a regular file no larger than LOG_BYTES, read as it is
    unpacked; bytes and file objects (read whole, within the same limit) as an in-memory file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        size = regular_file(path, "log").st_size
        LOG_BYTES.check(size, f"log {path}")
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
        with handle:
            yield handle, size
        return
    elif hasattr(source, "read"):
        data = source.read(LOG_BYTES.value + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise BadInput(f"{_describe(source)} must be opened in binary mode")
        data = bytes(data)
    else:
        raise BadInput(f"cannot read a pandas msgpack log from a {type(source).__name__}")
    LOG_BYTES.check(len(data), _describe(source))
    yield io.BytesIO(data), len(data)


class _NotUtf8(Exception):
    """A msgpack str that is not UTF-8: the file is of the pre-0.18 layout, whose raw strings
    hold bytes as well as text (internal: the file is then read again in that mode)."""


def _decode_stream(handle: BinaryIO, size: int, source: str, max_decoded_bytes: int) -> list[PandasObject]:
    """Each msgpack object of the file, decoded as soon as it is complete (so that nothing
    but the current object's plain values is ever held). Read first as pandas >= 0.18 wrote
    it (str is UTF-8 text, bytes are bin or ext); a str that is not UTF-8 means the pre-0.18
    layout (raw strings for text and bytes alike), read again from the start as such."""
    if size == 0:
        raise BadInput(f"{source} is empty (a pandas msgpack file holds at least one object)")
    start = handle.tell()
    try:
        return _decode_objects(handle, size, source, max_decoded_bytes, raw=False)
    except _NotUtf8:
        handle.seek(start)
        return _decode_objects(handle, size, source, max_decoded_bytes, raw=True)


def _decode_objects(handle: BinaryIO, size: int, source: str, max_decoded_bytes: int, raw: bool
                    ) -> list[PandasObject]:
    decoder = _Decoder(source, max_decoded_bytes)
    structure = _Structure(source, raw)
    # No declared length may exceed what the file can hold (an array of n items needs at
    # least n bytes), nor the limits; msgpack checks each before it allocates. An array is
    # counted only once complete, so its length is bounded too: its items (at most ~100 bytes
    # each, a list slot and a small object) fit the structure budget. pandas' maps have a few keys.
    items = min(size, ITEMS.value, LOG_STRUCTURE_BYTES.value // _BYTES_PER_ITEM)
    member = min(size, MEMBER_BYTES.value)
    unpacker = msgpack.Unpacker(handle, read_size=min(size, 1 << 20), max_buffer_size=size, raw=raw,
                                strict_map_key=True, use_list=True, object_hook=structure.map,
                                list_hook=structure.array, max_str_len=member, max_bin_len=member,
                                max_ext_len=member, max_array_len=items, max_map_len=min(_MAP_KEYS, items))
    objects: list[PandasObject] = []
    end_of_last = 0
    while True:
        structure.start_object()
        try:
            raw_object = next(unpacker)
        except StopIteration:
            break
        except BadInput:
            raise
        except UnicodeDecodeError:
            raise _NotUtf8() from None
        except msgpack.exceptions.StackError:
            raise BadInput(f"{source} is not a pandas msgpack log: msgpack nested too deeply") from None
        except (ValueError, TypeError, MemoryError, msgpack.exceptions.UnpackException) as exc:
            problem = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            if "exceeds max_array_len" in problem and items == size:
                raise BadInput(f"{source} is truncated or not a pandas msgpack log: an array declares more "
                               f"items than its {size:,} bytes can hold") from None
            if "exceeds max_array_len" in problem:
                raise BadInput(f"{source}: an array longer than {items:,} items, the most that "
                               f"{LOG_STRUCTURE_BYTES.variable} allows (raise it if the file is genuine)") from None
            if "exceeds max_map_len" in problem:
                raise BadInput(f"{source} is not a pandas msgpack log: a map of more than {_MAP_KEYS} keys") from None
            raise BadInput(f"{source} is not a pandas msgpack log (corrupt msgpack after "
                           f"{len(objects)} object(s): {problem})") from None
        end_of_last = unpacker.tell()
        objects.append(decoder.top(raw_object, len(objects) + 1))
        del raw_object
    if end_of_last < size:
        raise BadInput(f"{source} is truncated or not a pandas msgpack log: its last "
                       f"{size - end_of_last} byte(s) are an incomplete msgpack object "
                       f"(after {len(objects)} complete one(s))")
    return objects


class _Structure:
    """Counts the memory of the maps, arrays and text msgpack builds for one object, as each
    container is completed (msgpack's hooks), and refuses past LOG_STRUCTURE_BYTES: 30 MB of
    empty maps would otherwise become gigabytes of dicts. Array data (bin, ext, and the raw
    strings of the pre-0.18 layout) costs what the file holds, and is checked by the decoder.

    In the pre-0.18 layout (``raw``) every string arrives as bytes: map keys and every value
    but a ``data`` or ``values`` payload are text, decoded as UTF-8 or else Latin-1 (pandas
    < 0.18 encoded text as Latin-1 by default; Python 2 wrote its ``str`` as it was)."""

    def __init__(self, source: str, raw: bool):
        self.source = source
        self.raw = raw
        self.spent = 0

    def start_object(self) -> None:
        self.spent = 0

    def _spend(self, container: Any, leaves: Any) -> None:
        cost = sys.getsizeof(container)
        for leaf in leaves:
            if isinstance(leaf, (str, float, int)) and not isinstance(leaf, bool):
                cost += sys.getsizeof(leaf)
            elif isinstance(leaf, (bytes, msgpack.ExtType)):  # an object each; large data is the file's
                data = leaf if isinstance(leaf, bytes) else leaf.data
                cost += _BYTES_OVERHEAD + (len(data) if len(data) < _LARGE_DATA else 0)
        self.spent += cost
        LOG_STRUCTURE_BYTES.check(self.spent, f"{self.source}: one object")

    def map(self, values: dict) -> dict:
        if self.raw:
            values = {_old_text(key): (value if key in _PAYLOAD_KEYS else _old_text(value))
                      for key, value in values.items()}
        self._spend(values, values.values())
        return values

    def array(self, values: list) -> list:
        if self.raw:
            values = [_old_text(value) for value in values]
        self._spend(values, values)
        return values


_PAYLOAD_KEYS = (b"data", b"values")
_BYTES_PER_ITEM = 64
_MAP_KEYS = 1024
_BYTES_OVERHEAD = 128  # a bytes object, or an ExtType tuple holding one
_LARGE_DATA = 4096


def _old_text(value: Any) -> Any:
    """A raw string of the pre-0.18 layout as text; anything else as it is."""
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")



# --- reading: plain values -> pandas -------------------------------------------------------
class _Decoder:
    """Turns the maps pandas wrote into numpy/pandas objects, checking every field."""

    def __init__(self, source: str, max_decoded_bytes: int):
        self.source = source
        self.budget = max_decoded_bytes
        self.max_decoded_bytes = max_decoded_bytes

    def top(self, raw: Any, number: int) -> PandasObject:
        """The ``number``-th object of the file (from 1)."""
        if not isinstance(raw, dict):
            raise BadInput(f"{self.source} is not a pandas msgpack log: its object {number} is "
                           f"{_kind(raw)} in msgpack, not a pandas object")
        where = f"{self.source}: object {number}"
        typ = _typ(raw, where)
        if typ == "block_manager":
            return self.frame(raw, where)
        if typ == "series":
            return self.series(raw, where)
        if typ in ("index", "range_index", "ndarray", "np_scalar"):
            raise BadInput(f"{where} is a bare {typ.replace('_', ' ')}, not a DataFrame or Series")
        raise _unsupported(typ, where)

    # sizes ---------------------------------------------------------------------------------
    def spend(self, n_bytes: int, where: str) -> None:
        """Account for ``n_bytes`` about to be allocated; refuse past the budget."""
        if n_bytes > self.budget:
            raise BadInput(f"{where}: decoding would need more than {self.max_decoded_bytes:,} bytes "
                           "(max_decoded_bytes); the file is corrupt or exceptionally large")
        self.budget -= n_bytes

    # pandas objects ------------------------------------------------------------------------
    def frame(self, raw: dict, where: str) -> pd.DataFrame:
        klass = _optional_text(raw, "klass", where) or "DataFrame"
        if klass != "DataFrame":
            raise BadInput(f"{where} is a pandas {printable(klass[:40])}; only DataFrames and Series are supported")
        axes = _get(raw, "axes", where, (list,))
        if len(axes) != 2:
            raise BadInput(f"{where}: a DataFrame has 2 axes, this one declares {len(axes)}")
        columns = self.index(axes[0], f"{where} columns")
        COLUMNS.check(len(columns), f"{where}: a frame that")  # before a Series per column
        index = self.index(axes[1], f"{where} index")
        data: list[np.ndarray | None] = [None] * len(columns)
        blocks = _get(raw, "blocks", where, (list,))
        COLUMNS.check(len(blocks), f"{where}: a frame whose blocks")
        for i, block in enumerate(blocks):
            self.block(block, f"{where} block {i + 1}", columns, len(index), data)
        missing = [str(columns[i]) for i, column in enumerate(data) if column is None]
        if missing:
            raise BadInput(f"{where}: no block holds column(s) {', '.join(missing[:5])}")
        # Each column as a Series of its own dtype: the DataFrame constructor would otherwise
        # infer pandas 3's str dtype for object columns of strings. The index is set afterwards
        # so that repeated labels are not aligned.
        rows = pd.RangeIndex(len(index))
        with _building(where):
            frame = pd.DataFrame({i: pd.Series(column, index=rows, dtype=column.dtype, copy=False)
                                  for i, column in enumerate(data)}, index=rows)
            frame.index = index
            frame.columns = columns
        return frame

    def block(self, raw: Any, where: str, columns: pd.Index, n_rows: int,
              data: list[np.ndarray | None]) -> None:
        if not isinstance(raw, dict):
            raise BadInput(f"{where} is {_kind(raw)}, not a block map")
        dtype = _dtype(raw, where)
        shape = _shape(_get(raw, "shape", where, (list,)), where)
        if len(shape) != 2:
            raise BadInput(f"{where}: DataFrame blocks are 2-D, this one has shape {tuple(shape)}")
        if shape[1] != n_rows:
            raise BadInput(f"{where}: shape {tuple(shape)} does not match the index's {n_rows} rows")
        positions = self.block_positions(raw, where, columns)
        if len(positions) != shape[0]:
            raise BadInput(f"{where}: shape {tuple(shape)} does not match its {len(positions)} column(s)")
        values = self.values(_get(raw, "values", where), dtype, _compress(raw, where), where,
                             count=shape[0] * shape[1]).reshape(shape)
        for row, position in enumerate(positions):
            if not 0 <= position < len(columns):
                raise BadInput(f"{where}: column position {position} outside the {len(columns)} columns")
            if data[position] is not None:
                raise BadInput(f"{where}: column {columns[position]!s} is held by two blocks")
            data[position] = values[row]

    def block_positions(self, raw: dict, where: str, columns: pd.Index) -> list[int]:
        if "locs" in raw:
            array = self.ndarray(raw["locs"], f"{where} locs")
            if array.dtype.kind not in "iu" or array.ndim != 1:
                raise BadInput(f"{where}: locs must be a 1-D integer array, got {array.dtype} {array.shape}")
            return [int(value) for value in array]
        if "items" in raw:  # pandas < 0.16 named a block's columns instead
            items = self.index(raw["items"], f"{where} items")
            if not columns.is_unique:
                raise BadInput(f"{where}: blocks name their columns (pandas < 0.16) but the column "
                               "labels repeat, so they cannot be placed")
            positions = columns.get_indexer(items)
            if (positions < 0).any():
                raise BadInput(f"{where}: names columns that are not in the frame's columns")
            return [int(p) for p in positions]
        raise BadInput(f"{where} lacks the field 'locs'")

    def series(self, raw: dict, where: str) -> pd.Series:
        index = self.index(_get(raw, "index", where), f"{where} index")
        values = self.values(_get(raw, "data", where), _dtype(raw, where), _compress(raw, where), where,
                             count=len(index))
        name = _label(raw.get("name"), f"{where} name")
        with _building(where):
            return pd.Series(values, index=index, name=name, dtype=values.dtype, copy=False)

    def index(self, raw: Any, where: str) -> pd.Index:
        typ = _typ(raw, where)
        name = _label(raw.get("name"), f"{where} name")
        if typ == "range_index":
            start, stop, step = (_integer(_get(raw, key, where), f"{where} {key}") for key in ("start", "stop", "step"))
            if step == 0:
                raise BadInput(f"{where}: a RangeIndex with step 0")
            if not all(-2**63 <= value < 2**63 for value in (start, stop, step)):
                raise BadInput(f"{where}: RangeIndex bounds outside int64")
            length = max(0, (stop - start + step - (1 if step > 0 else -1)) // step)
            self.spend(8 * length, where)  # what the rows will cost once the index is materialised
            return pd.RangeIndex(start, stop, step, name=name)
        if typ != "index":
            if typ in _UNSUPPORTED_TYPS:
                raise _unsupported(typ, where)
            raise BadInput(f"{where}: expected an index, found typ {typ[:40]!r}")
        values = self.values(_get(raw, "data", where), _dtype(raw, where), _compress(raw, where), where)
        if values.dtype.kind in "iuf":  # pandas <= 0.25 had Int64Index, UInt64Index, Float64Index only
            values = values.astype(values.dtype.kind + "8", copy=False)
        with _building(where):
            return pd.Index(values, dtype=values.dtype, name=name, copy=False)

    def ndarray(self, raw: Any, where: str) -> np.ndarray:
        if _typ(raw, where) != "ndarray":
            raise BadInput(f"{where}: expected a numpy array, found typ {raw['typ']!r}")
        shape = _shape(_get(raw, "shape", where, (list,)), where)
        count = math.prod(shape)
        values = self.values(_get(raw, "data", where), _dtype(raw, where), _compress(raw, where), where,
                             count=count)
        return values.reshape(shape)

    # arrays --------------------------------------------------------------------------------
    def values(self, raw: Any, dtype: np.dtype, compress: str | None, where: str,
               count: int | None = None) -> np.ndarray:
        """A 1-D array of ``dtype``: ``count`` items if given, else as many as the data holds."""
        if dtype == object:
            if not isinstance(raw, list):
                raise BadInput(f"{where}: object data should be a msgpack array, found {_kind(raw)}")
            if count is not None and len(raw) != count:
                raise BadInput(f"{where}: declares {count} values, holds {len(raw)}")
            MEMBER_BYTES.check(8 * len(raw), f"{where}: an array that")
            self.spend(8 * len(raw), where)
            array = np.empty(len(raw), dtype=object)
            for i, item in enumerate(raw):  # item by item: a list of tuples must not become 2-D
                array[i] = _object_value(item, f"{where} value {i + 1}")
            return array
        if isinstance(raw, list):  # the first pandas msgpack (0.13) wrote some numbers as a list
            return self.number_list(raw, dtype, where, count)
        expected = None if count is None else count * dtype.itemsize
        if expected is not None:  # declared: checked before anything of that size is made
            MEMBER_BYTES.check(expected, f"{where}: an array that")
        payload = self.payload(raw, compress, where, expected)
        if len(payload) % dtype.itemsize:
            raise BadInput(f"{where}: {len(payload)} bytes is not a whole number of {dtype.name} values")
        if dtype == np.bool_:  # any nonzero byte is True, as numpy reads it; never a raw bool view
            return np.frombuffer(payload, dtype=np.uint8) != 0
        return np.frombuffer(payload, dtype=dtype).astype(dtype.newbyteorder("="))  # a writable copy

    def number_list(self, raw: list, dtype: np.dtype, where: str, count: int | None) -> np.ndarray:
        if count is not None and len(raw) != count:
            raise BadInput(f"{where}: declares {count} values, holds {len(raw)}")
        MEMBER_BYTES.check(len(raw) * dtype.itemsize, f"{where}: an array that")
        self.spend(len(raw) * dtype.itemsize, where)
        kinds = (bool,) if dtype.kind == "b" else (int, float) if dtype.kind == "f" else (int,)
        if not all(isinstance(value, kinds) for value in raw):
            raise BadInput(f"{where}: a list of {dtype.name} values holds something else")
        with _building(where):
            return np.array(raw, dtype=dtype.newbyteorder("="))

    def payload(self, raw: Any, compress: str | None, where: str, expected: int | None) -> bytes:
        """The array bytes in ``raw``, decompressed; exactly ``expected`` of them if given."""
        if isinstance(raw, msgpack.ExtType):
            if raw.code != _EXT_NUMPY:
                raise BadInput(f"{where}: array data in msgpack ext type {raw.code}, pandas used {_EXT_NUMPY}")
            data = raw.data
        elif isinstance(raw, bytes):
            data = raw
        elif isinstance(raw, str):
            # pandas < 0.18 wrote the bytes as a raw string; one that is valid UTF-8 arrives
            # decoded, and encoding it gives the bytes back exactly.
            data = raw.encode("utf-8", "surrogatepass")
        else:
            raise BadInput(f"{where}: numeric data should be binary, found {_kind(raw)}")
        if compress is None:
            if expected is not None and len(data) != expected:
                raise BadInput(f"{where}: declares {expected} bytes of data, holds {len(data)}")
            self.spend(len(data), where)
            return data
        if compress == "zlib":
            return self.inflate(data, where, expected)
        return self.unblosc(data, where, expected)

    def inflate(self, data: bytes, where: str, expected: int | None) -> bytes:
        if expected is not None and expected > _ZLIB_MAX_RATIO * len(data) + 64:
            raise BadInput(f"{where}: declares {expected} bytes, more than {len(data)} bytes of zlib "
                           "data can hold")
        if expected is not None:
            self.spend(expected, where)
        # Without a declared size (an index), inflate no further than the budget allows.
        limit = expected if expected is not None else self.budget
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data, limit + 1)
            complete = inflater.eof
        except zlib.error as exc:
            raise BadInput(f"{where}: corrupt zlib data ({exc})") from None
        if not complete and len(out) > limit:
            if expected is not None:
                raise BadInput(f"{where}: zlib data holds more than the {expected} bytes declared")
            self.spend(len(out), where)  # raises: over the budget
        if not complete:
            raise BadInput(f"{where}: zlib data is cut short")
        if inflater.unused_data:
            raise BadInput(f"{where}: {len(inflater.unused_data)} stray byte(s) after the zlib data")
        if expected is None:
            self.spend(len(out), where)
        elif len(out) != expected:
            raise BadInput(f"{where}: declares {expected} bytes of data, zlib data holds {len(out)}")
        return out

    def unblosc(self, data: bytes, where: str, expected: int | None) -> bytes:
        try:
            import blosc  # optional: only for blosc-compressed logs
        except ImportError:
            raise BadInput(f"{where}: compressed with blosc; install the blosc package "
                           "(pip install blosc) to read it") from None
        # The blosc 1 header (16 bytes) gives the sizes: check them before blosc allocates.
        if len(data) < _BLOSC_HEADER:
            raise BadInput(f"{where}: blosc data shorter than its {_BLOSC_HEADER}-byte header")
        n_bytes = int.from_bytes(data[4:8], "little")
        compressed_bytes = int.from_bytes(data[12:16], "little")
        if compressed_bytes != len(data):
            raise BadInput(f"{where}: blosc header says {compressed_bytes} bytes, the data has {len(data)}")
        if expected is not None and n_bytes != expected:
            raise BadInput(f"{where}: declares {expected} bytes, its blosc data holds {n_bytes}")
        self.spend(n_bytes, where)
        try:
            out = blosc.decompress(data)
        except Exception as exc:  # blosc raises bare RuntimeError/ValueError on corrupt input
            raise BadInput(f"{where}: corrupt blosc data ({str(exc)[:80]})") from None
        if len(out) != n_bytes:
            raise BadInput(f"{where}: blosc data decompressed to {len(out)} bytes, not {n_bytes}")
        return out


@contextlib.contextmanager
def _building(where: str):
    """pandas' own refusals, once every field is checked, as BadInput (none is known to remain)."""
    try:
        yield
    except (ValueError, TypeError, NotImplementedError, OverflowError) as exc:
        raise BadInput(f"{where}: pandas cannot build it ({str(exc).splitlines()[0][:100]})") from None


def _kind(value: Any) -> str:
    """What a msgpack value is, with its article: 'an array'."""
    kinds = {dict: "a map", list: "an array", str: "a string", bytes: "a binary", bool: "a boolean",
             int: "an integer", float: "a float", type(None): "nil", msgpack.ExtType: "an ext value"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _typ(raw: Any, where: str) -> str:
    if not isinstance(raw, dict):
        raise BadInput(f"{where} is {_kind(raw)} in msgpack, not a pandas object (a map with 'typ')")
    typ = raw.get("typ")
    if not isinstance(typ, str):
        raise BadInput(f"{where} is a map without a 'typ' naming a pandas object")
    return typ


def _unsupported(typ: str, where: str) -> BadInput:
    if typ in _UNSUPPORTED_TYPS:
        return BadInput(f"{where} holds {_UNSUPPORTED_TYPS[typ]}, which this reader does not support "
                        "(the original's logs hold none)")
    return BadInput(f"{where}: unknown typ {typ[:40]!r}; not written by pandas <= 0.25")


def _get(raw: dict, key: str, where: str, types: tuple[type, ...] | None = None) -> Any:
    if key not in raw:
        raise BadInput(f"{where} lacks the field {key!r}")
    value = raw[key]
    if types is not None and not isinstance(value, types):
        raise BadInput(f"{where}: field {key!r} is {_kind(value)}")
    return value


def _optional_text(raw: dict, key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise BadInput(f"{where}: field {key!r} should be text, found {_kind(value)}")
    return value


def _compress(raw: dict, where: str) -> str | None:
    compress = _optional_text(raw, "compress", where) or None  # pandas took '' for none too
    if compress not in COMPRESSIONS:
        raise BadInput(f"{where}: unknown compression {compress[:40]!r} (pandas wrote zlib, blosc or none)")
    return compress


def _dtype(raw: dict, where: str) -> np.dtype:
    name = _get(raw, "dtype", where)
    if name == "object":
        return np.dtype(object)
    if isinstance(name, str) and name in _NUMERIC_DTYPES:
        return _NUMERIC_DTYPES[name]
    if isinstance(name, str):
        raise BadInput(f"{where}: dtype {name[:40]!r} is not supported (bool, int, uint, float and object are)")
    if isinstance(name, int) and not isinstance(name, bool):  # pandas < 0.18: the type number
        if name in _DTYPE_NUMBERS:
            return _DTYPE_NUMBERS[name]
        raise BadInput(f"{where}: dtype number {name} (numpy's {_OTHER_DTYPE_NUMBERS.get(name, 'unknown')}) "
                       "is not supported (bool, int, uint, float and object are)")
    raise BadInput(f"{where}: field 'dtype' should be a dtype name, found {_kind(name)}")


def _integer(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(f"{where} should be an integer, found {_kind(value)}")
    return value


def _shape(raw: list, where: str) -> list[int]:
    shape = [_integer(n, f"{where} shape") for n in raw]
    if any(n < 0 for n in shape):
        raise BadInput(f"{where}: negative shape {tuple(shape)}")
    return shape


def _label(value: Any, where: str) -> Any:
    """An index name: a scalar, or None."""
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return value
    if isinstance(value, dict) and value.get("typ") == "np_scalar":
        return _numpy_scalar(value, where)
    raise BadInput(f"{where} should be a scalar, found {_kind(value)}")


def _object_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return value
    if isinstance(value, dict) and value.get("typ") == "np_scalar":
        return _numpy_scalar(value, where)
    if isinstance(value, dict) and isinstance(value.get("typ"), str):
        raise _unsupported(value["typ"], where)
    raise BadInput(f"{where}: object columns hold scalars, found {_kind(value)}")


def _numpy_scalar(raw: dict, where: str) -> np.generic:
    """``{typ: 'np_scalar', dtype, data: repr(value)}``: parsed, never evaluated."""
    if raw.get("sub_typ") is not None:
        raise _unsupported("np_complex", where)
    dtype = _dtype(raw, where)
    text = _old_text(_get(raw, "data", where, (str, bytes)))
    if dtype == object or len(text) > 64:
        raise BadInput(f"{where}: not a numpy scalar of a numeric dtype")
    try:
        number = float(text) if dtype.kind == "f" else int(text)
        return dtype.type(number)
    except (ValueError, OverflowError):
        raise BadInput(f"{where}: {text!r} is not a {dtype.name} value") from None


# --- writing --------------------------------------------------------------------------------
class _Encoder:
    """pandas objects -> the maps pandas 0.25's ``encode`` made, keys in its order."""

    def __init__(self, compress: str | None):
        self.compress = compress

    def top(self, obj: Any) -> dict:
        if isinstance(obj, pd.DataFrame):
            return self.frame(obj)
        if isinstance(obj, pd.Series):
            return self.series(obj)
        raise BadInput(f"pandas msgpack logs hold DataFrames or Series, not a {type(obj).__name__}")

    def frame(self, frame: pd.DataFrame) -> dict:
        by_dtype: dict[np.dtype, list[int]] = {}
        for position, (label, dtype) in enumerate(frame.dtypes.items()):
            by_dtype.setdefault(_writable_dtype(dtype, f"column {label!r}"), []).append(position)
        blocks = []
        # pandas consolidated blocks sorted by dtype name; readers place them by locs anyway.
        for dtype, positions in sorted(by_dtype.items(), key=lambda item: item[0].name):
            values = np.empty((len(positions), len(frame)), dtype=dtype)
            for row, position in enumerate(positions):
                values[row] = _column_values(frame.iloc[:, position], dtype)
            blocks.append({"locs": self.ndarray(np.asarray(positions, dtype=np.int64)),
                           "values": self.data(values),
                           "shape": list(values.shape),
                           "dtype": dtype.name,
                           "klass": _BLOCK_CLASS[dtype.kind],
                           "compress": self.compress})
        return {"typ": "block_manager", "klass": "DataFrame",
                "axes": [self.index(frame.columns, "the columns"), self.index(frame.index, "the index")],
                "blocks": blocks}

    def series(self, series: pd.Series) -> dict:
        dtype = _writable_dtype(series.dtype, f"Series {series.name!r}")
        return {"typ": "series", "klass": "Series", "name": _writable_label(series.name, "the Series name"),
                "index": self.index(series.index, "the index"), "dtype": dtype.name,
                "data": self.data(_column_values(series, dtype)), "compress": self.compress}

    def index(self, index: pd.Index, what: str) -> dict:
        if isinstance(index, pd.MultiIndex):
            raise BadInput(f"{what} is a MultiIndex, which this writer does not support")
        name = _writable_label(index.name, f"the name of {what}")
        if isinstance(index, pd.RangeIndex):
            return {"typ": "range_index", "klass": "RangeIndex", "name": name,
                    "start": index.start, "stop": index.stop, "step": index.step}
        dtype = _writable_dtype(index.dtype, what)
        if dtype.kind in _INDEX_CLASS:  # pandas <= 0.25 had 64-bit numeric indexes only
            dtype = np.dtype(dtype.kind + "8")
            klass = _INDEX_CLASS[dtype.kind]
        else:  # object, and bool (pandas <= 0.25 kept a bool index as object)
            dtype, klass = np.dtype(object), "Index"
        return {"typ": "index", "klass": klass, "name": name, "dtype": dtype.name,
                "data": self.data(_column_values(index, dtype)), "compress": self.compress}

    def ndarray(self, array: np.ndarray) -> dict:
        return {"typ": "ndarray", "shape": list(array.shape), "ndim": array.ndim,
                "dtype": array.dtype.name, "data": self.data(array), "compress": self.compress}

    def data(self, array: np.ndarray) -> Any:
        if array.dtype == object:  # never compressed, whatever compress says
            return [_writable_object(value) for value in array.ravel()]
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        if self.compress == "zlib":
            raw = zlib.compress(raw)
        elif self.compress == "blosc":
            try:
                import blosc  # optional: only for blosc-compressed logs
            except ImportError:
                raise BadInput("compress='blosc' needs the blosc package (pip install blosc)") from None
            raw = blosc.compress(raw, typesize=array.dtype.itemsize)
        return msgpack.ExtType(_EXT_NUMPY, raw)


def _writable_dtype(dtype: Any, what: str) -> np.dtype:
    if isinstance(dtype, pd.StringDtype):
        return np.dtype(object)
    if isinstance(dtype, np.dtype) and (dtype == object or dtype.name in _NUMERIC_DTYPES):
        return dtype
    raise BadInput(f"{what} has dtype {dtype}, which the pandas <= 0.25 msgpack format written here "
                   "cannot hold (bool, int, uint, float and object can); convert it with astype first")


def _column_values(values: pd.Series | pd.Index, dtype: np.dtype) -> np.ndarray:
    if dtype == object:
        # Missing strings of pandas' str dtype are NaN, as pandas <= 0.25 had them.
        return np.asarray(values.astype(object), dtype=object)
    return values.to_numpy(dtype=dtype)


def _writable_label(value: Any, what: str) -> Any:
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return _writable_object(value)
    if isinstance(value, np.generic):
        return _writable_object(value)
    raise BadInput(f"{what} is a {type(value).__name__}; pandas msgpack labels here are scalars")


def _writable_object(value: Any) -> Any:
    """A value of an object column, as pandas 0.25's packer wrote it."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.integer, np.floating)) and not isinstance(value, np.float64):
        return {"typ": "np_scalar", "dtype": value.dtype.name, "data": str(value)}
    if isinstance(value, float):  # np.float64 is a float: packed as a double, as pandas did
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
        raise BadInput(f"integer {value} does not fit msgpack's 64 bits")
    if value is None or isinstance(value, (str, bytes, bool, int)):
        return value
    raise BadInput(f"cannot write a {type(value).__name__} value ({str(value)[:40]}) in a pandas "
                   "msgpack object column (str, bytes, int, float, bool and None can be)")


def _write_bytes(path: Path, data: bytes, *, append: bool) -> None:
    try:
        if append:
            with open(path, "ab") as handle:
                handle.write(data)
            return
        write_bytes_atomic(path, data)  # a reader never sees half a log
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
