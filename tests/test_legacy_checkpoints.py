"""Old checkpoints: read without running their code, ported, inspected and evaluated."""
import argparse
import builtins
import io
import os
import pickle
import signal
import subprocess
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import fuzz_examples
from mt_repro import models
from mt_repro.cli import main
from mt_repro.config import TrainConfig
from mt_repro.core.errors import BadInput
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import runs
from mt_repro.legacy.inspect import describe_checkpoint
from mt_repro.legacy.normalize import normalize
from mt_repro.legacy.reading import ALLOWED_GLOBALS, UnsafeCheckpoint, read_checkpoint
from mt_repro.logs.runlog import read_rows

MINI = "cifar_shakeshake_mini"


# --- building checkpoints the original way ---------------------------------------------------
def original_run(arch: str, num_classes: int = 10, seed: int = 0):
    """Student and teacher wrapped in nn.DataParallel as pytorch/main.py did (on a CPU it wraps
    without copying and still prefixes ``module.``), SGD as the original configured it, one step
    so that momentum buffers exist, and the checkpoint dict in the original's layout."""
    torch.manual_seed(seed)
    student = nn.DataParallel(models.create_model(arch, num_classes))
    teacher = nn.DataParallel(models.create_model(arch, num_classes))
    optimizer = torch.optim.SGD(student.parameters(), 0.05, momentum=0.9, weight_decay=2e-4, nesterov=True)
    logits1, logits2 = student(torch.randn(2, 3, 32, 32))
    (logits1.sum() + logits2.sum()).backward()
    optimizer.step()
    state = {
        "epoch": 7,
        "global_step": 1234,
        "arch": arch,
        "state_dict": student.state_dict(),
        "ema_state_dict": teacher.state_dict(),
        "best_prec1": 61.25,
        "optimizer": optimizer.state_dict(),
    }
    return student, teacher, optimizer, state


def our_models(path: Path, arch: str, num_classes: int = 10):
    """Models and optimizer built from a ported file by the same calls a resumed run makes."""
    state = ckpt.load_checkpoint(path)  # our loader: weights_only, required keys
    student = models.create_model(arch, num_classes)
    teacher = models.create_model(arch, num_classes)
    student.load_state_dict(ckpt.without_prefix(state["state_dict"]))
    teacher.load_state_dict(ckpt.without_prefix(state["ema_state_dict"]))
    optimizer = torch.optim.SGD(student.parameters(), 0.05, momentum=0.9, weight_decay=2e-4, nesterov=True)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state, student, teacher, optimizer


def assert_same_outputs(source: nn.Module, ours: nn.Module):
    source.eval()
    ours.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(source(x), ours(x)):
            assert torch.equal(a, b)


def assert_equal_nested(a, b, where="root"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_equal_nested(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), where


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert err.startswith("mt-repro: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# --- 1. round trip --------------------------------------------------------------------------
@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_round_trip_mini(tmp_path, capsys, zip_format):
    student, teacher, optimizer, state = original_run(MINI)
    old = tmp_path / "checkpoint.7.ckpt"
    torch.save(state, old, _use_new_zipfile_serialization=zip_format)
    code, out, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "ported.ckpt")
    assert code == 0, err
    assert err == ""
    assert f"arch            {MINI} (from the checkpoint), 10 classes" in out
    assert "epoch           7" in out and "global_step     1234" in out
    assert "best_prec1      61.25 (stored as a Python float)" in out
    assert "state_dict      91 tensors ported" in out
    assert "optimizer state yes: 1 param group" in out

    ported, ours_s, ours_t, ours_opt = our_models(tmp_path / "ported.ckpt", MINI)
    assert_same_outputs(student.module, ours_s)
    assert_same_outputs(teacher.module, ours_t)
    assert_equal_nested(optimizer.state_dict(), ours_opt.state_dict())
    assert_equal_nested(optimizer.state_dict(), ported["optimizer"])
    assert ported["best_prec1"] == 61.25 and ported["epoch"] == 7 and ported["global_step"] == 1234
    assert ported["mt_repro"]["ported_from"]["format"] == ("zip" if zip_format else "legacy")


@pytest.fixture(scope="module")
def shakeshake26_checkpoint(tmp_path_factory):
    student, teacher, optimizer, state = original_run("cifar_shakeshake26")
    path = tmp_path_factory.mktemp("ss26") / "checkpoint.180.ckpt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path, student, teacher, optimizer


def test_round_trip_cifar_shakeshake26(shakeshake26_checkpoint, tmp_path, capsys):
    old, student, teacher, optimizer = shakeshake26_checkpoint
    code, out, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "ported.ckpt")
    assert code == 0, err
    assert "cifar_shakeshake26 (from the checkpoint), 10 classes" in out
    _, ours_s, ours_t, ours_opt = our_models(tmp_path / "ported.ckpt", "cifar_shakeshake26")
    assert_same_outputs(student.module, ours_s)
    assert_same_outputs(teacher.module, ours_t)
    assert_equal_nested(optimizer.state_dict(), ours_opt.state_dict())


