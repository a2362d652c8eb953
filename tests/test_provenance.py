"""Provenance: what a run's summary records of where its numbers come from, and `compare`,
`table` and the HTML report calling a run that differs from the paper's recipe "not comparable"
(with the reasons) instead of judging it; runs that follow the recipe keep their Welch verdicts."""
from __future__ import annotations

import json
import logging
import re
import tarfile
from pathlib import Path

import pytest
import torch

import mt_repro
from conftest import assert_one_line_error
from mt_repro.core.hashing import content_hash
from mt_repro.data import cifar10, svhn, synthetic
from mt_repro.engine import provenance
from mt_repro.paper import compare, report, tables
from mt_repro.paper.results import scheduled_numbers
from mt_repro.paper.runs import find_runs, read_run

# The README's "Try the CIFAR-10 pipeline" commands, made tiny: 200 training images, 2 epochs of 2 steps.
TRY_RUN = ["--labels", "1000", "--gpus", "1", "--epochs", "2", "--set", "arch=cifar_shakeshake_mini",
           "--set", "batch_size=64", "--set", "labeled_batch_size=16", "--set", "lr_rampdown_epochs=3",
           "--workers", "0", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def try_run(tmp_path_factory):
    """The README's synthetic try run, 4 steps: (its directory, the tarball)."""
    from mt_repro.cli import main

    root = tmp_path_factory.mktemp("try")
    tarball = root / "cifar-10-python.tar.gz"
    assert main(["synthetic-cifar10", str(tarball), "--train", "200", "--test", "50"]) == 0
    assert main(["cifar10", "--data", str(tarball), "--label-file", f"{tarball}.labels.txt", *TRY_RUN,
                 "--out", str(root / "runs" / "try")]) == 0
    return root / "runs" / "try", tarball


# --- what a summary records --------------------------------------------------------------------------
def test_a_fresh_summary_records_versions_data_steps_and_every_change_of_the_recipe(try_run):
    run, tarball = try_run
    summary = json.loads((run / "summary.json").read_text())
    record = summary["provenance"]
    assert record["code"]["mt_repro"] == mt_repro.__version__ and "git_commit" in record["code"]
    assert record["torch"] == torch.__version__
    assert record["data"]["path"] == str(tarball.resolve())
    assert record["data"]["content_hash"] == content_hash(tarball)
    assert record["data"]["synthetic"] is True and "synthetic-cifar10" in record["data"]["stand_in"]
    assert record["label_file"]["content_hash"] == content_hash(f"{tarball}.labels.txt")
    # 100 unlabeled images / 48 per minibatch = 2 steps an epoch; the recipe: 49,000 / 388 x 180 epochs
    assert record["steps"] == {"trained": 4, "planned": 4, "recipe": 49000 // 388 * 180}
    recipe = record["recipe"]
    assert (recipe["name"], recipe["arch"], recipe["n_labels"]) == ("cifar10_1000", "cifar_shakeshake26", 1000)
    assert recipe["differences"] == {
        "arch": {"paper": "cifar_shakeshake26", "run": "cifar_shakeshake_mini"},
        "batch_size": {"paper": 512, "run": 64}, "labeled_batch_size": {"paper": 124, "run": 16},
        "lr": {"paper": 0.2, "run": 0.05}, "epochs": {"paper": 180, "run": 2},
        "lr_rampdown_epochs": {"paper": 210, "run": 3}}   # device, workers, paths: not the recipe


def test_without_git_the_code_version_is_still_recorded(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))   # no git to be found
    assert provenance._git(Path(mt_repro.__file__).parent, "rev-parse", "HEAD") is None
    assert provenance.code_version.__wrapped__()["mt_repro"] == mt_repro.__version__


# --- the synthetic stand-ins say what they are, and the readers still read them ------------------------
def test_every_stand_in_carries_its_marker_where_the_readers_pass_over_it(tmp_path):
    tarball = synthetic.write_cifar_tarball(tmp_path / "c.tar.gz", 20, 10)
    with tarfile.open(tarball) as tar:
        assert tar.getnames()[0] == f"cifar-10-batches-py/{synthetic.STAND_IN_FILE}"
    assert len(cifar10.read_cifar10(tarball)["train+val"].labels) == 20
    batches = synthetic.write_cifar_batches_dir(tmp_path / "batches", 20, 10)
    assert len(cifar10.read_cifar10(batches)["test"].labels) == 10
    synthetic.write_svhn_mat(tmp_path / "svhn", 20, 10)
    assert svhn.check_mat(tmp_path / "svhn" / "train_32x32.mat")["X"][0] == (32, 32, 3, 20)
    assert len(svhn.read_svhn(tmp_path / "svhn", "train").labels) == 20
    for path in (tarball, batches, batches.parent, tmp_path / "svhn", tmp_path / "svhn" / "test_32x32.mat"):
        assert "stand-in" in synthetic.stand_in_marker(path), path
    cifar100 = synthetic.write_cifar100_tarball(tmp_path / "c100.tar.gz", 100, 20)
    assert "CIFAR-100" in synthetic.stand_in_marker(cifar100)


def test_data_without_the_marker_is_not_called_a_stand_in(tmp_path):
    unmarked = synthetic.write_tarball(tmp_path / "c.tar.gz", synthetic.cifar_pickles(synthetic.cifar_batches(10, 5)))
    (tmp_path / "text.txt").write_text("not a dataset")
    for path in (unmarked, tmp_path / "text.txt", tmp_path / "missing", tmp_path):
        assert synthetic.stand_in_marker(path) is None, path


# --- compare: not comparable, with the reasons ----------------------------------------------------------
def test_compare_calls_the_readmes_synthetic_try_run_not_comparable_and_says_why(cli, try_run, tmp_path):
    run, tarball = try_run
    code, out, _ = cli("compare", run)
    assert code == 1
    assert "not comparable" in out and not re.search(r"\b(worse|better)\b", out)
    for reason in ("trained 4 of the recipe's 22,680 steps", f"synthetic stand-in data ({tarball.resolve()})",
                   "100 labels (the recipe's cell: 1,000)",
                   "network cifar_shakeshake_mini (the paper's: cifar_shakeshake26)",
                   "settings changed from cifar10_1000: batch_size 512 -> 64"):
        assert reason in out, reason
    assert "0 of 1 cell(s) reproduced; 1 not comparable" in out
    (comparison,) = compare.compare(find_runs([run]))
    assert comparison.verdict == compare.NOT_COMPARABLE and comparison.p is None and comparison.t is None
    assert comparison.paper.key.n_labels == 1000 and comparison.paper.table == 4   # its recipe's cell


def test_two_short_convnet_runs_at_a_quarter_width_on_a_stand_in_are_not_judged(cli, tmp_path):
    """The runs that were reported "worse than the paper" (p 1.7e-16): now not comparable."""
    assert cli("synthetic-svhn", tmp_path / "svhn", "--train", "400", "--test", "40")[0] == 0
    for seed in (2000, 2001):
        code, _, err = cli("svhn", "--labels", "250", "--steps", "2", "--set", "width=0.25", "--data",
                           tmp_path / "svhn", "--data-seed", seed, "--device", "cpu", "--no-progress",
                           "--out", tmp_path / "runs" / str(seed))
        assert code == 0, err
    code, out, _ = cli("compare", tmp_path / "runs")
    assert code == 1 and "not comparable" in out
    assert out.count("trained 2 of the recipe's 180,000 steps") == 2
    assert "width 0.25 (the paper's: 1.0)" in out and "synthetic stand-in data" in out
    (comparison,) = compare.compare(find_runs([tmp_path / "runs"]))
    assert comparison.n == 2 and comparison.verdict == compare.NOT_COMPARABLE and comparison.p is None


def _summary_following_the_recipe(directory: Path, config, error: float, **provenance_changes):
    """A finished run of ``config`` as the trainer leaves it, its provenance computed by the
    engine for a run that took all the recipe's steps."""
    directory.mkdir(parents=True)
    n_labels = config.declared_labels
    record = provenance.provenance(config, n_labels=n_labels, trained_steps=config.training_length,
                                   planned_steps=config.training_length)
    record.update(provenance_changes)
    summary = {"dataset": config.dataset, "arch": config.arch, "method": config.method,
               "n_labeled": 73257 if n_labels == "all" else n_labels, "extra_unlabeled": config.n_extra_unlabeled,
               "global_step": config.training_length, "teacher_error1": error, "student_error1": error,
               "provenance": record}
    (directory / "summary.json").write_text(json.dumps(summary))


def test_runs_of_table_1_that_follow_the_recipe_keep_their_welch_verdicts(cli, tmp_path, monkeypatch):
    """`table 1` with the trainer mocked: each run's summary gets the provenance the engine
    computes for the run's own settings; off by 3 std in one cell, at the paper's mean elsewhere."""
    from mt_repro.engine import runs

    numbers = {n.key: n for n in scheduled_numbers(1)}
    off = next(key for key in numbers if key.method == "pi_model" and key.n_labels == 500)

    def fake_train(config, out_dir, **kwargs):
        key = next(k for k in numbers if (k.method, k.n_labels) == (
            config.method, 73257 if config.n_labeled == "all" else config.n_labeled))
        number, seed = numbers[key], config.data_seed % 1000
        error = number.mean + (3 * number.std if key == off else 0.0) + 0.1 * number.std * (seed - 1)
        _summary_following_the_recipe(Path(out_dir), config, error)

    monkeypatch.setattr(runs, "train", fake_train)
    tables.run_table(1, tmp_path, seeds=3, data_dirs={"svhn": str(tmp_path / "svhn")}, device="cpu", progress=False)
    comparisons = compare.compare(find_runs([tmp_path]), table=1)
    verdicts = {c.paper.key: c.verdict for c in comparisons}
    assert len(verdicts) == 12 and all(not c.reasons for c in comparisons)
    assert verdicts.pop(off) == compare.WORSE
    assert set(verdicts.values()) == {compare.REPRODUCED}
    code, out, _ = cli("compare", tmp_path, "--table", 1)
    assert code == 1 and "11 of 12 cell(s) reproduced" in out and "not comparable" not in out


def test_one_run_that_differs_makes_its_cell_not_comparable(tmp_path):
    from mt_repro.config import compose

    config = compose.convnet_run("svhn_final_eval", n_labeled=250)
    number = next(n for n in scheduled_numbers(1) if n.key.method == "mean_teacher" and n.key.n_labels == 250)
    for seed in range(3):
        _summary_following_the_recipe(tmp_path / f"seed{seed}", config.replace(data_seed=2000 + seed), number.mean)
    changed = config.replace(max_consistency_cost=10.0, device="cpu", mode="fast")   # the last two: no change
    _summary_following_the_recipe(tmp_path / "changed", changed, number.mean)
    (comparison,) = compare.compare(find_runs([tmp_path]))
    assert comparison.verdict == compare.NOT_COMPARABLE
    (reason,) = comparison.reasons
    assert reason == f"{tmp_path / 'changed'}: settings changed from svhn_final_eval: max_consistency_cost 1.0 -> 10.0"


def test_an_old_summary_is_checked_from_its_config_and_one_without_either_is_provenance_unknown(try_run, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    run, _ = try_run
    summary = json.loads((run / "summary.json").read_text())
    del summary["provenance"], summary["global_step"]   # as runs wrote it before provenance
    (old / "summary.json").write_text(json.dumps(summary))
    for name in ("config.json", "training.jsonl", "ema_validation.jsonl", "validation.jsonl"):
        (old / name).write_bytes((run / name).read_bytes())
    result = read_run(old)
    assert result.global_step == 4   # from its logs
    assert "trained 4 of the recipe's 22,680 steps" in result.not_comparable
    assert result.provenance["code"] is None and "checked from its config.json" in result.notes[0]
    (old / "config.json").unlink()
    unknown = read_run(old)
    assert unknown.not_comparable == () and unknown.notes[0].startswith("provenance unknown")


def test_a_damaged_provenance_is_refused_naming_the_field(cli, try_run, tmp_path):
    run, _ = try_run
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    summary = json.loads((run / "summary.json").read_text())
    summary["provenance"]["steps"] = {"trained": "four"}
    (damaged / "summary.json").write_text(json.dumps(summary))
    assert_one_line_error(cli("compare", damaged), "summary.json: provenance steps should be")


# --- table --------------------------------------------------------------------------------------------
def test_table_says_which_runs_will_not_be_comparable_before_training(tmp_path, monkeypatch, caplog):
    from mt_repro.engine import runs

    labels = tmp_path / "labels"
    for name in ("cifar10/4000_balanced_labels/10.txt", "cifar10/1000_balanced_labels/10.txt",
                 "ilsvrc2012/128000_balanced_labels/00.txt"):
        (labels / name).parent.mkdir(parents=True, exist_ok=True)
        (labels / name).write_text("")
    monkeypatch.setattr(runs, "train", lambda config, out_dir, **kwargs: None)
    monkeypatch.setattr(logging.getLogger("mt_repro"), "propagate", True)   # the CLI's console turns it off
    kwargs = dict(seeds=1, data_dirs={"cifar10": "c", "imagenet": "i"}, label_dir=labels, progress=False)

    def warnings() -> list[str]:
        return sorted({r.getMessage() for r in caplog.records if r.levelno == logging.WARNING})

    with caplog.at_level(logging.INFO):
        tables.run_table(4, tmp_path / "paper", **kwargs)
        assert warnings() == []   # the paper's GPU counts: its recipe
        tables.run_table(4, tmp_path / "gpus1", gpus=1, **kwargs)
    lines = warnings()
    assert len(lines) == 3 and all("not comparable" in line for line in lines)
    assert any("cifar10_4000: batch_size 512 -> 128, labeled_batch_size 124 -> 31, lr 0.2 -> 0.05" in line
               for line in lines)


# --- the report ---------------------------------------------------------------------------------------
def test_the_report_of_runs_that_are_not_comparable_says_so_in_its_title_and_lists_steps_and_versions(
        cli, try_run, tmp_path):
    run, _ = try_run
    page_path = tmp_path / "deep" / "a" / "b" / "index.html"   # directories made as needed
    code, _, _ = cli("compare", run, "--html", page_path, "--out", tmp_path / "md" / "x")
    assert code == 1
    page = page_path.read_text()
    (title,) = re.findall(r"<h1>(.*?)</h1>", page)
    assert "not comparable" in title and "reproduced" not in title
    assert re.search(r"<title>[^<]*not comparable", page)
    runs_table = page[page.index("<h2>Runs</h2>"):]
    assert f"<td>{run}</td>" in runs_table and "<td>22,680</td>" in runs_table and "synthetic stand-in" in runs_table
    assert f"{mt_repro.__version__}" in runs_table and torch.__version__ in runs_table
    assert f"mt-repro compare {mt_repro.__version__}" in page   # what wrote it
    markdown = (tmp_path / "md" / "x" / "comparison.md").read_text()
    assert markdown.startswith("# Runs not comparable") and "trained 4 of the recipe's" in markdown


def test_the_report_of_reproduced_runs_is_titled_reproduced(tmp_path):
    from mt_repro.config import compose

    config = compose.convnet_run("svhn_final_eval", n_labeled=250)
    number = next(n for n in scheduled_numbers(1) if n.key.method == "mean_teacher" and n.key.n_labels == 250)
    for seed in range(3):
        _summary_following_the_recipe(tmp_path / f"seed{seed}", config.replace(data_seed=2000 + seed),
                                      number.mean + 0.1 * (seed - 1))
    comparisons = compare.compare(find_runs([tmp_path]))
    assert [c.verdict for c in comparisons] == [compare.REPRODUCED]
    assert report.headline(comparisons).startswith("Tarvainen & Valpola (2017) reproduced")
    assert "<td>180,000</td>" in report.html_page(comparisons, [])   # steps, and the recipe's


def test_a_cell_evaluated_once_says_so_beside_its_figure(try_run, tmp_path):
    run, _ = try_run
    once = tmp_path / "once"
    once.mkdir()
    for name in ("summary.json", "config.json", "training.jsonl"):
        (once / name).write_bytes((run / name).read_bytes())
    for name in ("validation.jsonl", "ema_validation.jsonl"):
        (once / name).write_text((run / name).read_text().splitlines()[-1] + "\n")
    ((caption, png),) = report.figures(compare.compare(find_runs([once])))
    assert "one evaluation only" in caption and png.startswith(b"\x89PNG")


def test_output_paths_are_checked_before_any_run_is_read(cli, tmp_path):
    (tmp_path / "a-file").write_text("")
    for flag in ("--html", "--out"):
        code, out, err = cli("compare", tmp_path / "missing-runs", flag, tmp_path / "a-file" / "deep" / "x.html")
        assert code == 2 and out == ""
        assert str(tmp_path / "a-file" / "deep" / "x.html") in err and "not a directory" in err
    assert_one_line_error(cli("compare", tmp_path / "missing-runs", "--html", tmp_path),
                          "is a directory; give a file name")
