"""CIFAR-10 input of the ConvNet runs: GCN (scale 55) + ZCA (filter bias 0.1), and its cache."""
from __future__ import annotations

import numpy as np
import pytest

from mt_repro.data import cifar10, synthetic, zca
from mt_repro.core.errors import BadInput


def reference_gcn_zca(train, test, scale=55.0, bias=0.1):
    """The textbook computation, written out without blocks or caching."""
    def gcn(x):
        x = x.astype(np.float64)
        x = x - x.mean(axis=1)[:, None]
        norm = np.sqrt((x ** 2).sum(axis=1)) / scale
        norm[norm < 1e-8] = 1.0
        return x / norm[:, None]

    train_gcn, test_gcn = gcn(train), gcn(test)
    mean = train_gcn.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(train_gcn.T) + bias * np.eye(train.shape[1]))
    whiten = eigenvectors @ np.diag(eigenvalues ** -0.5) @ eigenvectors.T
    return (train_gcn - mean) @ whiten, (test_gcn - mean) @ whiten


@pytest.fixture
def rows():
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (600, 48)).astype(np.uint8), rng.randint(0, 256, (50, 48)).astype(np.uint8)


def test_matches_numpy_reference(rows, tmp_path, monkeypatch):
    monkeypatch.setattr(zca, "CHUNK", 128)  # exercise the block-wise accumulation
    train, test = rows
    ours = zca.gcn_zca(train, test, cache_dir=tmp_path)
    reference = reference_gcn_zca(train, test)
    for got, want in zip(ours, reference):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # whitened training rows: covariance close to identity where the bias is small vs the data
    assert np.abs(np.cov(ours[0].T.astype(np.float64)) - np.eye(48)).max() < 0.2


def test_constant_image_is_left_unscaled():
    out = zca.global_contrast_normalize(np.full((1, 12), 7, np.uint8))
    assert np.array_equal(out, np.zeros((1, 12)))


def test_cache_is_reused_and_invalidated(rows, tmp_path, monkeypatch):
    monkeypatch.setattr(zca, "STATS", {"computed": 0, "reused": 0})
    train, test = rows
    first = zca.gcn_zca(train, test, cache_dir=tmp_path)
    again = zca.gcn_zca(train, test, cache_dir=tmp_path)
    assert zca.STATS == {"computed": 1, "reused": 1}
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len(list(tmp_path.glob("gcn_zca-*.npz"))) == 1

    changed = train.copy()
    changed[3, 5] ^= 1  # one pixel
    zca.gcn_zca(changed, test, cache_dir=tmp_path)
    zca.gcn_zca(train, test, cache_dir=tmp_path, filter_bias=0.2)
    assert zca.STATS == {"computed": 3, "reused": 1}
    assert len(list(tmp_path.glob("gcn_zca-*.npz"))) == 3


def test_damaged_cache_is_recomputed(rows, tmp_path, monkeypatch):
    monkeypatch.setattr(zca, "STATS", {"computed": 0, "reused": 0})
    train, test = rows
    expected = zca.gcn_zca(train, test, cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("gcn_zca-*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    got = zca.gcn_zca(train, test, cache_dir=tmp_path)
    assert zca.STATS["computed"] == 2
    assert np.array_equal(got[0], expected[0])
    assert zca.gcn_zca(train, test, cache_dir=tmp_path) is not None and zca.STATS["reused"] == 1


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MT_REPRO_CACHE_DIR", str(tmp_path / "c"))
    assert zca.default_cache_dir() == tmp_path / "c"


def test_cifar10_from_published_tarball(tmp_path):
    tarball = synthetic.write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", n_train=60, n_test=10)
    data = cifar10.gcn_zca_arrays(tarball, cache_dir=tmp_path / "cache")
    assert data["train_x"].shape == (60, 32, 32, 3) and data["test_x"].shape == (10, 32, 32, 3)
    assert data["train_x"].dtype == np.float32
    rows, _ = zca.images_to_rows(data["train_x"]), None
    assert np.array_equal(zca.rows_to_images(rows), data["train_x"])


def test_bad_arrays():
    with pytest.raises(BadInput, match="one row per image"):
        zca.global_contrast_normalize(np.zeros((2, 3, 4)))
    with pytest.raises(BadInput, match="at least 2 rows"):
        zca.fit_zca(np.zeros((1, 4)))
    with pytest.raises(BadInput, match="does not exist"):
        cifar10.read_original_npz("no-such.npz")
