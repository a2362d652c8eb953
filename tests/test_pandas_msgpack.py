"""The pandas <= 0.25 msgpack log format (mt_repro.logs.pandas_msgpack) and ``mt-repro port-log``.

The fixtures are built here by hand from the format as pandas 0.25's ``pandas/io/packers.py``
wrote it (maps with ``typ``, blocks of shape (columns, rows), numeric data as zlib-compressed
bytes in msgpack ext type 0), independently of the module's writer; one more was written by
isf-pandas-msgpack, a maintained fork of pandas' own encoder.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import zlib

import msgpack
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fuzz_examples
from mt_repro.cli import main
from mt_repro.core.errors import BadInput
from mt_repro.logs import pandas_msgpack as pm
from mt_repro.logs.runlog import RunLog

# --- hand-built fixtures, following pandas 0.25's encoder ---------------------------------------
TRAIN_COLUMNS = ["step", "class_loss", "class_loss/avg", "class_loss/sum", "labeled_minibatch_size", "lr"]
TRAIN_INDEX = [i / 782 for i in range(1, 6)]  # fractional epochs, as the original's training log
STEPS = [1, 2, 3, 4, 5]
LOSS = [2.31, 2.12, 1.98, 1.87, 1.80]
LABELED = [31, 32, 31, 32, 31]


def numeric_data(values, dtype: str, compress: str | None):
    raw = np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return msgpack.ExtType(0, zlib.compress(raw) if compress == "zlib" else raw)


def ndarray_map(values, dtype: str, compress: str | None) -> dict:
    return {"typ": "ndarray", "shape": [len(values)], "ndim": 1, "dtype": dtype,
            "data": numeric_data(values, dtype, compress), "compress": compress}


def index_map(values, dtype: str, klass: str, compress: str | None, name=None) -> dict:
    data = list(values) if dtype == "object" else numeric_data(values, dtype, compress)
    return {"typ": "index", "klass": klass, "name": name, "dtype": dtype, "data": data, "compress": compress}


def block_map(locs, rows: list[list], dtype: str, klass: str, compress: str | None) -> dict:
    flat = [value for row in rows for value in row]  # shape (columns, rows), C order
    values = flat if dtype == "object" else numeric_data(flat, dtype, compress)
    return {"locs": ndarray_map(locs, "int64", compress), "values": values,
            "shape": [len(rows), len(rows[0])], "dtype": dtype, "klass": klass, "compress": compress}


def training_log_map(compress: str | None = "zlib") -> dict:
    """A training log as the original saved it: float index, int step, float meters; the float
    block's columns are not contiguous, and ``labeled_minibatch_size`` is an int column."""
    loss_sum = list(np.cumsum(LOSS))
    loss_avg = [s / (i + 1) for i, s in enumerate(loss_sum)]
    return {"typ": "block_manager", "klass": "DataFrame",
            "axes": [index_map(TRAIN_COLUMNS, "object", "Index", compress),
                     index_map(TRAIN_INDEX, "float64", "Float64Index", compress)],
            "blocks": [block_map([1, 2, 3, 5], [LOSS, loss_avg, loss_sum, [0.2] * 5], "float64",
                                 "FloatBlock", compress),
                       block_map([0, 4], [STEPS, LABELED], "int64", "IntBlock", compress)]}


def training_log_frame() -> pd.DataFrame:
    loss_sum = np.cumsum(LOSS)
    columns = {"step": np.array(STEPS, dtype=np.int64), "class_loss": np.array(LOSS),
               "class_loss/avg": loss_sum / np.arange(1, 6), "class_loss/sum": loss_sum,
               "labeled_minibatch_size": np.array(LABELED, dtype=np.int64), "lr": np.full(5, 0.2)}
    frame = pd.DataFrame(columns, index=pd.Index(TRAIN_INDEX, dtype="float64"))
    frame.columns = pd.Index(TRAIN_COLUMNS, dtype=object)  # as pandas <= 0.25 kept labels
    return frame


