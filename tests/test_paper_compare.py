"""`mt-repro table`, `compare` and `plot` on synthetic run directories (summary.json and JSONL
logs written by hand), plus one real tiny ResNet run read back and plotted."""
from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
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
from mt_repro.paper.results import all_labels, paper_numbers, scheduled_numbers
from mt_repro.paper.runs import find_runs, read_run

CIFAR_4000 = next(n for n in scheduled_numbers(4) if n.key.n_labels == 4000)   # ResNet, Table 4


def make_run(directory, error, *, dataset="cifar10", arch="cifar_shakeshake26", n_labeled=4000, method=None,
             extra=None, steps=200, global_step=None, student_error=None, in_summary=True):
    """A finished run as our runners leave it: summary.json and the three JSONL logs."""
    directory.mkdir(parents=True)
    summary = {"dataset": dataset, "arch": arch, "n_labeled": n_labeled, "global_step": global_step or steps}
    if in_summary:
        summary.update(teacher_error1=error, student_error1=student_error if student_error is not None else error + 1)
    if method:
        summary["method"] = method
    if extra is not None:
        summary["extra_unlabeled"] = extra
    (directory / "summary.json").write_text(json.dumps(summary))
    rng = np.random.RandomState(len(str(directory)))
    with open(directory / "training.jsonl", "w") as f:
        for step in range(1, steps + 1, 5):
            loss = 2.0 * math.exp(-step / 60) + 0.01
            f.write(json.dumps({"epoch": step / 50, "step": step, "class_loss": loss * (1 + 0.3 * rng.rand()),
                                "ema_class_loss": loss, "error1": 90 * math.exp(-step / 50) + 5,
                                "ema_error1": 90 * math.exp(-step / 70) + 5}) + "\n")
    for log, value in (("validation.jsonl", student_error if student_error is not None else error + 1),
                       ("ema_validation.jsonl", error)):
        with open(directory / log, "w") as f:
            f.write(json.dumps({"epoch": 2, "step": steps // 2, "error1/avg": value + 10, "error5/avg": 1.0}) + "\n")
            f.write(json.dumps({"epoch": 4, "step": steps, "error1/avg": value, "error5/avg": 0.5}) + "\n")
    return directory


def runs_with_errors(root, errors, **kwargs):
    return [make_run(root / f"seed{i}", e, **kwargs) for i, e in enumerate(errors)]


# --- verdicts ------------------------------------------------------------------------------------
def test_matching_runs_are_reproduced_and_written_as_markdown_and_csv(cli, tmp_path):
    runs_with_errors(tmp_path / "runs", [6.10, 6.30, 6.45, 6.20, 6.35, 6.25])
    code, out, _ = cli("compare", tmp_path / "runs", "--table", 4, "--out", tmp_path / "report")
    assert code == 0, out
    assert "1 of 1 cell(s) reproduced" in out
    csv_rows = pd.read_csv(tmp_path / "report" / "comparison.csv")
    assert len(csv_rows) == 1
    row = csv_rows.iloc[0]
    assert (row["table"], row["verdict"], row["n"], row["paper n"]) == (4, "reproduced", 6, 10)
    assert row["ours mean"] == pytest.approx(statistics.fmean([6.10, 6.30, 6.45, 6.20, 6.35, 6.25]), abs=0.005)
    assert "Mean Teacher" in row["row"] and "State of the art [16]" in row["context"]
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "| reproduced |" in markdown and "Welch" in markdown


def test_three_sigma_off_is_worse_and_exits_1(cli, tmp_path):
    off = CIFAR_4000.mean + 3 * CIFAR_4000.std
    runs_with_errors(tmp_path / "runs", [off - 0.05, off, off + 0.05, off + 0.02, off - 0.02])
    code, out, _ = cli("compare", tmp_path / "runs")
    assert code == 1 and "worse" in out and "0 of 1 cell(s) reproduced" in out
    (comparison,) = compare.compare(find_runs([tmp_path / "runs"]))
    assert comparison.verdict == compare.WORSE and comparison.p < compare.ALPHA
    assert comparison.difference == pytest.approx(3 * CIFAR_4000.std)


def test_significantly_lower_error_is_better(tmp_path):
    runs_with_errors(tmp_path / "runs", [5.0, 5.1, 4.9, 5.05])
    (comparison,) = compare.compare(find_runs([tmp_path / "runs"]), table=4)
    assert comparison.verdict == compare.BETTER and comparison.t < 0


def test_a_single_run_is_not_enough(cli, tmp_path):
    make_run(tmp_path / "one", CIFAR_4000.mean)
    code, out, _ = cli("compare", tmp_path / "one")
    assert code == 1 and "not enough runs" in out
    (comparison,) = compare.compare(find_runs([tmp_path / "one"]))
    assert comparison.verdict == compare.NOT_ENOUGH and comparison.p is None and comparison.n == 1


def test_welch_statistics_equal_scipy_and_a_hand_computation(tmp_path):
    errors = [6.5, 6.9, 6.2, 7.1, 6.6]
    runs_with_errors(tmp_path / "runs", errors)
    (comparison,) = compare.compare(find_runs([tmp_path / "runs"]))
    m1, s1, n1 = statistics.fmean(errors), statistics.stdev(errors), len(errors)
    m2, s2, n2 = CIFAR_4000.mean, CIFAR_4000.std, CIFAR_4000.n_runs
    scipy_result = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False)
    assert comparison.t == pytest.approx(scipy_result.statistic, rel=1e-12)
    assert comparison.p == pytest.approx(scipy_result.pvalue, rel=1e-12)
    # Welch by hand: t = (m1 - m2) / se, Welch-Satterthwaite degrees of freedom, two-sided p.
    v1, v2 = s1 ** 2 / n1, s2 ** 2 / n2
    t = (m1 - m2) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    assert comparison.t == pytest.approx(t, rel=1e-12)
    assert comparison.p == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert comparison.mean == pytest.approx(m1) and comparison.std == pytest.approx(s1)  # sample std (n - 1)


def test_context_rows_of_other_papers_are_shown_not_judged(cli, tmp_path):
    runs_with_errors(tmp_path / "runs", [4.1, 4.3, 4.0], dataset="svhn", arch="convnet13", n_labeled=500,
                     method="mean_teacher", global_step=180000)
    code, out, _ = cli("compare", tmp_path / "runs", "--table", 1)
    assert code == 0, out
    assert "Temporal Ensembling [13] (Laine & Aila 2017): 5.12 ± 0.13" in out
    assert "GAN [25] (Salimans et al. 2016): 18.44 ± 4.80" in out
    assert "1 of 1 cell(s) reproduced" in out   # the context rows are no cells of their own


# --- reading runs --------------------------------------------------------------------------------
def test_the_reader_maps_a_run_to_its_cell_and_the_reported_network(tmp_path):
    pi = make_run(tmp_path / "pi", 4.0, dataset="svhn", arch="convnet13", n_labeled=500, method="pi",
                  extra=100000, student_error=4.4)
    (result,) = find_runs([pi])
    assert result.key == ("svhn", "convnet13", "pi_model", 500, 100000)
    assert result.network == "student" and result.errors["test_error_pct"] == 4.4   # the Pi model's own net
    # the Pi model under today's name (our runs' summaries), and under the old runner's ("pi") above
    pi_model = make_run(tmp_path / "pi_model", 4.0, dataset="svhn", arch="convnet13", n_labeled=500,
                        method="pi_model", extra=100000, student_error=4.4)
    assert read_run(pi_model).key == result.key and read_run(pi_model).network == "student"
    mt = read_run(make_run(tmp_path / "mt", 4.0, dataset="svhn", arch="convnet13", n_labeled="all"))
    assert mt.key == ("svhn", "convnet13", "mean_teacher", all_labels("svhn"), 0)   # the defaults
    assert mt.network == "teacher" and mt.errors["test_error_pct"] == 4.0
    from_log = read_run(make_run(tmp_path / "log", 7.5, in_summary=False))
    assert from_log.errors == {"test_error_pct": 7.5, "top5_error_pct": 0.5}   # the last evaluation


def test_original_code_runs_are_read_as_msgpack_or_as_port_log_csv(cli, tmp_path):
    frame = pd.DataFrame({"step": [100, 200], "error1/avg": [20.0, 6.31], "error5/avg": [1.0, 0.2]},
                         index=pd.Index([150.0, 290.0], name="epoch"))
    original = tmp_path / "results" / "cifar10_test" / "2018-01-30_10:00:00" / "4000_12"
    original.mkdir(parents=True)
    write_legacy_log(frame, original / "ema_validation.msgpack")
    ported = tmp_path / "ported" / "cifar10_test" / "2018-01-30_11:00:00" / "4000_13"
    ported.mkdir(parents=True)
    code, _, err = cli("port-log", original / "ema_validation.msgpack", ported / "ema_validation.csv")
    assert code == 0, err
    first, second = find_runs([tmp_path / "results", tmp_path / "ported"])
    for result in (first, second):
        assert result.key == ("cifar10", "shakeshake26", "mean_teacher", 4000, 0) and result.source == "original code"
        assert result.errors == {"test_error_pct": 6.31, "top5_error_pct": 0.2} and result.evaluated_at == 290.0
        assert "ends at epoch 290 of 300" in result.notes[0]
    code, out, _ = cli("compare", tmp_path / "results", tmp_path / "ported")
    assert "ends at epoch 290 of 300" in out and re.search(r"\b2\b.*reproduced", out)


def test_a_real_tiny_resnet_run_is_read_back_and_plotted(tiny_tree, tmp_path):
    from mt_repro.config import TrainConfig
    from mt_repro.engine import runs

    labels = tmp_path / "12.txt"
    shutil.copy(tiny_tree.parent / "labels.txt", labels)
    config = TrainConfig(dataset="cifar10", arch="cifar_shakeshake_mini", data_dir=str(tiny_tree),
                         train_subdir="train+val", eval_subdir="test", labels=str(labels), batch_size=8,
                         labeled_batch_size=2, lr=0.05, consistency=100.0, consistency_rampup=5, epochs=2,
                         lr_rampdown_epochs=3, workers=0, print_freq=1, seed=0, device="cpu")
    summary = runs.train(config, tmp_path / "run", progress=False)
    assert summary["method"] == "mean_teacher" and summary["data_seed"] == 12
    result = read_run(tmp_path / "run")
    assert result.key == ("cifar10", "shakeshake_mini", "mean_teacher", summary["n_labeled"], 0)
    assert result.errors["test_error_pct"] == summary["teacher_error1"]
    assert result.global_step == summary["global_step"]
    from mt_repro.paper import plot

    png = plot.png_bytes([tmp_path / "run"])
    assert Image.open(io.BytesIO(png)).size[0] > 300


# --- tables --------------------------------------------------------------------------------------
def paper_runs(table):
    """(method, labels, extra, seed) of every run the original runners made for ``table``,
    written out independently of the package: Tables 1-2 label counts x 3 methods x 10 seeds (4
    with all labels; supervised runners seeded 0.., the others 2000..), Table 3 two methods x
    three extra sizes x 10 seeds, Table 4 label files 10..19 twice and ImageNet's file 00 twice."""
    if table in (1, 2):
        labels = {1: [250, 500, 1000, 73257], 2: [1000, 2000, 4000, 50000]}[table]
        return sorted((method, n, 0, (0 if method == "supervised" else 2000) + seed)
                      for n in labels for method in ("supervised", "pi_model", "mean_teacher")
                      for seed in range(4 if n == labels[-1] else 10))
    if table == 3:
        return sorted((method, 500, extra, 2000 + seed) for method in ("pi_model", "mean_teacher")
                      for extra in (0, 100000, 500000) for seed in range(10))
    return sorted([("mean_teacher", n, 0, seed) for n in (4000, 1000) for seed in range(10, 20)]
                  + [("mean_teacher", 128000, 0, 0)] * 2)


@pytest.mark.parametrize("table", [1, 2, 3, 4])
def test_dry_run_lists_exactly_the_papers_runs(cli, tmp_path, table):
    expected = paper_runs(table)
    planned = tables.planned_runs(table)
    assert sorted((r.key.method, r.key.n_labels, r.key.extra_unlabeled, r.data_seed) for r in planned) == expected
    assert len({r.directory for r in planned}) == len(expected)   # every run its own directory
    code, out, _ = cli("table", table, "--dry-run", "--out", tmp_path)
    assert code == 0
    assert f"\n{len(expected)} runs, " in out and "steps x minibatch images" in out
    assert "0 of them already finished" in out
    per_cell = [int(m) for m in re.findall(r" (\d+) runs \(seed", out)]
    assert sum(per_cell) == len(expected)


def test_dry_run_counts_the_finished_runs_and_seeds_keeps_the_first_of_each_cell(cli, tmp_path):
    first = tables.planned_runs(2, seeds=2)
    assert len(first) == 12 * 2 and {r.data_seed for r in first} == {0, 1, 2000, 2001}
    (tmp_path / first[0].directory).mkdir(parents=True)
    (tmp_path / first[0].directory / "summary.json").write_text("{}")
    code, out, _ = cli("table", 2, "--dry-run", "--seeds", 2, "--out", tmp_path)
    assert code == 0 and "1 of them already finished" in out


def test_the_convnet_training_lengths_are_the_runners(tmp_path):
    steps = {(r.key.method, r.key.n_labels, r.key.extra_unlabeled): r.steps for r in tables.planned_runs(1)
             + tables.planned_runs(2) + tables.planned_runs(3)}
    assert steps[("mean_teacher", 500, 500000)] == 600000 and steps[("pi_model", 500, 100000)] == 400000
    assert steps[("supervised", 250, 0)] == 40000 and steps[("supervised", 73257, 0)] == 180000
    assert steps[("supervised", 1000, 0)] == 750 * 1000 // 100   # 750 epochs of the labeled images
    assert steps[("mean_teacher", 4000, 0)] == 150000


def test_table_3_reuses_table_1_runs_without_extra_images():
    table1 = {r.directory for r in tables.planned_runs(1)}
    shared = [r.directory for r in tables.planned_runs(3) if r.key.extra_unlabeled == 0]
    assert len(shared) == 20 and set(shared) <= table1


def test_table_4_runs_are_started_once_then_skipped(tmp_path, monkeypatch, original_labels):
    from mt_repro.engine import runs

    started = []

    def fake_train(config, out_dir, **kwargs):
        started.append((config.labels, config.batch_size, config.epochs))
        out_dir.mkdir(parents=True)
        (out_dir / "summary.json").write_text("{}")

    monkeypatch.setattr(runs, "train", fake_train)
    kwargs = dict(seeds=1, data_dirs={"cifar10": "c", "imagenet": "i"}, label_dir=original_labels, progress=False)
    assert tables.run_table(4, tmp_path, **kwargs) == {"skipped": 0, "resumed": 0, "started": 3, "waiting": 0}
    assert [Path(s[0]).relative_to(original_labels).as_posix() for s in started] == [
        "cifar10/4000_balanced_labels/10.txt", "cifar10/1000_balanced_labels/10.txt",
        "ilsvrc2012/128000_balanced_labels/00.txt"]
    assert started[0][1:] == (512, 300) and started[2][1:] == (400, 60)   # the paper's GPU counts
    assert tables.run_table(4, tmp_path, **kwargs) == {"skipped": 3, "resumed": 0, "started": 0, "waiting": 0}


def test_interrupted_table_runs_resume_with_the_data_given_now(tmp_path, monkeypatch, original_labels):
    """The data (and label files) may have moved since the runs started: a resumed run is given
    where they are now, for runs.resume to check against what it started with."""
    from mt_repro.engine import runs

    configs, resumed = {}, []

    def interrupted_train(config, out_dir, **kwargs):   # killed after writing its settings
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        configs[out_dir] = config

    monkeypatch.setattr(runs, "train", interrupted_train)
    monkeypatch.setattr(runs, "read_run_config", lambda directory: configs[directory])
    monkeypatch.setattr(runs, "resume", lambda directory, overrides=None, **kwargs: resumed.append(overrides))
    kwargs = dict(seeds=1, label_dir=original_labels, progress=False)
    tables.run_table(4, tmp_path, data_dirs={"cifar10": "c", "imagenet": "i"}, **kwargs)
    counts = tables.run_table(4, tmp_path, data_dirs={"cifar10": "moved/c", "imagenet": "moved/i"}, **kwargs)
    assert counts["resumed"] == 3 and counts["started"] == 0
    assert [(o["data_dir"], Path(o["labels"]).relative_to(original_labels).as_posix()) for o in resumed] == [
        ("moved/c", "cifar10/4000_balanced_labels/10.txt"), ("moved/c", "cifar10/1000_balanced_labels/10.txt"),
        ("moved/i", "ilsvrc2012/128000_balanced_labels/00.txt")]


def test_table_1_runs_go_to_the_convnet_runner_with_the_runners_settings(tmp_path, monkeypatch):
    from mt_repro.config.convnet import ConvNetConfig
    from mt_repro.engine import runs

    started = []

    def fake_train(settings, out_dir, **kwargs):
        started.append(settings)
        out_dir.mkdir(parents=True)
        (out_dir / "summary.json").write_text("{}")

    monkeypatch.setattr(runs, "train", fake_train)
    counts = tables.run_table(1, tmp_path, seeds=1, data_dirs={"svhn": "svhn-dir"}, progress=False)
    assert counts["started"] == 12
    assert all(isinstance(s, ConvNetConfig) and s.data_dir == "svhn-dir" for s in started)
    by_cell = {(s.method, s.n_labeled): s for s in started}
    supervised = by_cell[("supervised", 250)]
    assert (supervised.data_seed, supervised.training_length, supervised.max_consistency_cost) == (0, 40000, 0.0)
    pi = by_cell[("pi_model", 250)]
    assert (pi.data_seed, pi.method, pi.training_length, pi.n_labeled_per_batch) == (2000, "pi_model", 180000, 1)
    everything = by_cell[("mean_teacher", "all")]
    assert (everything.n_labeled_per_batch, everything.max_consistency_cost) == (100, 100.0)


# --- plots and the report ------------------------------------------------------------------------
def test_plot_writes_a_png_with_curves(cli, tmp_path):
    make_run(tmp_path / "runs" / "a", 6.3)
    make_run(tmp_path / "runs" / "b", 6.5, steps=300)
    code, out, _ = cli("plot", tmp_path / "runs", "--out", tmp_path / "curves.png")   # a parent of runs
    assert code == 0, out
    image = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"), dtype=float)
    assert image.shape[0] > 400 and image.std() > 10          # decodes, and is not a blank canvas
    saturation = image.max(axis=2) - image.min(axis=2)
    assert (saturation > 60).sum() > 2000                        # coloured curves, not only black axes


def test_a_run_without_an_evaluation_curve_plots_its_training_minibatch_error(tmp_path):
    import matplotlib.pyplot as plt

    from mt_repro.paper import plot

    run = make_run(tmp_path / "once", 3.0)
    with open(run / "ema_validation.jsonl", "w") as f:   # one evaluation only, as the digits demo logs
        f.write(json.dumps({"epoch": 4, "step": 200, "error1/avg": 3.0}) + "\n")
    (run / "validation.jsonl").write_text("")
    fig = plot.figure([run])
    test_axis, cost_axis, error_axis = fig.axes   # the one evaluation a point; the minibatches' error last
    assert [t.get_text() for t in test_axis.get_legend().get_texts()][0] == "mean teacher (1 run)"
    assert test_axis.get_ylabel() == "test error %" and [len(line.get_xdata()) for line in test_axis.lines
                                                         if len(line.get_xdata())] == [1]
    assert "training\nminibatches" in error_axis.get_ylabel() and len(error_axis.lines) == 2
    plt.close(fig)


def test_html_report_is_one_self_contained_page(cli, tmp_path):
    runs_with_errors(tmp_path / "runs", [6.2, 6.3, 6.4])
    code, _, _ = cli("compare", tmp_path / "runs", "--html", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert code == 0 and "<table>" in page and "reproduced" in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)
    (encoded,) = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert Image.open(io.BytesIO(base64.b64decode(encoded))).size[0] > 300


# --- bad input -----------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    assert_one_line_error(cli("compare", tmp_path / "empty"), "holds no finished run")
    assert_one_line_error(cli("compare", tmp_path / "unfinished"), "holds no finished run")
    assert_one_line_error(cli("compare", tmp_path / "missing"), "does not exist")
    make_run(tmp_path / "no_error", 5.0, in_summary=False)
    (tmp_path / "no_error" / "ema_validation.jsonl").unlink()
    assert_one_line_error(cli("compare", tmp_path / "no_error"), "has no final test error")
    assert_one_line_error(cli("table", 5, "--dry-run"), "not Table 5")
    assert_one_line_error(cli("compare", tmp_path / "empty", "--table", 7), "not Table 7")
    make_run(tmp_path / "odd", 4.0, n_labeled=3000)
    assert_one_line_error(cli("compare", tmp_path / "odd"), "cifar10 3000 labels", "matches no result")
    assert_one_line_error(cli("plot", tmp_path / "empty"), "no training.jsonl")
    assert_one_line_error(cli("table", 1, "--out", tmp_path / "t"), "Table 1 needs --data svhn=PATH")
    assert_one_line_error(cli("table", 4, "--out", tmp_path / "t"), "needs --data cifar10=PATH")


def test_mixed_cells_are_refused(cli, tmp_path):
    # An SVHN run against CIFAR-10's table: its label count names no cell there.
    make_run(tmp_path / "svhn500", 4.0, dataset="svhn", arch="convnet13", n_labeled=500)
    assert_one_line_error(cli("compare", tmp_path / "svhn500", "--table", 2),
                          "mixed datasets", "Table 2 is about cifar10", "svhn run")
    # An SVHN run whose label count does name a cell of Table 2.
    make_run(tmp_path / "svhn1000", 4.0, dataset="svhn", arch="convnet13", n_labeled=1000)
    assert_one_line_error(cli("compare", tmp_path / "svhn1000", "--table", 2),
                          "mixed datasets", "'Mean Teacher, 1000 labels' is cifar10", "is svhn")
    # A ResNet CIFAR-10 run among Table 2's ConvNet runs of the same cell.
    runs_with_errors(tmp_path / "t2", [12.2, 12.4], dataset="cifar10", arch="convnet13", global_step=150000)
    make_run(tmp_path / "t2" / "resnet", 6.3)
    assert_one_line_error(cli("compare", tmp_path / "t2", "--table", 2),
                          "mixed networks", "is cifar10 with convnet13", "is cifar10 with shakeshake26")
    # A shortened trial run beside full-length runs of the same cell.
    runs_with_errors(tmp_path / "lengths", [6.2, 6.3], global_step=35400)
    make_run(tmp_path / "lengths" / "trial", 6.4, global_step=1000)
    assert_one_line_error(cli("compare", tmp_path / "lengths"), "mixed training lengths", "1,000 steps", "35,400")
    # Runs judged against a table they are not in.
    assert_one_line_error(cli("compare", tmp_path / "lengths" / "seed0", "--table", 1),
                          "Table 1 is about svhn", "compare it with --table 4")
    make_run(tmp_path / "supervised", 27.0, dataset="svhn", arch="convnet13", n_labeled=250, method="supervised")
    assert_one_line_error(cli("compare", tmp_path / "supervised", "--table", 3),
                          "is a result of Table 1, not of Table 3", "--table 1")


# --- the paper's numbers -------------------------------------------------------------------------
def test_every_judged_number_has_a_spread_a_run_count_and_a_confirmation():
    for number in scheduled_numbers():
        assert number.std is not None and number.n_runs >= 2, number
        assert number.result_of.startswith("this paper") and number.implementation in ("tensorflow", "pytorch")
    for number in paper_numbers():
        assert number.checked and "memory" not in number.checked, number
