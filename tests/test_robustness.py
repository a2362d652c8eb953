"""Robustness to common corruptions: the measures (CE, mCE, relative mCE) against hand-computed
numbers, `mt-repro evaluate --corruptions` on generated corruptions (digits) and on files in the
published CIFAR-10-C format (CIFAR-10), its records read back by `mt-repro report`, and the digits
demo's method variants and robustness table."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from mt_repro.engine import robustness
from mt_repro.engine.robustness import CorruptionErrors
from mt_repro.core.errors import BadInput
from mt_repro.data import corruptions
from mt_repro.models.registry import create_model


# --- the measures ----------------------------------------------------------------------------
def _errors(clean, table, network="teacher"):
    return CorruptionErrors(network, clean, {name: list(values) for name, values in table.items()})


MODEL = _errors(10.0, {"fog": [20, 30, 40, 50, 60], "brightness": [10, 10, 12, 14, 14], "spatter": [50] * 5})
BASE = _errors(20.0, {"fog": [40, 50, 60, 70, 80], "brightness": [20, 20, 20, 20, 20], "spatter": [25] * 5})


def test_corruption_errors_are_the_benchmarks_means():
    assert MODEL.corruption_error("fog") == 40.0
    assert MODEL.mean_corruption_error == pytest.approx((40.0 + 12.0) / 2)   # the standard ones only
    assert MODEL.extra_mean_error == 50.0                                    # spatter is an extra one


def test_ce_and_relative_ce_by_hand():
    ce = robustness.ce(MODEL, BASE)
    assert ce["fog"] == pytest.approx(100 * 200 / 300)
    assert ce["brightness"] == pytest.approx(100 * 60 / 100)
    assert robustness.mce(MODEL, BASE) == pytest.approx((100 * 200 / 300 + 60) / 2)   # spatter left out
    relative = robustness.relative_ce(MODEL, BASE)
    assert relative["fog"] == pytest.approx(100 * (200 - 50) / (300 - 100))
    # the baseline lost nothing to brightness: no ratio, and the mean is over the others
    assert math.isnan(relative["brightness"])
    assert robustness.relative_mce(MODEL, BASE) == pytest.approx(75.0)
    assert robustness.mce(BASE, BASE) == pytest.approx(100.0)


def test_a_result_prints_every_corruption_and_says_what_has_no_ratio():
    result = robustness.Robustness("m.ckpt", "digits_convnet", "digits", 500, "generated, seed 0",
                                   {"teacher": MODEL}, robustness.Robustness("b.ckpt", "digits_convnet", "digits", 500,
                                                                             "generated, seed 0", {"teacher": BASE}))
    text = "\n".join(result.lines())
    assert "spatter (extra)" in text and "66.7 %" in text
    assert "mean corruption error 26.00 %" in text and "relative mCE 75.0 %" in text
    assert "without brightness: the baseline lost nothing to them" in text
    # the record holds every number and comes back as it went
    back = robustness.from_json(json.loads(json.dumps(result.to_json())), "r.json")
    assert back.networks["teacher"] == MODEL and back.baseline.networks["teacher"] == BASE
    assert result.to_json()["against_baseline"]["teacher"]["relative_mce"] == pytest.approx(75.0)


@pytest.mark.parametrize("damage, words", [
    (lambda r: r.pop("version"), "no version 1 record"),
    (lambda r: r.update(images="500"), "images is not a int"),
    (lambda r: r["networks"].update(mystery={}), "networks must be some of student, teacher"),
    (lambda r: r["networks"]["teacher"]["errors"].update(fog=[1, 2]), "'fog' is not a known corruption with 5"),
    (lambda r: r["networks"]["teacher"]["errors"].update(nonsense=[1] * 5), "'nonsense' is not a known"),
    (lambda r: r["networks"]["teacher"].update(clean=float("nan")), "errors are not numbers"),
    (lambda r: r["networks"]["teacher"]["errors"]["fog"].__setitem__(0, True), "'fog' is not a known"),
])
def test_a_damaged_record_is_refused_with_one_line(damage, words):
    record = robustness.Robustness("m.ckpt", "a", "digits", 5, "s", {"teacher": MODEL}).to_json()
    damage(record)
    with pytest.raises(BadInput) as caught:
        robustness.from_json(record, "r.json")
    assert words in str(caught.value) and "r.json" in str(caught.value) and "\n" not in str(caught.value)


# --- generated corruptions on the digits -------------------------------------------------------
@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """A supervised and a Mean Teacher run of the digits demo, one epoch each."""
    from mt_repro.apps.digits_demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    run_demo(100, 1, 1, out, progress=False, jobs=1, threads=1)
    return out


def _checkpoint(out, run):
    return out / run / "checkpoints" / "last.ckpt"


def test_evaluate_corruptions_measures_what_the_corrupted_images_give(cli, digits_runs, tmp_path):
    mt, sup = _checkpoint(digits_runs, "mean_teacher_0"), _checkpoint(digits_runs, "supervised_0")
    code, out, err = cli("evaluate", mt, "--corruptions", "--corruption", "gaussian_noise,pixelate",
                         "--baseline", sup, "--baseline-network", "student", "--out", tmp_path / "c", "--no-progress")
    assert code == 0, err
    assert "mCE" in out and "relative mCE" in out and "2 standard corruptions" in out
    record = robustness.from_json(json.loads((tmp_path / "c" / "last.json").read_text()), "last.json")
    assert record.dataset == "digits" and record.images == 500 and record.baseline_network == "student"
    rows = (tmp_path / "c" / "last.csv").read_text().splitlines()
    assert rows[0] == "network,corruption,severity,error" and len(rows) == 1 + 2 * (1 + 2 * 5)
    assert (tmp_path / "c" / "last.png").stat().st_size > 1000

    # the clean error is the one `mt-repro evaluate` reports, the teacher's
    code, plain, _ = cli("evaluate", mt, "--no-progress")
    assert code == 0
    top1 = float(plain.split("teacher  prec@1 ")[1].split()[0])
    assert record.networks["teacher"].clean == pytest.approx(100 - top1, abs=1e-3)

    # the error under a corruption, recomputed here from the generated images and the network
    from mt_repro.apps.evaluate import load_networks
    from mt_repro.data.digits import DigitsArrays
    from mt_repro.data.registry import get_dataset

    test = DigitsArrays("test")
    images = np.rint(test.in_memory_images() * 255).astype(np.uint8)
    corrupted = corruptions.corrupt(images, "pixelate", 4, seed=0)
    teacher = load_networks(mt, get_dataset("digits"), None, torch.device("cpu")).networks["teacher"]
    with torch.no_grad():
        logits, _ = teacher(torch.from_numpy(corrupted).permute(0, 3, 1, 2).float() / 255)
    wrong = (logits.argmax(1).numpy() != np.array(test.targets)).mean() * 100
    assert record.networks["teacher"].errors["pixelate"][3] == pytest.approx(wrong, abs=1e-3)
    # the baseline saw the same images: its clean error is the supervised run's own
    summary = json.loads((digits_runs / "supervised_0" / "summary.json").read_text())
    assert record.baseline.networks["student"].clean == pytest.approx(summary["student_error1"], abs=1e-3)


def test_the_results_go_into_the_run_directory_and_report_shows_them(cli, digits_runs):
    mt = _checkpoint(digits_runs, "mean_teacher_0")
    code, _, err = cli("evaluate", mt, "--corruptions", "--corruption", "contrast", "--no-progress")
    assert code == 0, err
    assert (digits_runs / "mean_teacher_0" / "corruptions" / "last.json").is_file()
    code, out, err = cli("report", digits_runs)
    assert code == 0, err
    assert "mean_teacher_0" in out and "supervised_0" in out
    assert "contrast" in out and "mean corruption error" in out


@pytest.mark.parametrize("args, words", [
    (["--corruption", "fgo"], "unknown corruption 'fgo'"),
    (["--corruption", "frost"], "frost needs the benchmark's frost photographs"),
    (["--baseline-network", "student"], "give --baseline CKPT too"),
    (["--eval-subdir", "train"], "the corruptions are of the test part"),
])
def test_bad_corruption_options_are_one_line(cli, digits_runs, args, words):
    mt = _checkpoint(digits_runs, "mean_teacher_0")
    assert_one_line_error(cli("evaluate", mt, "--corruptions", *args), words)


def test_corruption_options_without_corruptions_are_refused(cli, digits_runs):
    mt = _checkpoint(digits_runs, "mean_teacher_0")
    assert_one_line_error(cli("evaluate", mt, "--baseline", mt), "--baseline go with --corruptions")


def test_a_network_of_other_images_is_refused(cli, digits_runs, tmp_path):
    model = create_model("cifar_shakeshake_mini", 10)
    path = _cifar_checkpoint(tmp_path, model)
    assert_one_line_error(cli("evaluate", path, "--dataset", "digits", "--corruptions", "--corruption", "fog"),
                          "cannot take the images of digits")


# --- the published files, on CIFAR-10 ---------------------------------------------------------
def _cifar_checkpoint(directory, model):
    path = directory / "cifar.ckpt"
    state = model.state_dict()
    torch.save({"arch": "cifar_shakeshake_mini", "epoch": 1, "state_dict": state, "ema_state_dict": state}, path)
    return path


def _publish(directory, tiny_tree, names=("fog", "contrast")):
    """Stand-ins of the published files for the tiny tree's 20 test images: its images at every
    severity, in another order than the tree's (as the published files' test-batch order)."""
    from mt_repro.data.cifar10 import SPEC

    clean = robustness.clean_images(SPEC, SPEC.open_part(tiny_tree, "test", None))
    order = np.random.default_rng(0).permutation(len(clean.labels))
    directory.mkdir()
    for name in names:
        np.save(directory / f"{name}.npy", np.tile(clean.images[order], (5, 1, 1, 1)))
    np.save(directory / "labels.npy", np.tile(clean.labels[order], 5).astype(np.uint8))
    return clean


def test_published_files_are_read_and_their_order_kept(cli, tiny_tree, tmp_path):
    torch.manual_seed(0)
    checkpoint = _cifar_checkpoint(tmp_path, create_model("cifar_shakeshake_mini", 10))
    _publish(tmp_path / "c10c", tiny_tree)
    code, out, err = cli("evaluate", checkpoint, "--data", tiny_tree, "--corruptions", tmp_path / "c10c",
                         "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err
    record = robustness.from_json(json.loads((tmp_path / "out" / "cifar.json").read_text()), "cifar.json")
    assert record.source.startswith("published files in")
    # the "corrupted" images are the clean ones, shuffled with their labels: the same error at every severity
    for network in record.networks.values():
        assert list(network.errors) == ["fog", "contrast"]
        assert all(e == pytest.approx(network.clean) for values in network.errors.values() for e in values)


@pytest.mark.parametrize("damage, words", [
    (lambda d: np.save(d / "fog.npy", np.zeros((100, 32, 32, 1), np.uint8)), "has shape (100, 32, 32, 1)"),
    (lambda d: np.save(d / "fog.npy", np.zeros((99, 32, 32, 3), np.uint8)), "has shape (99, 32, 32, 3)"),
    (lambda d: np.save(d / "contrast.npy", np.zeros((80, 32, 32, 3), np.uint8)), "holds 80 images but"),
    (lambda d: np.save(d / "labels.npy", np.random.default_rng(1).integers(0, 10, 100)), "is not the test labels repeated"),
    (lambda d: np.save(d / "labels.npy", np.full(100, 12)), "holds label 12"),
    (lambda d: np.save(d / "labels.npy", np.zeros(100, np.int64)), "are not those of the test set evaluated"),
    (lambda d: (d / "labels.npy").unlink(), "has no labels.npy"),
    (lambda d: (d / "fog.npy").write_bytes((d / "fog.npy").read_bytes()[:-10]), "truncated"),
])
def test_damaged_published_files_are_one_line_errors_before_any_evaluation(cli, tiny_tree, tmp_path, damage, words):
    checkpoint = _cifar_checkpoint(tmp_path, create_model("cifar_shakeshake_mini", 10))
    _publish(tmp_path / "c10c", tiny_tree)
    damage(tmp_path / "c10c")
    assert_one_line_error(cli("evaluate", checkpoint, "--data", tiny_tree, "--corruptions", tmp_path / "c10c",
                              "--corruption", "fog,contrast", "--no-progress"), words)
    assert not (tmp_path / "corruptions").exists()


def test_a_corruption_missing_from_the_published_directory_is_named(cli, tiny_tree, tmp_path):
    checkpoint = _cifar_checkpoint(tmp_path, create_model("cifar_shakeshake_mini", 10))
    _publish(tmp_path / "c10c", tiny_tree, names=("fog",))
    assert_one_line_error(cli("evaluate", checkpoint, "--data", tiny_tree, "--corruptions", tmp_path / "c10c",
                              "--corruption", "snow"), "has no snow.npy")


# --- variants of a method and the demo's robustness table ---------------------------------------
def test_method_variants_are_parsed_and_checked():
    from mt_repro.methods.registry import split_method_list, split_variant

    assert split_method_list("mean_teacher, self_training[noise=randaugment,swa=true],vat") == [
        "mean_teacher", "self_training[noise=randaugment,swa=true]", "vat"]
    assert split_variant("self_training[noise=randaugment,swa=true]") == ("self_training", "noise=randaugment,swa=true")
    assert split_variant("vat") == ("vat", None)
    for spec, words in [("self_training[noise=randaugment", "a variant is written NAME[option=value"),
                        ("self_training[]", "name no option"),
                        ("self_training[nosie=randaugment]", "nosie"),
                        ("self_training[noise=loud]", "noise"),
                        ("selftraining[noise=randaugment]", "selftraining")]:
        with pytest.raises(BadInput) as caught:
            split_variant(spec)
        assert words in str(caught.value), (spec, caught.value)


def test_the_demo_runs_variants_and_tables_their_robustness(tmp_path, monkeypatch):
    from mt_repro.apps import digits_demo

    # two corruptions keep it quick; the table is built as with all of them
    monkeypatch.setattr(robustness.corruptions, "generatable", lambda frost_dir=None: ("gaussian_noise", "spatter"))
    result = digits_demo.run_demo(100, 2, 1, tmp_path, methods=["self_training[swa=true]"], progress=False,
                                  jobs=1, threads=1, corruptions=True)
    assert result.rows == ["supervised", "self_training[swa=true]"]
    config = json.loads((tmp_path / "self_training-swa-true_0" / "config.json").read_text())
    assert config["method"] == "self_training" and "swa=true" in config["method_options"]
    table = result.table()
    assert "under corruptions" in table and "self training[swa=true]" in table
    # supervised is its own baseline: 100 % on every seed
    assert "100.00 ± 0.00" in table.split("under corruptions")[1].splitlines()[2]
    assert len(result.robustness["self_training[swa=true]"]) == 2
    assert json.loads((tmp_path / "demo.json").read_text())["corruptions"] is True


# --- the noisy-student settings of self-training -------------------------------------------------
def _self_training(tmp_path, options: str, **changes):
    from test_methods_zoo import digits_config

    from mt_repro.methods.registry import create_method

    config = digits_config(tmp_path, method="self_training", method_options=options, **changes)
    torch.manual_seed(0)
    student, teacher = create_model("digits_convnet", 10), create_model("digits_convnet", 10)
    return create_method(config, student, teacher), config


def _set_weights(model, value: float) -> None:
    with torch.no_grad():
        for tensor in [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]:
            tensor.fill_(value)


@pytest.mark.parametrize("options, expected", [("swa=true,swa_start=0.5", (3.0 + 4.0) / 2), ("", 4.0)])
def test_the_next_teacher_is_the_swa_of_the_generations_end_or_its_last_student(tmp_path, options, expected):
    method, config = _self_training(tmp_path, options, epochs=4, lr_rampdown_epochs=4)
    for epoch in range(1, 5):   # the student's weights at the end of epochs 1..4 of the first generation
        _set_weights(method.student, float(epoch))
        method.end_of_epoch(epoch)
    # swa_start 0.5 of 4 epochs: the ends of epochs 3 and 4 are averaged (parameters and buffers)
    for tensor in [*method.teacher.parameters(), *(b for b in method.teacher.buffers() if b.is_floating_point())]:
        assert torch.allclose(tensor, torch.full_like(tensor, expected)), tensor.flatten()[:3]
    if "swa" in options:   # the next generation averages afresh, and the average is checkpointed
        assert method.average.n_averaged.item() == 0 and "swa" in method.state_dict()


def test_noise_randaugment_feeds_the_student_the_strong_view_and_the_teacher_the_clean_one(tmp_path):
    from mt_repro.core.types import Batch, StepContext
    from mt_repro.methods.fixmatch import STRONG

    method, config = _self_training(tmp_path, "noise=randaugment", epochs=1)
    assert STRONG in type(method).extras_for(config)
    seen = {}

    def recording(name, network):
        forward = network.forward

        def record(x):
            seen[name] = x
            return forward(x)
        network.forward = record

    recording("student", method.student)
    recording("teacher", method.teacher)
    images = {k: torch.rand(4, 1, 8, 8) for k in ("weak", "teacher", "clean", "strong")}
    batch = Batch(images["weak"], images["teacher"], torch.tensor([1, -1, -1, 2]),
                  {"clean_input": images["clean"], STRONG: images["strong"]})
    method.losses(batch, StepContext(epoch=1, global_step=0, consistency_weight=1.0))
    assert seen["student"] is images["strong"] and seen["teacher"] is images["clean"]
