"""``mt-repro table N --status`` and ``--dry-run``: states read from run directories, and
device-hours from committed benchmark results."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from mt_repro.core.errors import RunFailed
from mt_repro.paper import status, tables

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def table4_runs():
    return tables.planned_runs(4, seeds=2)


def make_states(out: Path) -> dict[str, tables.PlannedRun]:
    """Table 4, two seeds a cell: one run done, one failed, one running, one interrupted,
    the rest pending."""
    planned = table4_runs()
    done, failed, running, interrupted = planned[:4]
    for run in (done, failed, running, interrupted):
        (out / run.directory).mkdir(parents=True)
    (out / done.directory / "summary.json").write_text(json.dumps(
        {"dataset": "cifar10", "arch": "cifar_shakeshake26", "n_labeled": 4000, "method": "mean_teacher",
         "teacher_error1": 6.31, "student_error1": 6.9, "global_step": done.steps}))
    (out / failed.directory / "config.json").write_text("{}")
    (out / failed.directory / status.FAILED_FILE).write_text(
        "RunFailed: training diverged at step 12 (epoch 0): loss is nan\x1b[2J\n")
    for run, step in ((running, 1180), (interrupted, 236)):
        (out / run.directory / "config.json").write_text("{}")
        (out / run.directory / "training.jsonl").write_text(json.dumps({"epoch": step / 118, "step": step}) + "\n")
    old = time.time() - 2 * status.RUNNING_WITHIN_S
    os.utime(out / interrupted.directory / "training.jsonl", (old, old))
    return {"done": done, "failed": failed, "running": running, "interrupted": interrupted}


def test_status_reads_every_state_from_the_run_directories(cli, tmp_path):
    runs = make_states(tmp_path)
    code, out, err = cli("table", "4", "--seeds", "2", "--status", "--out", tmp_path)
    assert code == 1
    lines = out.splitlines()
    by_seed = {(line.split("  seed ")[0].strip(), int(line.split("  seed ")[1].split()[0])): line
               for line in lines[:-1] if "#" not in line}
    assert sum("imagenet" in line and "seed 0 #2" in line for line in lines) == 1   # its second run
    line_of = lambda run: by_seed[(run.key.describe(), run.data_seed)]  # noqa: E731
    assert re.search(r"\bdone\s+6\.31 % test error \(teacher\)", line_of(runs["done"]))
    assert re.search(r"failed\s+RunFailed: training diverged at step 12 \(epoch 0\): loss is nan\\x1b\[2J",
                     line_of(runs["failed"]))
    assert re.search(rf"running\s+at step 1,180 of {runs['running'].steps:,} \(epoch 10\)", line_of(runs["running"]))
    assert re.search(rf"interrupted\s+at step 236 of {runs['interrupted'].steps:,} \(epoch 2\)",
                     line_of(runs["interrupted"]))
    assert len(lines) - 1 == len(table4_runs())
    assert lines[-1] == f"1 done, 1 running, 1 interrupted, 1 failed, {len(table4_runs()) - 4} pending " \
                        f"({len(table4_runs())} runs)"
    assert "mt-repro: error: 1 of Table 4's runs failed; the first: " + runs["failed"].directory in err
    assert "\x1b" not in out + err


def test_status_of_a_table_without_failures_exits_0(cli, tmp_path):
    code, out, _ = cli("table", "4", "--seeds", "1", "--status", "--out", tmp_path)
    assert code == 0 and out.splitlines()[-1] == "3 pending (3 runs)"
    assert_one_line_error(cli("table", "4", "--status", "--dry-run", "--out", tmp_path), "not both")


def test_a_failed_run_is_recorded_for_status_and_cleared_when_it_runs_again(tmp_path, monkeypatch,
                                                                           original_labels):
    from mt_repro.engine import runs
    calls = []

    def train(config, directory, **kwargs):
        calls.append(directory)
        if len(calls) == 1:
            raise MemoryError("out of memory on the device")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "summary.json").write_text(json.dumps(
            {"dataset": "cifar10", "arch": config.arch, "n_labeled": 1000, "teacher_error1": 10.1}))

    monkeypatch.setattr(runs, "train", train)
    kwargs = dict(seeds=1, data_dirs={"cifar10": str(tmp_path / "cifar10")}, label_dir=original_labels,
                  waiting={"imagenet": "later"}, progress=False)
    with pytest.raises(RunFailed, match=r"1 of 2 runs failed .*MemoryError: out of memory on the device"):
        tables.run_table(4, tmp_path, **kwargs)
    first = tables.planned_runs(4, seeds=1)[0]
    failed = tmp_path / first.directory / status.FAILED_FILE
    assert failed.read_text() == "MemoryError: out of memory on the device\n"
    assert [s.state for s in status.run_states(4, tmp_path, seeds=1)] == ["failed", "done", "pending"]
    assert tables.run_table(4, tmp_path, **kwargs) == {"started": 1, "resumed": 0, "skipped": 1, "waiting": 1}
    assert not failed.exists()


def test_dry_run_estimates_device_hours_from_the_committed_benchmarks(cli, tmp_path):
    code, out, err = cli("table", "4", "--dry-run", "--out", tmp_path)
    assert code == 0, err
    cifar = [run for run in tables.planned_runs(4) if run.key.dataset == "cifar10"]
    faithful = sum(run.steps for run in cifar) / 1.846 / 3600
    fast = sum(run.steps for run in cifar) / 10.541 / 3600
    assert f"1 x NVIDIA H100 80GB, faithful mode: {faithful:,.1f} device-hours for the 20 measured run(s)" in out
    assert f"1 x NVIDIA H100 80GB, fast mode: {fast:,.1f} device-hours for the 20 measured run(s)" in out
    assert "2 run(s) of resnext152 at batch 400: no committed benchmark, no estimate" in out


def test_every_step_rate_is_the_one_in_its_committed_result_file():
    rates = status.step_rates()
    assert rates
    for rate in rates:
        text = (RESULTS / rate.source).read_text()
        assert f"batch {rate.batch_size} " in text, rate
        row = next(line for line in text.splitlines() if line.startswith(rate.mode + " "))
        assert float(row.split()[4 if "autocast" in row else 3]) == pytest.approx(rate.steps_per_s, abs=5e-4), rate


def _truncated(path):
    path.write_text('{"dataset": "cifar10", "arch": "cifar_sha')


def _huge(path):   # a sparse file past the text-file limit (64 MiB)
    path.write_text("x")
    os.truncate(path, 70 << 20)


def _nested(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


def _dev_zero(path):
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize("damage", [_truncated, _huge, _nested, _dev_zero], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("name", ["summary.json", status.FAILED_FILE, "training.jsonl"])
def test_status_reads_damaged_run_files_in_one_line_each(cli, tmp_path, name, damage):
    run = table4_runs()[0]
    directory = tmp_path / run.directory
    directory.mkdir(parents=True)
    if name == "training.jsonl":
        (directory / "config.json").write_text("{}")
    damage(directory / name)
    code, out, err = cli("table", "4", "--seeds", "2", "--status", "--out", tmp_path)
    line = next(line for line in out.splitlines() if line.startswith(run.key.describe()) and "seed 10 " in line)
    assert len(line) < 600 and len(out.splitlines()) == len(table4_runs()) + 1
    if name == "training.jsonl":
        assert code == 0 and re.search(r"(running|interrupted)", line)
    else:
        assert code == 1 and " failed " in line and err.count("\n") == 1 and len(err) < 1000
