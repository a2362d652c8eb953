"""scikit-learn's 8x8 digits (the offline demo's data), `mt-repro splits` and `mt-repro digits`."""
from __future__ import annotations

import json
import statistics
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import assert_one_line_error
from mt_repro.data import digits, splits
from mt_repro.data.labels import read_label_file
from mt_repro.apps import digits_demo
from mt_repro.config.compose import load_demo_config
from mt_repro.core.errors import BadInput
from mt_repro.data.sample_extras import SampleExtras


def test_fixed_test_set_and_training_set_partition_the_digits():
    images, labels = digits.load_all()
    assert images.shape == (1797, 8, 8) and 0 <= images.min() and images.max() <= 1
    test, train = digits.test_and_training_indices()
    assert len(test) == digits.N_TEST and len(train) == 1797 - digits.N_TEST
    assert not set(test.tolist()) & set(train.tolist())
    # the standardisation constants are those of the data
    assert abs(images.mean() - digits.MEAN) < 1e-3 and abs(images.std() - digits.STD) < 1e-3


@pytest.mark.parametrize("max_translation, noise_std", [(1, 0.15), (0, 0.15), (2, 0.0), (0, 0.0)])
def test_a_minibatch_at_once_is_the_images_one_by_one(max_translation, noise_std):
    """``DataLoader`` takes a digits minibatch through ``__getitems__``: the same views and the
    same random draws, in the same order, as the original's image-by-image pipeline."""
    train = digits.DigitsArrays("train", digits.TransformTwice(digits.DigitsAugment(max_translation, noise_std)))
    indices = [5, 3, 900, 17, 5, *range(40, 100)]

    def drawn(items):
        after = np.random.randint(1 << 30), torch.randint(1 << 30, ())
        return [(s.numpy(), t.numpy(), label) for (s, t), label in items], after

    np.random.seed(3), torch.manual_seed(3)
    one_by_one = drawn([train[i] for i in indices])
    np.random.seed(3), torch.manual_seed(3)
    at_once = drawn(train.__getitems__(indices))
    assert len(at_once[0]) == len(indices)
    for (student, teacher, label), (student2, teacher2, label2) in zip(one_by_one[0], at_once[0]):
        assert np.array_equal(student, student2) and np.array_equal(teacher, teacher2) and label == label2
    assert one_by_one[1] == at_once[1]  # the generators were left where one by one leaves them
    assert max_translation == 0 and noise_std == 0 or not np.array_equal(at_once[0][0][0], at_once[0][0][1])


def test_minibatches_at_once_through_the_loader_and_sample_extras():
    test = digits.DigitsArrays("test", digits.eval_transform())
    images, labels = next(iter(DataLoader(test, batch_size=7)))
    assert torch.equal(images, torch.stack([test[i][0] for i in range(7)]))
    assert labels.tolist() == [test[i][1] for i in range(7)]
    train = digits.DigitsArrays("train", digits.train_transform())
    wrapped = SampleExtras(train, ["indices", "clean_input"], clean=digits.DigitsArrays("train", digits.eval_transform()))
    np.random.seed(0), torch.manual_seed(0)
    one_by_one = [wrapped[i] for i in (4, 2)]
    np.random.seed(0), torch.manual_seed(0)
    at_once = wrapped.__getitems__([4, 2])
    for (views, label, extras), (views2, label2, extras2) in zip(one_by_one, at_once):
        assert all(torch.equal(a, b) for a, b in zip(views, views2)) and label == label2
        assert extras["indices"] == extras2["indices"] and torch.equal(extras["clean_input"], extras2["clean_input"])


def test_too_large_a_translation_is_refused():
    with pytest.raises(ValueError, match="translation by 8 too large for 8x8 images"):
        digits.DigitsAugment(8).batch(digits.load_all()[0][:2, ..., None])


def test_label_split_is_balanced_and_depends_on_the_seed():
    first, second = digits.label_file_entries(100, 0), digits.label_file_entries(100, 1)
    assert Counter(first.values()) == {str(d): 10 for d in range(10)}
    assert set(first) != set(second)
    assert first == digits.label_file_entries(100, 0)
    _, labels = digits.load_all()
    for name, label in first.items():  # names carry the index into load_digits() and the digit
        index, digit = name[:-4].split("_")
        assert labels[int(index)] == int(digit) == int(label)


def test_dataset_parts_and_augmentation():
    train = digits.DigitsArrays("train", digits.train_transform())
    test = digits.DigitsArrays("test", digits.eval_transform())
    assert len(train) == 1297 and len(test) == 500
    (view1, view2), target = train[0]
    assert view1.shape == (1, 8, 8) and not torch_equal(view1, view2)
    plain, _ = test[0]
    assert plain.shape == (1, 8, 8) and torch_equal(plain, test[0][0])
    with pytest.raises(BadInput, match="parts train and test"):
        digits.DigitsArrays("valid")


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_splits_command_writes_an_original_format_label_file(cli, tmp_path):
    out = tmp_path / "labels.txt"
    code, stdout, _ = cli("splits", "digits", "--labels", 50, "--data-seed", 4, "--out", out)
    assert code == 0
    assert read_label_file(out) == digits.label_file_entries(50, 4)
    assert "50 labeled, 1247 unlabeled" in stdout and stdout.count("  5\n") == 10


