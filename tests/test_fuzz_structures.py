"""Property tests with hostile structure, not just damaged bytes: nesting of any depth, sizes
declared far beyond what a file holds, and zip directories of any shape. For each generated
input the reader returns a value or raises ``BadInput`` with one line; never another exception
(RecursionError, MemoryError, struct.error, ...), never a hang. Seeded like
``test_fuzz_readers.py`` and scaled by ``$MT_REPRO_FUZZ_SCALE`` for the long run."""
from __future__ import annotations

import bz2
import gzip
import io
import json
import pickle
import struct
import tarfile
import warnings
import zipfile

import msgpack
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from test_fuzz_readers import SEED_CHECKPOINT, fuzz, only_bad_input
from mt_repro.apps import digits_demo
from mt_repro.config.saved import from_saved
from mt_repro.data.cifar10 import read_cifar10
from mt_repro.data.labels import read_label_file
from mt_repro.engine import checkpoint as ckpt
from mt_repro.legacy.reading import read_checkpoint
from mt_repro.logs.pandas_msgpack import read_legacy_objects
from mt_repro.logs.runlog import read_rows


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-structures")


# --- nesting ---------------------------------------------------------------------------------

depths = st.one_of(st.integers(0, 80), st.integers(80, 20_000))
openers = st.sampled_from(["list", "dict", "mixed"])


def nested_json(depth: int, kind: str) -> str:
    """``depth`` containers inside each other, written as text (building them as objects
    would need the recursion the readers must avoid)."""
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    if kind == "dict":
        return '{"a": ' * depth + "1" + "}" * depth
    pairs = ['{"a": [' if i % 2 == 0 else "[" for i in range(depth)]
    closers = ["]}" if i % 2 == 0 else "]" for i in reversed(range(depth))]
    return "".join(pairs) + "1" + "".join(closers)


@fuzz(300)
@given(depths, openers)
def test_run_log_rows_nested_to_any_depth(scratch, depth, kind):
    path = scratch / "training.jsonl"
    path.write_text(f'{{"epoch": 1, "step": 1, "x": {nested_json(depth, kind)}}}\n')
    rows = only_bad_input(read_rows, path)
    if rows is not None:
        assert len(rows) == 1


@fuzz(300)
@given(depths, openers)
def test_saved_run_configs_nested_to_any_depth(scratch, depth, kind):
    text = f'{{"recipe": "pytorch", "epochs": {nested_json(depth, kind)}}}'
    try:
        values = json.loads(text)
    except RecursionError:
        values = None  # the reader of config.json is tested below on the file itself
    if values is not None:
        only_bad_input(from_saved, values, "config.json")


@fuzz(300)
@given(depths, st.sampled_from(["array", "inline", "tables"]))
def test_demo_configs_nested_to_any_depth(scratch, depth, kind):
    if kind == "array":
        body = "[demo]\nlabels = " + "[" * depth + "1" + "]" * depth
    elif kind == "inline":
        body = "[demo]\nlabels = " + "{a = " * depth + "1" + "}" * depth
    else:
        body = "[" + ".".join(["a"] * max(depth, 1)) + "]\nx = 1"
    path = scratch / "demo.toml"
    path.write_text(body + "\n")
    only_bad_input(digits_demo.load_demo_config, path)


@fuzz(300)
@given(depths, st.sampled_from(["map", "array"]))
def test_msgpack_logs_nested_to_any_depth(scratch, depth, kind):
    head = (b"\x81\xa1a" if kind == "map" else b"\x91") * depth  # fixmap {"a": ...} / fixarray [...]
    path = scratch / "log.msgpack"
    path.write_bytes(head + b"\x01")
    only_bad_input(read_legacy_objects, path)


# --- declared sizes --------------------------------------------------------------------------

huge = st.one_of(st.integers(0, 1 << 12), st.integers(1 << 20, 1 << 40), st.just((1 << 63) - 1))


@fuzz(300)
@given(huge, st.sampled_from(["", "gz", "bz2"]), st.binary(max_size=64))
def test_tar_members_declaring_any_size(scratch, size, compression, payload):
    header = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    header.size = size
    raw = header.tobuf(format=tarfile.PAX_FORMAT) + payload
    path = scratch / "cifar-10-python.tar"
    if compression == "gz":
        raw = gzip.compress(raw)
    elif compression == "bz2":
        raw = bz2.compress(raw)
    path.write_bytes(raw)
    only_bad_input(read_cifar10, path)


msgpack_headers = st.sampled_from([
    b"\xc4", b"\xc5", b"\xc6",        # bin 8/16/32
    b"\xd9", b"\xda", b"\xdb",        # str 8/16/32
    b"\xdc", b"\xdd",                 # array 16/32
    b"\xde", b"\xdf",                 # map 16/32
    b"\xc7", b"\xc8", b"\xc9",        # ext 8/16/32
])


@fuzz(500)
@given(msgpack_headers, huge, st.binary(max_size=32))
def test_msgpack_headers_declaring_any_length(scratch, header, length, tail):
    width = {b"\xc4": 1, b"\xd9": 1, b"\xc7": 1, b"\xc5": 2, b"\xda": 2, b"\xdc": 2, b"\xde": 2,
             b"\xc8": 2}.get(header, 4)
    declared = (length % (1 << (8 * width))).to_bytes(width, "big")
    frame = msgpack.packb({"typ": "dataframe", "klass": "DataFrame"})
    path = scratch / "log.msgpack"
    path.write_bytes(frame[:-1] + header + declared + tail)
    only_bad_input(read_legacy_objects, path)


