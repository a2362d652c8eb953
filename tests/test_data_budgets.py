"""Every dataset reader checks declared sizes before allocating and reads only regular files.

Each test builds its own hostile file (``hostile_data`` holds the builders, shared with the
CLI cases of ``hostile_inputs``)."""
from __future__ import annotations

import io
import logging
import os
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

import hostile_data
from conftest import assert_one_line_error
from mt_repro.core import limits
from mt_repro.core.errors import BadInput
from mt_repro.data import cifar10, images, imagenet, labels, svhn, synthetic


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MT_REPRO_CACHE_DIR", str(tmp_path / "cache"))


def refused(call, *fragments):
    with pytest.raises(BadInput) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- CIFAR-10 tarballs ------------------------------------------------------------------------
def test_a_tiny_tarball_whose_pax_header_declares_a_1_tib_member_is_refused_before_reading(tmp_path):
    path = hostile_data.pax_tarball(tmp_path)
    assert path.stat().st_size < 200
    refused(lambda: cifar10.read_cifar10(path), path.name, "data_batch_1", "declares 1024.0 GiB",
            limits.MEMBER_BYTES.variable)


def test_a_bzip2_member_of_zeros_larger_than_a_batch_is_refused_before_reading(tmp_path):
    path = hostile_data.zeros_tarball(tmp_path)
    assert path.stat().st_size < 4096
    refused(lambda: cifar10.read_cifar10(path), "member 'cifar-10-batches-py/data_batch_1' declares 83,886,080 bytes",
            "far more than a CIFAR-10 batch needs")


def test_the_decompressed_archive_is_bounded_even_in_members_that_are_skipped(tmp_path, monkeypatch):
    path = hostile_data.zeros_tarball(tmp_path, "cifar-10-batches-py/readme.bin", 16 * hostile_data.MIB)
    monkeypatch.setenv(limits.ARCHIVE_BYTES.variable, str(4 * hostile_data.MIB))
    refused(lambda: cifar10.read_cifar10(path), "more than the limit of 4.0 MiB", limits.ARCHIVE_BYTES.variable)


def test_a_tar_record_that_tarfile_would_read_whole_is_refused(tmp_path):
    path = hostile_data.longname_tarball(tmp_path)
    refused(lambda: cifar10.read_cifar10(path), "a tar header declares a record of 83,886,080 bytes")


def test_a_member_cut_short_is_refused(tmp_path):
    members = synthetic.cifar_pickles(synthetic.cifar_batches(10, 5, seed=0))
    path = tmp_path / "cifar-10-python.tar"
    with tarfile.open(path, "w") as tar:  # uncompressed: the cut lands inside the member
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(path.read_bytes()[:3000])
    refused(lambda: cifar10.read_cifar10(path), "not a readable CIFAR-10 tarball")


def test_memory_running_out_inside_tarfile_is_one_line(tmp_path, monkeypatch):
    path = synthetic.write_tarball(tmp_path / "c.tar.gz", synthetic.cifar_pickles(synthetic.cifar_batches(10, 5)))

    def exhausted(self):
        raise MemoryError

    monkeypatch.setattr(tarfile.TarFile, "next", exhausted)
    refused(lambda: cifar10.read_cifar10(path), "c.tar.gz", "more than this machine's memory")


def test_a_tarball_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "cifar.tar.gz")
    refused(lambda: cifar10.read_cifar10(tmp_path / "cifar.tar.gz"), "is a FIFO (named pipe), not a regular file")


def test_an_extracted_batch_larger_than_a_batch_or_not_a_file_is_refused(tmp_path):
    synthetic.write_cifar_batches_dir(tmp_path, n_train=10, n_test=5)
    batch = tmp_path / cifar10.BATCH_DIR / "data_batch_2"
    with open(batch, "r+b") as f:
        f.truncate(cifar10.BATCH_BYTES + 1)  # sparse: no disk used
    refused(lambda: cifar10.read_cifar10(tmp_path), "data_batch_2 declares 67,108,865 bytes")
    batch.unlink()
    batch.symlink_to("/dev/zero")
    refused(lambda: cifar10.read_cifar10(tmp_path), "data_batch_2 is a character device")


# --- CIFAR-10 batch pickles -------------------------------------------------------------------
def test_a_batch_pickle_declaring_a_huge_array_is_refused_before_numpy_allocates():
    payload = hostile_data.batch_pickle(hostile_data.HugeArray((hostile_data.TIB, 3072)))
    assert len(payload) < 300
    refused(lambda: cifar10._unpickle(payload, "data_batch_1"), "CIFAR-10 batch data_batch_1",
            "an array of shape (1099511627776, 3072) uint8 declares", limits.MEMBER_BYTES.variable)


