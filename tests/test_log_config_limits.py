"""The budgets of the log and settings readers (msgpack, jsonl, TOML, config.json, the digits
demo's settings), and the pandas < 0.18 layout of the original's msgpack logs."""
from __future__ import annotations

import os
import zlib

import msgpack
import numpy as np
import pandas as pd
import pytest

from mt_repro.config.compose import load_demo_config
from mt_repro.config.files import read_toml
from mt_repro.config.saved import read_saved
from mt_repro.core.errors import BadInput
from mt_repro.logs import pandas_msgpack as pm
from mt_repro.logs.runlog import read_rows


def one_line(raised) -> str:
    message = str(raised.value)
    assert "\n" not in message
    return message


# --- the pandas < 0.18 layout ----------------------------------------------------------------------
# pandas 0.16.2 - 0.17.1 ``to_msgpack``: everything, text and bytes alike, is a msgpack raw string
# (text encoded as Latin-1), no bin or ext type; dtypes are numpy type numbers (``dtype.num``:
# 7 int64 and 12 float64 on 64-bit Linux, 17 object); numeric data is the array's bytes, zlib-
# compressed as ``compress`` says; a block names its columns twice, as ``items`` and ``locs``.
INT64, FLOAT64, OBJECT = 7, 12, 17


def old_data(values: np.ndarray, compress: str | None) -> bytes:
    raw = np.ascontiguousarray(values).tobytes()
    return zlib.compress(raw) if compress == "zlib" else raw


def old_index(values, compress: str | None, name=None) -> dict:
    values = np.asarray(values)
    if values.dtype == object:
        return {"typ": b"index", "klass": b"Index", "name": name, "dtype": OBJECT,
                "data": [v.encode("latin-1") for v in values], "compress": None}
    return {"typ": b"index", "klass": b"Int64Index", "name": name, "dtype": INT64,
            "data": old_data(values.astype("<i8"), compress), "compress": compress}


def old_block(columns: list[str], positions: list[int], values: np.ndarray, dtype: int, klass: bytes,
              compress: str | None) -> dict:
    return {"items": old_index(np.array(columns, dtype=object), None),
            "locs": {"typ": b"ndarray", "shape": [len(positions)], "ndim": 1, "dtype": INT64,
                     "data": old_data(np.array(positions, "<i8"), compress), "compress": compress},
            "values": old_data(values, compress), "shape": list(values.shape), "dtype": dtype,
            "klass": klass, "compress": compress}


COLUMNS = ["loss", "caf\xe9", "step"]  # a non-ASCII label, Latin-1 encoded as pandas < 0.18 did


def old_frame_bytes(compress: str | None, rows: int = 5) -> tuple[bytes, pd.DataFrame]:
    loss = np.linspace(2.5, 0.25, rows)
    error = np.linspace(0.9, 0.1, rows)
    step = np.arange(rows, dtype=np.int64) * 100
    index = np.arange(rows, dtype=np.int64)
    frame = {"typ": b"block_manager", "klass": b"DataFrame",
             "axes": [old_index(np.array(COLUMNS, dtype=object), None), old_index(index, compress)],
             "blocks": [old_block(["loss", "caf\xe9"], [0, 1], np.stack([loss, error]).astype("<f8"),
                                  FLOAT64, b"FloatBlock", compress),
                        old_block(["step"], [2], step[None, :].astype("<i8"), INT64, b"IntBlock", compress)]}
    data = msgpack.packb(frame, use_bin_type=False)
    expected = pd.DataFrame({"loss": loss, "caf\xe9": error, "step": step}, index=pd.Index(index))
    expected.columns = pd.Index(COLUMNS, dtype=object)
    return data, expected


@pytest.mark.parametrize("compress", [None, "zlib"])
def test_reads_the_pre_018_layout(tmp_path, compress):
    data, expected = old_frame_bytes(compress)
    path = tmp_path / "training.msgpack"
    path.write_bytes(data)
    with pytest.raises(UnicodeDecodeError):  # what the modern reading of it met
        msgpack.unpackb(data, raw=False)
    frame = pm.read_legacy_log(path)
    pd.testing.assert_frame_equal(frame, expected)
    assert list(frame.columns) == COLUMNS and frame["step"].dtype == np.int64


def test_reads_the_pre_018_layout_whose_bytes_happen_to_be_utf8():
    rows = np.arange(4, dtype="<i8")
    obj = {"typ": b"series", "klass": b"Series", "name": b"step", "index": old_index(rows, None),
           "dtype": INT64, "data": (rows * 3).tobytes(), "compress": None}
    data = msgpack.packb(obj, use_bin_type=False)
    msgpack.unpackb(data, raw=False)  # all of it decodes as text
    series = pm.read_legacy_objects(data)[0]
    pd.testing.assert_series_equal(series, pd.Series(rows * 3, index=pd.Index(rows), name="step"))


