"""The USB/TorchSSL protocol as data (``configs/protocols/usb.toml``), its recipe's pieces
(cosine steps, USB's EMA and SGD) and one shortened cell per method, through the command a GPU
user runs."""
from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from conftest import assert_one_line_error
from mt_repro.apps.evaluate import evaluate_checkpoint
from mt_repro.apps.protocol import LABEL_FILE, grid_cells, published_order, write_protocol_labels
from mt_repro.cli import cli, main
from mt_repro.config import TrainConfig, recipes
from mt_repro.config.protocol import load_protocol, protocol_config, protocol_names
from mt_repro.config.saved import from_saved, to_saved
from mt_repro.core.errors import BadInput
from mt_repro.core.rng import seed_everything
from mt_repro.core.types import NO_LABEL
from mt_repro.data import synthetic
from mt_repro.data.labels import read_label_file
from mt_repro.data.cifar100 import CIFAR100_STATS
from mt_repro.data.loaders import training_data
from mt_repro.data.normalisation import IMAGENET_STATS, normalised
from mt_repro.data.registry import dataset_names, get_dataset
from mt_repro.data.usb_splits import usb_split
from mt_repro.engine import ema, optimizers, runs, schedules
from mt_repro.engine.trainer import Trainer
from mt_repro.methods.registry import method_names
from mt_repro.models import get_model, list_models

USB = load_protocol("usb")


def test_the_protocol_names_what_exists_here():
    assert "usb" in protocol_names()
    assert set(USB.methods) <= set(method_names())
    assert {"supervised", "mean_teacher", "fixmatch", "uda"} <= set(USB.methods)
    for name, table in USB.datasets.items():
        assert name in dataset_names() and table["arch"] in list_models()
        assert all(n % get_dataset(name).num_classes == 0 for n in table["labels"])
        assert table["source"].startswith("config/classic_cv/")
    assert USB.source.startswith("microsoft/Semi-supervised-learning @ 1ef4cbe")


@pytest.mark.parametrize("method", sorted(USB.methods))
@pytest.mark.parametrize("dataset", sorted(USB.datasets))
def test_every_cell_composes_with_usbs_settings(dataset, method):
    n_labels = USB.labels(dataset)[0]
    config = protocol_config("usb", dataset, method, n_labels, seed=1)
    uratio = USB.method(method)["uratio"]
    assert config.recipe.name == "usb" and config.training_length == 2 ** 20
    assert (config.lr, config.momentum, config.nesterov, config.ema_decay) == (0.03, 0.9, True, 0.999)
    assert config.weight_decay == {"cifar10": 5e-4, "cifar100": 1e-3, "svhn": 5e-4, "stl10": 5e-4}[dataset]
    assert config.evaluation_span == 5120 and config.print_span == 256 and config.lr_cycles == 7 / 16
    if uratio:
        assert (config.labeled_batch_size, config.batch_size) == (64, 64 * (1 + uratio))
    else:
        assert config.exclude_unlabeled and config.batch_size == 64
    # USB's include_lb_to_ulb: every training image is unlabeled data too (where there is any)
    assert config.unlabeled_includes_labeled is bool(uratio)
    # saved and read back as a run directory keeps it (resume)
    assert from_saved(to_saved(config), "config.json") == config


def test_mean_teachers_weight_warms_up_over_four_tenths_of_the_run_and_keeps_that_shape_when_shortened():
    full = protocol_config("usb", "cifar10", "mean_teacher", 4000, 0)
    assert (full.consistency, full.consistency_rampup_steps, full.batch_size) == (50.0, 419430, 128)
    short = protocol_config("usb", "cifar10", "mean_teacher", 4000, 0, overrides=("training_length=1000",))
    assert short.consistency_rampup_steps == 400
    fixed = protocol_config("usb", "cifar10", "mean_teacher", 4000, 0,
                            overrides=("training_length=1000", "consistency_rampup_steps=7"))
    assert fixed.consistency_rampup_steps == 7
    assert protocol_config("usb", "cifar10", "fixmatch", 40, 0).consistency_rampup_steps == 0