def test_a_huge_array_in_numpys_rebuild_arguments_is_refused_too():
    payload = hostile_data.batch_pickle(hostile_data.HugeArray((1,), b"x", empty_shape=(hostile_data.TIB, 8)))
    refused(lambda: cifar10._unpickle(payload, "data_batch_1"), "an array of shape (1099511627776, 8)")


def test_an_array_whose_bytes_do_not_match_its_shape_is_refused():
    payload = hostile_data.batch_pickle(hostile_data.HugeArray((10, 3072), b"12345"))
    refused(lambda: cifar10._unpickle(payload, "data_batch_1"), "corrupt or truncated",
            "declares 30,720 bytes of data but holds 5")


def test_a_genuine_array_still_unpickles_exactly():
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for payload in (hostile_data.batch_pickle(rows), synthetic.py2_pickle({"data": rows, "labels": [1, 2]})):
        batch = cifar10._unpickle(payload, "data_batch_1")
        assert type(np.asarray(batch["data"])) is np.ndarray
        np.testing.assert_array_equal(np.asarray(batch["data"]), rows)


# --- SVHN .mat --------------------------------------------------------------------------------
def test_a_mat_file_declaring_a_huge_array_is_refused_from_its_header(tmp_path):
    directory = hostile_data.huge_mat(tmp_path)
    assert (directory / "train_32x32.mat").stat().st_size < 20_000
    for call in (lambda: svhn.read_svhn(directory, "train"),
                 lambda: svhn.read_svhn(directory, "train", labels_only=True)):
        refused(call, "train_32x32.mat: variable 'X' (32 x 32 x 3 x 2147483647 uint8) declares 6144.0 GiB",
                limits.MEMBER_BYTES.variable)


def test_a_mat_element_longer_than_the_file_is_refused(tmp_path):
    synthetic.write_svhn_mat(tmp_path, n_train=4, n_test=2)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:-100])
    refused(lambda: svhn.read_svhn(tmp_path, "train"), "more than the file holds", "truncated")


def test_a_mat_file_that_is_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "train_32x32.mat")
    refused(lambda: svhn.read_svhn(tmp_path, "train", labels_only=True), "is a FIFO")


# --- label files ------------------------------------------------------------------------------
def test_a_label_file_that_never_ends_or_blocks_is_refused(tmp_path):
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    refused(lambda: labels.read_label_file(tmp_path / "zero.txt"), "is a character device, not a regular file")
    os.mkfifo(tmp_path / "fifo.txt")
    refused(lambda: labels.read_label_file(tmp_path / "fifo.txt"), "is a FIFO (named pipe), not a regular file")
    os.mkdir(tmp_path / "dir.txt")
    refused(lambda: labels.read_label_file(tmp_path / "dir.txt"), "is a directory")


def test_a_label_file_or_line_above_its_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "labels.txt"
    path.write_text("0_cat.png cat\n" + "x" * 200 + " cat\n")
    assert len(labels.read_label_file(path)) == 2  # within the defaults
    monkeypatch.setenv(limits.LINE_BYTES.variable, "100")
    refused(lambda: labels.read_label_file(path), "label file labels.txt line 2 declares 204 bytes",
            limits.LINE_BYTES.variable)
    monkeypatch.setenv(limits.TEXT_FILE_BYTES.variable, "100")
    refused(lambda: labels.read_label_file(path), "declares 219 bytes", limits.TEXT_FILE_BYTES.variable)


# --- images -----------------------------------------------------------------------------------
def _tree(tmp_path, damage):
    root = hostile_data.tree_with(tmp_path, damage)
    first = sorted(os.listdir(root / "train+val" / "cat"))[0]
    return root, f"cat/{first}"


def test_a_truncated_png_is_found_when_the_dataset_is_built_and_refused_by_name(tmp_path):
    root, name = _tree(tmp_path, hostile_data.truncate)
    refused(lambda: cifar10.open_part(root, "train+val", None), "train+val: 1 damaged image(s) of 60",
            name, "damaged_images=skip")


def test_damaged_images_can_be_skipped_with_their_count_said(tmp_path, caplog):
    root, name = _tree(tmp_path, hostile_data.truncate)
    with caplog.at_level(logging.WARNING, logger="mt_repro"):
        dataset = cifar10.open_part(root, "train+val", None, damaged_images="skip")
    assert len(dataset) == 59 and all(not path.endswith(name) for path, _ in dataset.samples)
    assert dataset.targets == [t for _, t in dataset.samples] and dataset.imgs is dataset.samples
    assert any("skipping 1 damaged image(s) of 60" in r.getMessage() and name in r.getMessage()
               for r in caplog.records)
    dataset[0]  # the rest load
    refused(lambda: cifar10.open_part(root, "train+val", None, damaged_images="maybe"), "not one of refuse, skip")