def validation_log_map(compress: str | None = "zlib") -> dict:
    return {"typ": "block_manager", "klass": "DataFrame",
            "axes": [index_map(["class_loss", "top1", "top5", "note"], "object", "Index", compress),
                     index_map([0, 1, 2], "int64", "Int64Index", compress, name="epoch")],
            "blocks": [block_map([0, 1, 2], [[1.5, 1.25, 1.0], [40.0, 45.5, 50.0], [80.0, 85.0, 90.0]],
                                 "float64", "FloatBlock", compress),
                       block_map([3], [["first", None, "é"]], "object", "ObjectBlock", compress)]}


def validation_log_frame() -> pd.DataFrame:
    frame = pd.DataFrame({"class_loss": [1.5, 1.25, 1.0], "top1": [40.0, 45.5, 50.0],
                          "top5": [80.0, 85.0, 90.0],
                          "note": pd.Series(["first", None, "é"], dtype=object)},
                         index=pd.Index([0, 1, 2], dtype="int64", name="epoch"))
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    return frame


def pack(*maps: dict) -> bytes:
    return b"".join(msgpack.packb(m, use_bin_type=True) for m in maps)


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(actual, expected, check_exact=True, check_index_type=True,
                                  check_column_type=True)
    assert list(actual.dtypes) == list(expected.dtypes)


# Written by isf-pandas-msgpack 0.4.0 (a fork of pandas' own encoder) with
# to_msgpack(None, frame, compress='zlib'); its blocks say klass 'NumpyBlock' and its float
# index 'Index', as today's pandas names them, where pandas 0.25 wrote 'IntBlock',
# 'FloatBlock' and 'Float64Index'. The reader goes by dtype, as pandas' reader did.
FORK_WRITTEN = bytes.fromhex(
    "84a3747970ad626c6f636b5f6d616e61676572a56b6c617373a9446174614672616d65a4617865739286a3747970a569"
    "6e646578a56b6c617373a5496e646578a46e616d65c0a56474797065a66f626a656374a46461746193a473746570aa63"
    "6c6173735f6c6f7373b66c6162656c65645f6d696e6962617463685f73697a65a8636f6d7072657373a47a6c696286a3"
    "747970a5696e646578a56b6c617373a5496e646578a46e616d65c0a56474797065a7666c6f61743634a464617461c715"
    "00789c63600081067b30c530014acfb00700168d0266a8636f6d7072657373a47a6c6962a6626c6f636b739286a46c6f"
    "637386a3747970a76e646172726179a573686170659101a46e64696d01a56474797065a5696e743634a464617461c70b"
    "00789c636080000000080001a8636f6d7072657373a47a6c6962a676616c756573d800789c636480002628cd0ca50100"
    "680007a57368617065920103a56474797065a5696e743634a56b6c617373aa4e756d7079426c6f636ba8636f6d707265"
    "7373a47a6c696286a46c6f637386a3747970a76e646172726179a573686170659102a46e64696d01a56474797065a569"
    "6e743634a464617461c70e00789c6364800026280d0000300004a8636f6d7072657373a47a6c6962a676616c756573c7"
    "1a00789c63600001260730c5f0c31e42bf81d2f60ee8340060140422a57368617065920203a56474797065a7666c6f61"
    "743634a56b6c617373aa4e756d7079426c6f636ba8636f6d7072657373a47a6c6962")


# --- reading files in the original's format ------------------------------------------------------
@pytest.mark.parametrize("compress", ["zlib", None])
def test_reads_a_hand_built_training_log(tmp_path, compress):
    path = tmp_path / "training.msgpack"
    path.write_bytes(pack(training_log_map(compress)))
    frame = pm.read_legacy_log(path)
    assert_same(frame, training_log_frame())
    assert frame["step"].dtype == np.int64 and frame.index.dtype == np.float64
    assert frame.loc[2 / 782, "class_loss"] == 2.12


