"""Other published numbers (``mt_repro/paper/published.csv``): the file loads, every number says
where it came from, USB's Mean Teacher rows are marked invalid and are its supervised rows, a few
numbers are the ones their sources print, bad rows are refused, and `mt-repro published` prints."""
from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest

from conftest import assert_one_line_error
from mt_repro.core.errors import BadInput
from mt_repro.paper import published
from mt_repro.paper.published import FIELDS, published_numbers


def one(source, dataset, method, n_labels, *, row=None, metric="test_error_pct"):
    found = [n for n in published_numbers(source, dataset, method)
             if n.n_labels == n_labels and n.metric == metric and (row is None or n.row == row)]
    assert len(found) == 1, found
    return found[0]


def test_the_file_loads_with_every_source():
    counts = {s: len(published_numbers(source=s)) for s in published.SOURCES}
    # USB: 18 rows x 9 columns; TorchSSL: 12 rows x 12 columns less 3 "None" cells, plus 4 ImageNet
    # numbers; Oliver et al.: 6 rows x 2 columns; FixMatch: the 16 cells a source at hand showed.
    assert counts == {"fixmatch": 16, "torchssl": 145, "usb": 162, "oliver2018": 12}


def test_every_number_has_provenance():
    for n in published_numbers():
        assert n.reference.strip() and n.checked, n
        assert all(token in published.CHECKS for token in n.checked.split("+")), n
        assert n.selection in published.SELECTIONS, n
        if n.source in ("usb", "torchssl"):
            assert re.search(r"@[0-9a-f]{7}", n.reference), n   # the commit the file was read at


def test_numbers_printed_as_accuracies_are_100_minus_the_accuracy():
    converted = [n for n in published_numbers() if n.note.startswith("error = 100 - ")]
    assert len(converted) == 145 + 8   # TorchSSL's README and FixMatch's STL-10 column
    for n in converted:
        accuracy = Decimal(re.match(r"error = 100 - ([0-9.]+)", n.note).group(1))
        assert Decimal(str(n.mean)) == 100 - accuracy, n


def test_usb_mean_teacher_rows_are_invalid_with_the_reason():
    rows = published_numbers(source="usb", method="mean_teacher")
    assert len(rows) == 9
    for n in rows:
        assert not n.valid
        assert "logits_x_ulb_s = outs_x_ulb_w['logits']" in n.invalid_reason
        assert "#102" in n.invalid_reason and "#226" in n.invalid_reason
    others = [n for n in published_numbers(source="usb") if n.method != "mean_teacher"]
    assert others and all(n.valid for n in others)


def _within_spread(a, b):
    return abs(a.mean - b.mean) <= max(a.std, b.std)


def test_usb_mean_teacher_equals_usb_supervised_within_their_std():
    supervised = {(n.dataset, n.n_labels): n for n in published_numbers(source="usb", method="supervised")}
    teacher = published_numbers(source="usb", method="mean_teacher")
    assert {(n.dataset, n.n_labels) for n in teacher} == set(supervised)
    for n in teacher:
        assert _within_spread(n, supervised[n.dataset, n.n_labels]), (n, supervised[n.dataset, n.n_labels])
    # The check tells methods apart: no other method of USB's (each with an unsupervised term that
    # has a gradient) is its supervised row in every column.
    others = {n.method for n in published_numbers(source="usb")} - {"mean_teacher", "supervised"}
    assert len(others) == 16
    for method in others:
        rows = published_numbers(source="usb", method=method)
        assert not all(_within_spread(n, supervised[n.dataset, n.n_labels]) for n in rows), method


