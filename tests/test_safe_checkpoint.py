"""One reader for every checkpoint: what it refuses (each file built here) and what it must
load exactly as ``torch.load`` does."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import hostile_checkpoints as hc
from hostile_case import MARKER
from mt_repro.core import torch_files
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.engine import checkpoint as ckpt
from mt_repro.legacy.reading import UnsafeCheckpoint, read_checkpoint, scan_globals


def refused(call, *fragments):
    with pytest.raises(BadInput) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return caught.value


def both_readers(path, *fragments):
    """Refused by the reader of old checkpoints and by the one of ours (resume, evaluate)."""
    refused(lambda: read_checkpoint(path), str(path), *fragments)
    refused(lambda: ckpt.load_checkpoint(path), str(path), *fragments)


# --- zip: the directory ---------------------------------------------------------------------
@pytest.mark.parametrize("second", ["archive/DATA.pkl", "archive/Data.pkl", "ARCHIVE/data.pkl"])
def test_records_differing_only_in_case_are_refused(tmp_path, second):
    evil = pickle.dumps({"epoch": hc._Exploit(tmp_path)}, protocol=2)
    path = hc.write_records(tmp_path / "a.ckpt", hc.real_records(hc._small_state()) + [(second, evil)])
    both_readers(path, "differ only in case", second)
    assert not (tmp_path / MARKER).exists()


def test_duplicate_record_names_are_refused(tmp_path):
    records = hc.real_records(hc._small_state())
    with pytest.warns(UserWarning):  # zipfile itself warns about the duplicate
        path = hc.write_records(tmp_path / "a.ckpt", records + [records[0]])
    both_readers(path, "two zip records named 'archive/data.pkl'")


def test_compressed_records_are_refused(tmp_path):
    path = hc.write_records(tmp_path / "a.ckpt", hc.real_records(hc._small_state()), zipfile.ZIP_DEFLATED)
    both_readers(path, "compressed zip record", "nothing was decompressed")


def test_deflated_zeros_are_refused_without_decompressing(tmp_path, monkeypatch):
    numel = (64 << 20) // 4
    path = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("archive/data.pkl"),
                         hc.fake_pickle(hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("0", numel)))))
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, bytes(numel * 4))
    assert path.stat().st_size < 1 << 20

    def no_inflating(*args, **kwargs):
        raise AssertionError("a record was decompressed")

    monkeypatch.setattr(zlib, "decompressobj", no_inflating)
    monkeypatch.setattr(zlib, "decompress", no_inflating)
    both_readers(path, "compressed zip record 'archive/data/0'")


def test_local_header_that_disagrees_is_refused(tmp_path):
    path = hc.write_records(tmp_path / "a.ckpt", hc.real_records(hc._small_state()))
    data = bytearray(path.read_bytes())
    data[30 + len("archive/data.pk")] = ord("X")  # the local name of the first record only
    path.write_bytes(bytes(data))
    both_readers(path, "'archive/data.pkl' whose local header disagrees with the zip directory")


def test_record_outside_the_archive_folder_is_refused(tmp_path):
    records = hc.real_records(hc._small_state()) + [("other/data.pkl", b"")]
    both_readers(hc.write_records(tmp_path / "a.ckpt", records), "outside the archive's one folder")


def test_record_larger_than_its_storage_is_refused(tmp_path):
    data = hc.fake_pickle(hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("0", 4))))
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", data, {"0": bytes(1 << 20)})
    both_readers(path, "record archive/data/0 of 1,048,576 bytes, but its storage declares 16")


def test_record_smaller_than_its_storage_is_refused(tmp_path):
    data = hc.fake_pickle(hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("0", 1 << 20))))
    both_readers(hc.zip_checkpoint(tmp_path / "a.ckpt", data, {"0": bytes(16)}), "but its storage declares")


def test_storage_without_its_record_is_refused(tmp_path):
    data = hc.fake_pickle(hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("0", 4))))
    both_readers(hc.zip_checkpoint(tmp_path / "a.ckpt", data, {}),
                 "references storage '0', which has no record archive/data/0")


def test_record_never_referenced_is_refused(tmp_path):
    data = hc.fake_pickle(hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("0", 4))))
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", data, {"0": bytes(16), "7": bytes(16)})
    both_readers(path, "storage record archive/data/7 that its pickle never references")


def test_tensor_outside_its_storage_is_refused(tmp_path):
    storage = hc.FakeStorage("0", 4)
    data = hc.fake_pickle(hc.checkpoint_dict(hc.FakeTensor(storage, offset=2, size=(2, 2), stride=(2, 1))))
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", data, {"0": bytes(16)})
    both_readers(path, "tensor (offset 2, size [2, 2], stride [2, 1]) outside its storage of 4 elements")


def test_data_pkl_above_the_pickle_limit_is_refused(tmp_path, monkeypatch):
    state = {**hc._small_state(), "note": "x" * 5000}
    path = hc.write_records(tmp_path / "a.ckpt", hc.real_records(state))
    monkeypatch.setenv("MT_REPRO_LIMIT_PICKLE_BYTES", "2000")
    both_readers(path, "data.pkl of checkpoint", "MT_REPRO_LIMIT_PICKLE_BYTES")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_tensors_above_the_checkpoint_limit_are_refused(tmp_path, monkeypatch, zip_format):
    path = tmp_path / "a.ckpt"
    torch.save(hc.checkpoint_dict(torch.zeros(1024)), path, _use_new_zipfile_serialization=zip_format)
    monkeypatch.setenv("MT_REPRO_LIMIT_CHECKPOINT_BYTES", "1000")
    both_readers(path, "more than the limit", "MT_REPRO_LIMIT_CHECKPOINT_BYTES")


# --- the pickle: what is reported is what is loaded -----------------------------------------
_SHELL = hc._text("true") + b"\x85"  # ("true",): os.system's argument


@pytest.mark.parametrize("memo", [False, True], ids=["pop", "memo"])
def test_import_hidden_behind_a_decoy_name_is_named(tmp_path, memo):
    """'os' 'system' pushed, then 'collections' 'OrderedDict' pushed and popped: os.system is
    what would be called, and what is reported."""
    call = hc.decoy_stack_global(("os", "system"), ("collections", "OrderedDict"),
                                 hc._text(f"touch {tmp_path / MARKER}") + b"\x85", memo=memo)
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", call, {})
    assert scan_globals(path) == ["os.system"]
    error = refused(lambda: read_checkpoint(path), "needs os.system", "--trust")
    assert isinstance(error, UnsafeCheckpoint) and error.names == ["os.system"]
    refused(lambda: ckpt.load_checkpoint(path), "needs os.system outside the safe allow-list")
    assert not (tmp_path / MARKER).exists()


def test_a_popped_dangerous_name_is_not_what_is_loaded(tmp_path):
    """The reverse: 'os' 'system' is the decoy, OrderedDict is what is called: the file loads."""
    call = hc.decoy_stack_global(("collections", "OrderedDict"), ("os", "system"), b")")
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", call, {})
    assert scan_globals(path) == ["collections.OrderedDict"]
    raw = read_checkpoint(path)
    assert raw.obj == OrderedDict() and raw.globals == ["collections.OrderedDict"]


def test_trust_warning_names_exactly_what_the_file_calls(tmp_path):
    call = hc.decoy_stack_global(("builtins", "sorted"), ("collections", "OrderedDict"),
                                 b"K\x03K\x01K\x02\x87\x85")  # ((3, 1, 2),)
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", call, {})
    warnings: list[str] = []
    raw = read_checkpoint(path, trust=True, warn=warnings.append)
    assert raw.obj == [1, 2, 3]
    assert raw.trusted_globals == ["builtins.sorted"]
    assert len(warnings) == 1 and "builtins.sorted" in warnings[0] and "OrderedDict" not in warnings[0]


def test_trust_refuses_a_name_computed_while_loading(tmp_path):
    """The name of the second import is the result of the first call: no scan can know it, so
    even --trust refuses (``builtins.str`` of a tuple's item would be a real string)."""
    body = (b"\x80\x04" + hc._text("builtins") + hc._text("str") + b"\x93" + hc._text("os") + b"\x85R"
            + hc._text("system") + b"\x93" + hc._text("true") + b"\x85R.")
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", body, {})
    refused(lambda: read_checkpoint(path, trust=True, warn=lambda message: None), "corrupt or truncated")


def test_state_of_a_non_allowed_kind_is_refused(tmp_path):
    """BUILD on a plain list (only OrderedDict and numpy dtypes take a state)."""
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", b"\x80\x02]}b.", {})
    both_readers(path, "sets the state of a list")