@pytest.mark.parametrize("compress", ["zlib", None])
def test_reads_a_hand_built_validation_log(tmp_path, compress):
    path = tmp_path / "validation.msgpack"
    path.write_bytes(pack(validation_log_map(compress)))
    frame = pm.read_legacy_log(path)
    assert_same(frame, validation_log_frame())
    assert frame.index.name == "epoch" and frame["note"].dtype == object and frame["note"][2] == "é"


def test_reads_a_file_written_by_a_fork_of_pandas_encoder():
    frame = pm.read_legacy_log(FORK_WRITTEN)
    expected = pd.DataFrame({"step": [1, 2, 3], "class_loss": [2.25, 1.5, 0.875],
                             "labeled_minibatch_size": [31.0, 31.0, 31.0]},
                            index=[0.0078125, 0.015625, 0.0234375])
    expected.columns = pd.Index(list(expected.columns), dtype=object)
    assert_same(frame, expected)


def test_writer_emits_pandas_025_layout_byte_for_byte():
    """Same maps, same key order, same block order (consolidated blocks sorted by dtype name)."""
    assert pm.encode_legacy(training_log_frame(), compress="zlib") == pack(training_log_map("zlib"))
    assert pm.encode_legacy(validation_log_frame(), compress=None) == pack(validation_log_map(None))


def test_map_key_order_does_not_matter():
    def reverse(value):
        if isinstance(value, dict):
            return {key: reverse(value[key]) for key in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(item) for item in value]
        return value

    assert_same(pm.read_legacy_log(pack(reverse(training_log_map()))), training_log_frame())


def test_older_pandas_variants():
    """Blocks naming their columns by 'items' (older pandas), raw bin data, a RangeIndex,
    numpy scalars in an object column."""
    raw = np.array([1.0, 2.0], dtype="<f8").tobytes()
    old = {"typ": "block_manager", "klass": "DataFrame",
           "axes": [index_map(["b", "a"], "object", "Index", None),
                    {"typ": "range_index", "klass": "RangeIndex", "name": "n", "start": 10, "stop": 14, "step": 2}],
           "blocks": [{"items": index_map(["a"], "object", "Index", None), "values": raw,
                       "shape": [1, 2], "dtype": "float64", "klass": "FloatBlock", "compress": None},
                      {"items": index_map(["b"], "object", "Index", None),
                       "values": [{"typ": "np_scalar", "dtype": "int32", "data": "7"}, "x"],
                       "shape": [1, 2], "dtype": "object", "klass": "ObjectBlock", "compress": None}]}
    frame = pm.read_legacy_log(pack(old))
    assert list(frame.index) == [10, 12] and isinstance(frame.index, pd.RangeIndex) and frame.index.name == "n"
    assert list(frame["a"]) == [1.0, 2.0] and list(frame.columns) == ["b", "a"]
    assert frame["b"][10] == np.int32(7) and type(frame["b"][10]) is np.int32 and frame["b"][12] == "x"


def test_narrow_numeric_indexes_read_as_64_bit_as_pandas_025_did(tmp_path):
    obj = training_log_map(None)
    obj["axes"][1] = index_map([1, 2, 3, 4, 5], "float16", "Float64Index", None)
    assert pm.read_legacy_log(pack(obj)).index.dtype == np.float64
    obj["axes"][1] = index_map([1, 2, 3, 4, 5], "int32", "Int64Index", None)
    assert pm.read_legacy_log(pack(obj)).index.dtype == np.int64
    path = tmp_path / "log.msgpack"
    path.write_bytes(pack(obj))
    with open(path, "rb") as handle:  # a binary file object is a source too
        assert len(pm.read_legacy_log(handle)) == 5


def test_reads_a_series():
    series = {"typ": "series", "klass": "Series", "name": "top1",
              "index": index_map([0, 1], "int64", "Int64Index", "zlib"), "dtype": "float64",
              "data": numeric_data([50.0, 60.0], "float64", "zlib"), "compress": "zlib"}
    (obj,) = pm.read_legacy_objects(pack(series))
    pd.testing.assert_series_equal(obj, pd.Series([50.0, 60.0], index=pd.Index([0, 1]), name="top1"))
    assert list(pm.read_legacy_log(pack(series)).columns) == ["top1"]


