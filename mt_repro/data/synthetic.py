"""Tiny stand-ins for the real datasets, written in their exact on-disk formats.

Tests, benchmarks and the faithfulness check use these: no machine here reaches the
internet, and a few dozen images are enough to exercise every code path. Pixels come
from a private ``numpy.random.RandomState`` so writing a dataset never touches the
global random generators that faithful training depends on.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


def random_cifar_arrays(n_images: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Images as CIFAR-10 stores them (rows of 3072 uint8, channel-major) and labels.

    Each class gets a distinct mean colour so that a model can learn something.
    """
    rng = np.random.RandomState(seed)
    labels = [i % len(CIFAR10_CLASSES) for i in range(n_images)]
    rng.shuffle(labels)
    base = rng.randint(0, 256, size=(len(CIFAR10_CLASSES), 3, 1, 1))
    noise = rng.randint(-60, 61, size=(n_images, 3, 32, 32))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return images.reshape(n_images, 3072), labels


def write_image_tree(root: str | os.PathLike, train_per_class: int = 6, test_per_class: int = 2,
                     seed: int = 0) -> Path:
    """Write the original by-image layout: ``train+val/<class>/<i>_<class>.png`` and ``test/``."""
    root = Path(root)
    for subdir, per_class, offset in (("train+val", train_per_class, 0),
                                      ("test", test_per_class, 1)):
        n = per_class * len(CIFAR10_CLASSES)
        images, labels = random_cifar_arrays(n, seed * 2 + offset)
        _write_pngs(root / subdir, images, labels)
    return root


def _write_pngs(directory: Path, images: np.ndarray, labels: list[int]) -> None:
    for index, (row, label) in enumerate(zip(images, labels)):
        name = CIFAR10_CLASSES[label]
        (directory / name).mkdir(parents=True, exist_ok=True)
        pixels = np.moveaxis(row.reshape(3, 32, 32), 0, 2)
        Image.fromarray(pixels, "RGB").save(directory / name / f"{index}_{name}.png")


def write_label_file(path: str | os.PathLike, tree_root: str | os.PathLike,
                     per_class: int) -> Path:
    """Label the first ``per_class`` images (by index) of each class, original line format."""
    chosen: list[tuple[int, str]] = []
    for class_dir in sorted(Path(tree_root, "train+val").iterdir()):
        files = sorted(class_dir.iterdir(), key=lambda p: int(p.name.split("_")[0]))
        chosen += [(int(p.name.split("_")[0]), class_dir.name) for p in files[:per_class]]
    path = Path(path)
    path.write_text("".join(f"{i}_{c}.png {c}\n" for i, c in sorted(chosen)))
    return path


def cifar_batches(n_train: int, n_test: int, seed: int = 0) -> dict[str, dict]:
    """The python-version CIFAR-10 pickles: five training batches, a test batch and the meta."""
    train, train_labels = random_cifar_arrays(n_train, seed)
    test, test_labels = random_cifar_arrays(n_test, seed + 1)
    batches: dict[str, dict] = {}
    for k, chunk in enumerate(np.array_split(np.arange(n_train), 5)):
        batches[f"data_batch_{k + 1}"] = {
            "batch_label": f"training batch {k + 1} of 5",
            "labels": [train_labels[i] for i in chunk],
            "data": train[chunk],
            "filenames": [f"synthetic_{i}.png" for i in chunk],
        }
    batches["test_batch"] = {"batch_label": "testing batch 1 of 1", "labels": test_labels,
                             "data": test, "filenames": [f"test_{i}.png" for i in range(n_test)]}
    batches["batches.meta"] = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": n_train // 5,
                               "num_vis": 3072}
    return batches


def write_cifar_tarball(path: str | os.PathLike, n_train: int = 100, n_test: int = 20,
                        seed: int = 0) -> Path:
    """``cifar-10-python.tar.gz`` as published: ``cifar-10-batches-py/`` with latin1 pickles."""
    path = Path(path)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in cifar_batches(n_train, n_test, seed).items():
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path

