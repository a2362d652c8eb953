"""Hostile dataset files: tarballs, batch pickles, .mat files, label files, images: cases for ``hostile_inputs.CASES``.

Every builder makes its file from nothing; ``test_data_budgets.py`` uses the same builders.
"""
from __future__ import annotations

import bz2
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from hostile_case import Case
from mt_repro.data import synthetic

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's own array rebuilder, wherever this numpy keeps it
TIB = 1 << 40
MIB = 1 << 20
BATCH = "cifar-10-batches-py/data_batch_1"


def _prepare(source: Path, d: Path) -> list:
    return ["prepare", "cifar10", "--from", source, "--to", d / "out"]


def pax_tarball(d: Path) -> Path:
    """A gzipped tar of under 200 bytes whose PAX header says its one member holds 1 TiB."""
    info = tarfile.TarInfo(BATCH)
    info.pax_headers = {"size": str(TIB)}
    path = d / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)
    return path


def zeros_tarball(d: Path, name: str = BATCH, size: int = 80 * MIB, kind: bytes = tarfile.REGTYPE) -> Path:
    """A .tar.bz2 of a few hundred bytes: one member of ``size`` zero bytes (a decompression bomb)."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    compressor = bz2.BZ2Compressor(9)
    parts = [compressor.compress(info.tobuf(format=tarfile.GNU_FORMAT))]
    zeros = bytes(MIB)
    for _ in range(size // MIB):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.compress(bytes(size % MIB + 1024)))  # the padding and the end of the archive
    parts.append(compressor.flush())
    path = d / "cifar-10-python.tar.bz2"
    path.write_bytes(b"".join(parts))
    return path


def longname_tarball(d: Path) -> Path:
    """A GNU long-name record of 80 MiB of zeros, which tarfile would read whole into memory."""
    return zeros_tarball(d, "././@LongLink", 80 * MIB, tarfile.GNUTYPE_LONGNAME)


class HugeArray:
    """Pickles as numpy pickles an array (``_reconstruct`` then ``__setstate__``) but declares
    ``shape`` with only ``data`` behind it."""

    def __init__(self, shape: tuple, data: bytes = b"", empty_shape: tuple = (0,)):
        self.shape, self.data, self.empty_shape = shape, data, empty_shape

    def __reduce__(self):
        return (_RECONSTRUCT, (np.ndarray, self.empty_shape, b"b"),
                (1, self.shape, np.dtype(np.uint8), False, self.data))


def batch_pickle(array) -> bytes:
    return pickle.dumps({"data": array, "labels": [0]}, protocol=4)


def huge_array_tarball(d: Path, array=None) -> Path:
    members = synthetic.cifar_pickles(synthetic.cifar_batches(10, 5, seed=0))
    members["data_batch_1"] = batch_pickle(array or HugeArray((TIB, 3072)))
    return synthetic.write_tarball(d / "cifar-10-python.tar.gz", members)


def huge_mat(d: Path) -> Path:
    """An SVHN directory whose train_32x32.mat (a few kilobytes) declares X of 6 TiB."""
    synthetic.write_svhn_mat(d / "svhn", n_train=2, n_test=2)
    path = d / "svhn" / "train_32x32.mat"
    data = path.read_bytes()
    dims = struct.pack("<4i", 32, 32, 3, 2)
    assert data.count(dims) == 1
    path.write_bytes(data.replace(dims, struct.pack("<4i", 32, 32, 3, 2**31 - 1)))
    return d / "svhn"


def _svhn_splits(directory: Path, d: Path) -> list:
    return ["splits", "svhn", "--labels", 10, "--data", directory, "--out", d / "l.txt"]


def tree_with(d: Path, damage) -> Path:
    """A small by-image CIFAR-10 tree, and its label file, with ``damage(first PNG)`` done."""
    root = synthetic.write_image_tree(d / "by-image", train_per_class=6, test_per_class=2, seed=0)
    synthetic.write_label_file(d / "labels.txt", root, per_class=2)
    damage(root / "train+val" / "cat" / sorted(os.listdir(root / "train+val" / "cat"))[0])
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def png_bomb_header(path: Path, width: int = 200_000, height: int = 200_000) -> None:
    """The PNG at ``path`` rewritten to declare ``width`` x ``height`` pixels (header only)."""
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    path.write_bytes(bytes(data))


def _train(d: Path, root: Path, *extra) -> list:
    return ["cifar10", "--data", root, "--label-file", d / "labels.txt", "--gpus", 1, "--epochs", 1,
            "--out", d / "run", "--no-progress", "--set", "arch=cifar_shakeshake_mini", *extra]


def _labels_link(d: Path, tree: Path) -> list:
    (d / "labels.txt").symlink_to("/dev/zero")
    return _train(d, tree)


def _labels_fifo(d: Path, tree: Path) -> list:
    os.mkfifo(d / "labels.txt")
    return _train(d, tree)


def _evaluate_corruptions(d: Path, tree: Path) -> list:
    """``evaluate --corruptions`` of a checkpoint on the tiny tree, the published files in d/c10c."""
    import torch

    from mt_repro.models.registry import create_model

    state = create_model("cifar_shakeshake_mini", 10).state_dict()
    torch.save({"arch": "cifar_shakeshake_mini", "state_dict": state, "ema_state_dict": state}, d / "c.ckpt")
    return ["evaluate", d / "c.ckpt", "--data", tree, "--corruptions", d / "c10c", "--corruption", "fog"]


def _corruption_labels(d: Path) -> None:
    np.save(d / "c10c" / "labels.npy", np.zeros(100, np.uint8))


def cifar10_c_huge_header(d: Path, tree: Path) -> list:
    """A .npy of 128 bytes whose header declares 5e9 CIFAR images (15 TiB)."""
    (d / "c10c").mkdir()
    _corruption_labels(d)
    header = {"descr": "|u1", "fortran_order": False, "shape": (5_000_000_000, 32, 32, 3)}
    with open(d / "c10c" / "fog.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    return _evaluate_corruptions(d, tree)


def cifar10_c_link(d: Path, tree: Path) -> list:
    (d / "c10c").mkdir()
    _corruption_labels(d)
    (d / "c10c" / "fog.npy").symlink_to("/dev/zero")
    return _evaluate_corruptions(d, tree)


def cifar10_c_pickled(d: Path, tree: Path) -> list:
    """Object arrays are pickles: np.load(allow_pickle=True) would run this one."""
    from hostile_case import MARKER, Exploit

    (d / "c10c").mkdir()
    _corruption_labels(d)
    np.save(d / "c10c" / "fog.npy", np.array([Exploit(f"touch {d / MARKER}")] * 100, dtype=object), allow_pickle=True)
    return _evaluate_corruptions(d, tree)


def _stl10_cell(data: Path, d: Path) -> list:
    """``protocol usb stl10`` reads the training part first, to draw the split."""
    return ["protocol", "usb", "stl10", "--labels", 40, "--data", data, "--out", d / "run", "--device", "cpu"]


def stl10_directory(d: Path) -> Path:
    return synthetic.write_stl10_binary(d / "stl10", n_train=50, n_test=10, n_unlabeled=10) / "stl10_binary"


def stl10_sparse_images(d: Path) -> list:
    """An extracted release whose train_X.bin is a 10 GiB sparse file (no disk used)."""
    base = stl10_directory(d)
    with open(base / "train_X.bin", "r+b") as f:
        f.truncate(10 << 30)
    return _stl10_cell(base, d)


def stl10_cut_images(d: Path) -> list:
    base = stl10_directory(d)
    with open(base / "train_X.bin", "r+b") as f:
        f.truncate(27648 * 50 - 1000)
    return _stl10_cell(base, d)


def stl10_link_member(d: Path) -> list:
    path = d / "stl10_binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("stl10_binary/train_X.bin")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    return _stl10_cell(path, d)


CASES = [
    Case("STL-10 binary", "`train_X.bin` a 10 GiB sparse file", "protocol usb stl10",
         "more than the 5,000 images of 27,648 bytes the published train_X.bin holds",
         lambda d, tree: stl10_sparse_images(d), extra_mib=256),
    Case("STL-10 binary", "`train_X.bin` cut inside an image", "protocol usb stl10",
         "not a whole number of 27,648-byte (3 x 96 x 96) images", lambda d, tree: stl10_cut_images(d)),
    Case("STL-10 tarball", "symbolic link member", "protocol usb stl10", "is a link",
         lambda d, tree: stl10_link_member(d)),
    Case("CIFAR-10-C `.npy`", "header declaring 15 TiB of images (128 bytes)", "evaluate --corruptions",
         "declares 14305.1 GiB, more than the limit", cifar10_c_huge_header, extra_mib=256),
    Case("CIFAR-10-C `.npy`", "link to /dev/zero", "evaluate --corruptions", "is a character device, not a regular file",
         cifar10_c_link),
    Case("CIFAR-10-C `.npy`", "pickled objects that run a command", "evaluate --corruptions",
         "holds Python objects (pickled), not numbers: refused unread", cifar10_c_pickled),
    Case("CIFAR-10 tarball", "PAX header declaring a 1 TiB member (170 bytes)", "prepare cifar10",
         "declares 1024.0 GiB, more than the limit", lambda d, tree: _prepare(pax_tarball(d), d), extra_mib=256),
    Case("CIFAR-10 tarball", "bzip2 member of 80 MiB of zeros", "prepare cifar10",
         "far more than a CIFAR-10 batch needs", lambda d, tree: _prepare(zeros_tarball(d), d), extra_mib=256),
    Case("CIFAR-10 tarball", "GNU long-name record of 80 MiB of zeros", "prepare cifar10",
         "a tar header declares a record of 83,886,080 bytes", lambda d, tree: _prepare(longname_tarball(d), d),
         extra_mib=256),
    Case("CIFAR-10 batch", "declares a 3 PiB array in a few bytes", "prepare cifar10",
         "CIFAR-10 batch data_batch_1: an array of shape", lambda d, tree: _prepare(huge_array_tarball(d), d),
         extra_mib=256),
    Case("SVHN `.mat`", "declares a 6 TiB array", "splits svhn", "variable 'X' (32 x 32 x 3 x 2147483647 uint8) declares",
         lambda d, tree: _svhn_splits(huge_mat(d), d), extra_mib=256),
    Case("label file", "link to /dev/zero", "cifar10", "is a character device, not a regular file", _labels_link),
    Case("label file", "FIFO", "cifar10", "is a FIFO (named pipe), not a regular file", _labels_fifo),
    Case("by-image tree", "truncated PNG", "cifar10", "1 damaged image(s) of 60: cat/",
         lambda d, tree: _train(d, tree_with(d, truncate))),
    Case("by-image tree", "PNG declaring 4e10 pixels", "cifar10", "declares more than 67,108,864 pixels",
         lambda d, tree: _train(d, tree_with(d, png_bomb_header)), extra_mib=256),
]