def test_spot_values_read_from_the_sources():
    # USB results/classic_cv.csv at 1ef4cbe: meanteacher and supervised at cifar10_4000,
    # fixmatch at cifar10_40, softmatch at cifar100_10000 (the file's last cell).
    def mean_std(*cell):
        n = one(*cell)
        return n.mean, n.std

    assert mean_std("usb", "cifar10", "mean_teacher", 4000) == (15.47, 0.43)
    assert mean_std("usb", "cifar10", "supervised", 4000) == (15.51, 0.18)
    assert one("usb", "cifar10", "fixmatch", 40).mean == 8.33
    assert mean_std("usb", "cifar100", "softmatch", 10000) == (27.26, 0.03)
    assert one("usb", "svhn", "fixmatch", 40).extra_unlabeled == 531131   # USB trains on SVHN train + extra
    # TorchSSL README at f26e1d4, "Main Results": MeanTeacher CIFAR-10 4000 prints 91.9±0.21,
    # FlexMatch STL-10 40 70.85±4.16, FixMatch ImageNet top-5 78.20; FullySupervised STL-10 "None".
    mt = one("torchssl", "cifar10", "mean_teacher", 4000)
    assert (mt.mean, mt.std, mt.spread, mt.selection) == (8.10, 0.21, "stderr", "best-on-test")
    assert one("torchssl", "stl10", "flexmatch", 40).mean == 29.15
    assert one("torchssl", "imagenet", "fixmatch", 100000, metric="top5_error_pct").mean == 21.80
    assert published_numbers("torchssl", "stl10", "fully_supervised") == []
    # FixMatch Table 2: FixMatch (RA) CIFAR-100 10000 labels 22.60 ± 0.12 (error, YUE-FAN/FixMatch-PyTorch
    # README; 77.40 accuracy in kekmodel/FixMatch-pytorch's); STL-10 Mean Teacher 78.57 % accuracy
    # (Papers with Code's list of the paper's results).
    ra = one("fixmatch", "cifar100", "fixmatch", 10000, row="FixMatch (RA)")
    assert (ra.mean, ra.std, ra.architecture) == (22.60, 0.12, "wrn_28_8")
    assert one("fixmatch", "stl10", "mean_teacher", 1000).mean == 21.43
    # Oliver et al. 2018 Table 1 (realistic-ssl-evaluation-pytorch README's "paper" columns):
    # Mean Teacher CIFAR-10 4000 15.87 ± 0.28, VAT + EntMin SVHN 1000 5.35 ± 0.19.
    assert mean_std("oliver2018", "cifar10", "mean_teacher", 4000) == (15.87, 0.28)
    assert one("oliver2018", "svhn", "vat_entmin", 1000).mean == 5.35


def test_filters_and_cell_keys():
    rows = published_numbers(source="usb", dataset="cifar10", method="mean_teacher")
    assert [n.n_labels for n in rows] == [40, 250, 4000]
    key = rows[0].key
    assert key.describe() == "cifar10 40 labels, wrn_28_2, mean_teacher"
    # Oliver et al.'s sources do not say whether SVHN's extra images were used: no cell to match.
    assert one("oliver2018", "svhn", "mean_teacher", 1000).key is None


def test_metric_names_are_paper_results_ones():
    from mt_repro.paper import results

    assert published.METRICS == results.METRICS