def test_splits_command_on_published_files(cli, tmp_path):
    from mt_repro.data import synthetic

    tarball = synthetic.write_cifar_tarball(tmp_path / "c.tar.gz", n_train=200, n_test=10)
    code, stdout, _ = cli("splits", "cifar10", "--labels", 40, "--data", tarball, "--out", tmp_path / "c.txt")
    assert code == 0 and "40 labeled, 160 unlabeled" in stdout
    entries = read_label_file(tmp_path / "c.txt")
    assert Counter(entries.values()) == {name: 4 for name in synthetic.CIFAR10_CLASSES}
    synthetic.write_svhn_mat(tmp_path / "svhn", n_train=300, n_test=10, n_extra=50)
    code, stdout, _ = cli("splits", "svhn", "--labels", 100, "--extra", 20, "--data", tmp_path / "svhn",
                          "--out", tmp_path / "s.txt")
    assert code == 0 and "100 labeled, 200 unlabeled training images, 20 extra unlabeled" in stdout
    named = splits.dataset_split("svhn", 100, 2000, data=tmp_path / "svhn", n_extra_unlabeled=20)
    assert read_label_file(tmp_path / "s.txt") == named.label_file_entries()


def test_methods_are_compared_with_supervised_seed_by_seed():
    line = digits_demo.paired_difference([3.0, 4.0, 5.0, 2.2], [4.0, 4.0, 4.6, 3.0])
    # differences -1.0, 0.0, +0.4, -0.8: mean -0.35, sample std sqrt(1.31 / 3) = 0.661, / sqrt(4) = 0.33
    assert line.startswith("-0.35 ± 0.33 points")
    assert "better on 2 of 4 seeds, equal on 1, worse on 1" in line
    assert digits_demo.paired_difference([2.0], [3.0]) == "-1.00 points"
    with pytest.raises(ValueError):
        digits_demo.paired_difference([2.0, 3.0], [3.0])


@pytest.mark.parametrize("argv, fragments", [
    (["digits", "--labels", "105"], ["105 labels cannot be balanced over 10 classes"]),
    (["digits", "--labels", "1290"], ["need 129", "have fewer"]),
    (["digits", "--labels", "100", "--data-seed", "-1"], ["data seed -1 is outside"]),
    (["digits", "--labels", "100", "--data-seed", str(2**32)], ["outside 0..4294967295"]),
    (["digits", "--labels", "ten"], ["--labels must be a number or 'all'"]),
    (["digits", "--labels", "100", "--extra", "5"], ["only SVHN has extra"]),
    (["svhn", "--labels", "100"], ["pass --data"]),
    (["svhn", "--labels", "100", "--data", "no-such-dir"], ["train_32x32.mat does not exist"]),
])
def test_splits_command_bad_input(cli, tmp_path, argv, fragments):
    assert_one_line_error(cli("splits", *argv, "--out", tmp_path / "x.txt"), *fragments)


def test_demo_settings_are_matched_in_steps(tmp_path):
    demo = load_demo_config()
    mean_teacher, supervised, uniform = (
        digits_demo.demo_configs(demo, method, 100, tmp_path / "l.txt", 0, None, tmp_path, sampling)
        for method, sampling in (("mean_teacher", "two_stream"), ("supervised", "uniform"), ("vat", "uniform")))
    mt_steps = (1297 - 100) // (mean_teacher.batch_size - mean_teacher.labeled_batch_size)
    sup_steps = 100 // supervised.batch_size
    assert supervised.exclude_unlabeled and supervised.consistency is None and supervised.method == "supervised"
    assert supervised.sampling == "two_stream"  # the baseline is labeled minibatches, whatever the others'
    assert supervised.batch_size == mean_teacher.labeled_batch_size
    assert abs(supervised.epochs * sup_steps - mean_teacher.epochs * mt_steps) <= sup_steps
    per_epoch = 1297 // uniform.batch_size
    assert uniform.sampling == "uniform" and abs(uniform.epochs * per_epoch - mean_teacher.epochs * mt_steps) <= per_epoch
    assert (mean_teacher.out_dir, supervised.out_dir, uniform.out_dir) == tuple(
        str(tmp_path / name) for name in ("mean_teacher_0", "supervised_0", "vat_uniform_0"))


@pytest.mark.slow
def test_readme_demo_mean_teacher_beats_supervised(cli, tmp_path):
    """The README's first command, as a new user runs it (about 90 s on 2 idle CPU cores)."""
    code, stdout, _ = cli("digits", "--labels", 100, "--out", tmp_path, "--no-progress")
    assert code == 0, stdout
    table = (tmp_path / "results.txt").read_text()
    assert table.strip() in stdout and "mean ± std" in table
    errors = {method: [json.loads((tmp_path / f"{method}_{seed}" / "summary.json").read_text())
                       for seed in range(3)] for method in ("supervised", "mean_teacher")}
    supervised = statistics.fmean(run["student_error1"] for run in errors["supervised"])
    mean_teacher = statistics.fmean(run["teacher_error1"] for run in errors["mean_teacher"])
    assert f"{supervised:.2f} ± " in table and f"{mean_teacher:.2f} ± " in table
    assert mean_teacher < supervised - 0.5, table


@pytest.mark.parametrize("argv, fragments", [
    (["--labels", "101"], ["101 labels cannot be balanced"]),
    (["--seeds", "0"], ["--seeds must be at least 1"]),
    (["--epochs", "0"], ["--epochs must be at least 1"]),
    (["--config", "missing.toml"], ["demo config missing.toml does not exist"]),
])
def test_digits_demo_bad_input(cli, tmp_path, argv, fragments):
    assert_one_line_error(cli("digits", "--out", tmp_path, *argv), *fragments)
