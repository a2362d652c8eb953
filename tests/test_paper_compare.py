"""`mt-repro table`, `compare` and `plot` on synthetic run directories."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from conftest import assert_one_line_error
from mt_repro.logs.pandas_msgpack import write_legacy_log
from mt_repro.paper import compare, tables
from mt_repro.paper.results import paper_numbers
from mt_repro.paper.runs import find_runs

CIFAR_4000 = next(n for n in paper_numbers() if n.table == 4 and n.key.n_labels == 4000)  # 6.28 ± 0.15, n 10


def make_run(directory, error, *, dataset="cifar10", arch="cifar_shakeshake26", n_labeled=4000,
             method=None, steps=200):
    directory.mkdir(parents=True)
    summary = {"dataset": dataset, "arch": arch, "n_labeled": n_labeled, "n_unlabeled": 46000,
               "teacher_error1": error}
    if method:
        summary["method"] = method
    (directory / "summary.json").write_text(json.dumps(summary))
    rng = np.random.RandomState(0)
    with open(directory / "training.jsonl", "w") as f:
        for step in range(1, steps + 1, 5):
            loss = 2.0 * math.exp(-step / 60) + 0.01
            f.write(json.dumps({"epoch": step / 50, "step": step, "class_loss": loss * (1 + 0.1 * rng.rand()),
                                "ema_class_loss": loss, "error1": 90 * math.exp(-step / 50) + 5,
                                "ema_error1": 90 * math.exp(-step / 70) + 5}) + "\n")
    for log, value in (("validation.jsonl", error + 1.0), ("ema_validation.jsonl", error)):
        with open(directory / log, "w") as f:
            f.write(json.dumps({"epoch": 2, "step": steps // 2, "error1/avg": value + 10, "error5/avg": 1.0}) + "\n")
            f.write(json.dumps({"epoch": 4, "step": steps, "error1/avg": value, "error5/avg": 0.5}) + "\n")
    return directory


def runs_with_errors(root, errors, **kwargs):
    return [make_run(root / f"seed{i}", e, **kwargs) for i, e in enumerate(errors)]


def test_matching_runs_are_reproduced(cli, tmp_path):
    runs_with_errors(tmp_path / "runs", [6.10, 6.30, 6.45, 6.20, 6.35, 6.25])
    code, out, _ = cli("compare", tmp_path / "runs", "--table", 4, "--out", tmp_path / "report")
    assert code == 0, out
    assert "reproduced" in out and "1 of 1 cell(s) reproduced" in out
    csv_rows = (tmp_path / "report" / "comparison.csv").read_text().splitlines()
    assert len(csv_rows) == 2 and csv_rows[1].startswith('4,"cifar10 4000 labels, shakeshake26, mean_teacher",test_error_pct')
    assert "| reproduced |" in (tmp_path / "report" / "comparison.md").read_text()


def test_three_sigma_off_is_worse_and_exits_1(cli, tmp_path):
    off = CIFAR_4000.mean + 3 * CIFAR_4000.std
    runs_with_errors(tmp_path / "runs", [off - 0.05, off, off + 0.05, off + 0.02, off - 0.02])
    code, out, _ = cli("compare", tmp_path / "runs")
    assert code == 1 and "worse" in out
    (comparison,) = compare.compare(find_runs([tmp_path / "runs"]))
    assert comparison.verdict == compare.WORSE and comparison.difference > 0.4


def test_better_when_significantly_lower(tmp_path):
    runs_with_errors(tmp_path / "runs", [5.0, 5.1, 4.9, 5.05])
    (comparison,) = compare.compare(find_runs([tmp_path / "runs"]), table=4)
    assert comparison.verdict == compare.BETTER


def test_a_single_run_is_not_enough(cli, tmp_path):
    make_run(tmp_path / "one", 6.28)
    code, out, _ = cli("compare", tmp_path / "one")
    assert code == 1 and "not enough runs" in out


def test_welch_statistics_equal_a_hand_computation_and_scipy(tmp_path):
    errors = [6.5, 6.9, 6.2, 7.1, 6.6]
    runs_with_errors(tmp_path / "runs", errors)
    (comparison,) = compare.compare(find_runs([tmp_path / "runs"]))
    m1, s1, n1 = statistics.fmean(errors), statistics.stdev(errors), len(errors)
    m2, s2, n2 = 6.28, 0.15, 10
    se2 = s1 ** 2 / n1 + s2 ** 2 / n2
    t = (m1 - m2) / math.sqrt(se2)
    df = se2 ** 2 / ((s1 ** 2 / n1) ** 2 / (n1 - 1) + (s2 ** 2 / n2) ** 2 / (n2 - 1))
    p = 2 * stats.t.sf(abs(t), df)
    assert comparison.t == pytest.approx(t, rel=1e-12) and comparison.p == pytest.approx(p, rel=1e-9)
    scipy_result = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False)
    assert comparison.p == pytest.approx(scipy_result.pvalue, rel=1e-12)
    assert comparison.mean == pytest.approx(m1) and comparison.std == pytest.approx(s1)


def test_original_code_run_directories_are_read_directly(tmp_path):
    run = tmp_path / "results" / "cifar10_test" / "2018-01-30_10:00:00" / "4000_12"
    run.mkdir(parents=True)
    frame = pd.DataFrame({"step": [100, 200], "error1/avg": [20.0, 6.31], "error5/avg": [1.0, 0.2]},
                         index=pd.Index([150.0, 300.0], name="epoch"))
    write_legacy_log(frame, run / "ema_validation.msgpack")
    (result,) = find_runs([tmp_path / "results"])
    assert result.key.n_labels == 4000 and result.key.architecture == "shakeshake26"
    assert result.errors["test_error_pct"] == 6.31 and result.evaluated_at == 300.0
    assert result.source == "original code"


@pytest.mark.parametrize("table, expected", [(1, 102), (2, 102), (3, 60), (4, 22)])
def test_dry_run_lists_exactly_the_papers_runs(cli, tmp_path, table, expected):
    code, out, _ = cli("table", table, "--dry-run", "--out", tmp_path)
    assert code == 0
    assert f"\n{expected} runs, " in out and "0 of them already finished" in out
    runs = tables.planned_runs(table)
    assert len(runs) == expected and len({r.directory for r in runs}) == expected


def test_table_2_is_four_label_counts_times_three_models_times_ten_seeds():
    runs = tables.planned_runs(2)
    cells = {}
    for run in runs:
        cells.setdefault((run.key.method, run.key.n_labels), []).append(run.data_seed)
    assert {m for m, _ in cells} == {"supervised", "pi_model", "mean_teacher"}
    assert {n for _, n in cells} == {1000, 2000, 4000, 50000}
    for (method, n_labels), seeds in cells.items():
        base = 0 if method == "supervised" else 2000  # the original runners' data seeds
        assert seeds == list(range(base, base + (4 if n_labels == 50000 else 10)))


def test_table_3_reuses_table_1_runs_without_extra_images():
    table1 = {r.directory for r in tables.planned_runs(1)}
    shared = [r.directory for r in tables.planned_runs(3) if r.key.extra_unlabeled == 0]
    assert len(shared) == 20 and set(shared) <= table1


def test_table_4_runs_are_started_once_then_skipped(tmp_path, monkeypatch, original_labels):
    from mt_repro.engine import trainer

    started = []

    def fake_train(config, out_dir, **kwargs):
        started.append((config.labels, config.batch_size, config.epochs))
        out_dir.mkdir(parents=True)
        (out_dir / "summary.json").write_text("{}")

    monkeypatch.setattr(trainer, "train", fake_train)
    kwargs = dict(seeds=1, data_dirs={"cifar10": "c", "imagenet": "i"}, label_dir=original_labels, progress=False,
                  echo=lambda s: None)
    assert tables.run_table(4, tmp_path, **kwargs) == {"skipped": 0, "resumed": 0, "started": 3}
    assert [Path(s[0]).relative_to(original_labels).as_posix() for s in started] == [
        "cifar10/4000_balanced_labels/10.txt", "cifar10/1000_balanced_labels/10.txt",
        "ilsvrc2012/128000_balanced_labels/00.txt"]
    assert started[0][1:] == (512, 300) and started[2][1:] == (400, 60)  # the paper's GPU counts
    assert tables.run_table(4, tmp_path, **kwargs) == {"skipped": 3, "resumed": 0, "started": 0}


def test_plot_writes_a_png_with_curves(cli, tmp_path):
    first = make_run(tmp_path / "a", 6.3)
    second = make_run(tmp_path / "b", 6.5, steps=300)
    code, out, _ = cli("plot", first, second, "--out", tmp_path / "curves.png")
    assert code == 0, out
    image = np.asarray(Image.open(tmp_path / "curves.png").convert("L"), dtype=float)
    assert image.shape[0] > 400 and image.std() > 10  # decodes, and is not a blank canvas


def test_html_report_is_self_contained(cli, tmp_path):
    runs_with_errors(tmp_path / "runs", [6.2, 6.3, 6.4])
    code, _, _ = cli("compare", tmp_path / "runs", "--html", tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert code == 0 and "<table>" in html and "data:image/png;base64," in html and "reproduced" in html
    assert "src='http" not in html


def test_bad_input(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("compare", tmp_path / "empty"), "holds no finished run")
    assert_one_line_error(cli("compare", tmp_path / "missing"), "does not exist")
    assert_one_line_error(cli("table", 5, "--dry-run"), "not Table 5")
    assert_one_line_error(cli("compare", tmp_path / "empty", "--table", 7), "holds no finished run")
    make_run(tmp_path / "svhn_run", 4.0, dataset="svhn", arch="convnet13", n_labeled=500)
    assert_one_line_error(cli("compare", tmp_path / "svhn_run", "--table", 2),
                          "mixed datasets", "Table 2 is about cifar10", "svhn run")
    make_run(tmp_path / "odd", 4.0, n_labeled=3000)
    assert_one_line_error(cli("compare", tmp_path / "odd"), "cifar10 3000 labels", "matches no result")
    assert_one_line_error(cli("plot", tmp_path / "empty"), "no training.jsonl")
    assert_one_line_error(cli("table", 1, "--out", tmp_path / "t"), "Table 1 needs --data svhn=PATH")
    assert_one_line_error(cli("table", 4, "--out", tmp_path / "t"), "needs --data cifar10=PATH")


def test_table_1_runs_go_to_the_convnet_runner_with_the_runners_settings(tmp_path, monkeypatch):
    from mt_repro.engine import convnet_trainer

    started = []

    def fake_train(settings, data_dir, out_dir, **kwargs):
        started.append(settings)
        out_dir.mkdir(parents=True)
        (out_dir / "summary.json").write_text("{}")

    monkeypatch.setattr(convnet_trainer, "train", fake_train)
    counts = tables.run_table(1, tmp_path, seeds=1, data_dirs={"svhn": "svhn-dir"}, progress=False,
                              echo=lambda s: None)
    assert counts["started"] == 12
    by_cell = {(s.model, s.n_labeled): s for s in started}
    supervised = by_cell[("supervised", 250)]
    assert (supervised.data_seed, supervised.training_length, supervised.max_consistency_cost) == (0, 40000, 0.0)
    pi = by_cell[("pi", 250)]
    assert (pi.data_seed, pi.ema_consistency, pi.training_length, pi.n_labeled_per_batch) == (2000, False, 180000, 1)
    everything = by_cell[("mean_teacher", "all")]
    assert (everything.n_labeled_per_batch, everything.max_consistency_cost) == (100, 100.0)