def test_wrong_architecture_names_the_first_mismatch(shakeshake26_checkpoint, tmp_path, capsys):
    old = shakeshake26_checkpoint[0]
    code, _, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "x.ckpt", "--arch", MINI)
    assert_one_line_error(code, err, "state_dict: layer1.0.conv_a1.weight has shape [96, 16, 3, 3], "
                                     f"{MINI} expects [16, 16, 3, 3]")
    assert not (tmp_path / "x.ckpt").exists()


# --- 2. a checkpoint as torch 0.3 wrote it ----------------------------------------------------
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization's, unchanged since 0.1.10
PROTOCOL_VERSION = 1001


class Storage03:
    """A 0.3 storage: a key (0.3 used ``str(storage._cdata)``), where it lived, its values."""

    def __init__(self, key: str, values: torch.Tensor, location: str = "cuda:0"):
        self.key, self.values, self.location = key, values.contiguous().view(-1), location
        kind = {torch.float32: "FloatStorage", torch.int64: "LongStorage"}[values.dtype]
        self.storage_class = getattr(torch.cuda if location.startswith("cuda") else torch, kind)


class Tensor03:
    def __init__(self, storage: Storage03, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class Pickler03(pickle.Pickler):
    """torch 0.3's ``_save``: a tensor reduces to ``torch._utils._rebuild_tensor(storage, offset,
    size, stride)``; a storage is the persistent id ``('storage', storage_type, root_key,
    location, size, view_metadata)`` and its bytes follow the pickles."""

    def __init__(self, f, storages: dict):
        super().__init__(f, protocol=2)
        self.storages = storages

    def persistent_id(self, obj):
        if isinstance(obj, Storage03):
            self.storages[obj.key] = obj
            return ("storage", obj.storage_class, obj.key, obj.location, obj.values.numel(), None)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, Tensor03):
            return torch._utils._rebuild_tensor, (obj.storage, obj.offset, obj.size, obj.stride)
        return NotImplemented


