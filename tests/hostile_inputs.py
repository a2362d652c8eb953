"""Corrupted and hostile inputs for every file the toolkit reads, with the error each must give.

One source of truth: ``tests/test_hostile_inputs.py`` runs every case through the CLI (exit 2,
one line, the expected words, nothing executed) and checks that README.md's reliability table
is exactly ``render_table()``. To change the table, change the cases.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io

from mt_repro.data import synthetic

import hostile_checkpoints
import hostile_data
import hostile_logs_configs
import hostile_runs
import hostile_legacy_source
from hostile_case import MARKER, Case, Exploit  # noqa: F401 - MARKER is the tests' to check

def _cifar_members() -> dict[str, bytes]:
    return synthetic.cifar_pickles(synthetic.cifar_batches(10, 5, seed=0))


def _tarball(directory: Path, extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    path = directory / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in _cifar_members().items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if extra:
            extra(tar)
    return path


def _prepare(source: Path, directory: Path) -> list:
    return ["prepare", "cifar10", "--from", source, "--to", directory / "out"]


def truncated_tarball(d: Path, tree: Path) -> list:
    path = _tarball(d)
    path.write_bytes(path.read_bytes()[:300])
    return _prepare(path, d)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", payload: bytes = b"x"):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        info.size = len(payload) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)
    return add


def tarball_escaping_path(d: Path, tree: Path) -> list:
    return _prepare(_tarball(d, _member("cifar-10-batches-py/../../evil.sh")), d)


def tarball_symlink(d: Path, tree: Path) -> list:
    return _prepare(_tarball(d, _member("cifar-10-batches-py/readme", tarfile.SYMTYPE, "/etc/passwd")), d)


def tarball_hardlink(d: Path, tree: Path) -> list:
    return _prepare(_tarball(d, _member("cifar-10-batches-py/readme", tarfile.LNKTYPE, "/etc/passwd")), d)


def malicious_batch_pickle(d: Path, tree: Path) -> list:
    members = {**_cifar_members(), "data_batch_1": pickle.dumps({"data": Exploit(f"touch {d / MARKER}")})}
    return _prepare(synthetic.write_tarball(d / "cifar-10-python.tar.gz", members), d)


def _svhn(d: Path) -> Path:
    synthetic.write_svhn_mat(d / "svhn", n_train=30, n_test=5)
    return d / "svhn"


def truncated_mat(d: Path, tree: Path) -> list:
    path = _svhn(d) / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:2000])
    return ["splits", "svhn", "--labels", 10, "--data", d / "svhn", "--out", d / "l.txt"]


def mat_wrong_shape(d: Path, tree: Path) -> list:
    scipy.io.savemat(_svhn(d) / "train_32x32.mat", {"X": np.zeros((28, 28, 1, 3), np.uint8), "y": np.ones((3, 1))})
    return ["splits", "svhn", "--labels", 10, "--data", d / "svhn", "--out", d / "l.txt"]


def _run_with_labels(d: Path, tree: Path, text: bytes) -> list:
    (d / "labels.txt").write_bytes(text)
    return ["cifar10", "--data", tree, "--label-file", d / "labels.txt", "--gpus", 1, "--epochs", 1,
            "--out", d / "run", "--no-progress", "--set", "arch=cifar_shakeshake_mini"]


def labels_unknown_image(d, tree):
    return _run_with_labels(d, tree, b"0_cat.png cat\n99999_cat.png cat\n")


def labels_malformed(d, tree):
    return _run_with_labels(d, tree, b"0_cat.png cat extra\n")


def labels_binary(d, tree):
    return _run_with_labels(d, tree, bytes(range(256)) * 4)


def labels_conflicting(d, tree):
    return _run_with_labels(d, tree, b"0_cat.png cat\n0_cat.png dog\n")


def config_bad_toml(d, tree):
    (d / "demo.toml").write_text("[demo\nlabels = 100\n")
    return ["digits", "--config", d / "demo.toml", "--out", d / "out"]


def config_unknown_key(d, tree):
    return ["cifar10", "--set", "learning_rate=0.1"]


def config_wrong_type(d, tree):
    return ["cifar10", "--set", "epochs=many"]


def run_config_damaged(d, tree):
    (d / "run").mkdir()
    (d / "run" / "config.json").write_text('{"lr": 0.1, "epo')
    return ["cifar10", "--resume", d / "run"]


def checkpoint_malicious(d, tree):
    import torch

    torch.save({"epoch": Exploit(f"touch {d / MARKER}")}, d / "old.ckpt")
    return ["inspect", d / "old.ckpt"]


def checkpoint_truncated(d, tree):
    import torch

    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(1000)}}, d / "old.ckpt")
    data = (d / "old.ckpt").read_bytes()
    (d / "old.ckpt").write_bytes(data[: len(data) // 2])
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


def checkpoint_not_a_checkpoint(d, tree):
    (d / "old.ckpt").write_text("just text\n")
    return ["port-checkpoint", d / "old.ckpt", d / "new.ckpt"]


def msgpack_truncated(d, tree):
    import msgpack

    payload = msgpack.packb({"typ": "dataframe", "klass": "DataFrame", "axes": [], "blocks": [
        {"values": b"\0" * 64, "compress": None, "dtype": "float64", "shape": [1, 8]}]})
    (d / "training.msgpack").write_bytes(payload[:20])
    return ["port-log", d / "training.msgpack", d / "out.csv"]


def msgpack_garbage(d, tree):
    (d / "training.msgpack").write_bytes(b"\x00\x01\x02garbage")
    return ["port-log", d / "training.msgpack", d / "out.csv"]


def runlog_damaged(d, tree):
    (d / "training.jsonl").write_text('{"epoch": 0.0}\n{"epoch": 0.5, "lo\n{"epoch": 1.0}\n')
    return ["port-log", d / "training.jsonl", d / "out.csv"]


def legacy_source_unparseable(d, tree):
    (d / "main.py").write_text("def train(:\n    pass\n")
    return ["patch-legacy", d / "main.py"]


def legacy_source_binary(d, tree):
    (d / "main.py").write_bytes(bytes(range(128, 256)) * 3)
    return ["patch-legacy", d / "main.py"]


def legacy_source_missing(d, tree):
    return ["patch-legacy", d / "no-such-checkout"]


CASES = [
    Case("CIFAR-10 tarball", "truncated", "prepare cifar10", "not a readable CIFAR-10 tarball", truncated_tarball),
    Case("CIFAR-10 tarball", "member path with `../`", "prepare cifar10", "points outside the archive: refused",
         tarball_escaping_path),
    Case("CIFAR-10 tarball", "symbolic link member", "prepare cifar10", "is a link", tarball_symlink),
    Case("CIFAR-10 tarball", "hard link member", "prepare cifar10", "is a link", tarball_hardlink),
    Case("CIFAR-10 batch", "pickle that runs a command", "prepare cifar10", "not allowed", malicious_batch_pickle),
    Case("SVHN `.mat`", "truncated", "splits svhn", "truncated", truncated_mat),
    Case("SVHN `.mat`", "wrong array shape", "splits svhn", "X must be 32 x 32 x 3 x N uint8", mat_wrong_shape),
    Case("label file", "names an image not in the data", "cifar10", "not in the training folder", labels_unknown_image),
    Case("label file", "line with three fields", "cifar10", "expected '<file> <class>'", labels_malformed),
    Case("label file", "binary", "cifar10", "cannot be read", labels_binary),
    Case("label file", "one image, two classes", "cifar10", "labeled twice", labels_conflicting),
    Case("config (TOML)", "syntax error", "digits --config", "cannot be read", config_bad_toml),
    Case("setting", "unknown key", "cifar10 --set", "unknown setting 'learning_rate'", config_unknown_key),
    Case("setting", "wrong type", "cifar10 --set", "epochs='many' is not a valid int", config_wrong_type),
    Case("run directory config.json", "truncated", "cifar10 --resume", "cannot be read", run_config_damaged),
    Case("checkpoint", "pickle that runs a command", "inspect", "system", checkpoint_malicious),
    Case("checkpoint", "truncated", "port-checkpoint", "truncated", checkpoint_truncated),
    Case("checkpoint", "not a checkpoint", "port-checkpoint", "corrupt or truncated", checkpoint_not_a_checkpoint),
    Case("msgpack log", "truncated", "port-log", "truncated", msgpack_truncated),
    Case("msgpack log", "not msgpack", "port-log", "not a pandas msgpack log", msgpack_garbage),
    Case("run log (.jsonl)", "torn row inside", "port-log", "is not a jsonl run log", runlog_damaged),
    Case("legacy source file", "not Python 3 syntax", "patch-legacy", "not Python 3 syntax at line 1",
         legacy_source_unparseable),
    Case("legacy source file", "binary", "patch-legacy", "invalid or missing encoding declaration",
         legacy_source_binary),
    Case("legacy source tree", "does not exist", "patch-legacy", "no such file or directory", legacy_source_missing),
]
# The second round of hostile files, one module per kind of reader.
CASES += (hostile_checkpoints.CASES + hostile_data.CASES + hostile_logs_configs.CASES + hostile_runs.CASES
          + hostile_legacy_source.CASES)

TABLE_START = "<!-- hostile-inputs table: generated from tests/hostile_inputs.py -->"
TABLE_END = "<!-- end of hostile-inputs table -->"


def render_table() -> str:
    lines = ["| file | what is wrong | read by | the one-line error says | exit | peak memory |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c.file} | {c.damage} | `mt-repro {c.command}` | `{c.expected}` | {c.exit_code} | "
              f"{f'< +{c.extra_mib} MiB' if c.extra_mib else ''} |" for c in CASES]
    return "\n".join(lines)