def test_deep_nesting_is_one_line(tmp_path):
    path = hc.zip_checkpoint(tmp_path / "a.ckpt", hc.nested_extras(5000), {})
    both_readers(path, "is nested more than 64 levels deep")
    assert ckpt.load_checkpoint(hc.zip_checkpoint(tmp_path / "b.ckpt", hc.nested_extras(10), {}))["epoch"] == 1


# --- legacy stream --------------------------------------------------------------------------
def test_legacy_storage_absent_from_the_key_list_is_refused(tmp_path):
    a, b = hc.FakeStorage("1", 4), hc.FakeStorage("2", 4)
    obj = hc.checkpoint_dict(hc.FakeTensor(a))
    obj["ema_state_dict"] = OrderedDict(w=hc.FakeTensor(b))
    path = hc.legacy_checkpoint(tmp_path / "a.ckpt", obj, ["1"], {"1": (4, bytes(16))})
    both_readers(path, "references storage '2', which is not in its list of stored storages")


def test_legacy_storage_never_referenced_is_refused(tmp_path):
    obj = hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("1", 4)))
    path = hc.legacy_checkpoint(tmp_path / "a.ckpt", obj, ["1", "9"], {"1": (4, bytes(16)), "9": (4, bytes(16))})
    both_readers(path, "stores storage '9', which its pickle never references")