def write_torch03_file(obj, f) -> None:
    """The byte sequence of torch 0.3's ``torch.save``: pickled magic number, protocol version
    and sys_info; the object (Pickler03); the sorted storage keys; then each storage as an
    int64 little-endian element count followed by its raw little-endian bytes."""
    storages: dict[str, Storage03] = {}
    pickle.dump(MAGIC_NUMBER, f, protocol=2)
    pickle.dump(PROTOCOL_VERSION, f, protocol=2)
    pickle.dump({"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 8}}, f, protocol=2)
    Pickler03(f, storages).dump(obj)
    keys = sorted(storages)
    pickle.dump(keys, f, protocol=2)
    for key in keys:
        values = storages[key].values
        f.write(values.numel().to_bytes(8, "little"))
        f.write(values.numpy().tobytes())


def torch03_state_dict(module: nn.Module, first_key: int) -> OrderedDict:
    """A DataParallel model's state dict as 0.3 saved it: ``module.`` keys, no
    ``num_batches_tracked`` (added in 0.4.1), no ``_metadata``, each tensor on its own GPU
    storage, except fc1's weight and bias which share one (bias at an offset)."""
    result, key = OrderedDict(), first_key
    for name, tensor in nn.DataParallel(module).state_dict().items():
        if name.endswith("num_batches_tracked") or name.endswith("fc1.bias"):
            continue
        if name.endswith("fc1.weight"):
            bias = module.fc1.bias.detach()
            shared = Storage03(str(key), torch.cat([tensor.reshape(-1), bias]))
            result[name] = Tensor03(shared, 0, tensor.shape, tensor.stride())
            result[name[:-len("weight")] + "bias"] = Tensor03(shared, tensor.numel(), bias.shape, (1,))
        else:
            result[name] = Tensor03(Storage03(str(key), tensor.detach()), 0, tensor.shape, tensor.stride())
        key += 16
    return result


def torch03_checkpoint(student: nn.Module, teacher: nn.Module, optimizer) -> dict:
    """The original's checkpoint dict under 0.3: ``best_prec1`` a Python float, the optimizer's
    state and param groups keyed by ``id(param)`` (0.3 did not renumber parameters)."""
    ids = [140_230_000_000 + 72 * i for i, _ in enumerate(student.parameters())]
    saved = optimizer.state_dict()
    state = {}
    for index, values in saved["state"].items():
        buf = values["momentum_buffer"]
        state[ids[index]] = {"momentum_buffer": Tensor03(Storage03(str(900_000 + index), buf),
                                                         0, buf.shape, buf.stride())}
    group = {k: saved["param_groups"][0][k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")}
    return {
        "epoch": 180,
        "global_step": 113_400,
        "arch": MINI,
        "state_dict": torch03_state_dict(student, 1_000),
        "ema_state_dict": torch03_state_dict(teacher, 500_000),
        "best_prec1": 93.75,
        "optimizer": {"state": state, "param_groups": [dict(group, params=ids)]},
    }


def test_a_torch_03_checkpoint_loads_and_ports(tmp_path, capsys):
    student, teacher, optimizer, _ = original_run(MINI)
    old = tmp_path / "checkpoint.180.ckpt"
    with open(old, "wb") as f:
        write_torch03_file(torch03_checkpoint(student.module, teacher.module, optimizer), f)

    raw = read_checkpoint(old)
    assert raw.format == "legacy"
    assert {"torch._utils._rebuild_tensor", "torch.cuda.FloatStorage", "collections.OrderedDict"} == set(raw.globals)

    code, out, err = run_cli(capsys, "inspect", old)
    assert code == 0, err
    assert "no num_batches_tracked (saved by torch < 0.4.1)" in out
    assert "best_prec1      93.75 (stored as a Python float)" in out

    code, out, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "ported.ckpt")
    assert code == 0, err
    assert "epoch           180" in out and "global_step     113400" in out
    assert "optimizer state yes: 1 param group, state for 49 of 49 parameters (momentum_buffer)" in out
    assert "state_dict: added 14 BatchNorm num_batches_tracked counters" in out
    assert "re-keyed from id(param)" in out

    ported, ours_s, ours_t, ours_opt = our_models(tmp_path / "ported.ckpt", MINI)
    assert_same_outputs(student.module, ours_s)
    assert_same_outputs(teacher.module, ours_t)
    assert ported["best_prec1"] == 93.75
    expected = optimizer.state_dict()
    got = ours_opt.state_dict()
    assert got["state"].keys() == expected["state"].keys()
    for index in expected["state"]:
        assert torch.equal(got["state"][index]["momentum_buffer"], expected["state"][index]["momentum_buffer"])
    for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov"):
        assert got["param_groups"][0][key] == expected["param_groups"][0][key]


def test_a_legacy_tar_checkpoint_needs_trust(tmp_path, capsys):
    """torch <= 0.1.9 wrote a tar of ``storages``, ``tensors`` and ``pickle`` records, which
    torch.load refuses under weights_only; we refuse it too unless --trust."""
    old = tmp_path / "ancient.ckpt"
    members = {"storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
               "tensors": pickle.dumps(0, protocol=2),
               "pickle": pickle.dumps({"epoch": 3, "global_step": 9, "arch": MINI}, protocol=2)}
    with tarfile.open(old, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    code, _, err = run_cli(capsys, "inspect", old)
    assert_one_line_error(code, err, "legacy tar archive", "--trust")
    code, out, err = run_cli(capsys, "inspect", old, "--trust")
    assert code == 0 and "epoch           3" in out
    assert "mt-repro: warning: --trust" in err


# --- 3. best_prec1 in every type the original's versions stored ----------------------------
@pytest.mark.parametrize("value, stored_as", [
    (torch.tensor(87.5), "a 0-dim tensor (float32)"),                  # torch >= 0.4: prec1[0]
    (torch.tensor([87.5]), "a [1] tensor (float32)"),                  # correct_k.sum(0, keepdim=True)
    (np.float64(87.5), "a numpy float64 scalar"),
    (np.float32(87.5), "a numpy float32 scalar"),
    (87.5, "a Python float"),
], ids=["0-dim", "1-element", "np.float64", "np.float32", "float"])
def test_best_prec1_types(tmp_path, capsys, value, stored_as):
    _, _, _, state = original_run(MINI)
    state["best_prec1"] = value
    old = tmp_path / "old.ckpt"
    torch.save(state, old, _use_new_zipfile_serialization=False)
    code, out, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "new.ckpt")
    assert code == 0, err
    assert f"best_prec1      87.5 (stored as {stored_as})" in out
    ported = ckpt.load_checkpoint(tmp_path / "new.ckpt")
    assert type(ported["best_prec1"]) is float and ported["best_prec1"] == 87.5


def test_numpy_1_scalar_name_is_allowed(tmp_path):
    """numpy 1.x pickled scalars as ``numpy.core.multiarray.scalar`` (numpy 2 writes
    ``numpy._core``); the stream is rewritten to the old name, as a 2019 checkpoint has it."""
    _, _, _, state = original_run(MINI)
    state["best_prec1"] = np.float64(12.0625)
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    assert data.count(b"cnumpy._core.multiarray\nscalar\n") == 1
    old = tmp_path / "old.ckpt"
    old.write_bytes(data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"))
    normalized = normalize(read_checkpoint(old))
    assert "numpy.core.multiarray.scalar" in normalized.raw.globals
    assert normalized.state["best_prec1"] == 12.0625


# --- 4. malicious pickles -------------------------------------------------------------------
class Payload:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path):
    return {
        "os.system": (Payload(os.system, (f"touch {marker}",)), f"{os.system.__module__}.system"),
        "builtins.exec": (Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)), "builtins.exec"),
        "subprocess.Popen": (Payload(subprocess.Popen, (["touch", str(marker)],)), "subprocess.Popen"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "subprocess.Popen"])
@pytest.mark.parametrize("layout", ["legacy", "zip", "zip-protocol-4", "bare-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys, name, layout):
    marker = tmp_path / "PWNED"
    payload, global_name = payloads(marker)[name]
    evil = tmp_path / "evil.ckpt"
    _, _, _, state = original_run(MINI)
    state["best_prec1"] = payload
    if layout == "legacy":
        torch.save(state, evil, _use_new_zipfile_serialization=False)
    elif layout == "zip":
        torch.save(state, evil)
    elif layout == "zip-protocol-4":  # STACK_GLOBAL, which names the import only on the stack
        torch.save(state, evil, pickle_protocol=4)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    for command in (["port-checkpoint", evil, tmp_path / "out.ckpt"], ["inspect", evil],
                    ["evaluate", evil, "--data", tmp_path]):
        code, _, err = run_cli(capsys, *command)
        assert_one_line_error(code, err, f"needs {global_name}", "--trust")
    assert not marker.exists()
    assert not (tmp_path / "out.ckpt").exists()
    with pytest.raises(UnsafeCheckpoint) as refused:
        read_checkpoint(evil, trust=False)
    assert refused.value.names[0] == global_name
    assert not marker.exists()


def test_trust_loads_a_harmless_object_outside_the_allow_list(tmp_path, capsys):
    """Forks of the original saved their argparse arguments in the checkpoint."""
    _, _, _, state = original_run(MINI)
    state["args"] = argparse.Namespace(lr=0.05, arch=MINI, labels="data-local/labels/00.txt")
    old = tmp_path / "old.ckpt"
    torch.save(state, old, _use_new_zipfile_serialization=False)
    code, _, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "new.ckpt")
    assert_one_line_error(code, err, "needs argparse.Namespace", "--trust")
    assert not (tmp_path / "new.ckpt").exists()

    code, out, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "new.ckpt", "--trust")
    assert code == 0, err
    assert err.startswith("mt-repro: warning: --trust") and "argparse.Namespace" in err
    assert "trusted         argparse.Namespace" in out
    ported = ckpt.load_checkpoint(tmp_path / "new.ckpt")  # our file loads without trust
    assert ported["mt_repro"]["legacy_extras"]["args"] == {
        "lr": 0.05, "arch": MINI, "labels": "data-local/labels/00.txt"}
    assert ported["mt_repro"]["ported_from"]["trusted_globals"] == ["argparse.Namespace"]


def test_allow_list_entries_are_explained():
    assert all(isinstance(why, str) and why for why in ALLOWED_GLOBALS.values())
    for dangerous in ("posix.system", "builtins.exec", "builtins.eval", "subprocess.Popen",
                      "builtins.getattr", "torch.storage.UntypedStorage", "torch.Tensor", "argparse.Namespace"):
        assert dangerous not in ALLOWED_GLOBALS


# --- 5. fuzzing the reader ------------------------------------------------------------------
def small_checkpoint() -> dict:
    generator = torch.Generator().manual_seed(0)

    def state():
        return OrderedDict([("module.conv1.weight", torch.randn(2, 3, generator=generator)),
                            ("module.bn.running_mean", torch.randn(2, generator=generator)),
                            ("module.bn.num_batches_tracked", torch.tensor(5))])

    return {"epoch": 2, "global_step": 10, "arch": MINI, "state_dict": state(), "ema_state_dict": state(),
            "best_prec1": np.float64(55.5),
            "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2, 3)}},
                          "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}


def _seed_files() -> list[bytes]:
    legacy, zipped, old = io.BytesIO(), io.BytesIO(), io.BytesIO()
    torch.save(small_checkpoint(), legacy, _use_new_zipfile_serialization=False)
    torch.save(small_checkpoint(), zipped)
    tensor = Tensor03(Storage03("1", torch.arange(6.0)), 2, (2, 2), (2, 1))
    write_torch03_file({"epoch": 1, "global_step": 1, "state_dict": OrderedDict(w=tensor),
                        "ema_state_dict": OrderedDict(w=tensor), "best_prec1": 1.5}, old)
    return [legacy.getvalue(), old.getvalue(), zipped.getvalue()]


SEEDS = _seed_files()


@st.composite
def damaged_files(draw):
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "splice", "random"]))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "overwrite":
        position = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        return bytes(data[:position] + chunk + data[position + len(chunk):])
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 64)))
    return bytes(data[:start] + draw(st.binary(max_size=32)) + data[end:])


class Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise Hang()


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "damaged.ckpt"


@settings(max_examples=fuzz_examples(1000), derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=damaged_files())
def test_damaged_bytes_fail_only_with_bad_input(fuzz_file, data):
    fuzz_file.write_bytes(data)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 60)  # generous: a loaded CI machine is slow, a hang is forever
    try:
        raw = read_checkpoint(fuzz_file, warn=pytest.fail)
        assert describe_checkpoint(raw)  # what inspect prints, for anything that loads
        normalize(raw)
    except BadInput as exc:
        assert "\n" not in str(exc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_fuzz_seeds_are_valid():
    for data in SEEDS:
        normalized = normalize(read_checkpoint(io.BytesIO(data)))
        assert normalized.state["epoch"] in (1, 2)


# --- 6. bad input ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory):
    _, _, _, state = original_run(MINI)
    path = tmp_path_factory.mktemp("mini") / "checkpoint.7.ckpt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path, state


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.3, 0.999])
def test_truncated_files(mini_checkpoint, tmp_path, capsys, fraction):
    data = mini_checkpoint[0].read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[:int(len(data) * fraction)])
    code, _, err = run_cli(capsys, "port-checkpoint", cut, tmp_path / "out.ckpt")
    assert_one_line_error(code, err, str(cut))
    assert "empty" in err or "corrupt or truncated" in err