def test_blosc(tmp_path, monkeypatch):
    frame = training_log_frame()
    monkeypatch.setitem(sys.modules, "blosc", None)  # as if not installed
    with pytest.raises(BadInput, match="blosc"):
        pm.encode_legacy(frame, compress="blosc")
    blocks = training_log_map(None)
    blocks["axes"][1]["compress"] = "blosc"
    with pytest.raises(BadInput, match=r"pip install blosc"):
        pm.read_legacy_log(pack(blocks))
    monkeypatch.undo()
    pytest.importorskip("blosc")
    assert_same(pm.read_legacy_log(pm.encode_legacy(frame, compress="blosc")), frame)


# --- writing ----------------------------------------------------------------------------------
def varied_frames() -> list[pd.DataFrame]:
    mixed = pd.DataFrame({"f32": np.array([1.5, -2.0], dtype=np.float32), "u8": np.array([1, 255], dtype=np.uint8),
                          "flag": [True, False], "text": ["a", None], "obj": pd.Series([1, "x"], dtype=object)},
                         index=pd.Index(["r1", "r2"], dtype=object, name="run"))
    duplicated = pd.DataFrame([[1.0, 2, 3.0]], columns=["x", "y", "x"])
    return [training_log_frame(), validation_log_frame(), mixed, duplicated,
            pd.DataFrame({"a": pd.Series([], dtype=np.int64)}), pd.DataFrame(index=pd.RangeIndex(3))]


@pytest.mark.parametrize("compress", ["zlib", None])
def test_round_trip(tmp_path, compress):
    for i, frame in enumerate(varied_frames()):
        path = tmp_path / f"{i}.msgpack"
        pm.write_legacy_log(frame, path, compress=compress)
        back = pm.read_legacy_log(path)
        # pandas' str dtype (labels, the text column) comes back as object, as pandas <= 0.25 had it.
        expected = frame.astype({name: object for name, dtype in frame.dtypes.items()
                                 if isinstance(dtype, pd.StringDtype)})
        if isinstance(expected.columns.dtype, pd.StringDtype):
            expected.columns = expected.columns.astype(object)
        pd.testing.assert_frame_equal(back, expected, check_exact=True)
        assert list(back.dtypes) == list(expected.dtypes)


def test_append_several_objects(tmp_path):
    path = tmp_path / "log.msgpack"
    first, second = training_log_frame(), training_log_frame().iloc[:2]
    pm.write_legacy_log(first, path)
    pm.write_legacy_log(second, path, append=True)
    pm.write_legacy_log(second, path, compress=None, append=True)
    objects = pm.read_legacy_objects(path)
    assert len(objects) == 3
    assert_same(objects[0], first)
    assert_same(objects[2], second)
    assert_same(pm.read_legacy_log(path), pd.concat([first, second, second]))
    pm.write_legacy_log(second, path)  # without append: replaced
    assert len(pm.read_legacy_objects(path)) == 1


def test_writer_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(BadInput, match="column 'when' has dtype datetime64"):
        pm.write_legacy_log(pd.DataFrame({"when": pd.to_datetime(["2018-01-01"])}), tmp_path / "x.msgpack")
    with pytest.raises(BadInput, match="Int64"):
        pm.write_legacy_log(pd.DataFrame({"n": pd.array([1, None], dtype="Int64")}), tmp_path / "x.msgpack")
    with pytest.raises(BadInput, match="compress='lz4'"):
        pm.write_legacy_log(training_log_frame(), tmp_path / "x.msgpack", compress="lz4")
    with pytest.raises(BadInput, match="cannot write"):
        pm.write_legacy_log(training_log_frame(), tmp_path / "missing" / "x.msgpack")
    assert not (tmp_path / "x.msgpack").exists()