def test_legacy_huge_declared_size_is_refused_before_allocating(tmp_path):
    numel = (1 << 30) // 4
    obj = hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("1", numel)))
    path = hc.legacy_checkpoint(tmp_path / "a.ckpt", obj, ["1"], {"1": (numel, bytes(1 << 20))})
    both_readers(path, "storage '1' declares 1,073,741,824 bytes; 1,048,576 are left in the file")


def test_legacy_count_that_disagrees_with_the_pickle_is_refused(tmp_path):
    obj = hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("1", 4)))
    path = hc.legacy_checkpoint(tmp_path / "a.ckpt", obj, ["1"], {"1": (3, bytes(12))})
    both_readers(path, "stores 3 elements for storage '1', whose pickle declares 4")


def test_legacy_bytes_after_the_last_storage_are_refused(tmp_path):
    obj = hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("1", 4)))
    path = hc.legacy_checkpoint(tmp_path / "a.ckpt", obj, ["1"], {"1": (4, bytes(16))})
    path.write_bytes(path.read_bytes() + b"junk")
    both_readers(path, "4 bytes after its last storage")


def test_legacy_fake_file_loads_when_it_adds_up(tmp_path):
    values = torch.arange(4.0)
    obj = hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("1", 4), offset=1, size=(3,)))
    path = hc.legacy_checkpoint(tmp_path / "a.ckpt", obj, ["1"], {"1": (4, values.numpy().tobytes())})
    assert torch.equal(ckpt.load_checkpoint(path)["state_dict"]["w"], values[1:])