def test_nonexistent_file(tmp_path, capsys):
    for command in ("port-checkpoint", "inspect"):
        extra = [tmp_path / "out.ckpt"] if command == "port-checkpoint" else []
        code, _, err = run_cli(capsys, command, tmp_path / "nope.ckpt", *extra)
        assert_one_line_error(code, err, "nope.ckpt does not exist")


def test_missing_ema_state_dict_is_named(mini_checkpoint, tmp_path, capsys):
    state = dict(mini_checkpoint[1])
    del state["ema_state_dict"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old, _use_new_zipfile_serialization=False)
    code, _, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "new.ckpt")
    assert_one_line_error(code, err, "has no ema_state_dict")


def test_missing_and_unexpected_keys_are_named(mini_checkpoint, tmp_path, capsys):
    state = dict(mini_checkpoint[1])
    state["ema_state_dict"] = OrderedDict(state["ema_state_dict"])
    del state["ema_state_dict"]["module.layer2.0.bn_b1.weight"]
    torch.save(state, tmp_path / "missing.ckpt")
    code, _, err = run_cli(capsys, "port-checkpoint", tmp_path / "missing.ckpt", tmp_path / "new.ckpt")
    assert_one_line_error(code, err, f"ema_state_dict: layer2.0.bn_b1.weight is missing; {MINI} expects it "
                                     "with shape [32]")
    state = dict(mini_checkpoint[1])
    state["state_dict"] = OrderedDict(state["state_dict"], **{"module.fc3.weight": torch.zeros(2, 2)})
    torch.save(state, tmp_path / "extra.ckpt")
    code, _, err = run_cli(capsys, "port-checkpoint", tmp_path / "extra.ckpt", tmp_path / "new.ckpt")
    assert_one_line_error(code, err, f"state_dict: unexpected fc3.weight (shape [2, 2]), which {MINI} does not have")