@pytest.mark.parametrize("compress", ["zlib", None])
def test_cross_check_with_a_fork_of_pandas_encoder(compress):
    """Both ways with isf-pandas-msgpack, where installed (it is not a dependency)."""
    fork = pytest.importorskip("isf_pandas_msgpack")
    for frame in (training_log_frame(), validation_log_frame()):
        assert_same(pm.read_legacy_log(fork.to_msgpack(None, frame, compress=compress)), frame)
        assert_same(fork.read_msgpack(pm.encode_legacy(frame, compress=compress)), frame)


# --- malformed input: always BadInput, one line ----------------------------------------------------
def malformed(mutate) -> bytes:
    obj = training_log_map()
    mutate(obj)
    return pack(obj)


BLOCK = ("blocks", 0)


def set_in(path, value):
    def mutate(obj):
        *parents, last = path
        for key in parents:
            obj = obj[key]
        obj[last] = value
    return mutate


MALFORMED = {
    "empty": (b"", "is empty"),
    "text": (b"epoch,step,loss\n0.1,1,2.3\n", "not a pandas msgpack log"),
    "truncated": (pack(training_log_map())[:-7], "truncated"),
    "bare list": (msgpack.packb([1, 2]), "not a pandas object"),
    "unknown typ": (malformed(set_in(["typ"], "pickle")), "unknown typ 'pickle'"),
    "panel": (malformed(set_in(["klass"], "Panel")), "pandas Panel"),
    "datetime index": (malformed(set_in(["axes", 1, "typ"], "datetime_index")), "DatetimeIndex"),
    "shape vs rows": (malformed(set_in([*BLOCK, "shape"], [4, 6])), "does not match the index"),
    "shape vs locs": (malformed(set_in([*BLOCK, "shape"], [3, 5])), "does not match its 4 column"),
    "absurd shape": (malformed(set_in([*BLOCK, "shape"], [4, 10**15])), "does not match the index"),
    "bad zlib": (malformed(set_in([*BLOCK, "values"], msgpack.ExtType(0, b"x\x9cnot zlib"))), "corrupt zlib"),
    "zlib short": (malformed(set_in([*BLOCK, "values"], msgpack.ExtType(0, zlib.compress(b"\0" * 8)))),
                   "declares 160 bytes"),
    "raw short": (malformed(set_in([*BLOCK, "compress"], None)), "declares 160 bytes of data"),
    "unknown compression": (malformed(set_in([*BLOCK, "compress"], "lz4")), "unknown compression 'lz4'"),
    "ext code": (malformed(set_in([*BLOCK, "values"], msgpack.ExtType(5, b""))), "ext type 5"),
    "dtype": (malformed(set_in([*BLOCK, "dtype"], "complex128")), "dtype 'complex128' is not supported"),
    "dtype number": (malformed(set_in([*BLOCK, "dtype"], 21)), "dtype number 21 .numpy's datetime64. is not"),
    "data as text, not zlib": (malformed(set_in([*BLOCK, "values"], "\x00" * 7)), "corrupt zlib"),
    "locs outside": (malformed(set_in([*BLOCK, "locs"], ndarray_map([1, 2, 3, 9], "int64", "zlib"))),
                     "position 9 outside"),
    "locs twice": (malformed(set_in(["blocks", 1, "locs"], ndarray_map([0, 1], "int64", "zlib"))),
                   "held by two blocks"),
    "column without block": (malformed(lambda obj: obj["blocks"].pop()), "no block holds column"),
    "missing field": (malformed(lambda obj: obj.pop("axes")), "lacks the field 'axes'"),
    "object in column": (malformed(set_in(["blocks", 1], block_map([0, 4], [[[1, 2]] * 5, [1] * 5], "object",
                                                                    "ObjectBlock", None))), "hold scalars"),
    "timestamp value": (malformed(set_in(["blocks", 1], block_map([0, 4], [[{"typ": "timestamp"}] * 5, [1] * 5],
                                                                   "object", "ObjectBlock", None))), "Timestamp"),
    "range too long": (malformed(set_in(["axes", 1], {"typ": "range_index", "name": None, "start": 0,
                                                      "stop": 2**62, "step": 1})), "more than"),
    "deep nesting": (b"\x91" * 5000 + b"\xc0", "not a pandas msgpack log"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_input_is_bad_input(tmp_path, name):
    data, message = MALFORMED[name]
    path = tmp_path / "training.msgpack"
    path.write_bytes(data)
    with pytest.raises(BadInput, match=message) as raised:
        pm.read_legacy_log(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_decoded_size_is_bounded():
    zeros = {"typ": "series", "klass": "Series", "name": None, "dtype": "float64",
             "index": {"typ": "range_index", "name": None, "start": 0, "stop": 2**20, "step": 1},
             "data": numeric_data(np.zeros(2**20), "float64", "zlib"), "compress": "zlib"}
    data = pack(zeros)
    assert len(data) < 20_000  # 8 MiB of zeros, compressed
    assert len(pm.read_legacy_objects(data)[0]) == 2**20
    with pytest.raises(BadInput, match="max_decoded_bytes"):
        pm.read_legacy_objects(data, max_decoded_bytes=2**22)
    zeros["index"] = index_map(np.zeros(2**20), "float64", "Float64Index", "zlib")  # no declared size
    with pytest.raises(BadInput, match="max_decoded_bytes"):
        pm.read_legacy_objects(pack(zeros), max_decoded_bytes=2**22)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        pm.read_legacy_log(tmp_path / "nope.msgpack")
    with pytest.raises(BadInput, match="is a directory"):
        pm.read_legacy_log(tmp_path)


# --- property tests: nothing but BadInput, quickly ------------------------------------------------
SEEDS = [pack(training_log_map("zlib")), pack(validation_log_map(None)),
         pack(training_log_map(None), validation_log_map("zlib")), FORK_WRITTEN]


def fuzz(max_examples: int) -> settings:
    """Seeded (the same cases every run), and a generous deadline only to catch a hang."""
    return settings(max_examples=fuzz_examples(max_examples), derandomize=True, deadline=5000, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def read_or_bad_input(data: bytes) -> None:
    try:
        objects = pm.decode_legacy(data, max_decoded_bytes=2**24)
    except BadInput as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert objects and all(isinstance(obj, (pd.DataFrame, pd.Series)) for obj in objects)
        try:
            assert isinstance(pm.combine_log_objects(objects), pd.DataFrame)
        except BadInput as exc:
            assert "cannot be concatenated" in str(exc)


@fuzz(500)
@given(st.binary(max_size=600))
def test_random_bytes(data):
    read_or_bad_input(data)


@st.composite
def mutated_files(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 9))]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=9))
            data[at:at + len(chunk)] = chunk
    return bytes(data)