@pytest.mark.parametrize("call, message", [
    (lambda: protocol_config("usb", "cifar10", "fixmatch", 100, 0), "defines cifar10 with 40, 250, 4000 labels, not 100"),
    (lambda: protocol_config("usb", "imagenet", "fixmatch", 40, 0), "protocol usb has no dataset 'imagenet'"),
    (lambda: protocol_config("usb", "cifar10", "ict", 40, 0), "protocol usb has no settings for method 'ict'"),
    (lambda: protocol_config("nope", "cifar10", "fixmatch", 40, 0), "unknown protocol 'nope'; known: usb"),
    (lambda: protocol_config("usb", "cifar10", "fixmatch", 40, 0, overrides=("trainig_length=5",)),
     "unknown setting(s) trainig_length of a usb run; did you mean training_length?"),
    (lambda: protocol_config("usb", "cifar10", "fixmatch", 40, 0, overrides=("epochs=5",)),
     "epochs count in epochs, which the usb recipe does not use"),
    (lambda: protocol_config("usb", "cifar10", "fixmatch", 40, 0, overrides=("lr_cycles=0.75",)),
     "the cosine must not turn back up"),
])
def test_bad_cells_are_refused_with_the_reason(call, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_the_learning_rate_is_usbs_cosine_of_the_steps_taken_and_the_weight_ramps_linearly():
    config = protocol_config("usb", "cifar10", "mean_teacher", 4000, 0, overrides=("training_length=1000",))
    schedule = schedules.SCHEDULES["cosine_steps"](config, None)
    at = [schedule.at(0, 0, 1, k) for k in (0, 200, 500, 1000)]
    assert [hp.lr for hp in at] == pytest.approx([0.03 * math.cos(7 * math.pi * k / (16 * 1000)) for k in (0, 200, 500, 1000)])
    assert [hp.consistency_weight for hp in at] == pytest.approx([0.0, 25.0, 50.0, 50.0])   # 400-step ramp
    assert {hp.ema_decay for hp in at} == {0.999}


def test_usbs_ema_averages_the_parameters_and_copies_the_buffers():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = ema.TEACHER_INITS["student_copy"](None, student, None)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student(torch.randn(5, 3))   # moves the student's running statistics
    ema.TEACHER_UPDATES["ema_after_step"].update(student, teacher, 0.9, 1)
    for old, new, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * s)
    for mine, theirs in zip(teacher.buffers(), student.buffers()):
        assert torch.equal(mine, theirs)
    assert not ema.TEACHER_UPDATES["ema_after_step"].before_step


def test_usbs_sgd_decays_only_the_weight_matrices():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    config = protocol_config("usb", "cifar10", "fixmatch", 40, 0)
    optimizer = optimizers.OPTIMIZERS["sgd_no_decay_1d"](config, model.parameters())
    decay = {g["weight_decay"]: [tuple(p.shape) for p in g["params"]] for g in optimizer.param_groups}
    assert decay == {0.0: [(4,), (4,), (4,), (2,)], 5e-4: [(4, 3, 3, 3), (2, 4)]}
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    return synthetic.write_cifar_tarball(tmp_path_factory.mktemp("usb") / "cifar-10-python.tar.gz",
                                         n_train=200, n_test=40, seed=4)


def test_the_label_file_holds_the_images_usbs_split_chooses(tarball, tmp_path):
    config = protocol_config("usb", "cifar10", "fixmatch", 40, 2, data_dir=str(tarball))
    path = write_protocol_labels(config, tmp_path / LABEL_FILE)
    spec = get_dataset("cifar10")
    train = spec.open_part(tarball, spec.train_part, None)
    names, targets = published_order(train)
    labeled, _ = usb_split(targets, 40, 10, 2)
    assert list(read_label_file(path)) == [names[i] for i in labeled]
    # the published order: image i is the i-th of the tarball's training batches
    assert names[:3] == ["0_" + train.classes[targets[0]] + ".png", "1_" + train.classes[targets[1]] + ".png",
                         "2_" + train.classes[targets[2]] + ".png"]