def legacy_stream(count: int, key: str = "0", referenced: str = "0") -> bytes:
    """A pre-1.6 torch file: five pickles, then the storage ``key`` declaring ``count`` floats."""
    buffer = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                 "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        buffer.write(_pickle(value))
    buffer.write(_tensor_pickle(referenced))
    buffer.write(_pickle([key]))
    buffer.write(struct.pack("<q", count) + b"\x00" * 16)
    return buffer.getvalue()


def _pickle(value) -> bytes:
    return pickle.dumps(value, protocol=2)


def _tensor_pickle(key: str) -> bytes:
    """``{"w": _rebuild_tensor_v2(storage key, 0, (4,), (1,), False, OrderedDict())}`` written
    with the persistent id the old format used, opcode by opcode."""
    pid = (b"(X\x07\x00\x00\x00storage" + b"ctorch\nFloatStorage\n" + b"X" + struct.pack("<I", len(key))
           + key.encode() + b"X\x03\x00\x00\x00cpuK\x04Ntq\x00")
    return (b"\x80\x02}X\x01\x00\x00\x00w" + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"Q"
            + b"K\x00K\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rtq\x01Rs.")


@fuzz(300)
@given(huge, st.sampled_from([("0", "0"), ("0", "1"), ("1", "0")]))
def test_legacy_storages_declaring_any_size(scratch, count, keys):
    path = scratch / "old.ckpt"
    path.write_bytes(legacy_stream(count, *keys))
    raw = only_bad_input(read_checkpoint, path)
    if raw is not None:  # only a storage that is present, referenced and complete loads
        tensor = raw.obj["w"]
        assert keys == ("0", "0") and count == 4 and torch.equal(tensor, torch.zeros(4))


def test_the_legacy_stream_builder_makes_a_readable_file(scratch):
    path = scratch / "valid-old.ckpt"
    path.write_bytes(legacy_stream(4))
    assert torch.equal(read_checkpoint(path).obj["w"], torch.zeros(4))


# --- zip directories -------------------------------------------------------------------------

SEED_RECORDS = [(info, zipfile.ZipFile(io.BytesIO(SEED_CHECKPOINT)).read(info.filename))
                for info in zipfile.ZipFile(io.BytesIO(SEED_CHECKPOINT)).infolist()]

mutations = st.lists(st.one_of(
    st.tuples(st.just("duplicate"), st.integers(0, 100)),
    st.tuples(st.just("case"), st.integers(0, 100)),
    st.tuples(st.just("compress"), st.integers(0, 100)),
    st.tuples(st.just("drop"), st.integers(0, 100)),
    st.tuples(st.just("extra"), st.binary(max_size=64)),
    st.tuples(st.just("grow"), st.integers(0, 100)),
    st.tuples(st.just("rename"), st.integers(0, 100)),
), min_size=1, max_size=4)


@st.composite
def zip_checkpoints(draw):
    records = [(info.filename, data, zipfile.ZIP_STORED) for info, data in SEED_RECORDS]
    for kind, arg in draw(mutations):
        index = arg % len(records) if isinstance(arg, int) and records else 0
        if kind == "duplicate" and records:
            records.append(records[index])
        elif kind == "case" and records:
            name, data, method = records[index]
            records.append((name.upper(), data, method))
        elif kind == "compress" and records:
            name, data, _ = records[index]
            records[index] = (name, data, zipfile.ZIP_DEFLATED)
        elif kind == "drop" and records:
            records.pop(index)
        elif kind == "extra":
            records.append((f"{records[0][0].split('/')[0] if records else 'archive'}/data/99", arg,
                            zipfile.ZIP_STORED))
        elif kind == "grow" and records:
            name, data, method = records[index]
            records[index] = (name, data + b"\x00" * 4096, method)
        elif kind == "rename" and records:
            name, data, method = records[index]
            records[index] = (name + "x", data, method)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate names made on purpose
        for name, data, method in records:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            archive.writestr(info, data)
    return buffer.getvalue()


@fuzz(500)
@given(zip_checkpoints())
def test_zip_directories_of_any_shape(scratch, data):
    path = scratch / "last.ckpt"
    path.write_bytes(data)
    state = only_bad_input(ckpt.load_checkpoint, path)
    raw = only_bad_input(read_checkpoint, path)
    assert (state is None) == (raw is None), "our loader and the legacy reader disagree"
    if state is not None:  # what loads is what the seed holds, whatever was appended
        assert state["global_step"] == 3


def test_the_seed_archive_rebuilt_record_by_record_loads(scratch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in SEED_RECORDS:
            archive.writestr(zipfile.ZipInfo(info.filename), data)
    (scratch / "rebuilt.ckpt").write_bytes(buffer.getvalue())
    assert ckpt.load_checkpoint(scratch / "rebuilt.ckpt")["global_step"] == 3


# --- label files with any line length ---------------------------------------------------------

@fuzz(100)
@given(st.integers(0, 4 << 20))
def test_label_files_with_lines_of_any_length(scratch, length):
    path = scratch / "labels.txt"
    path.write_bytes(b"a" * length + b".png cat\n")
    only_bad_input(read_label_file, path)
