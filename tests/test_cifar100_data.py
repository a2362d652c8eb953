"""CIFAR-100 (``mt_repro.data.cifar100``): the published python tarball and its extracted
directory through the bounded CIFAR reader, with the 100 fine labels."""
from __future__ import annotations

import tarfile

import numpy as np
import pytest

from mt_repro.core.errors import BadInput
from mt_repro.data import cifar10, cifar100, synthetic
from mt_repro.data.registry import get_dataset


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    return synthetic.write_cifar100_tarball(tmp_path_factory.mktemp("c100") / "cifar-100-python.tar.gz",
                                            n_train=300, n_test=100, seed=3)


def test_reads_the_fine_labels_and_their_names(tarball):
    parts = cifar10.read_cifar(tarball, cifar10.CIFAR100)
    written = synthetic.cifar100_batches(300, 100, seed=3)
    train, test = parts["train+val"], parts["test"]
    assert train.labels == written["train"]["fine_labels"] and test.labels == written["test"]["fine_labels"]
    assert len(train.class_names) == 100 and train.class_names[7] == "class_07"
    assert train.images.shape == (300, 32, 32, 3) and train.images.dtype == np.uint8
    # rows of 3072 values, channel-major, as CIFAR-10's
    first = written["train"]["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(train.images[0], first)


def test_tarball_and_extracted_directory_agree(tarball, tmp_path):
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    from_dir = cifar10.read_cifar(tmp_path, cifar10.CIFAR100)
    from_tar = cifar10.read_cifar(tarball, cifar10.CIFAR100)
    for part in ("train+val", "test"):
        assert from_dir[part].labels == from_tar[part].labels
        assert np.array_equal(from_dir[part].images, from_tar[part].images)


def test_the_dataset_opens_both_parts_in_image_folder_order(tarball):
    spec = get_dataset("cifar100")
    assert spec.num_classes == 100 and spec.train_size == 50000
    train = spec.open_part(tarball, spec.train_part, spec.eval_transform())
    test = spec.open_part(tarball, spec.eval_part, spec.eval_transform())
    assert len(train) == 300 and len(test) == 100
    image, target = train[0]
    assert tuple(image.shape) == (3, 32, 32) and 0 <= target < 100
    assert train.samples == sorted(train.samples, key=lambda s: (train.classes[s[1]], s[0]))


def test_a_cifar10_tarball_is_not_taken_for_cifar100(tmp_path):
    ten = synthetic.write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", n_train=20, n_test=10)
    with pytest.raises(BadInput, match=r"lacks cifar-100-python/meta, test, train: not the CIFAR-100 python tarball"):
        cifar100.open_part(ten, "train+val", None)


def test_a_member_larger_than_cifar100_needs_is_refused_before_reading(tmp_path):
    path = tmp_path / "c.tar"
    info = tarfile.TarInfo("cifar-100-python/train")
    info.size = 300 * 1024 * 1024
    path.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT))  # the header alone: refused on its size
    with pytest.raises(BadInput, match=r"declares 314,572,800 bytes, far more than a CIFAR-100 batch needs \(148.9 MiB\)"):
        cifar10.read_cifar(path, cifar10.CIFAR100)


def test_missing_data_says_what_to_pass(tmp_path):
    with pytest.raises(BadInput, match="pass cifar-100-python.tar.gz itself or the directory it extracts to"):
        cifar100.open_part(tmp_path / "nowhere", "train+val", None)
