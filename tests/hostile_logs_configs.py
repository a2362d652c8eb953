"""Hostile logs and configs: msgpack, jsonl, TOML, config.json: cases for ``hostile_inputs.CASES``."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import msgpack

from hostile_case import Case


def _port(path: Path, d: Path) -> list:
    return ["port-log", path, d / "out.csv"]


# --- msgpack logs ------------------------------------------------------------------------------
def msgpack_empty_maps(d: Path, tree: Path) -> list:
    (d / "training.msgpack").write_bytes(b"\x80" * 30_000_000)  # 30 million empty maps
    return _port(d / "training.msgpack", d)


def msgpack_array_of_empty_maps(d: Path, tree: Path) -> list:
    n = 30_000_000
    (d / "training.msgpack").write_bytes(b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n)
    return _port(d / "training.msgpack", d)


def msgpack_array_of_small_maps(d: Path, tree: Path) -> list:
    n = 2_000_000
    item = msgpack.packb({"k": 1.5})  # 12 bytes, a 200-byte dict
    with open(d / "training.msgpack", "wb") as f:
        f.write(b"\xdd" + n.to_bytes(4, "big"))
        for _ in range(n // 10_000):
            f.write(item * 10_000)
    return _port(d / "training.msgpack", d)


def msgpack_million_columns(d: Path, tree: Path) -> list:
    names = [f"{i:x}"[-2:].rjust(2, "0") for i in range(1_000_000)]  # 3 bytes each: 3 MB
    frame = {"typ": "block_manager", "klass": "DataFrame",
             "axes": [{"typ": "index", "klass": "Index", "name": None, "dtype": "object", "data": names,
                       "compress": None},
                      {"typ": "range_index", "klass": "RangeIndex", "name": None, "start": 0, "stop": 0,
                       "step": 1}],
             "blocks": []}
    (d / "training.msgpack").write_bytes(msgpack.packb(frame, use_bin_type=True))
    return _port(d / "training.msgpack", d)


def _ranges(columns: int, rows: int) -> list:
    return [{"typ": "range_index", "klass": "RangeIndex", "name": None, "start": 0, "stop": n, "step": 1}
            for n in (columns, rows)]


def _locs(columns: int) -> dict:
    data = b"".join(i.to_bytes(8, "little") for i in range(columns))
    return {"typ": "ndarray", "shape": [columns], "ndim": 1, "dtype": "int64",
            "data": msgpack.ExtType(0, data), "compress": None}


def msgpack_huge_declared_block(d: Path, tree: Path) -> list:
    block = {"locs": _locs(10_000), "values": msgpack.ExtType(0, zlib.compress(b"\0" * 64)),
             "shape": [10_000, 10_000_000], "dtype": "float64", "klass": "FloatBlock", "compress": "zlib"}
    frame = {"typ": "block_manager", "klass": "DataFrame", "axes": _ranges(10_000, 10_000_000), "blocks": [block]}
    (d / "training.msgpack").write_bytes(msgpack.packb(frame, use_bin_type=True))
    return _port(d / "training.msgpack", d)


def msgpack_block_short_of_its_shape(d: Path, tree: Path) -> list:
    block = {"locs": _locs(2), "values": msgpack.ExtType(0, b"\0" * 8), "shape": [2, 1000], "dtype": "float64",
             "klass": "FloatBlock", "compress": None}
    frame = {"typ": "block_manager", "klass": "DataFrame", "axes": _ranges(2, 1000), "blocks": [block]}
    (d / "training.msgpack").write_bytes(msgpack.packb(frame, use_bin_type=True))
    return _port(d / "training.msgpack", d)


def msgpack_fifo(d: Path, tree: Path) -> list:
    os.mkfifo(d / "training.msgpack")
    return ["inspect", d / "training.msgpack"]


def msgpack_pre_018_datetime(d: Path, tree: Path) -> list:
    # The pandas < 0.18 layout (raw strings only, dtype numbers) with a datetime64 block (21).
    block = {"items": {"typ": b"index", "klass": b"Index", "name": None, "dtype": 17, "data": [b"t"]},
             "locs": {"typ": b"ndarray", "shape": [1], "ndim": 1, "dtype": 7, "data": b"\0" * 8, "compress": None},
             "values": b"\xff" * 8, "shape": [1, 1], "dtype": 21, "klass": b"DatetimeBlock", "compress": None}
    frame = {"typ": b"block_manager", "klass": b"DataFrame",
             "axes": [{"typ": b"index", "klass": b"Index", "name": None, "dtype": 17, "data": [b"t"]},
                      {"typ": b"index", "klass": b"Int64Index", "name": None, "dtype": 7, "data": b"\0" * 8}],
             "blocks": [block]}
    (d / "training.msgpack").write_bytes(msgpack.packb(frame, use_bin_type=False))
    return _port(d / "training.msgpack", d)


# --- jsonl run logs ----------------------------------------------------------------------------
def runlog_deep_nesting(d: Path, tree: Path) -> list:
    (d / "training.jsonl").write_text('{"epoch": 0.0, "x": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    return _port(d / "training.jsonl", d)


def runlog_endless_line(d: Path, tree: Path) -> list:
    with open(d / "training.jsonl", "w") as f:
        f.write('{"epoch": 0.0, "loss": "')
        chunk = "9" * (1 << 20)
        for _ in range(200):  # 200 MiB, no newline, written without holding it
            f.write(chunk)
    return _port(d / "training.jsonl", d)


def runlog_fifo(d: Path, tree: Path) -> list:
    os.mkfifo(d / "training.jsonl")
    return _port(d / "training.jsonl", d)


# --- TOML configs ------------------------------------------------------------------------------
def _demo(d: Path, text: str) -> list:
    (d / "demo.toml").write_text(text)
    return ["digits", "--config", d / "demo.toml", "--out", d / "out"]


def toml_deep_nesting(d: Path, tree: Path) -> list:
    return _demo(d, "[demo]\nlabels = " + "[" * 20_000 + "]" * 20_000 + "\n")


def toml_deep_dotted_keys(d: Path, tree: Path) -> list:
    return _demo(d, "[run]\n" + ".".join(f"k{i}" for i in range(5_000)) + " = 1\n")


def toml_huge(d: Path, tree: Path) -> list:
    with open(d / "demo.toml", "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that is never read
    return ["digits", "--config", d / "demo.toml", "--out", d / "out"]


def toml_fifo(d: Path, tree: Path) -> list:
    os.mkfifo(d / "demo.toml")
    return ["digits", "--config", d / "demo.toml", "--out", d / "out"]


DEMO = "[demo]\nlabels = 100\nseeds = 1\n\n[run]\nbatch_size = 64\nlabeled_batch_size = 16\nepochs = 2\n"


def demo_batch_size_zero(d: Path, tree: Path) -> list:
    return _demo(d, "[supervised]\nbatch_size = 0\n\n" + DEMO)


def demo_run_batch_size_zero(d: Path, tree: Path) -> list:
    return _demo(d, DEMO.replace("batch_size = 64", "batch_size = 0"))


def demo_labeled_batch_too_large(d: Path, tree: Path) -> list:
    return _demo(d, DEMO.replace("labeled_batch_size = 16", "labeled_batch_size = 64"))


def demo_zero_epochs(d: Path, tree: Path) -> list:
    return _demo(d, DEMO.replace("epochs = 2", "epochs = 0"))


# --- a run's config.json -----------------------------------------------------------------------
def _run_dir(d: Path, write) -> list:
    (d / "run").mkdir()
    write(d / "run" / "config.json")
    return ["cifar10", "--resume", d / "run"]


def saved_config_deep_nesting(d: Path, tree: Path) -> list:
    return _run_dir(d, lambda p: p.write_text('{"lr": ' + "[" * 200_000 + "]" * 200_000 + "}"))


def saved_config_huge(d: Path, tree: Path) -> list:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(1 << 30)  # sparse
    return _run_dir(d, write)


CASES: list[Case] = [
    Case("msgpack log", "30 MB of empty msgpack maps", "port-log", "is a map without a 'typ'", msgpack_empty_maps,
         extra_mib=256),
    Case("msgpack log", "an array of 30 million empty maps", "port-log", "an array longer than 2,097,152 items",
         msgpack_array_of_empty_maps, extra_mib=256),
    Case("msgpack log", "24 MB array of 2 million small maps", "port-log",
         "more than the limit of 128.0 MiB for the maps, arrays and text", msgpack_array_of_small_maps, extra_mib=256),
    Case("msgpack log", "3 MB frame with a million columns", "port-log",
         "declares 1,000,000, more than the limit of 10,000 for the columns", msgpack_million_columns, extra_mib=256),
    Case("msgpack log", "block declaring 745 GiB of values", "port-log", "more than the limit of 4.0 GiB",
         msgpack_huge_declared_block, extra_mib=256),
    Case("msgpack log", "block holding less than its shape declares", "port-log",
         "declares 16000 bytes of data, holds 8", msgpack_block_short_of_its_shape),
    Case("msgpack log", "a FIFO", "inspect", "not a regular file", msgpack_fifo),
    Case("msgpack log (pandas < 0.18)", "datetime block", "port-log", "dtype number 21 (numpy's datetime64)",
         msgpack_pre_018_datetime),
    Case("run log (.jsonl)", "row nested 200,000 deep", "port-log", "nested more than 64 levels deep",
         runlog_deep_nesting),
    Case("run log (.jsonl)", "200 MiB line", "port-log", "is longer than 1,048,576 bytes", runlog_endless_line,
         extra_mib=256),
    Case("run log (.jsonl)", "a FIFO", "port-log", "not a regular file", runlog_fifo),
    Case("config (TOML)", "array nested 20,000 deep", "digits --config", "nested more than 64 levels deep",
         toml_deep_nesting),
    Case("config (TOML)", "dotted key 5,000 tables deep", "digits --config", "nested more than 64 levels deep",
         toml_deep_dotted_keys),
    Case("config (TOML)", "1 GiB", "digits --config", "more than the limit of 64.0 MiB", toml_huge, extra_mib=256),
    Case("config (TOML)", "a FIFO", "digits --config", "not a regular file", toml_fifo),
    Case("config (TOML)", "`[supervised] batch_size = 0`", "digits --config", "unknown table(s) [supervised]",
         demo_batch_size_zero),
    Case("config (TOML)", "`[run] batch_size = 0`", "digits --config", "[run]: batch_size must be at least 1",
         demo_run_batch_size_zero),
    Case("config (TOML)", "labeled_batch_size = batch_size", "digits --config",
         "labeled_batch_size (64) must be less than batch_size (64)", demo_labeled_batch_too_large),
    Case("config (TOML)", "`epochs = 0`", "digits --config", "[run]: epochs must be at least 1", demo_zero_epochs),
    Case("run directory config.json", "nested 200,000 deep", "cifar10 --resume", "nested more than 64 levels deep",
         saved_config_deep_nesting),
    Case("run directory config.json", "1 GiB", "cifar10 --resume", "more than the limit of 64.0 MiB",
         saved_config_huge, extra_mib=256),
]
