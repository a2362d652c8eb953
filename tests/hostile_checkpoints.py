"""Hostile checkpoints (ours and old ones): zip directories, pickles, storages: cases for ``hostile_inputs.CASES``.

The builders write each file from scratch (``zipfile``, ``pickle``, ``struct``) and are shared
with ``test_safe_checkpoint.py``.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from hostile_case import MARKER, Case
from mt_repro.config import TrainConfig
from mt_repro.config.saved import to_saved

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # the legacy stream's first pickle
PROTOCOL_VERSION = 1001
MINI = "cifar_shakeshake_mini"


# --- building blocks ------------------------------------------------------------------------
class FakeStorage:
    """A storage as a persistent id: type, key, location, element count (what ``torch.save`` writes)."""

    def __init__(self, key: str, numel: int, kind=torch.FloatStorage, location: str = "cpu"):
        self.key, self.numel, self.kind, self.location = key, numel, kind, location


class FakeTensor:
    def __init__(self, storage: FakeStorage, offset: int = 0, size=None, stride=None):
        self.storage, self.offset = storage, offset
        self.size = tuple(size) if size is not None else (storage.numel,)
        self.stride = tuple(stride) if stride is not None else (1,) * len(self.size)


class FakePickler(pickle.Pickler):
    """``torch.save``'s pickling of tensors (``_rebuild_tensor_v2`` on a persistent storage id),
    for storages that need not exist."""

    def __init__(self, f, legacy: bool, protocol: int = 2):
        super().__init__(f, protocol=protocol)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            pid = ("storage", obj.kind, obj.key, obj.location, obj.numel)
            return pid + (None,) if self.legacy else pid
        return None

    def reducer_override(self, obj):
        if isinstance(obj, FakeTensor):
            return torch._utils._rebuild_tensor_v2, (obj.storage, obj.offset, obj.size, obj.stride, False,
                                                     OrderedDict())
        return NotImplemented


def fake_pickle(obj, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    FakePickler(buffer, legacy).dump(obj)
    return buffer.getvalue()


def zip_checkpoint(path: Path, data_pkl: bytes, storages: dict[str, bytes], *, extra=(), compress: bool = False,
                   prefix: str = "archive") -> Path:
    """A zip checkpoint laid out as ``torch.save`` lays it out, records stored (or deflated)."""
    items = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little"),
             *((f"{prefix}/data/{key}", value) for key, value in storages.items()),
             (f"{prefix}/version", b"3\n"), *extra]
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in items:
            archive.writestr(zipfile.ZipInfo(name), value, compress_type=method)
    return path


def legacy_checkpoint(path: Path, obj, keys: list[str], stored: dict[str, tuple[int, bytes]]) -> Path:
    """A legacy stream: five pickles (the fourth ``obj``, the fifth ``keys``), then for each key
    in ``stored`` its 8-byte little-endian element count and its bytes."""
    with open(path, "wb") as f:
        pickle.dump(MAGIC_NUMBER, f, protocol=2)
        pickle.dump(PROTOCOL_VERSION, f, protocol=2)
        pickle.dump({"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 8}}, f, protocol=2)
        f.write(fake_pickle(obj, legacy=True))
        pickle.dump(keys, f, protocol=2)
        for count, data in stored.values():
            f.write(count.to_bytes(8, "little"))
            f.write(data)
    return path


def checkpoint_dict(weight) -> dict:
    """The original's layout around one tensor."""
    return {"epoch": 1, "global_step": 3, "arch": MINI, "state_dict": OrderedDict(w=weight),
            "ema_state_dict": OrderedDict(w=weight), "best_prec1": 1.5, "optimizer": {"state": {}, "param_groups": []}}