@fuzz(1500)
@given(mutated_files())
def test_mutated_files(data):
    read_or_bad_input(data)


def node_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from node_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from node_paths(item, (*path, i))


SEED_TREES = [msgpack.unpackb(seed) for seed in SEEDS if seed is not SEEDS[2]]
INTERESTING = st.sampled_from(["zlib", "blosc", "object", "int64", "float64", "bool", "float16", "uint64",
                               "index", "range_index", "ndarray", "np_scalar", "series", "block_manager",
                               "DataFrame", 0, -1, 1, 2**31, 10**12, 2**63, -2**63, [1], [0, 0], [10**9, 10**9],
                               math.nan, b"", msgpack.ExtType(0, b""), msgpack.ExtType(0, b"\0" * 8)])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=24) | INTERESTING,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["typ", "dtype", "data", "shape", "compress", "locs", "values", "name", "start", "stop", "step"])
        | st.text(max_size=4), children, max_size=4),
    max_leaves=8)


@fuzz(1500)
@given(st.data())
def test_structurally_mutated_files(data):
    """Any one node of a valid object replaced (or a map entry removed): the decoder's checks,
    not msgpack's, have to catch it."""
    tree = msgpack.unpackb(msgpack.packb(data.draw(st.sampled_from(SEED_TREES))))  # a fresh copy
    paths = list(node_paths(tree))[1:]
    *parents, last = data.draw(st.sampled_from(paths))
    parent = tree
    for key in parents:
        parent = parent[key]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[last]
    else:
        parent[last] = data.draw(VALUES)
    read_or_bad_input(msgpack.packb(tree, use_bin_type=True))