def test_pre_018_unsupported_dtype_number_is_named():
    data, _ = old_frame_bytes(None)
    obj = msgpack.unpackb(data, raw=True)
    obj[b"blocks"][0][b"dtype"] = 21
    with pytest.raises(BadInput, match="dtype number 21 .numpy's datetime64. is not supported"):
        pm.read_legacy_objects(msgpack.packb(obj, use_bin_type=False))


# --- msgpack budgets -------------------------------------------------------------------------------
def test_msgpack_empty_maps_stop_at_the_first(tmp_path):
    path = tmp_path / "maps.msgpack"
    path.write_bytes(b"\x80" * 3_000_000)
    with pytest.raises(BadInput, match="without a 'typ'") as raised:
        pm.read_legacy_log(path)
    assert str(path) in one_line(raised)


def test_msgpack_array_of_maps_is_counted_as_it_is_built(monkeypatch):
    n = 200_000
    data = b"\xdd" + n.to_bytes(4, "big") + msgpack.packb({"k": 1.5}) * n  # 2.4 MB, ~40 MB of dicts
    monkeypatch.setenv("MT_REPRO_LIMIT_LOG_STRUCTURE_BYTES", str(16 << 20))
    with pytest.raises(BadInput, match="more than the limit of 16.0 MiB for the maps, arrays and text"):
        pm.read_legacy_objects(data)


def test_msgpack_many_tiny_binaries_are_bounded(monkeypatch):
    n = 200_000
    data = b"\xdd" + n.to_bytes(4, "big") + b"\xc4\x01x" * n  # 1-byte bins: 600 kB
    monkeypatch.setenv("MT_REPRO_LIMIT_LOG_STRUCTURE_BYTES", str(16 << 20))
    with pytest.raises(BadInput, match="for the maps, arrays and text"):
        pm.read_legacy_objects(data)


def test_msgpack_flat_array_of_short_strings_is_bounded_before_it_is_built(monkeypatch):
    n = 1_000_000
    data = b"\xdd" + n.to_bytes(4, "big") + b"\xa2ab" * n
    monkeypatch.setenv("MT_REPRO_LIMIT_LOG_STRUCTURE_BYTES", str(16 << 20))
    with pytest.raises(BadInput, match="an array longer than 262,144 items"):
        pm.read_legacy_objects(data)
    with pytest.raises(BadInput, match="more than 1024 keys"):
        pm.read_legacy_objects(b"\xdf" + (2000).to_bytes(4, "big") + b"\xa1k\xc0" * 2000)


def test_msgpack_declared_lengths_beyond_the_file():
    # An array header declaring 2^32 - 1 items in a 10-byte file: msgpack refuses before allocating.
    with pytest.raises(BadInput, match="an array declares more items than its 10 bytes can hold"):
        pm.read_legacy_objects(b"\xdd\xff\xff\xff\xff" + b"\xc0" * 5)


def million_columns_frame() -> bytes:
    names = [f"{i:x}"[-2:].rjust(2, "0") for i in range(1_000_000)]  # 3-byte strings: 3 MB
    return msgpack.packb({"typ": "block_manager", "klass": "DataFrame",
                          "axes": [{"typ": "index", "klass": "Index", "name": None, "dtype": "object",
                                    "data": names, "compress": None},
                                   {"typ": "range_index", "klass": "RangeIndex", "name": None,
                                    "start": 0, "stop": 0, "step": 1}],
                          "blocks": []}, use_bin_type=True)


def test_msgpack_columns_are_bounded():
    data = million_columns_frame()
    assert len(data) < 4_000_000
    with pytest.raises(BadInput, match="declares 1,000,000, more than the limit of 10,000 for the columns"):
        pm.read_legacy_objects(data)


def test_msgpack_declared_array_size_is_bounded():
    obj = {"typ": "block_manager", "klass": "DataFrame",
           "axes": [{"typ": "range_index", "name": None, "start": 0, "stop": 10_000, "step": 1},
                    {"typ": "range_index", "name": None, "start": 0, "stop": 10_000_000, "step": 1}],
           "blocks": [{"locs": {"typ": "ndarray", "shape": [10_000], "ndim": 1, "dtype": "int64",
                                "data": msgpack.ExtType(0, np.arange(10_000, dtype="<i8").tobytes()),
                                "compress": None},
                       "values": msgpack.ExtType(0, zlib.compress(b"\0" * 64)), "shape": [10_000, 10_000_000],
                       "dtype": "float64", "klass": "FloatBlock", "compress": "zlib"}]}
    with pytest.raises(BadInput, match="an array that declares 745.1 GiB, more than the limit of 4.0 GiB"):
        pm.read_legacy_objects(msgpack.packb(obj, use_bin_type=True))