def test_wrong_arch_and_classes(mini_checkpoint, tmp_path, capsys):
    old = mini_checkpoint[0]
    code, _, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "n.ckpt", "--arch", "resnext_mini")
    assert_one_line_error(code, err, "state_dict: conv1.weight has shape [16, 3, 3, 3], resnext_mini expects [64, 3, 7, 7]")
    code, _, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "n.ckpt", "--arch", "resnet18")
    assert_one_line_error(code, err, "unknown architecture 'resnet18'")
    code, _, err = run_cli(capsys, "port-checkpoint", old, tmp_path / "n.ckpt", "--num-classes", "100")
    assert_one_line_error(code, err, f"state_dict: fc1.weight has shape [10, 64], {MINI} expects [100, 64]")


def test_optimizer_that_does_not_fit(mini_checkpoint, tmp_path, capsys):
    state = dict(mini_checkpoint[1])
    optimizer = {"state": dict(state["optimizer"]["state"]), "param_groups": state["optimizer"]["param_groups"]}
    optimizer["state"][0] = {"momentum_buffer": torch.zeros(3)}
    state["optimizer"] = optimizer
    torch.save(state, tmp_path / "old.ckpt")
    code, _, err = run_cli(capsys, "port-checkpoint", tmp_path / "old.ckpt", tmp_path / "new.ckpt")
    assert_one_line_error(code, err, "optimizer: momentum_buffer of parameter 0 (conv1.weight) has shape [3]")