@pytest.mark.parametrize("mode", ["faithful", "fast"])
@pytest.mark.parametrize("included", [True, False])
def test_the_unlabeled_part_of_each_minibatch_is_drawn_from_every_training_image_with_labels_hidden(
        tarball, tmp_path, mode, included):
    """As USB's ``include_lb_to_ulb``: the unlabeled places take the 200 training images pass
    after pass, the 40 labeled ones included, all with their labels hidden there; the labeled
    places take labeled images with their labels. Off: the 160 unlabeled images only. An epoch
    of 50 steps here: 400 unlabeled places, two whole passes of 200 (USB's streams)."""
    config = protocol_config("usb", "cifar10", "mean_teacher", 40, 0, data_dir=str(tarball), device="cpu",
                             overrides=("labeled_batch_size=4", "batch_size=12", "workers=0", f"mode={mode}",
                                        f"unlabeled_includes_labeled={str(included).lower()}", "sampler_epoch_steps=50"))
    labels = write_protocol_labels(config, tmp_path / LABEL_FILE)
    config = config.replace(labels=str(labels)).validate()
    seed_everything(0)
    data = training_data(config, extras=("indices",))
    assert (data.n_labeled, data.n_unlabeled) == (40, 200 if included else 160)
    train = get_dataset("cifar10").open_part(tarball, config.train_subdir, None)
    named = read_label_file(labels)
    labeled = {i for i, (path, _) in enumerate(train.samples) if Path(path).name in named}
    unlabeled_places = []
    for batch in data.epoch(0):
        indices = batch.extras["indices"].tolist()
        assert batch.targets[:8].eq(NO_LABEL).all()
        assert set(indices[8:]) <= labeled and batch.targets[8:].tolist() == [train.targets[i] for i in indices[8:]]
        unlabeled_places += indices[:8]
    expected = list(range(200) if included else sorted(set(range(200)) - labeled))
    n = len(expected)
    assert len(unlabeled_places) == 400 and 400 // n == 2
    assert all(sorted(unlabeled_places[k * n:(k + 1) * n]) == expected for k in range(2))
    assert set(unlabeled_places[2 * n:]) <= set(expected)   # part of a third pass, where 160 are


@pytest.mark.parametrize("method, places", [("supervised", 64), ("mean_teacher", 128)])
def test_a_cell_at_usbs_batch_size_fills_64_labeled_places_from_40_labeled_images(method, places, tarball,
                                                                                   tmp_path):
    """USB's labeled stream runs on into its next pass within a minibatch: the first minibatch of
    an epoch holds every one of the 40 labeled images, 24 of them twice."""
    config = protocol_config("usb", "cifar10", method, 40, 0, data_dir=str(tarball), device="cpu",
                             overrides=("workers=0",))
    assert (config.labeled_batch_size or config.batch_size, config.sampler_epoch_steps) == (64, 1024)
    labels = write_protocol_labels(config, tmp_path / LABEL_FILE)
    data = training_data(config.replace(labels=str(labels)).validate(), extras=("indices",))
    assert data.steps_per_epoch == 1024
    batch = next(data.epoch(3))
    labeled_part = batch.extras["indices"].tolist()[-64:]
    assert len(batch.targets) == places and batch.targets[-64:].ne(NO_LABEL).all()
    train = get_dataset("cifar10").open_part(tarball, config.train_subdir, None)
    named = read_label_file(labels)
    assert set(labeled_part) == {i for i, (path, _) in enumerate(train.samples) if Path(path).name in named}


def test_a_cell_stopped_inside_an_epoch_of_usbs_streams_resumes_to_the_uninterrupted_weights(
        tarball, tmp_path, monkeypatch):
    """Epochs of 2 steps: stopped at step 3, the cell resumes from its checkpoint after step 2,
    where its sampler's next epoch is drawn again from the epoch number alone."""
    from conftest import straight_and_resumed

    config = protocol_config("usb", "cifar10", "mean_teacher", 40, 0, data_dir=str(tarball), device="cpu",
                             overrides=("labeled_batch_size=2", "batch_size=4", "workers=0", "training_length=6",
                                        "sampler_epoch_steps=2", "evaluation_span=6", "print_span=1"))
    labels = write_protocol_labels(config, tmp_path / LABEL_FILE)
    config = config.replace(labels=str(labels)).validate()
    _, _, (straight, resumed) = straight_and_resumed(config, tmp_path, monkeypatch, stop_at_step=3)
    assert int(straight["global_step"]) == int(resumed["global_step"]) == 6
    for key in ("state_dict", "ema_state_dict"):
        assert all(torch.equal(straight[key][k], resumed[key][k]) for k in straight[key])