def real_records(obj) -> list[tuple[str, bytes]]:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_records(path: Path, records, method=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in records:
            archive.writestr(zipfile.ZipInfo(name), value, compress_type=method)
    return path


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def decoy_stack_global(real: tuple[str, str], decoy: tuple[str, str], args: bytes, memo: bool = False) -> bytes:
    """A protocol-4 pickle that calls ``real`` but whose last two strings are ``decoy``: it pushes
    ``real``, then ``decoy``, pops the decoy and imports what is left on the stack (``memo``: it
    memoizes ``real``, pops it, and gets it back from the memo after the decoy)."""
    body = b"\x80\x04" + _text(real[0]) + b"\x94" + _text(real[1]) + b"\x94"
    if memo:
        body += b"0" b"0" + _text(decoy[0]) + _text(decoy[1]) + b"0" b"0" + b"h\x00" b"h\x01"
    else:
        body += _text(decoy[0]) + _text(decoy[1]) + b"0" b"0"
    return body + b"\x93" + args + b"R."  # STACK_GLOBAL, its arguments, REDUCE, STOP


def nested_extras(depth: int) -> bytes:
    """A checkpoint dict whose ``mt_repro`` extras are lists nested ``depth`` deep (written by
    hand: Python's pickler itself cannot go that deep)."""
    nested = b"(" * depth + b"]" + b"l" * depth
    head = {k: v for k, v in checkpoint_dict(0.0).items() if k not in ("state_dict", "ema_state_dict")}
    head.update(state_dict={}, ema_state_dict={})
    return pickle.dumps(head, protocol=2)[:-2] + _text("mt_repro") + nested + b"u."


# --- the cases ------------------------------------------------------------------------------
def _small_state() -> dict:
    return checkpoint_dict(torch.arange(6.0))


def case_collision(d: Path, tree: Path) -> list:
    evil = pickle.dumps({"epoch": _Exploit(d)}, protocol=2)
    write_records(d / "old.ckpt", real_records(_small_state()) + [("archive/DATA.pkl", evil)])
    return ["inspect", d / "old.ckpt"]


class _Exploit:
    def __init__(self, d: Path):
        self.command = f"touch {d / MARKER}"

    def __reduce__(self):
        return os.system, (self.command,)


def stack_global_decoy(d: Path, tree: Path) -> list:
    call = decoy_stack_global(("os", "system"), ("collections", "OrderedDict"),
                              _text(f"touch {d / MARKER}") + b"\x85")
    zip_checkpoint(d / "old.ckpt", call, {})
    return ["inspect", d / "old.ckpt"]


def compressed_records(d: Path, tree: Path) -> list:
    write_records(d / "old.ckpt", real_records(_small_state()), zipfile.ZIP_DEFLATED)
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


BOMB_BYTES = 512 << 20


def deflate_bomb(d: Path, tree: Path) -> list:
    """Half a GiB of zeros deflated into a record of about half a MiB."""
    numel = BOMB_BYTES // 4
    path = d / "old.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("archive/data.pkl"),
                         fake_pickle(checkpoint_dict(FakeTensor(FakeStorage("0", numel)))))
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as record:
            chunk = bytes(16 << 20)
            for _ in range(BOMB_BYTES // len(chunk)):
                record.write(chunk)
    return ["inspect", path]


def oversized_record(d: Path, tree: Path) -> list:
    data = fake_pickle(checkpoint_dict(FakeTensor(FakeStorage("0", 4))))
    zip_checkpoint(d / "old.ckpt", data, {"0": bytes(1 << 20)})
    return ["inspect", d / "old.ckpt"]


def local_header_disagrees(d: Path, tree: Path) -> list:
    path = write_records(d / "old.ckpt", real_records(_small_state()))
    data = bytearray(path.read_bytes())
    name = b"archive/data.pkl"
    assert data[30:30 + len(name)] == name  # the first local header's name
    data[30 + len(name) - 1:30 + len(name)] = b"X"
    path.write_bytes(bytes(data))
    return ["inspect", path]


def zip_storage_missing(d: Path, tree: Path) -> list:
    data = fake_pickle(checkpoint_dict(FakeTensor(FakeStorage("0", 4))))
    zip_checkpoint(d / "old.ckpt", data, {})
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


def zip_storage_unreferenced(d: Path, tree: Path) -> list:
    data = fake_pickle(checkpoint_dict(FakeTensor(FakeStorage("0", 4))))
    zip_checkpoint(d / "old.ckpt", data, {"0": bytes(16), "7": bytes(16)})
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


def legacy_storage_missing(d: Path, tree: Path) -> list:
    a, b = FakeStorage("1", 4), FakeStorage("2", 4)
    obj = checkpoint_dict(FakeTensor(a))
    obj["ema_state_dict"] = OrderedDict(w=FakeTensor(b))
    legacy_checkpoint(d / "old.ckpt", obj, ["1"], {"1": (4, bytes(16))})
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


def legacy_storage_unreferenced(d: Path, tree: Path) -> list:
    obj = checkpoint_dict(FakeTensor(FakeStorage("1", 4)))
    legacy_checkpoint(d / "old.ckpt", obj, ["1", "9"], {"1": (4, bytes(16)), "9": (4, bytes(16))})
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


def legacy_huge_size(d: Path, tree: Path) -> list:
    """A storage that declares a GiB, in a 1 MiB file."""
    numel = (1 << 30) // 4
    obj = checkpoint_dict(FakeTensor(FakeStorage("1", numel)))
    legacy_checkpoint(d / "old.ckpt", obj, ["1"], {"1": (numel, bytes(1 << 20))})
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


def deeply_nested_extras(d: Path, tree: Path) -> list:
    zip_checkpoint(d / "old.ckpt", nested_extras(5000), {})
    return ["inspect", d / "old.ckpt"]


def _run_dir(d: Path, tree: Path, checkpoint: bytes) -> Path:
    config = TrainConfig(dataset="cifar10", arch=MINI, data_dir=str(tree), train_subdir="train+val",
                         eval_subdir="test", labels=str(tree.parent / "labels.txt"), batch_size=8,
                         labeled_batch_size=2, epochs=1, workers=0, seed=0, device="cpu")
    run = d / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(to_saved(config)))
    (run / "checkpoints" / "last.ckpt").write_bytes(checkpoint)
    return run


