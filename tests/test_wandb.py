"""``--wandb`` (``mt_repro.logs.wandb_log``): each run's rows reach its W&B run (a recording
stand-in for the package); the real package, where installed, writes an offline run without a
network (CI does not install it: that test is skipped there)."""
from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

from conftest import assert_one_line_error
from mt_repro.logs import wandb_log

LOGS = {"training": "training.jsonl", "validation": "validation.jsonl", "ema_validation": "ema_validation.jsonl"}


@pytest.fixture
def recording_wandb(monkeypatch):
    """A stand-in ``wandb`` module that records what it is given."""
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"].append(kwargs)
        return Run()

    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv(wandb_log.SWITCH_ENV, raising=False)   # --wandb sets it: undone after the test
    return calls


def logged_rows(run_dir) -> list[tuple[int, dict]]:
    rows = []
    for name, file in LOGS.items():
        for line in (run_dir / file).read_text().splitlines():
            row = json.loads(line)
            rows.append((row["step"], {f"{name}/{k}": v for k, v in row.items()
                                       if k not in ("step", "epoch") and isinstance(v, (int, float))}))
    return sorted(rows, key=lambda item: item[0])


def test_every_logged_row_reaches_the_runs_wandb_run(cli, recording_wandb, tmp_path):
    code, out, err = cli("digits", "--labels", 100, "--seeds", 1, "--epochs", 1, "--jobs", 1, "--method",
                         "mean_teacher", "--out", tmp_path, "--no-progress", "--wandb")
    assert code == 0, err
    runs = sorted(p.parent for p in tmp_path.rglob("summary.json"))
    assert len(recording_wandb["init"]) == len(runs) == 2 and recording_wandb["finish"] == 2
    for init in recording_wandb["init"]:
        assert init["project"] == "mt-repro" and init["resume"] == "allow" and len(init["id"]) == 8
        assert init["config"]["arch"] == "digits_convnet"
        assert (tmp_path / init["dir"] / wandb_log.ID_FILE).read_text() == init["id"] + "\n"
    assert sorted(init["dir"] for init in recording_wandb["init"]) == [str(run) for run in runs]
    sent = sorted(recording_wandb["log"], key=lambda item: item[0])
    expected = logged_rows(runs[0]) + logged_rows(runs[1])
    assert sorted(map(json.dumps, sent)) == sorted(map(json.dumps, expected))


def test_wandb_without_the_package_is_one_line(cli, monkeypatch, tmp_path):
    monkeypatch.delenv(wandb_log.SWITCH_ENV, raising=False)
    monkeypatch.setattr(wandb_log.importlib.util, "find_spec", lambda name: None)
    assert_one_line_error(cli("digits", "--out", tmp_path, "--wandb"), "--wandb needs the wandb package",
                          "pip install wandb")


def test_the_real_package_writes_an_offline_run_without_a_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from mt_repro.apps import digits_demo
    from mt_repro.config.compose import load_demo_config
    from mt_repro.data import digits
    from mt_repro.data.labels import write_label_file
    from mt_repro.engine import runs

    monkeypatch.setenv(wandb_log.SWITCH_ENV, "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    labels = tmp_path / "labels.txt"
    write_label_file(labels, digits.label_file_entries(100, 0))
    config = digits_demo.demo_configs(load_demo_config(), "supervised", 100, labels, 0, 1, tmp_path, mode="fast")
    run = tmp_path / "run"
    runs.train(config, run, progress=False)
    run_id = (run / wandb_log.ID_FILE).read_text().strip()
    offline = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb"))
