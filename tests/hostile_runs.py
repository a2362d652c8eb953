"""Hostile run directories and runs: finished runs, reused --out, full disks, bad settings: cases for ``hostile_inputs.CASES``."""
from __future__ import annotations

import json
from pathlib import Path

from hostile_case import Case


def _resnet_run(tree: Path, out: Path, *extra) -> list:
    return ["cifar10", "--data", tree, "--label-file", tree.parent / "labels.txt", "--gpus", 1, "--epochs", 1,
            "--workers", 0, "--device", "cpu", "--no-progress", "--out", out,
            "--set", "arch=cifar_shakeshake_mini", *extra]


def out_holds_a_finished_run(d: Path, tree: Path) -> list:
    (d / "run").mkdir()
    (d / "run" / "config.json").write_text(json.dumps({"arch": "cifar_shakeshake_mini"}))
    (d / "run" / "summary.json").write_text(json.dumps({"teacher_error1": 12.5}))
    return _resnet_run(tree, d / "run")


def out_holds_the_logs_of_a_killed_run(d: Path, tree: Path) -> list:
    (d / "run").mkdir()
    (d / "run" / "validation.jsonl").write_text('{"epoch": 1, "step": 6}\n')
    return ["svhn", "--labels", "250", "--data", d / "svhn", "--steps", 2, "--device", "cpu", "--no-progress",
            "--out", d / "run"]


def out_holds_a_checkpoint(d: Path, tree: Path) -> list:
    (d / "run" / "checkpoints").mkdir(parents=True)
    (d / "run" / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    return _resnet_run(tree, d / "run")


def resume_and_overwrite(d: Path, tree: Path) -> list:
    (d / "run").mkdir()
    (d / "run" / "config.json").write_text("{}")
    return ["cifar10", "--resume", d / "run", "--overwrite"]


def label_file_with_escape_sequences(d: Path, tree: Path) -> list:
    (d / "labels.txt").write_bytes(b"0_cat.png cat\na\x1b[31mb\x00c\xe2\x80\xaed.png cat\n")
    return ["cifar10", "--data", tree, "--label-file", d / "labels.txt", "--gpus", 1, "--epochs", 1,
            "--out", d / "run", "--no-progress", "--set", "arch=cifar_shakeshake_mini"]


CASES: list[Case] = [
    Case("run directory", "`--out` holds a finished run", "cifar10 --out", "holds a run already",
         out_holds_a_finished_run),
    Case("run directory", "`--out` holds the logs of a killed run", "svhn --out", "holds a run already",
         out_holds_the_logs_of_a_killed_run),
    Case("run directory", "`--out` holds a checkpoint", "cifar10 --out", "--overwrite",
         out_holds_a_checkpoint),
    Case("run directory", "`--resume` and `--overwrite` together", "cifar10 --resume", "not both",
         resume_and_overwrite),
    Case("label file", "image name with ESC, NUL and U+202E", "cifar10",
         "a\\x1b[31mb\\x00c\\u202ed.png", label_file_with_escape_sequences),
]