# --- our checkpoints: exactly what torch.load gives -----------------------------------------
def assert_identical(a, b, where="root"):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.stride(), a.storage_offset(), a.requires_grad) == \
            (b.dtype, b.shape, b.stride(), b.storage_offset(), b.requires_grad), where
        assert a.untyped_storage().nbytes() == b.untyped_storage().nbytes(), where
        assert bytes(a.untyped_storage()) == bytes(b.untyped_storage()), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        assert getattr(a, "_metadata", None) == getattr(b, "_metadata", None), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def our_checkpoint() -> dict:
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), nn.Sequential(nn.Conv2d(3, 4, 3),
                                                                                          nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(student.parameters(), 0.1, momentum=0.9, nesterov=True)
    student(torch.randn(2, 3, 5, 5)).sum().backward()
    optimizer.step()
    base = torch.arange(10, dtype=torch.int64)
    return ckpt.build_checkpoint(epoch=3, global_step=42, arch="tiny", student=student, teacher=teacher,
                                 optimizer=optimizer, best_prec1=12.5, config={"lr": 0.1, "nested": {"a": [1, 2]}},
                                 position=(3, 0), last_eval={"student": {"top1": float("nan")}},
                                 views={"slice": base[2:7], "transposed": torch.ones(2, 3).t(),
                                        "half": torch.ones(3, dtype=torch.float16),
                                        "flags": torch.tensor([True, False]), "empty": torch.zeros(0, 3)})


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_our_checkpoint_loads_bit_identically(tmp_path, zip_format, monkeypatch):
    state = our_checkpoint()
    path = tmp_path / "last.ckpt"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    ours = ckpt.load_checkpoint(path)
    assert_identical(reference, ours)
    assert_identical(reference, read_checkpoint(path).obj)


def test_save_atomic_writes_what_load_checkpoint_reads(tmp_path):
    state = our_checkpoint()
    ckpt.save_atomic(state, tmp_path / "last.ckpt")
    assert_identical(torch.load(tmp_path / "last.ckpt", weights_only=True), ckpt.load_checkpoint(tmp_path / "last.ckpt"))


def test_numpy_scalars_and_parameters_load_as_torch_load_gives_them(tmp_path):
    state = hc.checkpoint_dict(nn.Parameter(torch.ones(2, 2)))
    state.update(best_prec1=np.float64(55.5), extra=np.float32(1.25), count=np.int64(7))
    for zip_format in (True, False):
        path = tmp_path / f"{zip_format}.ckpt"
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
        ours = read_checkpoint(path).obj
        assert_identical(torch.load(path, weights_only=False), ours)


def test_load_checkpoint_refuses_what_only_torchs_own_allow_list_takes(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({**hc.checkpoint_dict(torch.zeros(2)), "mt_repro": {"seen": {1, 2}}}, path)
    torch.load(path, weights_only=True)  # torch's default allow-list takes a set
    refused(lambda: ckpt.load_checkpoint(path), "needs builtins.set outside the safe allow-list",
            "port-checkpoint OLD NEW")


def test_reader_opens_any_stream(tmp_path):
    buffer = io.BytesIO()
    torch.save(hc.checkpoint_dict(torch.arange(3.0)), buffer)
    loaded = torch_files.load(io.BytesIO(buffer.getvalue()), "<stream>", torch_files.FORMAT_ZIP)
    assert torch.equal(loaded.obj["state_dict"]["w"], torch.arange(3.0))


# --- writing: a full disk -------------------------------------------------------------------
def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.save_atomic(hc.checkpoint_dict(torch.zeros(3)), path)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing "
                           "file data/0: No space left on device\nmore lines of C++ context")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(RunFailed) as caught:
        ckpt.save_atomic(hc.checkpoint_dict(torch.ones(3)), path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "No space left on device" in message and "the previous checkpoint is intact" in message
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["last.ckpt"]


def test_zip64_records_and_directory_are_read(tmp_path, monkeypatch):
    """Large checkpoints carry zip64 sizes and a zip64 end record: read like any other."""
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile then writes the zip64 end record
    values = torch.arange(5.0)
    path = tmp_path / "a.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("archive/data.pkl"),
                         hc.fake_pickle(hc.checkpoint_dict(hc.FakeTensor(hc.FakeStorage("0", 5)))))
        with archive.open(zipfile.ZipInfo("archive/data/0"), "w", force_zip64=True) as record:
            record.write(values.numpy().tobytes())
    assert b"PK\x06\x06" in path.read_bytes()
    assert torch.equal(ckpt.load_checkpoint(path)["state_dict"]["w"], values)
