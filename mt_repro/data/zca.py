"""CIFAR-10 input of the original ConvNet runs: global contrast normalisation, then ZCA whitening.

The original TensorFlow half preprocessed CIFAR-10 once (``datasets/preprocess_cifar10.py``,
``data/images/cifar/cifar10/cifar10_gcn_zca_v2.npz``):

* each image, as a row of 3072 values in the published channel-major order (1024 red, 1024
  green, 1024 blue), minus its mean, divided by its Euclidean norm / 55 (a norm below 1e-8
  divides by 1 instead);
* ZCA fitted on the 50000 normalised training rows: mean ``m``, sample covariance ``C``
  (divided by N - 1), ``C + 0.1 I = E diag(d) E^T``, ``W = E diag(d^-1/2) E^T``; every row
  (training and test) becomes ``(x - m) W``;
* rows back to 32 x 32 x 3 (height, width, channel) images, stored as float32 for training.

Computed in float64 like the original. ``gcn_zca`` caches its result on disk under a content
hash of the input arrays and the parameters: the second call with the same inputs reads the
cache (seconds) instead of recomputing (a minute on CIFAR-10), and any change in pixels or
parameters is a different key, so a stale result is never used. Cache directory:
``$MT_REPRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/mt-repro``, else ``~/.cache/mt-repro``.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.fileio import atomic_write

GCN_SCALE = 55.0
GCN_MIN_DIVISOR = 1e-8
ZCA_FILTER_BIAS = 0.1
# Part of every cache key: change it whenever the computation changes.
ALGORITHM = "mt-repro gcn+zca v1 (float64, sample covariance, float32 output)"
CHUNK = 4096  # rows per block when accumulating the covariance and applying W

# How often gcn_zca computed vs. read its cache in this process (tests assert on it).
STATS = {"computed": 0, "reused": 0}


def default_cache_dir() -> Path:
    if os.environ.get("MT_REPRO_CACHE_DIR"):
        return Path(os.environ["MT_REPRO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mt-repro"


def global_contrast_normalize(rows: np.ndarray, scale: float = GCN_SCALE,
                              min_divisor: float = GCN_MIN_DIVISOR) -> np.ndarray:
    """Each row minus its mean, times ``scale`` / its norm (float64, a new array)."""
    x = np.array(rows, dtype=np.float64)
    if x.ndim != 2:
        raise BadInput(f"expected one row per image, got shape {x.shape}")
    x -= x.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x)) / scale
    norms[norms < min_divisor] = 1.0
    x /= norms[:, None]
    return x


@dataclass
class ZCA:
    mean: np.ndarray     # D
    matrix: np.ndarray   # D x D, symmetric

    def apply(self, rows: np.ndarray, dtype=np.float64) -> np.ndarray:
        """``(rows - mean) @ matrix``, block by block, into an array of ``dtype``."""
        out = np.empty((len(rows), self.matrix.shape[1]), dtype=dtype)
        for start in range(0, len(rows), CHUNK):
            block = np.asarray(rows[start:start + CHUNK], dtype=np.float64) - self.mean
            out[start:start + CHUNK] = block @ self.matrix
        return out


def fit_zca(rows: np.ndarray, filter_bias: float = ZCA_FILTER_BIAS) -> ZCA:
    """The whitening ``W = E diag((d)^-1/2) E^T`` of the rows' sample covariance + bias I."""
    rows = np.asarray(rows, dtype=np.float64)
    n, dim = rows.shape
    if n < 2:
        raise BadInput(f"ZCA needs at least 2 rows, got {n}")
    mean = rows.mean(axis=0)
    cov = np.zeros((dim, dim))
    for start in range(0, n, CHUNK):
        block = rows[start:start + CHUNK] - mean
        cov += block.T @ block
    cov /= n - 1
    cov[np.diag_indices(dim)] += filter_bias
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    if not (np.isfinite(eigenvalues).all() and np.isfinite(eigenvectors).all()) or eigenvalues.min() <= 0:
        raise RunFailed(f"ZCA: covariance + {filter_bias} I is not positive definite "
                        f"(smallest eigenvalue {eigenvalues.min():.3g}); use a positive filter bias")
    matrix = (eigenvectors * eigenvalues ** -0.5) @ eigenvectors.T
    return ZCA(mean, matrix)


def cache_key(*arrays: np.ndarray, **params) -> str:
    """sha256 over the algorithm version, the parameters and each array's dtype, shape and bytes."""
    digest = hashlib.sha256(ALGORITHM.encode())
    digest.update(repr(sorted(params.items())).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def gcn_zca(train_rows: np.ndarray, test_rows: np.ndarray, *, scale: float = GCN_SCALE,
            filter_bias: float = ZCA_FILTER_BIAS, min_divisor: float = GCN_MIN_DIVISOR,
            cache_dir: str | os.PathLike | None = None, use_cache: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    """GCN then ZCA fitted on ``train_rows``; returns (train, test) whitened rows, float32.

    The result is cached in ``cache_dir`` (default ``default_cache_dir()``) as
    ``gcn_zca-<key>.npz``; an unreadable cache file is recomputed and replaced.
    """
    params = {"scale": float(scale), "filter_bias": float(filter_bias), "min_divisor": float(min_divisor)}
    path = None
    if use_cache:
        key = cache_key(train_rows, test_rows, **params)
        path = Path(cache_dir or default_cache_dir()) / f"gcn_zca-{key[:32]}.npz"
        cached = _read_cache(path, key)
        if cached is not None:
            STATS["reused"] += 1
            return cached
    train = global_contrast_normalize(train_rows, scale, min_divisor)
    zca = fit_zca(train, filter_bias)
    train_white = zca.apply(train, np.float32)
    del train
    test_white = zca.apply(global_contrast_normalize(test_rows, scale, min_divisor), np.float32)
    STATS["computed"] += 1
    if path is not None:
        _write_cache(path, key, train_white, test_white)
    return train_white, test_white


def _read_cache(path: Path, key: str):
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return data["train"], data["test"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # damaged: recompute and overwrite


def _write_cache(path: Path, key: str, train: np.ndarray, test: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.savez(f, key=np.array(key), train=train, test=test)
    except OSError:
        pass  # a read-only or full cache directory costs time, not correctness


def rows_to_images(rows: np.ndarray) -> np.ndarray:
    """Channel-major rows of 3072 to N x 32 x 32 x 3 (the original's ``to_channel_rgb``)."""
    return np.ascontiguousarray(np.asarray(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def images_to_rows(images: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 images to the published channel-major rows of 3072."""
    return np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2).reshape(len(images), -1))