def test_msgpack_log_must_be_a_regular_file(tmp_path):
    fifo = tmp_path / "training.msgpack"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="is a FIFO .named pipe., not a regular file"):
        pm.read_legacy_log(fifo)


# --- jsonl run logs --------------------------------------------------------------------------------
def test_runlog_deep_nesting_is_refused_before_json(tmp_path):
    path = tmp_path / "training.jsonl"
    path.write_text('{"epoch": 0.0}\n{"epoch": 1.0, "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(BadInput, match="line 2 is nested more than 64 levels deep") as raised:
        read_rows(path)
    assert str(path) in one_line(raised)


def test_runlog_brackets_in_strings_do_not_nest(tmp_path):
    path = tmp_path / "training.jsonl"
    path.write_text('{"epoch": 0.0, "note": "' + "[{" * 500 + '\\"]"}\n')
    assert read_rows(path) == [{"epoch": 0.0, "note": "[{" * 500 + '"]'}]


def test_runlog_long_line_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MT_REPRO_LIMIT_LINE_BYTES", "1000")
    path = tmp_path / "training.jsonl"
    path.write_text('{"epoch": 0.0}\n{"epoch": 1.0, "x": "' + "a" * 5000 + '"}\n')
    with pytest.raises(BadInput, match="line 2 is longer than 1,000 bytes"):
        read_rows(path)


def test_runlog_must_be_a_regular_file(tmp_path):
    fifo = tmp_path / "training.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="is a FIFO"):
        read_rows(fifo)


# --- TOML settings files ---------------------------------------------------------------------------
def test_toml_deep_nesting_is_refused_before_tomllib(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text("[demo]\nlabels = " + "[" * 5000 + "1" + "]" * 5000 + "\n")
    with pytest.raises(BadInput, match="nested more than 64 levels deep") as raised:
        read_toml(path, "demo config")
    assert str(path) in one_line(raised)


def test_toml_deep_dotted_keys_are_refused(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text("[run]\n" + ".".join(f"k{i}" for i in range(200)) + " = 1\n")
    with pytest.raises(BadInput, match="nested more than 64 levels deep"):
        read_toml(path, "demo config")


def test_toml_strings_and_comments_do_not_nest(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text('a = "' + "[" * 100 + '"\n# ' + "{" * 100 + "\nb = '''" + "[" * 100 + "'''\nc = [[1], [2]]\n")
    assert read_toml(path, "demo config")["c"] == [[1], [2]]


def test_toml_size_and_kind_are_bounded(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(65 << 20)  # sparse: refused from its size, never read
    with pytest.raises(BadInput, match="more than the limit of 64.0 MiB"):
        read_toml(big, "demo config")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="is a FIFO"):
        read_toml(fifo, "demo config")


# --- a run's config.json ---------------------------------------------------------------------------
def test_saved_config_nesting_size_and_kind(tmp_path):
    deep = tmp_path / "config.json"
    deep.write_text('{"lr": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(BadInput, match="nested more than 64 levels deep"):
        read_saved(deep)
    with open(deep, "wb") as f:
        f.truncate(65 << 20)
    with pytest.raises(BadInput, match="more than the limit of 64.0 MiB"):
        read_saved(deep)
    deep.unlink()
    os.mkfifo(deep)
    with pytest.raises(BadInput, match="is a FIFO"):
        read_saved(deep)


# --- the digits demo's settings --------------------------------------------------------------------
DEMO = """[demo]
labels = 100
seeds = 3

[run]
batch_size = 64
labeled_batch_size = 16
epochs = 60
lr_rampdown_epochs = 70
"""


@pytest.mark.parametrize("change, message", [
    (("batch_size = 64", "batch_size = 0"), "[run]: batch_size must be at least 1, got 0"),
    (("epochs = 60", "epochs = -1"), "[run]: epochs must be at least 1, got -1"),
    (("labeled_batch_size = 16", "labeled_batch_size = 64"),
     "labeled_batch_size (64) must be less than batch_size (64)"),
    (("seeds = 3", "seeds = 0"), "[demo] seeds must be at least 1, got 0"),
    (("labels = 100", "labels = 0"), "[demo] labels must be at least 1, got 0"),
    (("[demo]", "[supervised]\nbatch_size = 0\n\n[demo]"), "unknown table(s) [supervised]"),
    (("lr_rampdown_epochs = 70", "lr_rampdown_epochs = 10"), "lr_rampdown_epochs (10) must be at least epochs"),
])
def test_demo_config_sizes_and_counts(tmp_path, change, message):
    path = tmp_path / "demo.toml"
    path.write_text(DEMO.replace(*change))
    with pytest.raises(BadInput) as raised:
        load_demo_config(path)
    assert message in one_line(raised) and "demo.toml" in str(raised.value)


def test_demo_config_as_shipped_loads():
    demo = load_demo_config()
    assert demo.labels > 0 and demo.seeds > 0