def resume_outside_allow_list(d: Path, tree: Path) -> list:
    """A set (``builtins.set``): torch's own weights-only allow-list takes it, ours does not."""
    buffer = io.BytesIO()
    torch.save({**checkpoint_dict(torch.zeros(2)), "mt_repro": {"seen": {1, 2}}}, buffer)
    return ["cifar10", "--resume", _run_dir(d, tree, buffer.getvalue())]


def resume_nested(d: Path, tree: Path) -> list:
    path = zip_checkpoint(d / "nested.ckpt", nested_extras(5000), {})
    return ["cifar10", "--resume", _run_dir(d, tree, path.read_bytes())]


CASES: list[Case] = [
    Case("checkpoint (zip)", "second `data.pkl` differing only in case", "inspect", "differ only in case",
         case_collision),
    Case("checkpoint (zip)", "protocol-4 import hidden behind a popped decoy name", "inspect", "needs os.system",
         stack_global_decoy),
    Case("checkpoint (zip)", "compressed records", "port-checkpoint", "compressed zip record", compressed_records),
    Case("checkpoint (zip)", "512 MiB of zeros deflated into one record", "inspect", "compressed zip record",
         deflate_bomb, extra_mib=256),
    Case("checkpoint (zip)", "storage record larger than its storage", "inspect", "but its storage declares 16",
         oversized_record),
    Case("checkpoint (zip)", "local header disagrees with the directory", "inspect", "local header disagrees",
         local_header_disagrees),
    Case("checkpoint (zip)", "storage referenced, record absent", "port-checkpoint", "which has no record",
         zip_storage_missing),
    Case("checkpoint (zip)", "storage record never referenced", "port-checkpoint", "never references",
         zip_storage_unreferenced),
    Case("checkpoint (legacy)", "storage referenced, absent from the key list", "port-checkpoint",
         "not in its list of stored storages", legacy_storage_missing),
    Case("checkpoint (legacy)", "stored storage never referenced", "port-checkpoint", "never references",
         legacy_storage_unreferenced),
    Case("checkpoint (legacy)", "storage declaring 1 GiB in a 1 MiB file", "port-checkpoint", "are left in the file",
         legacy_huge_size, extra_mib=256),
    Case("checkpoint", "extras nested 5000 deep", "inspect", "nested more than 64 levels deep",
         deeply_nested_extras),
    Case("run checkpoint", "a global outside our allow-list", "cifar10 --resume", "outside the safe allow-list",
         resume_outside_allow_list),
    Case("run checkpoint", "extras nested 5000 deep", "cifar10 --resume", "nested more than 64 levels deep",
         resume_nested),
]