def _csv(rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _good_row() -> dict:
    return {"source": "usb", "table": "results/classic_cv.csv", "row": "fixmatch", "dataset": "cifar10",
            "architecture": "wrn_28_2", "method": "fixmatch", "n_labels": "40", "extra_unlabeled": "0",
            "metric": "test_error_pct", "selection": "best-on-test", "mean": "8.33", "std": "1.41",
            "spread": "std", "n_runs": "3", "valid": "yes", "invalid_reason": "", "reference": "a file",
            "checked": "csv", "note": ""}


def test_a_good_file_in_tmp_path_loads(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(_csv([_good_row(), {**_good_row(), "n_labels": "250", "mean": "4.97", "std": "0.05"}]))
    numbers = published_numbers(path=path)
    assert [(n.n_labels, n.mean) for n in numbers] == [(40, 8.33), (250, 4.97)]
    assert published_numbers(method="fixmatch", path=path)[0].std == 1.41


@pytest.mark.parametrize("change, fragment", [
    ({"dataset": "cifar11"}, "dataset 'cifar11' is not one of"),
    ({"mean": "101"}, "mean 101 is outside 0-100"),
    ({"mean": "-0.5"}, "mean -0.5 is outside 0-100"),
    ({"mean": "nan"}, "mean nan is outside 0-100"),
    ({"mean": "8,33"}, "is not a number"),
    ({"valid": "no"}, "an invalid number needs its invalid_reason"),
    ({"invalid_reason": "because"}, "invalid_reason is given but valid is yes"),
    ({"checked": ""}, "checked is empty"),
    ({"checked": "csv+memory"}, "'memory'"),
    ({"reference": " "}, "reference is empty"),
    ({"spread": ""}, "given together or not at all"),
    ({"source": "arxiv"}, "source 'arxiv' is not one of"),
    ({"n_labels": "forty"}, "n_labels 'forty' is not a whole number"),
    ({"method": "Mean Teacher"}, "is not a method name"),
])
def test_bad_rows_are_refused_naming_the_row(tmp_path, change, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(_csv([_good_row(), {**_good_row(), "n_labels": "250", **change}]))
    with pytest.raises(BadInput) as caught:
        published_numbers(path=path)
    message = str(caught.value)
    assert fragment in message, message
    labels = change.get("n_labels", "250")
    assert "bad.csv line 3" in message and f"{change.get('dataset', 'cifar10')} {labels} labels" in message, message


def test_a_duplicate_or_a_wrong_header_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text(_csv([_good_row(), _good_row()]))
    with pytest.raises(BadInput, match="line 3 .*the same number as line 2"):
        published_numbers(path=path)
    path.write_text(_csv([_good_row()]).replace("checked", "verified", 1))
    with pytest.raises(BadInput, match="the header must be"):
        published_numbers(path=path)


def test_cli_prints_the_numbers(cli):
    code, out, err = cli("published", "--source", "usb", "--method", "mean_teacher")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["source", "dataset", "labels"]
    table = [line for line in lines[2:] if line.startswith("usb ")]
    assert len(table) == 9 and all(line.rstrip().endswith("NO") for line in table)
    assert any(line.startswith("invalid (usb mean_teacher):") and "#226" in line for line in lines)
    code, out, _ = cli("published", "--source", "oliver2018", "--dataset", "cifar10")
    assert code == 0 and "15.87" in out and "0.28 ?" in out and "svhn" not in out


def test_cli_refuses_unknown_names(cli):
    assert_one_line_error(cli("published", "--source", "arxiv"), "unknown source 'arxiv'", "usb")
    assert_one_line_error(cli("published", "--dataset", "mnist"), "unknown dataset 'mnist'", "stl10")
    code, out, _ = cli("published", "--method", "no_such_method")
    assert code == 0 and "no published numbers match" in out


# --- compare --published: our runs beside a source's numbers -------------------------------------
def protocol_run(directory, error, *, method="fixmatch", n_labeled=40, arch="wrn_28_2", provenance=None,
                 dataset="cifar10", extra_unlabeled=0):
    """A finished protocol cell's run as far as `compare` reads it: its summary and EMA log."""
    import json

    directory.mkdir(parents=True)
    summary = {"dataset": dataset, "arch": arch, "method": method, "n_labeled": n_labeled,
               "extra_unlabeled": extra_unlabeled,
               "global_step": 1048576, "student_error1": error, "teacher_error1": error}
    if provenance is not None:
        summary["provenance"] = provenance
    (directory / "summary.json").write_text(json.dumps(summary))
    for log in ("validation.jsonl", "ema_validation.jsonl"):
        (directory / log).write_text(json.dumps({"epoch": 1, "step": 1048576, "error1/avg": error}) + "\n")
    return directory


def test_a_protocol_grid_beside_usb_s_numbers(cli, tmp_path):
    for seed, error in enumerate((8.1, 9.6, 7.9)):   # USB's FixMatch, 40 labels: 8.33 ± 1.41 over 3 seeds
        protocol_run(tmp_path / "grid" / f"fixmatch_{seed}", error)
    code, out, _ = cli("compare", tmp_path / "grid", "--published", "usb")
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("cifar10 wrn_28_2 fixmatch 40 labels"))
    assert "8.33 ± 1.41" in row and "best-on-test" in row and "8.53 ± 0.93" in row and row.endswith("reproduced")

    far = tmp_path / "far"
    for seed, error in enumerate((20.0, 21.0, 22.0)):
        protocol_run(far / f"fixmatch_{seed}", error)
    code, out, _ = cli("compare", far, "--published", "usb")
    assert code == 1 and out.splitlines()[2].endswith("worse"), out


def test_usb_s_mean_teacher_rows_are_shown_but_never_tested(cli, tmp_path):
    for seed, error in enumerate((9.0, 9.4, 8.8)):
        protocol_run(tmp_path / f"mt_{seed}", error, method="mean_teacher", n_labeled=4000)
    code, out, _ = cli("compare", tmp_path, "--published", "usb")
    assert code == 1, out   # nothing judged
    row = next(line for line in out.splitlines() if "mean_teacher 4000 labels" in line)
    assert "15.47 ± 0.43" in row and row.endswith("published number invalid")
    assert "consistency" in out.split("Not tested:", 1)[1]   # the reason, from published.csv


def test_runs_that_are_not_the_protocol_s_are_not_tested(cli, tmp_path):
    record = {"steps": {"trained": 2, "planned": 2}, "data": {"synthetic": True, "path": "c.tar.gz"}}
    for seed in range(2):
        protocol_run(tmp_path / f"try_{seed}", 90.0, provenance=record)
    code, out, _ = cli("compare", tmp_path, "--published", "fixmatch")
    assert code == 1, out
    assert out.splitlines()[2].endswith("not comparable")
    assert "synthetic stand-in data (c.tar.gz); planned for 2 steps (the protocol's: 1,048,576)" in out


@pytest.mark.parametrize("argv, fragments", [
    (["--published", "nonsense"], ["--published 'nonsense': one of fixmatch, oliver2018, torchssl, usb"]),
    (["--published", "usb", "--table", "4"], ["--table: options of a comparison with the Mean Teacher paper"]),
])
def test_bad_published_comparisons(cli, tmp_path, argv, fragments):
    protocol_run(tmp_path / "run", 8.0)
    assert_one_line_error(cli("compare", tmp_path, *argv), *fragments)


def test_runs_of_no_published_cell_are_refused(cli, tmp_path):
    protocol_run(tmp_path / "run", 8.0, n_labeled=123)
    assert_one_line_error(cli("compare", tmp_path, "--published", "usb"),
                          "no number of usb is of the cells of these runs (cifar10 wrn_28_2 fixmatch 123 labels)")


def test_torchssl_s_standard_errors_are_made_deviations_for_the_test(tmp_path):
    import math

    from scipy import stats

    from mt_repro.paper import against_published, runs

    errors = (9.0, 9.4, 8.8)
    for seed, error in enumerate(errors):
        protocol_run(tmp_path / f"mt_{seed}", error, method="mean_teacher", n_labeled=4000)
    [comparison] = against_published.compare_published(runs.find_runs([tmp_path]), "torchssl")
    theirs = comparison.published
    assert (theirs.mean, theirs.std, theirs.spread, theirs.n_runs) == (8.10, 0.21, "stderr", 3)
    import statistics
    expected = stats.ttest_ind_from_stats(statistics.fmean(errors), statistics.stdev(errors), 3,
                                          8.10, 0.21 * math.sqrt(3), 3, equal_var=False).pvalue
    assert comparison.p == pytest.approx(expected) and comparison.verdict == "worse"


def test_every_dataset_of_the_published_numbers_has_a_reader_here():
    from mt_repro.data.registry import dataset_names
    assert set(published.DATASETS) <= set(dataset_names())


def test_svhn_cells_meet_the_numbers_of_runs_that_used_the_extra_images(cli, tmp_path):
    """USB's and TorchSSL's SVHN rows trained on the 531131 extra images too; a cell says how
    many it trained on (``extra_unlabeled`` in its summary), and only one that used them all
    meets those rows."""
    for seed, error in enumerate((3.1, 3.4, 3.0)):
        protocol_run(tmp_path / "full" / f"mt_{seed}", error, method="mean_teacher", dataset="svhn",
                     extra_unlabeled=531131)
        protocol_run(tmp_path / "train_only" / f"mt_{seed}", error, method="mean_teacher", dataset="svhn")
    code, out, _ = cli("compare", tmp_path / "full", "--published", "torchssl")
    assert code in (0, 1) and any(line.startswith("svhn wrn_28_2 mean_teacher 40 labels") for line in out.splitlines()), out
    assert_one_line_error(cli("compare", tmp_path / "train_only", "--published", "torchssl"),
                          "no number of torchssl is of the cells of these runs (svhn wrn_28_2 mean_teacher 40 labels)")


def test_usb_s_corrected_mean_teacher_stands_beside_mean_teacher_s_rows_apart_from_the_paper_s(cli, tmp_path):
    """mean_teacher_usb computes Mean Teacher as TorchSSL did: its runs meet TorchSSL's Mean
    Teacher row, in a row of their own beside the paper's formulation's runs."""
    for seed, (paper, usb) in enumerate(((9.0, 8.0), (9.4, 8.3), (8.8, 7.9))):
        protocol_run(tmp_path / f"mt_{seed}", paper, method="mean_teacher", n_labeled=4000)
        protocol_run(tmp_path / f"mt_usb_{seed}", usb, method="mean_teacher_usb", n_labeled=4000)
    code, out, _ = cli("compare", tmp_path, "--published", "torchssl")
    rows = {line.split(" 4000 labels")[0]: line for line in out.splitlines() if " 4000 labels" in line}
    assert set(rows) == {"cifar10 wrn_28_2 mean_teacher", "cifar10 wrn_28_2 mean_teacher_usb"}, out
    assert all("8.10 ± 0.21" in row for row in rows.values())
    assert "9.07 ± 0.31" in rows["cifar10 wrn_28_2 mean_teacher"] and rows["cifar10 wrn_28_2 mean_teacher"].endswith("worse")
    assert "8.07 ± 0.21" in rows["cifar10 wrn_28_2 mean_teacher_usb"]
    assert rows["cifar10 wrn_28_2 mean_teacher_usb"].endswith("reproduced") and code == 1