@pytest.mark.parametrize("dataset, statistics", [("cifar10", IMAGENET_STATS), ("cifar100", CIFAR100_STATS)])
def test_images_are_normalised_with_usbs_statistics(dataset, statistics, tarball, tmp_path):
    """USB normalises CIFAR-10 with ImageNet's mean and deviation (its cifar.py), CIFAR-100 with
    CIFAR-100's: the evaluation images, and fast mode's batched augmentation, as USB's."""
    data_dir = tarball if dataset == "cifar10" else synthetic.write_cifar100_tarball(
        tmp_path / "cifar-100-python.tar.gz", n_train=600, n_test=20, seed=1)
    config = protocol_config("usb", dataset, "fixmatch", USB.labels(dataset)[0], 0, data_dir=str(data_dir),
                             device="cpu", overrides=("workers=0", "labeled_batch_size=4", "batch_size=32"))
    assert config.normalisation == ("imagenet" if dataset == "cifar10" else "dataset")
    labels = write_protocol_labels(config, tmp_path / LABEL_FILE)
    config = config.replace(labels=str(labels)).validate()
    spec = get_dataset(dataset)
    raw = spec.open_part(spec.root(str(data_dir)), "test", None)[0][0]
    expected = (torch.from_numpy(np.asarray(raw, dtype=np.float32) / 255).permute(2, 0, 1)
                - torch.tensor(statistics["mean"])[:, None, None]) / torch.tensor(statistics["std"])[:, None, None]
    first = next(iter(training_data(config, extras=("strong_input",)).evaluation()))[0][0]
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-6)
    fast = training_data(config.replace(mode="fast").validate(), extras=())
    batched = fast.train_loader.augment.normalise(torch.from_numpy(np.array(raw))[None])[0]
    torch.testing.assert_close(batched, expected, rtol=0, atol=1e-6)


def test_a_normalisation_the_dataset_cannot_change_is_refused(tmp_path):
    from mt_repro.apps.evaluate import trained_normalisation

    with pytest.raises(BadInput, match="normalisation 'imagenet': digits's images are not normalised by a "
                                       "translate-and-flip pipeline"):
        normalised(get_dataset("digits"), "imagenet")
    with pytest.raises(BadInput, match="normalisation 'cifar' is not one of dataset, imagenet"):
        TrainConfig(normalisation="cifar").validate()
    with pytest.raises(BadInput, match=r"checkpoint x.ckpt: its settings' normalisation 'sepia' is not one of"):
        trained_normalisation({"mt_repro": {"config": {"normalisation": "sepia"}}}, "x.ckpt")
    # the original's checkpoints, and ours from before the setting: the dataset's own statistics
    assert trained_normalisation({"state_dict": {}}, "old.ckpt") == "dataset"


def test_labeled_images_in_the_unlabeled_stream_need_minibatches_with_an_unlabeled_part():
    with pytest.raises(BadInput, match="unlabeled_includes_labeled needs minibatches with an unlabeled part"):
        TrainConfig(exclude_unlabeled=True, unlabeled_includes_labeled=True).validate()
    with pytest.raises(BadInput, match="sampling 'uniform'"):
        TrainConfig(sampling="uniform", unlabeled_includes_labeled=True).validate()


@pytest.fixture(scope="module")
def svhn_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("svhn")
    synthetic.write_svhn_mat(directory, n_train=60, n_test=20, n_extra=90, seed=3)
    return directory


def test_svhns_split_is_drawn_over_the_training_and_extra_images_joined_as_usb_joins_them(svhn_files, tmp_path):
    from mt_repro.data.svhn import read_svhn
    config = protocol_config("usb", "svhn", "fixmatch", 40, 1, data_dir=str(svhn_files))
    assert config.train_subdir == "train+extra"
    path = write_protocol_labels(config, tmp_path / LABEL_FILE)
    train, extra = read_svhn(svhn_files, "train"), read_svhn(svhn_files, "extra")
    joined = np.concatenate([train.labels, extra.labels])
    labeled, _ = usb_split(joined.tolist(), 40, 10, 1)
    names = train.file_names() + extra.file_names()
    assert list(read_label_file(path)) == [names[i] for i in labeled]
    assert any(name.startswith("extra_") for name in read_label_file(path))   # drawn from both files
    assert all(read_label_file(path)[names[i]] == str(joined[i]) for i in labeled)


