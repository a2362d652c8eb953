"""End-to-end runs on a tiny by-image dataset with the mini shake-shake model."""
import json
from pathlib import Path

import pytest
import torch

from mt_repro.cli import main
from mt_repro.config import TrainConfig
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import runs
from mt_repro.engine.trainer import Trainer
from mt_repro.logs.runlog import read_rows


def tiny_config(tree: Path, **changes) -> TrainConfig:
    values = dict(dataset="cifar10", arch="cifar_shakeshake_mini", data_dir=str(tree),
                  train_subdir="train+val", eval_subdir="test", labels=str(tree.parent / "labels.txt"),
                  batch_size=8, labeled_batch_size=2, lr=0.05, nesterov=True, weight_decay=2e-4,
                  consistency=100.0, consistency_rampup=5, logit_distance_cost=0.01, ema_decay=0.99,
                  epochs=3, lr_rampdown_epochs=4, workers=0, print_freq=1, checkpoint_epochs=1,
                  seed=0, device="cpu")
    values.update(changes)
    return TrainConfig(**values)


def final_weights(run_dir: Path):
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return state["state_dict"], state["ema_state_dict"], state["optimizer"]


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference_run(tiny_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    summary = runs.train(tiny_config(tiny_tree), out, progress=False)
    return out, summary


def test_a_run_writes_the_original_checkpoint_layout_logs_and_summary(reference_run):
    out, summary = reference_run
    assert summary["global_step"] == 3 * (40 // 6)
    assert summary["n_labeled"] == 20 and summary["n_unlabeled"] == 40
    state = ckpt.load_checkpoint(out / "checkpoints" / "checkpoint.3.ckpt")
    assert {"epoch", "global_step", "arch", "state_dict", "ema_state_dict", "best_prec1",
            "optimizer"} <= set(state)
    assert all(k.startswith("module.") for k in state["state_dict"])
    assert state["mt_repro"]["config"]["arch"] == "cifar_shakeshake_mini"
    assert (out / "checkpoints" / "best.ckpt").exists()
    rows = read_rows(out / "training.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 19))
    assert rows[6]["epoch"] == pytest.approx(1.0)
    assert {"class_loss", "cons_loss", "res_loss", "ema_class_loss", "class_loss/avg",
            "class_loss/sum", "lr", "cons_weight"} <= set(rows[0])
    assert [r["epoch"] for r in read_rows(out / "ema_validation.jsonl")] == [1, 2, 3]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["teacher_prec1"] == summary["teacher_prec1"]


def test_same_seed_same_run(reference_run, tiny_tree, tmp_path):
    summary = runs.train(tiny_config(tiny_tree, epochs=1, lr_rampdown_epochs=4), tmp_path / "a",
                            progress=False)
    reference = read_rows(reference_run[0] / "training.jsonl")[:6]
    again = read_rows(tmp_path / "a" / "training.jsonl")
    assert [r["loss"] for r in again] == [r["loss"] for r in reference]
    assert summary["global_step"] == 6


def test_resume_after_an_interrupted_epoch_is_bitwise_identical(reference_run, tiny_tree, tmp_path,
                                                                monkeypatch):
    out = tmp_path / "run"
    original_step = Trainer.train_step

    def crash_in_epoch_two(self, batch, hp, epoch):
        result = original_step(self, batch, hp, epoch)
        if self.state.global_step == 9:  # halfway through the second epoch, before logging step 9
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(Trainer, "train_step", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        runs.train(tiny_config(tiny_tree), out, progress=False)
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 1

    runs.resume(out, progress=False)
    for mine, reference in zip(final_weights(out)[:2], final_weights(reference_run[0])[:2]):
        assert_bitwise_equal(mine, reference)
    rows, reference_rows = read_rows(out / "training.jsonl"), read_rows(reference_run[0] / "training.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in reference_rows]
    assert [r["loss"] for r in rows] == [r["loss"] for r in reference_rows]
    assert [r["top1/avg"] for r in read_rows(out / "ema_validation.jsonl")] == \
        [r["top1/avg"] for r in read_rows(reference_run[0] / "ema_validation.jsonl")]


def test_cli_resume_extends_a_finished_run(reference_run, tiny_tree, tmp_path, capsys):
    short = tmp_path / "short"
    runs.train(tiny_config(tiny_tree, epochs=2), short, progress=False)
    assert main(["cifar10", "--resume", str(short), "--epochs", "3", "--no-progress"]) == 0
    assert "teacher  prec@1" in capsys.readouterr().out
    for mine, reference in zip(final_weights(short)[:2], final_weights(reference_run[0])[:2]):
        assert_bitwise_equal(mine, reference)


def _one_line_error(capsys, expected_code, code, *fragments):
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mt-repro: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def legacy_args(tree: Path, out: Path, *extra: str) -> list[str]:
    return ["legacy-main", "--dataset", "cifar10", "--arch", "cifar_shakeshake_mini",
            "--data-dir", str(tree), "--train-subdir", "train+val", "--eval-subdir", "test",
            "--labels", str(tree.parent / "labels.txt"), "--batch-size", "8",
            "--labeled-batch-size", "2", "--consistency", "100", "--epochs", "2",
            "--lr-rampdown-epochs", "3", "--workers", "0", "--seed", "0", "--out", str(out),
            "--no-progress", *extra]


def test_legacy_main_runs_with_original_flags(tiny_tree, tmp_path, capsys):
    assert main(legacy_args(tiny_tree, tmp_path / "run", "--nesterov", "True", "--wd", "2e-4",
                            "-p", "3")) == 0
    assert "student  prec@1" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["nesterov"] is True and config["weight_decay"] == 2e-4 and config["print_freq"] == 3
    assert config["ema_decay"] == 0.999 and config["consistency_rampup"] == 30  # original defaults


def test_legacy_main_evaluates_a_checkpoint(reference_run, tiny_tree, tmp_path, capsys):
    code = main(legacy_args(tiny_tree, tmp_path / "eval", "--resume",
                            str(reference_run[0] / "checkpoints" / "best.ckpt"), "--evaluate", "true"))
    out = capsys.readouterr().out
    assert code == 0 and "student: prec@1" in out and "teacher: prec@1" in out


@pytest.mark.parametrize("extra,fragments", [
    (["--labeled-batch-size", "8"], ["labeled_batch_size (8)", "batch_size - 1"]),
    (["--lr-rampdown-epochs", "1"], ["lr_rampdown_epochs (1) must be >= epochs (2)"]),
    (["--consistency-type", "l2"], ["invalid choice"]),
    (["--exclude-unlabeled", "maybe"], ["Boolean value expected"]),
    (["--exclude-unlabeled", "true"], ["exactly one of exclude_unlabeled and labeled_batch_size"]),
])
def test_bad_settings_are_one_line_errors(tiny_tree, tmp_path, capsys, extra, fragments):
    code = main(legacy_args(tiny_tree, tmp_path / "run", *extra))
    _one_line_error(capsys, 2, code, *fragments)


def test_missing_data_directory(tiny_tree, tmp_path, capsys):
    args = legacy_args(tiny_tree, tmp_path / "run")
    args[args.index("--data-dir") + 1] = str(tmp_path / "nowhere")
    _one_line_error(capsys, 2, main(args), "data directory", "does not exist")


def test_unknown_images_in_the_label_file(tiny_tree, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    existing = next((tiny_tree / "train+val" / "cat").iterdir()).name
    labels.write_text(f"{existing} cat\n99999_dog.png dog\n")
    args = legacy_args(tiny_tree, tmp_path / "run")
    args[args.index("--labels") + 1] = str(labels)
    _one_line_error(capsys, 2, main(args), "1 image(s) not in the training folder", "99999_dog.png")


def test_corrupt_checkpoint_given_to_resume(reference_run, tiny_tree, tmp_path, capsys):
    broken = tmp_path / "broken.ckpt"
    data = (reference_run[0] / "checkpoints" / "last.ckpt").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    code = main(legacy_args(tiny_tree, tmp_path / "run", "--resume", str(broken)))
    _one_line_error(capsys, 2, code, "corrupt or truncated")


def test_run_directory_resume_with_a_truncated_last_checkpoint(reference_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(reference_run[0], run)
    last = run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.unlink()
    last.write_bytes(data[:1000])
    _one_line_error(capsys, 2, main(["cifar10", "--resume", str(run), "--no-progress"]),
                    "corrupt or truncated")
    assert (run / "checkpoints" / "checkpoint.3.ckpt").stat().st_size == len(data)


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_tree, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(legacy_args(tiny_tree, out, "--lr", "1e6", "--epochs", "3", "--lr-rampdown-epochs", "3"))
    err = capsys.readouterr().err
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("mt-repro: error: training diverged at step") and "loss is" in line
    assert "Traceback" not in err
    if (out / "checkpoints" / "last.ckpt").exists():
        ckpt.load_checkpoint(out / "checkpoints" / "last.ckpt")  # intact, loadable
