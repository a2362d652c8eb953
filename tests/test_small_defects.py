"""What a new user hit, one test each: loader workers beyond the cores, the settings as one long
line, an evaluation without a bar of its own, a label file and ``--labels`` that disagree, the
digits demo's supervised runs, one-line errors (a missing directory, a misspelled ``--set`` key,
before torch is imported), ``inspect`` of a run's JSON files, help and error texts that name the
wrong things, ``legacy-main --dataset digits``, where ``bench`` writes, ``--steps`` inside the
recipe's ramp-down, the original's quick runners, and the README's numbers."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import REPO, assert_one_line_error
from mt_repro.config.train import TrainConfig
from mt_repro.data import digits
from mt_repro.data import loaders
from mt_repro.data.labels import write_label_file
from mt_repro.engine import runs

README = (REPO / "README.md").read_text()


@pytest.fixture
def captured_run(monkeypatch):
    """The training commands run up to the engine, which records their settings instead."""
    seen = {}

    def fake_train(config, out_dir, **_):
        seen["config"], seen["out"] = config, out_dir
        return {"epochs": 0, "global_step": 0, "n_labeled_in_split": 0, "n_unlabeled": 0,
                "student_prec1": None, "student_error1": None, "teacher_prec1": None,
                "teacher_error1": None, "checkpoint": "-", "out_dir": str(out_dir)}

    monkeypatch.setattr(runs, "train", fake_train)
    return seen


def digits_config(tmp_path, **changes) -> TrainConfig:
    label_file = tmp_path / "labels.txt"
    write_label_file(label_file, digits.label_file_entries(100, 0))
    values = dict(dataset="digits", train_subdir="train", eval_subdir="test", arch="digits_convnet",
                  labels=str(label_file), workers=0, batch_size=64, labeled_batch_size=16, epochs=1,
                  consistency=30.0, consistency_rampup=1, seed=0, device="cpu", print_freq=1)
    values.update(changes)
    return TrainConfig(**values)


def label_file_of(tmp_path, n: int) -> Path:
    path = tmp_path / f"{n}_labels.txt"
    path.write_text("".join(f"{i}_cat.png cat\n" for i in range(n)))
    return path


# --- output ---------------------------------------------------------------------------------------
def test_loader_workers_are_capped_at_the_cores_so_torch_never_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loaders.available_cores() == 2 and loaders.worker_count(4) == 2 and loaders.worker_count(0) == 0
    with caplog.at_level("INFO", logger="mt_repro.data"):
        data = loaders.training_data(digits_config(tmp_path, workers=4))
    assert data.train_loader.num_workers == 2 and data.eval_loader.num_workers == 2  # asked: 4 and 8
    assert "loading with 2 worker process(es), one per CPU core available, not the 4" in caplog.text
    evaluation = loaders.evaluation_loader(digits.SPEC, None, "test", 64, 8)  # mt-repro evaluate's
    assert evaluation.num_workers == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "This DataLoader will create N worker processes..."
        for loader in (data.train_loader, data.eval_loader, evaluation):
            loader.check_worker_number_rationality()
    assert loaders.training_data(digits_config(tmp_path, workers=0)).train_loader.num_workers == 0


def test_the_settings_are_a_short_block_pointing_at_config_json(cli, tmp_path, captured_run):
    out = tmp_path / "run"
    code, stdout, err = cli("cifar10", "--labels", 4000, "--label-file", label_file_of(tmp_path, 3),
                            "--set", "batch_size=640", "--set", "arch=cifar_shakeshake_mini", "--out", out)
    assert code == 0, err
    lines = stdout.splitlines()
    start = lines.index(f"settings: all {len(captured_run['config'].to_dict())} in {out / 'config.json'}")
    assert lines[start + 1:start + 3] == ["  --set batch_size=640", "  --set arch=cifar_shakeshake_mini"]
    assert max(map(len, lines[:start + 3])) < 120 and "lr_rampdown_epochs" not in stdout


def test_evaluation_has_a_progress_bar_of_its_own(tmp_path, capsys):
    from mt_repro.engine.evaluation import evaluate_model
    from mt_repro.engine.trainer import Trainer

    class TwoHeads(torch.nn.Module):
        def forward(self, x):
            return x, x

    batches = [(torch.eye(10), torch.arange(10))] * 3
    capsys.readouterr()
    assert evaluate_model(TwoHeads(), batches, torch.device("cpu"))["top1/avg"] == 100.0
    assert "evaluating" not in capsys.readouterr().err
    evaluate_model(TwoHeads(), batches, torch.device("cpu"), progress="evaluating the student")
    assert "evaluating the student:   0%|" in capsys.readouterr().err  # then cleared: leave=False
    trainer = Trainer(digits_config(tmp_path), tmp_path / "run", progress=True).build()
    trainer.evaluate(trainer.method.teacher, "teacher")
    assert "evaluating the teacher" in capsys.readouterr().err


# --- the small defects ------------------------------------------------------------------------------
def test_a_label_file_of_another_count_than_labels_is_used_and_said(cli, tmp_path, captured_run):
    label_file = label_file_of(tmp_path, 100)
    code, out, err = cli("cifar10", "--labels", 1000, "--label-file", label_file, "--out", tmp_path / "r")
    assert code == 0, err
    assert (f"label file {label_file.name}: 100 labeled images, the ones trained with; "
            "--labels 1000 chose the recipe (cifar10_1000)") in out
    assert captured_run["config"].labels == str(label_file) and captured_run["config"].ema_decay == 0.97
    code, out, err = cli("cifar10", "--labels", 1000, "--label-file", label_of_1000 := label_file_of(tmp_path, 1000),
                         "--out", tmp_path / "r2")
    assert code == 0 and label_of_1000.name not in out  # agreeing: nothing to say


def test_the_digits_demo_records_the_method_each_run_ran(tmp_path):
    from mt_repro.apps import digits_demo

    digits_demo.run_demo(100, 1, 1, tmp_path, progress=False)
    methods = {d.name: json.loads((d / "summary.json").read_text())["method"]
               for d in tmp_path.iterdir() if (d / "summary.json").is_file()}
    assert methods == {"supervised_0": "supervised", "mean_teacher_0": "mean_teacher"}


def test_synthetic_cifar10_into_a_missing_directory_is_one_line(cli, tmp_path):
    assert_one_line_error(cli("synthetic-cifar10", tmp_path / "nonexistent" / "c.tar.gz"),
                          "cannot write", "c.tar.gz", "No such file or directory")


def test_inspect_says_what_a_runs_json_files_are(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = digits_config(tmp_path)
    (run / "config.json").write_text(json.dumps({"recipe": "pytorch", **config.to_dict()}))
    (run / "summary.json").write_text(json.dumps({"dataset": "digits", "arch": "digits_convnet", "recipe": "pytorch",
                                                  "method": "supervised", "global_step": 24,
                                                  "student_error1": 9.5, "teacher_error1": 9.0}))
    (tmp_path / "other.json").write_text('{"a": 1}')
    (tmp_path / "array.ckpt").write_text("[1, 2]")  # JSON by its content, whatever its name
    code, out, err = cli("inspect", run / "config.json")
    assert code == 0, err
    assert "run settings (a run directory's config.json), not a checkpoint" in out
    assert "dataset digits, arch digits_convnet, method mean_teacher" in out and "corrupt" not in out + err
    code, out, _ = cli("inspect", run / "summary.json")
    assert "summary of a finished run" in out and "teacher error   9.0" in out and "global_step     24" in out
    assert "JSON object, not a checkpoint" in cli("inspect", tmp_path / "other.json")[1]
    assert "JSON array of 2 item(s), not a checkpoint" in cli("inspect", tmp_path / "array.ckpt")[1]
    (tmp_path / "broken.json").write_text('{"a": ')
    assert_one_line_error(cli("inspect", tmp_path / "broken.json"), "broken.json cannot be read")


def test_a_misspelled_set_key_is_refused_before_torch_is_imported_with_a_suggestion():
    script = ("import sys\nfrom mt_repro.cli import main\n"
              "codes = [main(argv) for argv in (['cifar10', '--set', 'learning_rate=0.1'],"
              " ['svhn', '--set', 'rampdwn_length=3'], ['cifar10', '--arch', 'convnet13', '--set', 'trainig_length=9'],"
              " ['ablation', 'svhn_250_vary_trust', '--set', 'zzz=1'])]\n"
              "print(codes, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.strip() == "[2, 2, 2, 2] False", done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 4 and all(e.startswith("mt-repro: error: --set: unknown setting") for e in errors)
    assert "'learning_rate' (did you mean 'lr'?)" in errors[0]  # the original's --learning-rate
    assert "'rampdwn_length' (did you mean 'rampdown_length'?)" in errors[1]
    assert "'trainig_length' (did you mean 'training_length'?)" in errors[2]
    assert "'zzz'; known: " in errors[3]  # nothing close: the known names


def test_imagenet_data_help_names_imagenet_not_cifar10(cli):
    _, out, _ = cli("imagenet", "--help")
    data_help = " ".join(out[out.index("--data PATH"):out.index("--gpus")].split())
    assert "ImageNet" in data_help and "train/<wnid>" in data_help and "CIFAR" not in data_help
    _, out, _ = cli("cifar10", "--help")
    assert "cifar-10-python.tar.gz" in out[out.index("--data PATH"):out.index("--gpus")]


def test_an_unknown_ablation_lists_only_the_ablations(cli):
    line = assert_one_line_error(cli("ablation", "nonsense"), "no ablation 'nonsense'")
    names = line.split("the ablations: ")[1].split(", ")
    assert len(names) == 6 and all("_vary_" in name for name in names)
    assert "svhn_final_eval" not in line and "train_svhn" not in line
    assert_one_line_error(cli("ablation", "svhn_final_eval"), "no ablation 'svhn_final_eval'")


def test_legacy_main_digits_needs_no_eval_subdir(tmp_path):
    from mt_repro.legacy import main_flags

    labels = digits_config(tmp_path).labels
    config, _ = main_flags.parse(["--dataset", "digits", "--arch", "digits_convnet", "--labels", labels,
                                  "-b", "64", "--labeled-batch-size", "16", "-j", "0"])
    assert config.eval_subdir == "test"
    assert len(loaders.training_data(config).eval_loader.dataset) == digits.N_TEST
    assert main_flags.parse(["--dataset", "cifar10", "--labeled-batch-size", "16"])[0].eval_subdir == "val"  # the original's
    assert main_flags.parse(["--dataset", "digits", "--eval-subdir", "train",
                             "--labeled-batch-size", "16"])[0].eval_subdir == "train"


def test_bench_writes_under_a_named_directory_of_the_current_one_and_says_where(cli, tmp_path, monkeypatch):
    from mt_repro.apps import bench

    monkeypatch.setattr(bench, "run_benchmark", lambda settings: bench.BenchReport(settings, "CPU (test)"))
    monkeypatch.setattr(bench, "render", lambda report: "the table")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("bench", "--steps", "1", "--warmup", "1")
    assert code == 0, err
    written = list((tmp_path / "mt-repro-bench").iterdir())
    assert len(written) == 1 and f"wrote {Path('mt-repro-bench') / written[0].name}" in out
    assert not (tmp_path / "benchmarks").exists()


def test_steps_fewer_than_the_recipes_scale_its_ramps(cli, tmp_path, captured_run):
    from mt_repro.engine.schedules import PerStepSchedule

    code, out, err = cli("svhn", "--labels", 250, "--steps", 3, "--data", tmp_path, "--out", tmp_path / "r")
    assert code == 0, err
    config = captured_run["config"]
    assert (config.training_length, config.rampup_length, config.rampdown_length) == (3, 1, 1)
    assert ("--steps 3 of the recipe's 180000: rampup_length 40000 -> 1, rampdown_length 25000 -> 1, "
            "in proportion") in out
    lrs = [PerStepSchedule(config, None).at(0, step, 3, step).lr for step in range(3)]
    assert max(lrs) == config.max_learning_rate  # the recipe's own length trained at lr < 1e-9 throughout
    code, out, err = cli("svhn", "--labels", 250, "--steps", 3, "--set", "rampdown_length=2", "--data", tmp_path,
                         "--out", tmp_path / "r2")
    assert code == 0, err
    assert (captured_run["config"].rampup_length, captured_run["config"].rampdown_length) == (1, 2)  # as set
    code, out, err = cli("svhn", "--labels", 250, "--steps", 200000, "--data", tmp_path, "--out", tmp_path / "r3")
    assert (captured_run["config"].rampup_length, captured_run["config"].rampdown_length) == (40000, 25000)
    assert "in proportion" not in out


def test_the_original_quick_runners_ship_as_configs_and_run_from_the_commands(cli, tmp_path, captured_run):
    code, out, err = cli("svhn", "--experiment", "train_svhn", "--data", tmp_path, "--out", tmp_path / "s")
    assert code == 0, err
    config = captured_run["config"]
    assert (config.experiment, config.source) == ("train_svhn", "tensorflow/train_svhn.py")
    assert (config.n_labeled, config.data_seed, config.test_phase) == (500, 0, False)
    assert (config.training_length, config.rampup_length, config.rampdown_length) == (40000, 5000, 0)
    assert (config.max_consistency_cost, config.n_labeled_per_batch, config.method) == (50.0, 50, "mean_teacher")
    code, out, err = cli("cifar10", "--arch", "convnet13", "--experiment", "train_cifar10", "--data", tmp_path,
                         "--out", tmp_path / "c")
    assert code == 0, err
    config = captured_run["config"]
    assert (config.experiment, config.n_labeled, config.flip_horizontally, config.normalize_input) == (
        "train_cifar10", 4000, True, False)
    assert_one_line_error(cli("svhn", "--experiment", "train_cifar10", "--data", tmp_path),
                          "not a runner of svhn", "train_svhn")
    assert_one_line_error(cli("svhn", "--experiment", "svhn_250_vary_trust", "--data", tmp_path),
                          "an ablation grid", "mt-repro ablation svhn_250_vary_trust")
    assert_one_line_error(cli("cifar10", "--experiment", "train_cifar10"), "give --arch convnet13")


# --- the README ----------------------------------------------------------------------------------------
def test_readme_says_what_the_pi_models_second_pass_keeps():
    text = " ".join(README.split())
    assert "has its own evaluation means" not in text
    assert "the Π model's second pass keeps no evaluation means and leaves the student's as they were" in text


def test_readme_gives_the_cpu_only_install():
    install = README[README.index("## Install"):README.index("## First run")]
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in install
    assert install.index("--index-url") < install.rindex("pip install .")


def test_readme_gives_one_set_of_numbers_for_the_digits_demo():
    first = README[README.index("## First run"):README.index("### Other methods")]
    table = {row.split("  ")[0]: row.split()[-3:] for row in first.splitlines()
             if row.startswith(("supervised ", "mean teacher "))}
    seconds = re.search(r"\((\d+) s wall time, as its last lines say", first).group(1)
    fast = " ".join(README[README.index("**`--mode fast`**"):README.index("**Several GPUs**")].split())
    quoted = re.search(r"\(faithful mode: ([\d.]+ ± [\d.]+) and ([\d.]+ ± [\d.]+), above\), in \d+ s instead of "
                       r"(\d+) s wall time", fast)
    assert quoted, fast[-400:]
    assert quoted.group(1) == " ".join(table["supervised"]) and quoted.group(2) == " ".join(table["mean teacher"])
    assert quoted.group(3) == seconds
