"""SVHN from the published ``*_32x32.mat`` files: reading, splits, standardisation, bad files."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from mt_repro.data import splits, svhn, synthetic
from mt_repro.core.errors import BadInput
from mt_repro.models.convnet13 import per_image_standardize


@pytest.fixture(scope="module")
def svhn_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("svhn")
    synthetic.write_svhn_mat(directory, n_train=120, n_test=30, n_extra=40, seed=3)
    return directory


def test_reads_published_layout(svhn_dir):
    raw = scipy.io.loadmat(svhn_dir / "train_32x32.mat")
    part = svhn.read_svhn(svhn_dir, "train")
    assert part.images.shape == (120, 32, 32, 3) and part.images.dtype == np.uint8
    # image i is X[:, :, :, i]; the file's 10 is the digit 0
    assert np.array_equal(part.images[7], raw["X"][:, :, :, 7])
    assert np.array_equal(part.labels, np.where(raw["y"].ravel() == 10, 0, raw["y"].ravel()))
    assert 0 in part.labels and 10 not in part.labels
    assert part.file_names()[1] == f"1_{part.labels[1]}.png"
    assert svhn.read_svhn(svhn_dir, "test").file_names()[0].startswith("test_0_")
    labels_only = svhn.read_svhn(svhn_dir, "train", labels_only=True)
    assert labels_only.images is None and np.array_equal(labels_only.labels, part.labels)


def test_training_array_in_the_original_order(svhn_dir):
    split = svhn.split_from_files(svhn_dir, 20, 2000, n_extra_unlabeled=25)
    train = svhn.read_svhn(svhn_dir, "train")
    extra = svhn.read_svhn(svhn_dir, "extra")
    expected = splits.svhn_split(train.labels, 20, 2000, n_extra_unlabeled=25, n_extra=40)
    assert all(np.array_equal(a, b) for a, b in
               zip((split.labeled, split.unlabeled, split.extra), (expected.labeled, expected.unlabeled, expected.extra)))
    images, targets, names = svhn.training_array(svhn_dir, split)
    assert len(images) == len(targets) == len(names) == 120 + 25
    targets = np.asarray(targets)
    assert np.array_equal(targets[:20], train.labels[split.labeled]) and (targets[20:] == -1).all()
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    assert np.array_equal(images[0], train.images[split.labeled[0]])
    assert names[0] == train.file_names()[split.labeled[0]]
    assert np.array_equal(images[-1], extra.images[split.extra[-1]])
    assert names[-1] == f"extra_{split.extra[-1]}_{extra.labels[split.extra[-1]]}.png"


def test_validation_phase_cuts_the_original_size():
    labels = np.arange(73257) % 10
    split = splits.svhn_split(labels, 1000, 2000, test_phase=False)
    assert len(split.validation) == 7325 and len(split.labeled) + len(split.unlabeled) == 73257 - 7325


def test_per_image_standardize_numpy_and_torch_agree():
    images = np.random.RandomState(0).randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    flat = images.reshape(4, -1).astype(np.float64)
    expected = ((flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)).reshape(images.shape)
    # float64 input stays float64: the same computation as numpy's
    exact = per_image_standardize(torch.from_numpy(images.astype(np.float64)))
    assert exact.dtype == torch.float64
    np.testing.assert_allclose(exact.numpy(), expected, rtol=1e-9)
    tensor = per_image_standardize(torch.from_numpy(images).permute(0, 3, 1, 2))
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)


def _write(path, **variables):
    scipy.io.savemat(path, variables, format="5")


def test_bad_files(tmp_path, svhn_dir):
    with pytest.raises(BadInput, match="does not exist"):
        svhn.read_svhn(tmp_path, "train")
    with pytest.raises(BadInput, match="parts train, test, extra"):
        svhn.read_svhn(tmp_path, "valid")
    data = (svhn_dir / "train_32x32.mat").read_bytes()
    (tmp_path / "train_32x32.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated or corrupt"):
        svhn.read_svhn(tmp_path, "train")
    _write(tmp_path / "train_32x32.mat", X=np.zeros((28, 28, 3, 2), np.uint8), y=np.ones((2, 1)))
    with pytest.raises(BadInput, match="X must be 32 x 32 x 3 x N uint8, got 28 x 28 x 3 x 2"):
        svhn.read_svhn(tmp_path, "train")
    _write(tmp_path / "train_32x32.mat", X=np.zeros((32, 32, 3, 2), np.uint8), y=np.ones((3, 1)))
    with pytest.raises(BadInput, match="y must be 2 x 1"):
        svhn.read_svhn(tmp_path, "train")
    _write(tmp_path / "train_32x32.mat", X=np.zeros((32, 32, 3, 2), np.uint8), y=np.array([[1], [11]]))
    with pytest.raises(BadInput, match="labels must be 1..10"):
        svhn.read_svhn(tmp_path, "train")
    _write(tmp_path / "train_32x32.mat", X=np.zeros((32, 32, 3, 2), np.uint8))
    with pytest.raises(BadInput, match="no variable 'y'"):
        svhn.read_svhn(tmp_path, "train")
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(BadInput, match="not a readable .mat"):
        svhn.read_svhn(tmp_path, "train")


def test_missing_extra_file(tmp_path):
    synthetic.write_svhn_mat(tmp_path, n_train=20, n_test=5)
    with pytest.raises(BadInput, match="extra_32x32.mat does not exist"):
        svhn.split_from_files(tmp_path, 10, 0, n_extra_unlabeled=5)


def test_cli_reports_a_truncated_mat_file_in_one_line(cli, svhn_dir, tmp_path):
    from conftest import assert_one_line_error

    data = (svhn_dir / "train_32x32.mat").read_bytes()
    (tmp_path / "train_32x32.mat").write_bytes(data[:1000])
    assert_one_line_error(cli("splits", "svhn", "--labels", 20, "--data", tmp_path, "--out", tmp_path / "l.txt"),
                          "train_32x32.mat", "truncated", "re-download it")


def test_the_pipeline_parts_look_like_imagefolder_and_join_train_and_extra_in_order(svhn_dir):
    train, extra = svhn.read_svhn(svhn_dir, "train"), svhn.read_svhn(svhn_dir, "extra")
    joined = svhn.open_part(svhn_dir, "train+extra", None)
    assert len(joined) == 160 and joined.classes == list(svhn.CLASS_NAMES)
    names = train.file_names() + extra.file_names()
    pixels = np.concatenate([train.images, extra.images])
    # published_order: the items in the files' order, train first
    for position, item in enumerate(joined.published_order[:3] + joined.published_order[-3:]):
        i = position if position < 3 else 160 - 6 + position
        assert joined.samples[item][0] == names[i]
        image, target = joined[item]
        assert np.array_equal(np.asarray(image), pixels[i]) and target == int(names[i].split("_")[-1][0])
    assert len(svhn.open_part(svhn_dir, "test", None)) == 30
    views = svhn.open_part(svhn_dir, "train", svhn.train_transform())[0][0]
    assert len(views) == 2 and views[0].shape == (3, 32, 32)
    with pytest.raises(BadInput, match="SVHN's per-image parts are train, test, extra, train\\+extra, not 'val'"):
        svhn.open_part(svhn_dir, "val", None)
