"""Downloads (``mt_repro.data.downloads``, ``mt-repro download``, ``--download``): served by a
loopback HTTP server through ``$MT_REPRO_DOWNLOAD_MIRROR``.

The real label files come from the ``original_labels`` fixture (never copied into the repo);
dataset files are stand-ins whose digest the tests put in place of the published one, since
the published CIFAR-10 and SVHN files are not on this machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error
from mt_repro.core.errors import BadInput
from mt_repro.data import downloads, synthetic
from mt_repro.data.labels import read_label_file

LABELS_PATH = f"/CuriousAI/mean-teacher/{downloads.ORIGINAL_COMMIT}/pytorch/data-local/labels/"
CIFAR_PATH = "/~kriz/cifar-10-python.tar.gz"
RUNNER_LABEL_FILES = [f"cifar10/{n}_balanced_labels/{seed}.txt" for n in (1000, 4000) for seed in range(10, 20)] \
    + ["ilsvrc2012/128000_balanced_labels/00.txt"]


class Files(http.server.ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes); ``cut``: paths whose transfer stops halfway with
    the full length declared; ``stall``: paths that send one chunk, then wait for ``release``."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.stall: set[str] = set()
        self.release = threading.Event()
        self.requests: list[str] = []

    @property
    def mirror(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        server: Files = self.server
        server.requests.append(self.path)
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in server.stall:
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            server.release.wait(60)
        elif self.path in server.cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    files = Files()
    thread = threading.Thread(target=files.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(downloads.MIRROR_ENV, files.mirror)
    yield files
    files.release.set()
    files.shutdown()
    files.server_close()


@pytest.fixture
def served_labels(server, original_labels):
    for relative in RUNNER_LABEL_FILES:
        server.files[LABELS_PATH + relative] = (original_labels / relative).read_bytes()
    return server


def stand_in_tarball(monkeypatch, server, body: bytes, served: bytes | None = None) -> None:
    """Serve ``served`` (default ``body``) as CIFAR-10's tarball, whose digest is ``body``'s."""
    monkeypatch.setattr(downloads, "_CIFAR10", dataclasses.replace(
        downloads._CIFAR10, digest=hashlib.md5(body).hexdigest()))
    server.files[CIFAR_PATH] = body if served is None else served


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# --- must-show: the real label files, and refusals ------------------------------------------
def test_the_real_label_files_are_fetched_verified_and_kept(cli, served_labels, original_labels, tmp_path):
    code, out, err = cli("download", "labels", "--data-root", tmp_path)
    assert code == 0, err
    for relative in RUNNER_LABEL_FILES:
        assert (tmp_path / "labels" / relative).read_bytes() == (original_labels / relative).read_bytes()
    assert f"21 in {tmp_path / 'labels'}" in out
    asked = len(served_labels.requests)
    assert asked == 21
    assert cli("download", "labels", "--data-root", tmp_path)[0] == 0   # in place: checked, not fetched
    assert len(served_labels.requests) == asked


def test_every_recorded_digest_is_the_file_in_original_labels(original_labels):
    checked = 0
    for download in downloads.label_downloads():
        relative = download.path.removeprefix("labels/")
        local = original_labels / relative
        if local.is_file():
            assert hashlib.sha256(local.read_bytes()).hexdigest() == download.digest, relative
            assert local.stat().st_size <= download.max_bytes
            checked += 1
    assert checked == 41 and len(downloads.label_downloads()) == 60


@pytest.mark.slow
def test_cifar10_download_runs_the_paper_run_on_what_it_fetched(cli, served_labels, original_labels, monkeypatch,
                                                                tmp_path):
    """``mt-repro cifar10 --labels 4000 --download``: the tarball and label file 10 fetched into
    the data root, and the run's data is exactly them (a full-size stand-in tarball whose
    images 10.txt names with its classes)."""
    listed = read_label_file(original_labels / "cifar10" / "4000_balanced_labels" / "10.txt")
    train_labels = [i % 10 for i in range(50000)]
    for name, class_name in listed.items():
        train_labels[int(name.split("_")[0])] = synthetic.CIFAR10_CLASSES.index(class_name)
    tarball = synthetic.write_cifar_tarball(tmp_path / "made.tar.gz", 50000, 10000, seed=0, images="flat",
                                            train_labels=train_labels, compresslevel=1)
    stand_in_tarball(monkeypatch, served_labels, tarball.read_bytes())
    started = {}

    def train(config, out, **kwargs):   # the run itself is the trainer's tests' business
        started["config"] = config
        return {"epochs": 0, "global_step": 0, "n_labeled_in_split": 4000, "n_unlabeled": 46000,
                "student_prec1": None, "student_error1": None, "teacher_prec1": None, "teacher_error1": None,
                "checkpoint": "-", "out_dir": str(out)}

    from mt_repro.engine import runs
    monkeypatch.setattr(runs, "train", train)
    root = tmp_path / "root"
    code, out, err = cli("cifar10", "--labels", "4000", "--download", "--data-root", root, "--gpus", "1",
                         "--workers", "0", "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    config = started["config"]
    assert Path(config.data_dir) == root / "cifar10" / "cifar-10-python.tar.gz"
    assert Path(config.labels) == root / "labels" / "cifar10" / "4000_balanced_labels" / "10.txt"
    from mt_repro.data.loaders import training_data
    bundle = training_data(dataclasses.replace(config, workers=0))
    sampler = bundle.train_loader.batch_sampler
    assert len(sampler.labeled_indices) == 4000 and (bundle.n_labeled, bundle.n_unlabeled) == (4000, 46000)
    samples = bundle.train_loader.dataset.samples
    assert {os.path.basename(samples[i][0]) for i in sampler.labeled_indices} == set(listed)


def test_a_label_file_with_one_changed_byte_is_refused_then_the_right_one_accepted(cli, served_labels, tmp_path):
    path = LABELS_PATH + "cifar10/4000_balanced_labels/13.txt"
    right = served_labels.files[path]
    served_labels.files[path] = right[:100] + bytes([right[100] ^ 1]) + right[101:]
    result = cli("download", "labels", "--data-root", tmp_path)
    assert_one_line_error(result, "13.txt", "SHA256", "nothing kept")
    target = tmp_path / "labels" / "cifar10" / "4000_balanced_labels"
    assert "13.txt" not in leftovers(target) and not any(n.startswith(".") for n in leftovers(target))
    served_labels.files[path] = right
    assert cli("download", "labels", "--data-root", tmp_path)[0] == 0
    assert (target / "13.txt").read_bytes() == right


@pytest.mark.parametrize("how", ["truncated file", "transfer cut off", "wrong MD5"])
def test_a_bad_tarball_is_refused_with_one_line_and_a_rerun_succeeds(cli, server, monkeypatch, tmp_path, how):
    body = np.random.default_rng(0).bytes(3 << 20)
    served = {"truncated file": body[: len(body) // 2], "transfer cut off": body,
              "wrong MD5": body[:-1] + b"x"}[how]
    stand_in_tarball(monkeypatch, server, body, served)
    if how == "transfer cut off":
        server.cut.add(CIFAR_PATH)
    result = cli("download", "cifar10", "--data-root", tmp_path)
    assert_one_line_error(result, "cifar-10-python.tar.gz", "refused")
    assert leftovers(tmp_path) == []
    server.cut.clear()
    server.files[CIFAR_PATH] = body
    code, out, err = cli("download", "cifar10", "--data-root", tmp_path)
    assert code == 0, err
    assert (tmp_path / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == body
    assert f"cifar10: {tmp_path / 'cifar10' / 'cifar-10-python.tar.gz'} (--data)" in out


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_download_leaves_nothing_that_passes_for_complete(server, monkeypatch, tmp_path, stop):
    body = np.random.default_rng(1).bytes(3 << 20)
    server.files[CIFAR_PATH] = body
    server.stall.add(CIFAR_PATH)
    env = {**os.environ, downloads.MIRROR_ENV: server.mirror}
    process = subprocess.Popen([sys.executable, "-m", "mt_repro.cli", "download", "cifar10", "--data-root",
                                str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    directory = tmp_path / "cifar10"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in directory.glob(".*")) if directory.exists() else True:
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(stop)
    process.communicate(timeout=60)
    assert process.returncode != 0
    assert not (directory / "cifar-10-python.tar.gz").exists()
    # A killed process's partial file stays hidden; an interrupted one removes its own.
    assert [n for n in leftovers(directory) if not n.startswith(".")] == []
    if stop == signal.SIGINT:
        assert leftovers(directory) == []
    server.stall.clear()
    stand_in_tarball(monkeypatch, server, body)
    assert downloads.fetch(downloads.dataset_downloads("cifar10"), tmp_path)[0].read_bytes() == body
    assert leftovers(directory) == ["cifar-10-python.tar.gz"]   # the stale partial file is gone too


# --- behaviour in place, limits, settings ---------------------------------------------------
def test_a_damaged_file_in_place_is_fetched_again(server, monkeypatch, tmp_path):
    body = b"tarball bytes" * 1000
    stand_in_tarball(monkeypatch, server, body)
    target = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    target.parent.mkdir()
    target.write_bytes(body[:-5])
    said = []
    assert downloads.fetch(downloads.dataset_downloads("cifar10"), tmp_path, say=said.append) == [target]
    assert target.read_bytes() == body
    assert "does not match its MD5 digest: downloading it again" in said[0]


def test_a_file_in_place_that_is_not_a_regular_file_is_refused(tmp_path, monkeypatch, server):
    stand_in_tarball(monkeypatch, server, b"x")
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").mkdir(parents=True)
    with pytest.raises(BadInput, match="is a directory, not a regular file"):
        downloads.fetch(downloads.dataset_downloads("cifar10"), tmp_path)


def test_more_bytes_than_a_file_can_have_are_refused_before_and_while_receiving(server, monkeypatch, tmp_path):
    body = b"y" * 5000
    stand_in_tarball(monkeypatch, server, body)
    monkeypatch.setattr(downloads, "_CIFAR10", dataclasses.replace(downloads._CIFAR10, max_bytes=4096))
    with pytest.raises(BadInput, match="declares 5,000 bytes, more than the 4,096"):
        downloads.fetch(downloads.dataset_downloads("cifar10"), tmp_path)
    assert leftovers(tmp_path) == []


def test_a_server_error_or_no_server_is_a_failed_run(cli, server, monkeypatch, tmp_path):
    result = cli("download", "cifar10", "--data-root", tmp_path)   # nothing served: 404
    assert_one_line_error(result, "HTTP 404", code=1)
    monkeypatch.setenv(downloads.MIRROR_ENV, "http://127.0.0.1:9")   # discard port: refused
    assert_one_line_error(cli("download", "svhn", "--data-root", tmp_path), "train_32x32.mat", "failed", code=1)
    assert leftovers(tmp_path) == []


def test_the_mirror_replaces_scheme_and_host_and_keeps_the_path():
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert downloads.mirrored(url, {}) == url
    assert downloads.mirrored(url, {downloads.MIRROR_ENV: "http://127.0.0.1:8000"}) == \
        "http://127.0.0.1:8000/~kriz/cifar-10-python.tar.gz"
    assert downloads.mirrored(url, {downloads.MIRROR_ENV: "https://mirror.example.org/datasets/"}) == \
        "https://mirror.example.org/datasets/~kriz/cifar-10-python.tar.gz"
    for bad in ("ftp://host", "mirror.example.org", "http://", "http://host/?q=1"):
        with pytest.raises(BadInput, match=downloads.MIRROR_ENV):
            downloads.mirrored(url, {downloads.MIRROR_ENV: bad})


def test_the_data_root_is_the_option_then_the_variable_then_the_cache(tmp_path):
    assert downloads.data_root(tmp_path / "a", {downloads.DATA_ROOT_ENV: "/b"}) == tmp_path / "a"
    assert downloads.data_root(None, {downloads.DATA_ROOT_ENV: "/b"}) == Path("/b")
    assert downloads.data_root(None, {"XDG_CACHE_HOME": "/c"}) == Path("/c/mt-repro")


def test_what_cannot_be_downloaded_says_what_to_do(cli, tmp_path):
    assert_one_line_error(cli("imagenet", "--download", "--data-root", tmp_path), "ImageNet cannot be downloaded",
                          "--data DIR")
    assert_one_line_error(cli("cifar10", "--data-root", tmp_path), "--data-root", "--download")
    with pytest.raises(BadInput, match="no label file cifar10/2000_balanced_labels/10.txt"):
        downloads.label_downloads(["cifar10/2000_balanced_labels/10.txt"])
    with pytest.raises(BadInput, match="no download of 'mnist'"):
        downloads.dataset_downloads("mnist")


def test_the_usb_protocols_datasets_are_fetched_as_torchvision_checks_them():
    cifar100, stl10 = downloads.dataset_downloads("cifar100")[0], downloads.dataset_downloads("stl10")[0]
    assert (cifar100.name, cifar100.algorithm, cifar100.digest) == ("cifar-100-python.tar.gz", "md5",
                                                                   "eb9058c3a382ffc7106e4002c42a8d85")
    assert (stl10.name, stl10.digest, stl10.max_bytes > 2_640_397_119) == ("stl10_binary.tar.gz",
                                                                           "91f7769df0f17e558f3565bffb0c7dfb", True)
    assert downloads.dataset_path("stl10", Path("r")) == Path("r/stl10/stl10_binary.tar.gz")


def test_protocol_download_fetches_the_dataset_the_cell_trains_on(cli, server, monkeypatch, tmp_path):
    """``mt-repro protocol usb cifar100 --download``: the tarball fetched into the data root and
    the cell's data is it; SVHN's cells fetch the extra file they train on."""
    body = synthetic.write_cifar100_tarball(tmp_path / "c100.tar.gz", n_train=500, n_test=100).read_bytes()
    monkeypatch.setattr(downloads, "_CIFAR100", dataclasses.replace(downloads._CIFAR100,
                                                                    digest=hashlib.md5(body).hexdigest()))
    server.files["/~kriz/cifar-100-python.tar.gz"] = body
    started = {}

    def run_cell(*args, **kwargs):
        started.update(kwargs)
        return {"out_dir": str(tmp_path / "run")}

    from mt_repro.apps import protocol
    monkeypatch.setattr(protocol, "run_cell", run_cell)
    monkeypatch.setattr("mt_repro.cli._print_summary", lambda summary: None)
    root = tmp_path / "root"
    code, out, err = cli("protocol", "usb", "cifar100", "--labels", "400", "--download", "--data-root", root)
    assert code == 0, err
    assert Path(started["data_dir"]) == root / "cifar100" / "cifar-100-python.tar.gz"
    assert (root / "cifar100" / "cifar-100-python.tar.gz").read_bytes() == body
    wanted = []
    monkeypatch.setattr(downloads, "fetch", lambda items, *a, **k: wanted.extend(d.name for d in items))
    assert cli("protocol", "usb", "svhn", "--labels", "40", "--download", "--data-root", root)[0] == 0
    assert wanted == ["train_32x32.mat", "test_32x32.mat", "extra_32x32.mat"]
    assert_one_line_error(cli("protocol", "usb", "mnist", "--labels", "40", "--download", "--data-root", root),
                          "protocol usb has no dataset 'mnist'")


def test_svhn_fetches_its_extra_file_only_for_runs_that_add_it():
    assert [d.name for d in downloads.dataset_downloads("svhn")] == ["train_32x32.mat", "test_32x32.mat"]
    assert [d.name for d in downloads.dataset_downloads("svhn", extra=True)][-1] == "extra_32x32.mat"


# --- tables ---------------------------------------------------------------------------------
def test_table_4_download_fetches_cifar10_and_its_label_files_and_imagenet_waits(cli, served_labels, monkeypatch,
                                                                                 tmp_path):
    body = b"stand-in" * 100
    stand_in_tarball(monkeypatch, served_labels, body)
    from mt_repro.paper import tables
    called = {}

    def run_table(number, out, **kwargs):
        called.update(kwargs)
        return {"started": 0, "resumed": 0, "skipped": 0, "waiting": 1}

    monkeypatch.setattr(tables, "run_table", run_table)
    code, out, err = cli("table", "4", "--seeds", "1", "--download", "--data-root", tmp_path, "--out", tmp_path / "t")
    assert code == 0, err
    assert called["data_dirs"] == {"cifar10": str(tmp_path / "cifar10" / "cifar-10-python.tar.gz")}
    assert called["label_dir"] == tmp_path / "labels"
    assert set(called["waiting"]) == {"imagenet"} and "--data imagenet=DIR" in called["waiting"]["imagenet"]
    fetched = sorted(p.relative_to(tmp_path / "labels").as_posix() for p in (tmp_path / "labels").rglob("*.txt"))
    assert fetched == ["cifar10/1000_balanced_labels/10.txt", "cifar10/4000_balanced_labels/10.txt"]
    assert "1 waiting for their data" in out


def test_a_table_runs_what_has_data_and_counts_the_runs_that_wait(tmp_path, caplog):
    from mt_repro.paper import tables

    planned = tables.planned_runs(4, seeds=1)
    for run in planned:
        if run.key.dataset == "cifar10":
            (tmp_path / run.directory).mkdir(parents=True)
            (tmp_path / run.directory / "summary.json").write_text("{}")
    counts = tables.run_table(4, tmp_path, seeds=1, data_dirs={"cifar10": str(tmp_path)}, label_dir=tmp_path,
                              waiting={"imagenet": "pass --data imagenet=DIR"})
    assert counts == {"skipped": 2, "resumed": 0, "started": 0, "waiting": 1}
    assert "Table 4's 1 imagenet run(s) wait: pass --data imagenet=DIR" in caplog.text
