"""Property tests of the readers of configs, label files, our checkpoints and run logs: for any
input they return a value or raise ``BadInput`` with one line; never another exception, never a
hang. Seeded (``derandomize``), so CI sees the same cases every run; the long run scales the
counts with ``$MT_REPRO_FUZZ_SCALE`` (benchmarks/fuzz/run_fuzz.sh). The legacy checkpoint and
msgpack readers are fuzzed in their own test files."""
from __future__ import annotations

import dataclasses
import io
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fuzz_examples
from mt_repro.apps import digits_demo
from mt_repro.config import TrainConfig
from mt_repro.config.coerce import parse_overrides
from mt_repro.config.train import HINTS as TRAIN_HINTS
from mt_repro.core.errors import BadInput
from mt_repro.data.labels import read_label_file
from mt_repro.engine import checkpoint as ckpt
from mt_repro.logs.runlog import read_rows


def fuzz(n: int) -> settings:
    return settings(max_examples=fuzz_examples(n), derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def only_bad_input(call, *args):
    try:
        return call(*args)
    except BadInput as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


SETTINGS = [f.name for f in dataclasses.fields(TrainConfig)]
values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@fuzz(2000)
@given(st.dictionaries(st.one_of(st.sampled_from(SETTINGS), st.text(max_size=8)), values, max_size=8))
def test_config_from_any_dict(mapping):
    config = only_bad_input(TrainConfig.from_dict, mapping)
    if config is not None:
        only_bad_input(config.validate)


@fuzz(2000)
@given(st.lists(st.one_of(st.text(max_size=20),
                          st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SETTINGS), st.text(max_size=10))),
                max_size=4))
def test_set_overrides_from_any_text(pairs):
    overrides = only_bad_input(parse_overrides, pairs, TRAIN_HINTS)
    if overrides is not None:
        typed = typing.get_type_hints(TrainConfig)
        assert set(overrides) <= set(typed)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


toml_like = st.one_of(
    st.text(max_size=200),
    st.builds(lambda tables: "\n".join(tables), st.lists(st.sampled_from([
        "[demo]", "[run]", "[supervised]", "labels = 100", "seeds = 'x'", "seeds = 2", "epochs = 3",
        "lr = 0.1", "arch = 1", "consistency = \"none\"", "[demo", "x = [1, 2", "dataset = \"digits\"",
        "labeled_batch_size = 16", "[demo]\nlabels = 100\nseeds = 2",
    ]), max_size=12)))


@fuzz(1000)
@given(toml_like)
def test_demo_config_from_any_toml(scratch, text):
    path = scratch / "demo.toml"
    path.write_text(text)
    data = only_bad_input(digits_demo.load_demo_config, path)
    if data is not None:
        for method in ("mean_teacher", "supervised"):
            only_bad_input(digits_demo.demo_configs, data, method, 100, scratch / "l.txt", 0, None, scratch)


label_lines = st.lists(st.one_of(
    st.builds(lambda n, c: f"{n}_{c}.png {c}", st.integers(0, 50), st.sampled_from(["cat", "dog", "x y"])),
    st.text(max_size=30)), max_size=10)


@fuzz(3000)
@given(st.one_of(st.binary(max_size=200), label_lines.map(lambda lines: "\n".join(lines).encode())))
def test_label_file_from_any_bytes(scratch, data):
    path = scratch / "labels.txt"
    path.write_bytes(data)
    labels = only_bad_input(read_label_file, path)
    if labels is not None:
        assert labels and all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in labels.items())


def _our_checkpoint() -> bytes:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    model(torch.zeros(2, 1, 4, 4)).sum().backward()
    optimizer.step()
    state = ckpt.build_checkpoint(epoch=1, global_step=3, arch="x", student=model, teacher=model,
                                  optimizer=optimizer, best_prec1=1.0, config={"lr": 0.1})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


SEED_CHECKPOINT = _our_checkpoint()


@st.composite
def damaged_checkpoints(draw):
    data = bytearray(SEED_CHECKPOINT)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    position = draw(st.integers(0, len(data) - 1))
    chunk = draw(st.binary(min_size=1, max_size=16))
    return bytes(data[:position] + chunk + data[position + len(chunk):])


@fuzz(1000)
@given(damaged_checkpoints())
def test_our_checkpoint_reader_on_damaged_files(scratch, data):
    path = scratch / "last.ckpt"
    path.write_bytes(data)
    state = only_bad_input(ckpt.load_checkpoint, path)
    if state is not None:
        assert {"epoch", "global_step", "state_dict"} <= set(state)


def test_checkpoint_seed_is_valid(scratch):
    (scratch / "seed.ckpt").write_bytes(SEED_CHECKPOINT)
    assert ckpt.load_checkpoint(scratch / "seed.ckpt")["global_step"] == 3


json_rows = st.lists(st.one_of(
    st.builds(lambda e, s: f'{{"epoch": {e}, "step": {s}}}', st.floats(0, 10), st.integers(0, 100)),
    st.text(max_size=30)), max_size=6)


@fuzz(2000)
@given(st.one_of(st.binary(max_size=200), json_rows.map(lambda rows: "\n".join(rows).encode())))
def test_run_log_from_any_bytes(scratch, data):
    path = scratch / "training.jsonl"
    path.write_bytes(data)
    rows = only_bad_input(read_rows, path)
    if rows is not None:
        assert all(isinstance(row, dict) for row in rows)
