"""TensorBoard event files (``mt_repro.logs.events``): the same values as the ``.jsonl`` logs,
read back with TensorBoard's own ``EventAccumulator``; a resumed run's later rows replace the
interrupted ones'."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from mt_repro.apps import digits_demo  # noqa: E402
from mt_repro.config.compose import load_demo_config  # noqa: E402
from mt_repro.data import digits  # noqa: E402
from mt_repro.data.labels import write_label_file  # noqa: E402
from mt_repro.engine import runs  # noqa: E402
from mt_repro.engine.trainer import remove_run_files  # noqa: E402
from mt_repro.logs import events  # noqa: E402

LOGS = {"training": "training.jsonl", "validation": "validation.jsonl", "ema_validation": "ema_validation.jsonl"}


def digits_run(tmp_path, epochs: int):
    labels = tmp_path / "labels.txt"
    write_label_file(labels, digits.label_file_entries(100, 0))
    return digits_demo.demo_configs(load_demo_config(), "mean_teacher", 100, labels, 0, epochs, tmp_path, mode="fast")


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir / events.EVENTS_DIR), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def expected_from_logs(run_dir) -> dict[str, list[tuple[int, float]]]:
    expected: dict[str, list[tuple[int, float]]] = {}
    for name, file in LOGS.items():
        for line in (run_dir / file).read_text().splitlines():
            row = json.loads(line)
            for column, value in row.items():
                if column not in ("step", "epoch") and isinstance(value, (int, float)) and np.isfinite(value):
                    expected.setdefault(f"{name}/{column}", []).append((row["step"], float(np.float32(value))))
    return expected


def test_event_files_hold_every_logged_number_of_a_digits_run(tmp_path):
    run = tmp_path / "run"
    runs.train(digits_run(tmp_path, 2), run, progress=False)
    found, expected = scalars(run), expected_from_logs(run)
    assert {"training/loss", "training/class_loss", "validation/error1/avg", "ema_validation/error1/avg"} <= set(found)
    assert found == expected


def test_a_resumed_run_replaces_what_the_interrupted_one_logged_after_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    runs.train(digits_run(tmp_path, 3).replace(checkpoint_epochs=1), run, progress=False)
    whole = scalars(run)
    # As if killed after the third epoch's rows were logged, before its checkpoint: the run goes
    # back to the checkpoint of epoch 2 and logs the third epoch again.
    checkpoints = run / "checkpoints"
    shutil.copy(checkpoints / "checkpoint.2.ckpt", checkpoints / "last.ckpt")
    (run / "summary.json").unlink()
    runs.resume(run, progress=False)
    assert len(list((run / events.EVENTS_DIR).iterdir())) == 1   # rewritten from the kept rows on
    resumed = scalars(run)
    assert resumed == expected_from_logs(run)
    untimed = lambda found: {tag: v for tag, v in found.items() if "_time" not in tag}  # noqa: E731
    assert untimed(resumed) == untimed(whole)   # (resuming is exact; only the timings differ)


def test_overwrite_removes_the_event_files_and_the_switch_turns_them_off(tmp_path, monkeypatch):
    run = tmp_path / "run"
    runs.train(digits_run(tmp_path, 1), run, progress=False)
    assert any(p.name.startswith("events.out.tfevents.") for p in remove_run_files(run))
    assert not (run / events.EVENTS_DIR).exists()
    monkeypatch.setenv(events.SWITCH_ENV, "0")
    runs.train(digits_run(tmp_path, 1), tmp_path / "quiet", progress=False)
    assert not (tmp_path / "quiet" / events.EVENTS_DIR).exists()