@pytest.fixture(scope="module")
def stl10_tarball(tmp_path_factory):
    return synthetic.write_stl10_binary(tmp_path_factory.mktemp("stl10") / "stl10_binary.tar.gz",
                                        n_train=60, n_test=20, n_unlabeled=30, seed=5)


def test_stl10s_labels_are_drawn_from_its_training_images_and_it_trains_on_those_and_the_unlabeled(
        stl10_tarball, tmp_path):
    from mt_repro.data.stl10 import read_stl10
    config = protocol_config("usb", "stl10", "fixmatch", 40, 2, data_dir=str(stl10_tarball))
    assert (config.arch, config.train_subdir) == ("wrn_var_37_2", "train+unlabeled")
    path = write_protocol_labels(config, tmp_path / LABEL_FILE)
    train = read_stl10(stl10_tarball, "train")
    labeled, _ = usb_split(train.labels.tolist(), 40, 10, 2)
    names = [f"{i}_{train.class_names[c]}.png" for i, c in enumerate(train.labels.tolist())]
    assert list(read_label_file(path)) == [names[i] for i in labeled]
    # the run's training part holds them, and the unlabeled images beside the rest
    spec = get_dataset("stl10")
    part = spec.open_part(stl10_tarball, config.train_subdir, None)
    from mt_repro.data.labels import apply_labels
    marked, unmarked = apply_labels(part, read_label_file(path))
    assert (len(marked), len(unmarked)) == (40, 60 - 40 + 30)


@pytest.mark.parametrize("old, new, message", [
    ('train_part = "train+extra"', 'train_prat = "x"', r"[datasets.svhn] has unknown key(s) train_prat"),
    ('method_options = "threshold=0.95"', 'method_option = "threshold=0.9"',
     r"[methods.pseudo_label] has unknown key(s) method_option"),
    ('[methods.mixmatch.cifar100]\nconsistency = 150.0', '[methods.mixmatch.cifar100]\nuratio = 2',
     r"[methods.mixmatch.cifar100] may set only consistency, method_options"),
])
def test_a_protocol_settings_file_with_an_unknown_key_is_refused(old, new, message, tmp_path, monkeypatch):
    from mt_repro.config import protocol as protocol_module
    (tmp_path / "protocols").mkdir()
    text = (protocol_module.our_configs_dir() / "protocols" / "usb.toml").read_text()
    assert old in text
    (tmp_path / "protocols" / "usb.toml").write_text(text.replace(old, new))
    monkeypatch.setattr(protocol_module, "our_configs_dir", lambda: tmp_path)
    with pytest.raises(BadInput, match=re.escape(message)):
        load_protocol("usb")


def test_a_methods_values_for_one_dataset_and_its_options_reach_that_datasets_cells():
    """USB's MixMatch weighs its consistency 100, on CIFAR-100 150; its T and mixup_alpha are
    the method's options, which a cell's --set method_options still overrides."""
    assert protocol_config("usb", "cifar10", "mixmatch", 40, 0).consistency == 100.0
    cifar100 = protocol_config("usb", "cifar100", "mixmatch", 400, 0)
    assert cifar100.consistency == 150.0 and cifar100.method_options == "temperature=0.5,alpha=0.5"
    assert protocol_config("usb", "svhn", "pi_model", 40, 0).method_options == "scale_by_labeled_fraction=false"
    changed = protocol_config("usb", "cifar100", "mixmatch", 400, 0, overrides=("method_options=alpha=0.75",))
    assert changed.method_options == "alpha=0.75"
    assert "cifar100" not in USB.method("mixmatch") and USB.method("mixmatch", "cifar100")["consistency"] == 150.0


def test_one_set_carries_a_methods_several_options_to_every_cell(tmp_path):
    """Each ``--set`` is one setting, split at its first ``=``: a method's options, commas and
    all, reach every cell of a grid (the grid once joined its --set pairs with commas and split
    them again, so a second option was taken for a setting of its own)."""
    pairs = ("method_options=temperature=0.25,alpha=0.75", "training_length=10")
    cells = grid_cells("usb", "cifar100", [400], ["mixmatch"], [0, 1], out=tmp_path, overrides=pairs)
    assert [(c.config.method_options, c.config.training_length) for c in cells] == \
        [("temperature=0.25,alpha=0.75", 10)] * 2
    command = ["protocol", "usb", "cifar100", "--labels", "400", "--method", "mixmatch", "--seed", "0,1",
               "--out", str(tmp_path), "--dry-run"]
    result = CliRunner().invoke(cli, [*command, "--set", pairs[0], "--set", pairs[1]])
    assert result.exit_code == 0, result.output
    assert "10 steps" in result.output
    with pytest.raises(TypeError, match="one per --set"):   # a string's characters are no pairs
        protocol_config("usb", "cifar10", "mixmatch", 40, 0, overrides="training_length=10")