def test_not_a_checkpoint(tmp_path, capsys):
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "weights.pth")
    code, _, err = run_cli(capsys, "port-checkpoint", tmp_path / "weights.pth", tmp_path / "n.ckpt")
    assert_one_line_error(code, err, "bare state dict", "ema_state_dict")
    (tmp_path / "text.ckpt").write_text("hello\n")
    code, _, err = run_cli(capsys, "inspect", tmp_path / "text.ckpt")
    assert_one_line_error(code, err, "corrupt or truncated")


# --- 7. inspect and evaluate a real (tiny) run ----------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(dataset="cifar10", arch=MINI, data_dir=str(tiny_tree), train_subdir="train+val",
                         eval_subdir="test", labels=str(tiny_tree.parent / "labels.txt"), batch_size=8,
                         labeled_batch_size=2, lr=0.05, nesterov=True, consistency=100.0,
                         consistency_rampup=5, ema_decay=0.99, epochs=1, lr_rampdown_epochs=2,
                         workers=0, print_freq=1, seed=0, device="cpu")
    runs.train(config, out, progress=False)
    return out


def test_inspect_our_checkpoint_and_log(tiny_run, capsys):
    code, out, err = run_cli(capsys, "inspect", tiny_run / "checkpoints" / "last.ckpt")
    assert code == 0, err
    assert "zip archive" in out
    assert "keys            epoch, global_step, arch, state_dict, ema_state_dict, best_prec1, optimizer, mt_repro" in out
    assert f"arch            {MINI}" in out and "epoch           1" in out and "global_step     6" in out
    assert "state_dict      91 tensors: 152,932 parameters in 49, 42 BatchNorm buffers; all keys prefixed 'module.'" in out
    assert "group 0: 49 params  lr=" in out and "nesterov=True" in out
    assert "mt_repro        version 0.1.0; config (" in out and "rng states (python, numpy, torch)" in out

    code, out, err = run_cli(capsys, "inspect", tiny_run / "training.jsonl")
    assert code == 0, err
    assert "rows            6" in out and "step" in out and "index           epoch from 0.0 to" in out


def test_evaluate_matches_the_runs_validation(tiny_run, tiny_tree, tmp_path, capsys):
    last = tiny_run / "checkpoints" / "last.ckpt"
    expected = {"student": read_rows(tiny_run / "validation.jsonl")[-1],
                "teacher": read_rows(tiny_run / "ema_validation.jsonl")[-1]}
    legacy = tmp_path / "legacy.ckpt"  # the same checkpoint as the original code would have written it
    state = ckpt.load_checkpoint(last)
    torch.save({k: v for k, v in state.items() if k != "mt_repro"}, legacy, _use_new_zipfile_serialization=False)
    for path in (last, legacy):
        code, out, err = run_cli(capsys, "evaluate", path, "--data", tiny_tree, "--workers", "0",
                                 "--batch-size", "8", "--device", "cpu")
        assert code == 0, err
        assert "test: 20 images" in out
        for name, row in expected.items():
            assert f"{name}  prec@1 {row['top1/avg']:.3f}  prec@5 {row['top5/avg']:.3f}" in out
    code, _, err = run_cli(capsys, "evaluate", last, "--data", tiny_tree, "--workers", "0",
                           "--dataset", "imagenet", "--eval-subdir", "test")
    assert_one_line_error(code, err, "fc1.weight has shape [10, 64]", "expects [1000, 64]")