def test_the_check_is_cached_until_a_file_changes(tmp_path, monkeypatch):
    root = synthetic.write_image_tree(tmp_path / "tree", train_per_class=2, test_per_class=1)
    assert len(cifar10.open_part(root, "train+val", None)) == 20
    checked = []
    monkeypatch.setattr(images, "damage", lambda path: checked.append(path))
    assert len(cifar10.open_part(root, "train+val", None)) == 20
    assert checked == [], "an unchanged tree is decoded again"
    victim = next((root / "train+val" / "cat").iterdir())
    hostile_data.truncate(victim)
    monkeypatch.undo()
    monkeypatch.setenv("MT_REPRO_CACHE_DIR", str(tmp_path / "cache"))
    refused(lambda: cifar10.open_part(root, "train+val", None), f"cat/{victim.name}")


def test_a_png_declaring_more_pixels_than_the_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (4, 4)).save(path)
    hostile_data.png_bomb_header(path, 10_000, 10_000)
    assert "declares 10000 x 10000, more than 67,108,864 pixels" in images.damage(str(path))
    refused(lambda: images.load_rgb(str(path)), "bomb.png (10000 x 10000) declares 100,000,000")
    hostile_data.png_bomb_header(path)  # above PIL's own bound as well
    assert "declares more than 67,108,864 pixels" in images.damage(str(path))


def test_images_that_are_not_regular_files_are_damaged(tmp_path):
    root = synthetic.write_image_tree(tmp_path / "tree", train_per_class=1, test_per_class=1)
    os.mkfifo(root / "train+val" / "cat" / "fifo.png")
    (root / "train+val" / "dog" / "zero.png").symlink_to("/dev/zero")
    message = refused(lambda: cifar10.open_part(root, "train+val", None), "2 damaged image(s) of 12")
    assert "cat/fifo.png (not a regular file)" in message and "dog/zero.png (not a regular file)" in message
    refused(lambda: images.load_rgb(str(root / "train+val" / "cat" / "fifo.png")), "is a FIFO")


def test_imagenet_folders_are_checked_the_same_way(tmp_path):
    for wnid in ("n01", "n02"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (i * 90, 10, 200)).save(tmp_path / "train" / wnid / f"{i}.JPEG", "JPEG")
    assert len(imagenet.open_part(tmp_path, "train", None)) == 4
    hostile_data.truncate(tmp_path / "train" / "n02" / "1.JPEG")
    refused(lambda: imagenet.open_part(tmp_path, "train", None), "1 damaged image(s) of 4", "n02/1.JPEG")
    assert len(imagenet.open_part(tmp_path, "train", None, damaged_images="skip")) == 3


def test_training_refuses_a_damaged_tree_before_it_starts_or_skips_on_request(cli, tmp_path):
    root, name = _tree(tmp_path, hostile_data.truncate)
    argv = hostile_data._train(tmp_path, root)
    assert_one_line_error(cli(*argv), "1 damaged image(s) of 60", name)
    assert not (tmp_path / "run" / "checkpoint.ckpt").exists()
    code, out, err = cli(*argv, "--overwrite", "--workers", 0, "--set", "damaged_images=skip", "--set", "batch_size=8",
                         "--set", "labeled_batch_size=2")
    assert code == 0, err
    assert "skipping 1 damaged image(s) of 60" in err and f"1 labeled image(s) among the damaged ones skipped: {name[4:]}" in err


# --- the original's cifar10_gcn_zca_v2.npz ----------------------------------------------------
def _npz_with_header(path, shape, data: bytes = b""):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train_x.npy", header.getvalue() + data)
    return path


def test_an_npz_array_declaring_more_than_its_limit_or_its_entry_is_refused(tmp_path):
    path = _npz_with_header(tmp_path / "cifar10_gcn_zca_v2.npz", (1 << 30, 32, 32, 3))
    assert path.stat().st_size < 1000
    refused(lambda: cifar10.read_original_npz(path), "train_x.npy (1073741824 x 32 x 32 x 3 float32) declares",
            limits.MEMBER_BYTES.variable)
    _npz_with_header(path, (1000, 32, 32, 3), bytes(64))
    refused(lambda: cifar10.read_original_npz(path), "declares 12,288,000 bytes of data but holds 64")
    path.unlink()
    os.mkfifo(path)
    refused(lambda: cifar10.read_original_npz(path), "is a FIFO")