@pytest.mark.slow
@pytest.mark.parametrize("dataset, method", [("svhn", "mean_teacher"), ("svhn", "fixmatch"),
                                             ("stl10", "fixmatch")])
def test_a_shortened_svhn_or_stl10_cell_runs_through_the_command(dataset, method, svhn_files, stl10_tarball,
                                                                 tmp_path):
    out = tmp_path / "run"
    data = {"svhn": svhn_files, "stl10": stl10_tarball}[dataset]
    result = CliRunner().invoke(cli, ["protocol", "usb", dataset, "--labels", "40", "--method", method,
                                      "--seed", "0", "--data", str(data), "--out", str(out), "--no-progress",
                                      "--device", "cpu", "--set", "training_length=2", "--set", "evaluation_span=1",
                                      "--set", "print_span=1", "--set", "labeled_batch_size=4",
                                      "--set", "workers=0"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["train_subdir"] == {"svhn": "train+extra",
                                                                              "stl10": "train+unlabeled"}[dataset]
    # what published numbers are keyed by: the extra images trained on (the fixture's 90 SVHN ones)
    assert json.loads((out / "summary.json").read_text())["extra_unlabeled"] == {"svhn": 90, "stl10": 0}[dataset]
    assert (out / LABEL_FILE).is_file() and (out / "summary.json").is_file() and "done:" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(USB.methods))
def test_a_shortened_cell_runs_through_the_command(method, tarball, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["protocol", "usb", "cifar10", "--labels", "40", "--method", method,
                                      "--seed", "0", "--data", str(tarball), "--out", str(out), "--no-progress",
                                      "--device", "cpu", "--set", "training_length=2", "--set", "evaluation_span=1",
                                      "--set", "print_span=1", "--set", "labeled_batch_size=4",
                                      "--set", "workers=0"] )
    assert result.exit_code == 0, result.output
    assert "done:" in result.output and (out / LABEL_FILE).is_file() and (out / "summary.json").is_file()
    assert get_model("wrn_28_2").heads == 1
    # the best test accuracy seen in training is reported only as what it is
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_teacher_prec1_on"] == "test"
    # every training image is unlabeled data too, where the method has unlabeled data at all
    assert summary["unlabeled_includes_labeled"] is (method != "supervised")
    if method != "supervised":
        assert "40 labeled / 200 unlabeled images (the labeled ones among them)" in result.output
    assert "best prec@1 on test during training" in result.output and "best-on-test" in result.output
    assert "(the EMA model: the protocol's result)" in result.output   # whatever the method, as USB's
    # evaluated later, the networks see the images as they were trained on them (ImageNet's statistics)
    evaluation = evaluate_checkpoint(summary["checkpoint"], tarball, workers=0, device="cpu", progress=False)
    assert evaluation.normalisation == "imagenet" and "ImageNet's statistics as trained" in evaluation.lines()[0]
    assert evaluation.teacher["top1/avg"] == pytest.approx(summary["teacher_prec1"], abs=1e-9)
    assert evaluation.student["top1/avg"] == pytest.approx(summary["student_prec1"], abs=1e-9)


def _cell_trainer(method, tarball, out, *, copied: bool, monkeypatch):
    config = protocol_config("usb", "cifar10", method, 40, 0, data_dir=str(tarball), device="cpu",
                             overrides=("labeled_batch_size=2", "workers=0"))
    out.mkdir()
    labels = write_protocol_labels(config, out / LABEL_FILE)
    # the pass the usb recipe leaves out, made as the other recipes make it
    monkeypatch.setattr(recipes.Recipe, "teacher_statistics_copied", property(lambda self: copied))
    seed_everything(0)
    return Trainer(config.replace(labels=str(labels)).validate(), out, progress=False).build()


TEACHER_IN_THE_LOSS = {"mean_teacher", "mean_teacher_usb"}   # the others' teachers serve the log only


@pytest.mark.parametrize("method", sorted(USB.methods))
def test_the_usb_recipes_teacher_makes_no_pass_that_would_only_be_logged(method, tarball, tmp_path, monkeypatch):
    """USB's steps run no EMA model but Mean Teacher's; the pass the other methods' teachers make
    in the other recipes would only change their batch-norm statistics, which the usb recipe's
    update overwrites: without it every step's losses are the same and the teacher ends each step
    exactly as with it."""
    ends, losses = {}, {}
    for copied in (True, False):
        trainer = _cell_trainer(method, tarball, tmp_path / str(copied), copied=copied, monkeypatch=monkeypatch)
        passes = []
        trainer.method.teacher.register_forward_hook(lambda *_: passes.append(1))
        seed_everything(1)
        losses[copied] = []
        for step, batch in enumerate(trainer.data.epoch(0, 0, 2)):
            _, result = trainer.step(batch, 0, step, trainer.config.training_length)
            losses[copied].append(float(result.values["loss"]))
        if method in TEACHER_IN_THE_LOSS:
            assert passes
        else:
            assert (len(passes) == 0) is copied and ("ema_top1" in result.values) is not copied
        ends[copied] = {k: v.clone() for k, v in trainer.method.teacher.state_dict().items()}
    assert losses[True] == losses[False]
    assert ends[True].keys() == ends[False].keys()
    for name in ends[True]:
        assert torch.equal(ends[True][name], ends[False][name]), name


SHORT = ["--set", "training_length=2", "--set", "evaluation_span=1", "--set", "print_span=1",
         "--set", "labeled_batch_size=4", "--set", "workers=0", "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_a_grid_of_cells_runs_skips_what_is_finished_and_says_so(tarball, tmp_path, capsys):
    out = tmp_path / "grid"
    command = ["protocol", "usb", "cifar10", "--labels", "40", "--method", "supervised,fixmatch", "--seed", "0,1",
               "--data", str(tarball), "--out", str(out), *SHORT]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    cells = sorted(p.name for p in out.iterdir() if (p / "summary.json").is_file())
    assert cells == ["cifar10_40_fixmatch_0", "cifar10_40_fixmatch_1", "cifar10_40_supervised_0",
                     "cifar10_40_supervised_1"]
    assert "usb cifar10: 4 cells" in result.output and "4 started" in result.output
    # each cell's label file is the split of its own seed, the one a one-cell run draws
    for seed in (0, 1):
        assert read_label_file(out / f"cifar10_40_fixmatch_{seed}" / LABEL_FILE) == read_label_file(
            write_protocol_labels(protocol_config("usb", "cifar10", "fixmatch", 40, seed, data_dir=str(tarball)),
                                  tmp_path / f"one{seed}.txt"))
    assert read_label_file(out / "cifar10_40_fixmatch_0" / LABEL_FILE) != read_label_file(
        out / "cifar10_40_fixmatch_1" / LABEL_FILE)
    again = CliRunner().invoke(cli, command)
    assert again.exit_code == 0 and "0 started, 0 resumed, 4 already finished" in again.output

    # the same command says where each cell stands, and what a larger grid would still run
    status = CliRunner().invoke(cli, [*command, "--status"])
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert len(lines) == 5 and lines[-1] == "4 done (4 cells)"
    # the EMA model's error, supervised-only's too: USB evaluates every algorithm's EMA model
    assert all(" done " in line and "% test error" in line and line.endswith("(teacher)") for line in lines[:4])
    larger = [*command[:command.index("--seed") + 1], "0,1,2", *command[command.index("--seed") + 2:]]
    failed = out / "cifar10_40_fixmatch_2"
    failed.mkdir()
    (failed / "failed.txt").write_text("Traceback ...\nRunFailed: training diverged at step 7 (epoch 0): loss is nan\n")
    capsys.readouterr()
    assert main([*larger, "--status"]) == 1   # a failed cell: a failed run's exit code
    printed, error = capsys.readouterr()
    assert "usb cifar10 40 labels fixmatch seed 2   failed      RunFailed: training diverged" in printed
    assert printed.splitlines()[-1] == "4 done, 1 failed, 1 pending (6 cells)"
    assert f"1 of the 6 cells failed; the first: {failed}: RunFailed: training diverged" in error
    plan = CliRunner().invoke(cli, [*larger, "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert "4 of the 6 cells already finished" in plan.output
    assert f"usb cifar10 40 labels supervised seed 2: {out / 'cifar10_40_supervised_2'}, 2 steps of 4 images" in plan.output
    assert not (out / "cifar10_40_supervised_2").exists()   # nothing run, nothing written


@pytest.mark.slow
def test_a_grid_runs_in_local_processes_one_per_slot(tarball, tmp_path):
    out = tmp_path / "grid"
    result = CliRunner().invoke(cli, ["protocol", "usb", "cifar10", "--labels", "40", "--method", "supervised",
                                      "--seed", "0,1", "--data", str(tarball), "--out", str(out), *SHORT,
                                      "--launcher", "local", "--devices", "cpu,cpu"])
    assert result.exit_code == 0, result.output
    summaries = [json.loads((out / f"cifar10_40_supervised_{s}" / "summary.json").read_text()) for s in (0, 1)]
    assert [s["global_step"] for s in summaries] == [2, 2]
    assert [s["data_seed"] for s in summaries] == [0, 1]


def test_dry_run_and_status_of_a_grid_run_nothing_and_write_nothing(tmp_path):
    out = tmp_path / "grid"
    command = ["protocol", "usb", "cifar10", "--labels", "40,250", "--method", "fixmatch,mean_teacher", "--out", str(out)]
    plan = CliRunner().invoke(cli, [*command, "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert (f"usb cifar10 250 labels mean_teacher seed 0: {out / 'cifar10_250_mean_teacher_0'}, 1,048,576 steps "
            "of 128 images (64 labeled), wrn_28_2") in plan.output
    # no committed benchmark of WRN-28-2 at these minibatches: no estimate, said so
    assert "2 run(s) of wrn_28_2 at batch 512: no committed benchmark, no estimate" in plan.output
    assert "0 of the 4 cells already finished" in plan.output
    status = CliRunner().invoke(cli, [*command, "--status"])
    assert status.exit_code == 0 and status.output.splitlines()[-1] == "4 pending (4 cells)"
    # one cell: its --out is the run directory itself, as the one-cell run puts it
    one = CliRunner().invoke(cli, ["protocol", "usb", "cifar10", "--labels", "40", "--out", str(out), "--status"])
    assert one.output.splitlines() == ["usb cifar10 40 labels mean_teacher seed 0 pending", "1 pending (1 cells)"]
    assert not out.exists()


def test_ctrl_c_in_a_grid_names_the_same_command_not_one_cells_resume(tarball, tmp_path, monkeypatch, capsys):
    from mt_repro.engine import launch

    def interrupted(run, *args, **kwargs):
        raise runs.RunInterrupted(run.directory)   # as a Ctrl-C inside a cell's training leaves it

    monkeypatch.setattr(launch, "_run_one", interrupted)
    command = ["protocol", "usb", "cifar10", "--labels", "40", "--method", "supervised", "--seed", "0,1",
               "--data", str(tarball), "--out", str(tmp_path / "grid"), *SHORT]
    assert main(command) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mt-repro: interrupted; continue with the same command: " + shlex.join(["mt-repro", *command]))


@pytest.mark.parametrize("arguments, message", [
    (["--labels", "40", "--dry-run", "--status"], "give --dry-run (the plan) or --status (the cells' states), not both"),
    (["--labels", "40,x"], "--labels: expected an integer or a comma-separated list of them, got '40,x'"),
    (["--labels", "40,100"], "defines cifar10 with 40, 250, 4000 labels, not 100"),
    (["--labels", "40", "--method", "fixmatch,ict"], "protocol usb has no settings for method 'ict'"),
    (["--labels", "40", "--seed", "0,1", "--overwrite"], "--overwrite starts one cell afresh"),
    (["--labels", "40", "--devices", "cpu,cpu"], "--devices lists the devices of --launcher local or torchrun"),
    (["--labels", "40", "--set", "method_options"], "--set expects key=value, got 'method_options'"),
])
def test_a_bad_grid_is_refused_before_any_cell_is_written(arguments, message, tarball, tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(["protocol", "usb", "cifar10", *arguments, "--data", str(tarball), "--out", str(out)])
    assert_one_line_error((code, *capsys.readouterr()), message)
    assert not out.exists()
