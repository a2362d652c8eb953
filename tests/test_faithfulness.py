"""Our port against a trajectory recorded from the original PyTorch code.

``golden/original_trajectory.json`` holds numbers only, recorded by running the original
``pytorch/main.py`` (made to run on today's PyTorch, CPU, ``--workers 0``, with ``random``,
``numpy.random`` and ``torch`` seeded in that order) on the synthetic by-image dataset that
``write_image_tree`` generates. Here ``mt-repro legacy-main --seed S`` runs with the same flags
in the same layout and must agree per logged step and in the final weights (1e-5 relative).

Tiny batches and shake-shake amplify rounding: the same code on a different thread count or
CPU instruction set drifts by ~1e-7 at step 2 and visibly by step 10. So the comparison runs
with the recorded thread count, and on a CPU whose capability differs from the recording only
the first step is held to the tolerance (the rest is reported as skipped, not silently passed).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mt_repro.cli import main
from mt_repro.data.synthetic import write_image_tree, write_label_file
from mt_repro.engine import checkpoint as ckpt
from mt_repro.logs.runlog import read_rows

GOLDEN = json.loads((Path(__file__).parent / "golden" / "original_trajectory.json").read_text())
RTOL = 1e-5
STEP_VALUES = ("class_loss", "cons_loss", "res_loss", "ema_class_loss", "loss", "lr", "cons_weight")


def close(ours: float, theirs: float, scale: float = 0.0) -> bool:
    return abs(ours - theirs) <= RTOL * max(abs(theirs), scale) + 1e-12


def run_ids():
    return [f"{r['flags'][r['flags'].index('--consistency-type') + 1]}-seed{r['seed']}" for r in GOLDEN["runs"]]


@pytest.fixture(scope="module", params=GOLDEN["runs"], ids=run_ids())
def our_run(request, tmp_path_factory):
    golden = request.param
    cwd = tmp_path_factory.mktemp("faithful")
    spec = golden["dataset"]
    root = write_image_tree(cwd / "data-local/images/cifar/cifar10/by-image",
                            spec["train_per_class"], spec["test_per_class"], spec["seed"])
    write_label_file(cwd / "labels.txt", root, spec["labels_per_class"])
    flags = [f if f != "labels.txt" else str(cwd / "labels.txt") for f in golden["flags"]]
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(cwd)  # the original's data path is relative to the working directory
    threads = torch.get_num_threads()
    torch.set_num_threads(GOLDEN["torch_num_threads"])
    try:
        code = main(["legacy-main", *flags, "--seed", str(golden["seed"]), "--out", "run",
                     "--device", "cpu", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()
    assert code == 0
    return golden, cwd / "run"


def same_arithmetic_as_recording() -> bool:
    return torch.backends.cpu.get_cpu_capability() == GOLDEN["cpu_capability"]


def require_same_arithmetic():
    if not same_arithmetic_as_recording():
        pytest.skip(f"recorded on {GOLDEN['cpu_capability']}, this CPU runs "
                    f"{torch.backends.cpu.get_cpu_capability()}: rounding differs after step 1")


def test_first_step_matches_the_original_on_any_cpu(our_run):
    golden, run = our_run
    mine, theirs = read_rows(run / "training.jsonl")[0], golden["train_steps"][0]
    for name in STEP_VALUES:
        if theirs.get(name) is not None:
            assert close(mine[name], theirs[name]), (name, mine[name], theirs[name])


def test_every_logged_step_matches_the_original(our_run):
    require_same_arithmetic()
    golden, run = our_run
    ours = read_rows(run / "training.jsonl")
    assert [r["step"] for r in ours] == [s["step"] for s in golden["train_steps"]]
    for mine, theirs in zip(ours, golden["train_steps"]):
        assert mine["epoch"] == pytest.approx(theirs["epoch"], rel=1e-12)
        for name in STEP_VALUES:
            if theirs.get(name) is None:  # not logged by the original in this configuration
                assert name not in mine, name
            else:
                assert close(mine[name], theirs[name]), (theirs["step"], name, mine[name], theirs[name])


def test_student_and_teacher_evaluations_match_the_original(our_run):
    require_same_arithmetic()
    golden, run = our_run
    for log, key in (("validation.jsonl", "validation"), ("ema_validation.jsonl", "ema_validation")):
        ours = read_rows(run / log)
        assert [r["epoch"] for r in ours] == [r["epoch"] for r in golden[key]]
        for mine, theirs in zip(ours, golden[key]):
            assert mine["top1/avg"] == pytest.approx(theirs["top1"], abs=1e-4)
            assert mine["top5/avg"] == pytest.approx(theirs["top5"], abs=1e-4)
            assert close(mine["class_loss/avg"], theirs["class_loss"])


def test_final_student_and_teacher_weights_match_the_original(our_run):
    require_same_arithmetic()
    golden, run = our_run
    state = ckpt.load_checkpoint(run / "checkpoints" / f"checkpoint.{golden['checkpoint_epoch']}.ckpt")
    assert state["global_step"] == golden["checkpoint_global_step"]
    for ours, theirs in ((state["state_dict"], golden["final_weights"]["student"]),
                         (state["ema_state_dict"], golden["final_weights"]["teacher"])):
        assert set(ours) == set(theirs)
        for name, stats in theirs.items():
            tensor = ours[name].double()
            assert list(tensor.shape) == stats["shape"], name
            norm = math.sqrt(tensor.numel() * stats["sumsq"])  # bounds the sum of |values|
            assert close(tensor.sum().item(), stats["sum"], norm), name
            assert close(tensor.square().sum().item(), stats["sumsq"]), name
            head = tensor.flatten()[: len(stats["head"])].numpy()
            assert np.allclose(head, stats["head"], rtol=RTOL, atol=1e-8), name