# --- mt-repro port-log ------------------------------------------------------------------------------
def test_port_log_msgpack_to_csv(tmp_path, capsys):
    old, new = tmp_path / "training.msgpack", tmp_path / "training.csv"
    old.write_bytes(pack(training_log_map()))
    assert main(["port-log", str(old), str(new)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"wrote {new}: 5 rows, 6 columns, epoch {1 / 782} to {5 / 782} "
                   f"(from pandas msgpack log {old})"]
    table = pd.read_csv(new, index_col="epoch")
    expected = training_log_frame()
    assert list(table.columns) == list(expected.columns)
    assert list(table.dtypes) == list(expected.dtypes)
    np.testing.assert_array_equal(table.index, expected.index)  # CSV keeps full float precision
    np.testing.assert_array_equal(table.to_numpy(), expected.to_numpy())


def test_port_log_jsonl_to_csv(tmp_path, capsys):
    log = RunLog(tmp_path / "validation.jsonl")
    for epoch, top1 in enumerate([40.0, 45.5]):
        log.record(epoch, {"top1": top1, "step": 10 * epoch})
    new = tmp_path / "validation.csv"
    assert main(["port-log", str(log.path), str(new)]) == 0
    assert "2 rows, 2 columns, epoch 0 to 1 (from run log" in capsys.readouterr().out
    table = pd.read_csv(new, index_col="epoch")
    assert list(table.index) == [0, 1] and list(table["top1"]) == [40.0, 45.5] and list(table["step"]) == [0, 10]


def test_port_log_validation_keeps_index_name_and_object_column(tmp_path, capsys):
    old, new = tmp_path / "validation.msgpack", tmp_path / "validation.csv"
    pm.write_legacy_log(validation_log_frame().rename_axis("ep"), old)
    assert main(["port-log", str(old), str(new)]) == 0
    assert "ep 0 to 2" in capsys.readouterr().out
    assert new.read_text().splitlines()[0] == "ep,class_loss,top1,top5,note"


def test_port_log_parquet(tmp_path, capsys):
    old = tmp_path / "training.msgpack"
    old.write_bytes(pack(training_log_map()))
    if importlib.util.find_spec("pyarrow") is None:
        assert main(["port-log", str(old), str(tmp_path / "t.parquet")]) == 2
        assert "pip install pyarrow" in capsys.readouterr().err
        pytest.skip("pyarrow not installed")
    assert main(["port-log", str(old), str(tmp_path / "t.parquet")]) == 0
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back.index.name == "epoch" and list(back.dtypes) == list(training_log_frame().dtypes)
    np.testing.assert_array_equal(back.to_numpy(), training_log_frame().to_numpy())


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (pack(training_log_map())[:100], "truncated"),
    (b"\x00\x01garbage", "not a pandas msgpack log"),
    (b"not json\n", "not a jsonl run log"),
])
def test_port_log_bad_input(tmp_path, capsys, content, message):
    old = tmp_path / ("log.jsonl" if content == b"not json\n" else "log.msgpack")
    if content is not None:
        old.write_bytes(content)
    new = tmp_path / "out.csv"
    assert main(["port-log", str(old), str(new)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not new.exists()
    assert captured.err.count("\n") == 1 and captured.err.startswith("mt-repro: error: ")
    assert message in captured.err


def test_port_log_refuses_other_suffixes(tmp_path, capsys):
    old = tmp_path / "training.msgpack"
    old.write_bytes(pack(training_log_map()))
    assert main(["port-log", str(old), str(tmp_path / "out.xlsx")]) == 2
    assert "must end in .csv or .parquet" in capsys.readouterr().err
