"""Results are never lost or mixed: a finished run resumed is left as it is, a second run into a
run directory is refused unless told to replace it, messages quoting files cannot drive the
terminal, and files are written with the permissions the umask allows."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from mt_repro.apps import training
from mt_repro.core import fileio
from mt_repro.core.errors import BadInput, one_line, printable
from mt_repro.data import synthetic
from mt_repro.config import compose
from mt_repro.engine import runs
from mt_repro.engine.trainer import remove_run_files, run_files
from mt_repro.logs.runlog import read_rows

LOGS = ("training.jsonl", "validation.jsonl", "ema_validation.jsonl")
RUN_FILES = ("config.json", "summary.json", *LOGS)


def resnet_args(tree: Path, out: Path, *extra) -> list:
    return ["cifar10", "--data", tree, "--label-file", tree.parent / "labels.txt", "--gpus", 1, "--epochs", 1,
            "--workers", 0, "--seed", 0, "--device", "cpu", "--no-progress", "--out", out,
            "--set", "arch=cifar_shakeshake_mini", "--set", "batch_size=8", "--set", "labeled_batch_size=2",
            "--set", "lr_rampdown_epochs=4", "--set", "checkpoint_epochs=1", "--set", "print_freq=1", *extra]


def convnet_args(command: list, data: Path, out: Path, *extra) -> list:
    labels = "100" if command == ["svhn"] else "1000"   # the choices of each command
    return [*command, "--labels", labels, "--data", data, "--steps", 2, "--seed", 0, "--device", "cpu",
            "--no-progress", "--out", out, "--set", "width=0.0625", "--set", "batch_size=20",
            "--set", "evaluation_span=1", "--set", "rampup_length=1", "--set", "rampdown_length=1", *extra]


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory, by its path inside it."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def copy_run(source: Path, destination: Path) -> Path:
    for name, data in snapshot(source).items():
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        (destination / name).write_bytes(data)
    return destination


@pytest.fixture(scope="module")
def svhn_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("svhn")
    synthetic.write_svhn_mat(directory, n_train=200, n_test=40, seed=1)
    return directory


@pytest.fixture(scope="module")
def cifar_tarball(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    return synthetic.write_cifar_tarball(root / "cifar-10-python.tar.gz", n_train=1500, n_test=40)


@pytest.fixture(scope="module")
def finished_resnet_run(tiny_tree, tmp_path_factory) -> Path:
    from mt_repro.cli import main

    out = tmp_path_factory.mktemp("resnet") / "run"
    assert main([str(a) for a in resnet_args(tiny_tree, out)]) == 0
    return out


# --- 1. a finished run, resumed ------------------------------------------------------------------
def assert_kept(result, run: Path, before: dict[str, bytes]) -> None:
    code, out, err = result
    assert code == 0, result
    lines = out.strip().splitlines()
    assert err == "" and len(lines) == 1, result
    assert lines[0].startswith(f"run {run} finished at epoch ")
    assert lines[0].endswith("; nothing to resume (its summary is kept)")
    assert snapshot(run) == before   # summary, config, logs and checkpoints byte for byte


def test_resuming_a_finished_resnet_run_keeps_its_summary(cli, finished_resnet_run):
    run = finished_resnet_run
    before = snapshot(run)
    summary = json.loads(before["summary.json"])
    assert summary["teacher_error1"] is not None and summary["global_step"] == 6
    result = cli("cifar10", "--resume", run, "--no-progress")
    assert_kept(result, run, before)
    assert "finished at epoch 1 (step 6)" in result[1]
    # a change of setting that leaves nothing to train changes nothing either
    assert_kept(cli("cifar10", "--resume", run, "--no-progress", "--set", "lr=0.01"), run, before)


def test_resume_from_python_returns_the_kept_summary(finished_resnet_run):
    before = snapshot(finished_resnet_run)
    kept = runs.resume(finished_resnet_run, progress=False)
    assert isinstance(kept, runs.KeptSummary) and kept == json.loads(before["summary.json"])
    assert snapshot(finished_resnet_run) == before


def test_a_finished_run_lengthened_on_resume_trains_on(cli, finished_resnet_run, tmp_path):
    run = copy_run(finished_resnet_run, tmp_path / "run")
    code, out, err = cli("cifar10", "--resume", run, "--no-progress", "--epochs", 2)
    assert code == 0, err
    assert "done: 2 epochs, 12 steps" in out
    assert [row["epoch"] for row in read_rows(run / "validation.jsonl")] == [1, 2]
    assert [row["step"] for row in read_rows(run / "training.jsonl")] == list(range(1, 13))
    assert json.loads((run / "summary.json").read_text())["global_step"] == 12


def test_a_run_killed_before_its_summary_writes_it_on_resume(cli, finished_resnet_run, tmp_path):
    run = copy_run(finished_resnet_run, tmp_path / "run")
    (run / "summary.json").unlink()
    code, out, err = cli("cifar10", "--resume", run, "--no-progress")
    assert code == 0, err
    assert "done: 1 epochs, 6 steps" in out
    assert json.loads((run / "summary.json").read_text())["teacher_error1"] == \
        json.loads((finished_resnet_run / "summary.json").read_text())["teacher_error1"]


@pytest.mark.parametrize("command", [["svhn"], ["cifar10", "--arch", "convnet13"]], ids=["svhn", "cifar10-convnet13"])
def test_resuming_a_finished_convnet_run_keeps_its_summary(command, cli, svhn_data, cifar_tarball, tmp_path):
    data = svhn_data if command == ["svhn"] else cifar_tarball
    run = tmp_path / "run"
    code, _, err = cli(*convnet_args(command, data, run))
    assert code == 0, err
    before = snapshot(run)
    assert json.loads(before["summary.json"])["teacher_error1"] is not None
    result = cli(*command[:1], "--resume", run, "--no-progress")
    assert_kept(result, run, before)
    assert "(step 2)" in result[1]


# --- 2. a second run into the same --out ----------------------------------------------------------
def test_a_second_run_into_a_run_directory_is_refused(cli, tiny_tree, finished_resnet_run):
    before = snapshot(finished_resnet_run)
    line = assert_one_line_error(cli(*resnet_args(tiny_tree, finished_resnet_run)), str(finished_resnet_run),
                                 "holds a run already", f"--resume {finished_resnet_run}", "--overwrite")
    assert "config.json" in line
    assert snapshot(finished_resnet_run) == before


def test_overwrite_starts_afresh_and_leaves_other_files(cli, tiny_tree, finished_resnet_run, tmp_path):
    run = copy_run(finished_resnet_run, tmp_path / "run")
    (run / "checkpoints" / "checkpoint.7.ckpt").write_bytes(b"from a longer run")
    (run / "checkpoints" / ".last.ckpt.abc123.partial").write_bytes(b"a killed write")
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "mine.ckpt").write_text("mine too")
    (run / "plots").mkdir()
    (run / "plots" / "curves.png").write_bytes(b"png")
    earlier = run_files(run)
    assert len(earlier) == len(snapshot(finished_resnet_run)) + 2
    code, out, err = cli(*resnet_args(tiny_tree, run, "--overwrite"))
    assert code == 0, err
    assert f"removed the {len(earlier)} file(s) of the earlier run in {run}" in out
    assert [row["epoch"] for row in read_rows(run / "validation.jsonl")] == [1]        # each epoch once
    assert [row["step"] for row in read_rows(run / "training.jsonl")] == list(range(1, 7))
    assert not (run / "checkpoints" / "checkpoint.7.ckpt").exists()
    assert not (run / "checkpoints" / ".last.ckpt.abc123.partial").exists()
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoints" / "mine.ckpt").read_text() == "mine too"
    assert (run / "plots" / "curves.png").read_bytes() == b"png"
    assert json.loads((run / "summary.json").read_text())["teacher_error1"] == \
        json.loads((finished_resnet_run / "summary.json").read_text())["teacher_error1"]  # the same seed


def test_overwrite_removes_nothing_when_the_new_run_cannot_start(cli, tiny_tree, finished_resnet_run, tmp_path):
    run = copy_run(finished_resnet_run, tmp_path / "run")
    before = snapshot(run)
    labels = tmp_path / "labels.txt"
    labels.write_text("0_cat.png cat\n99999_cat.png cat\n")
    args = resnet_args(tiny_tree, run, "--overwrite")
    args[args.index("--label-file") + 1] = labels
    assert_one_line_error(cli(*args), "not in the training folder")
    assert snapshot(run) == before


@pytest.mark.parametrize("command", [["svhn"], ["cifar10", "--arch", "convnet13"]], ids=["svhn", "cifar10-convnet13"])
def test_the_convnet_runs_refuse_a_run_directory_too(command, cli, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    assert_one_line_error(cli(*convnet_args(command, tmp_path / "data", run)), "holds a run already",
                          "(checkpoints/last.ckpt)")
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"weights"


def test_a_convnet_run_with_overwrite_starts_afresh(cli, svhn_data, tmp_path):
    run = tmp_path / "run"
    assert cli(*convnet_args(["svhn"], svhn_data, run))[0] == 0
    assert cli(*convnet_args(["svhn"], svhn_data, run))[0] == 2
    code, _, err = cli(*convnet_args(["svhn"], svhn_data, run, "--overwrite"))
    assert code == 0, err
    assert [row["step"] for row in read_rows(run / "ema_validation.jsonl")] == [0, 1, 2]   # each evaluation once


def test_resume_and_overwrite_together_are_refused(cli, finished_resnet_run):
    assert_one_line_error(cli("cifar10", "--resume", finished_resnet_run, "--overwrite"), "not both")


def test_the_digits_demo_keeps_its_earlier_runs_and_refuses_other_settings_without_overwrite(cli, tmp_path):
    args = ["digits", "--labels", 100, "--seeds", 1, "--epochs", 1, "--out", tmp_path, "--no-progress"]
    code, table, err = cli(*args)
    assert code == 0, err
    first = {p: p.read_bytes() for p in tmp_path.rglob("*.jsonl")}
    summaries = {p: p.read_bytes() for p in tmp_path.rglob("summary.json")}
    assert len(summaries) == 2
    # The same command again: the finished runs' results, nothing trained, nothing appended.
    code, again, err = cli(*args)
    assert code == 0, err
    assert again.split("\n")[:4] == table.split("\n")[:4]  # the same table of errors
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.jsonl")} == first
    assert {p: p.read_bytes() for p in tmp_path.rglob("summary.json")} == summaries
    # Other settings into the same runs' directories: refused, the runs left as they were.
    longer = [a if a != 1 else 2 for a in args]
    assert_one_line_error(cli(*longer), "with other settings", "--overwrite")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.jsonl")} == first
    code, _, err = cli(*longer, "--overwrite")
    assert code == 0, err
    for path in first:
        assert path.read_bytes() != first[path], path  # the new, longer run's logs
        if path.name == "validation.jsonl":
            epochs = [row["epoch"] for row in read_rows(path)]
            assert epochs == sorted(set(epochs)), path   # each epoch once


def test_legacy_main_refuses_a_run_directory_unless_resuming_from_it(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert_one_line_error(cli("legacy-main", "--labeled-batch-size", 2, "--out", run, "--device", "cpu"), "holds a run already",
                          f"--resume {run / 'checkpoints' / 'last.ckpt'}")
    assert (run / "config.json").read_text() == "{}"


def test_what_counts_as_a_run_directory(tmp_path):
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    runs.refuse_existing_run(empty)                 # a killed run's empty checkpoints/, other files
    runs.refuse_existing_run(tmp_path / "missing")  # a new directory
    for name in (*RUN_FILES, "checkpoints/checkpoint.3.ckpt", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 ".config.json.x1_y.partial", "checkpoints/.last.ckpt.x1_y.partial"):
        run = tmp_path / name.replace("/", "_")
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("")
        if name.endswith(".partial"):   # a write killed before its rename: no run yet, but removed with one
            runs.refuse_existing_run(run)
        else:
            with pytest.raises(BadInput, match="holds a run already"):
                runs.refuse_existing_run(run)
        runs.refuse_existing_run(run, overwrite=True)
        assert run_files(run) == [run / name]
        assert remove_run_files(run) == [run / name] and not (run / name).exists()


def test_remove_run_files_does_not_follow_a_linked_log_out_of_the_run(tmp_path):
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("keep\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "training.jsonl").symlink_to(elsewhere)
    assert remove_run_files(run) == [run / "training.jsonl"]
    assert elsewhere.read_text() == "keep\n"


# --- 3. table and ablation grids ---------------------------------------------------------------------
def test_ablation_grid_skips_finished_resumes_interrupted_and_starts_new_runs(tmp_path, monkeypatch):
    calls = []

    def fake_train(config, out_dir, **kwargs):
        runs.refuse_existing_run(out_dir, overwrite=kwargs.get("overwrite", False))
        calls.append(("train", out_dir))
        out_dir.mkdir(parents=True)
        (out_dir / "summary.json").write_text("{}")

    def fake_resume(run_dir, **kwargs):
        calls.append(("resume", run_dir))
        (run_dir / "summary.json").write_text("{}")

    monkeypatch.setattr(runs, "train", fake_train)
    monkeypatch.setattr(runs, "resume", fake_resume)
    name = "svhn_250_vary_ema_decay"
    # the interrupted run's config.json is a stand-in: its settings are those of a run of the grid
    monkeypatch.setattr(runs, "read_run_config", lambda directory: compose.convnet_run(name, n_labeled=250))
    choices = training.RunChoices(data_dir=tmp_path / "svhn", out=tmp_path, device="cpu")
    directories = []
    monkeypatch.setattr(training.log, "info", lambda line: directories.append(line))
    total, done = training.ablation_command(name, choices, dry_run=True)
    grid = [Path(line.split(":")[0]) for line in directories]
    assert len(grid) == total >= 3
    (grid[0]).mkdir(parents=True)
    (grid[0] / "summary.json").write_text("{}")
    (grid[1]).mkdir(parents=True)
    (grid[1] / "config.json").write_text("{}")
    (grid[1] / "training.jsonl").write_text("")
    assert training.ablation_command(name, choices) == (total, 1)
    assert calls[0] == ("resume", grid[1]) and [c[0] for c in calls[1:]] == ["train"] * (total - 2)
    calls.clear()
    assert training.ablation_command(name, choices) == (total, total) and calls == []


# --- 4. messages that quote files ---------------------------------------------------------------------
@pytest.mark.parametrize("raw, shown", [
    ("a\x1b[31mb.png", "a\\x1b[31mb.png"),
    ("nul\x00here", "nul\\x00here"),
    ("del\x7f c1\x85 \x9b", "del\\x7f c1\\x85 \\x9b"),
    ("abc\u202etxt.exe \u2066x\u2069 \u200f", "abc\\u202etxt.exe \\u2066x\\u2069 \\u200f"),
    ("tab\there\rcr", "tab\\x09here\\x0dcr"),
    ("line\u2028sep \udc80", "line\\u2028sep \\udc80"),
    ("Käse 日本語 Ωμέγα ✓ 🙂", "Käse 日本語 Ωμέγα ✓ 🙂"),   # letters of every script are kept
])
def test_printable_escapes_what_a_terminal_would_act_on(raw, shown):
    assert printable(raw) == shown
    assert one_line(raw + "\nnext") == shown + " next"


def test_errors_quoting_a_label_file_are_escaped(cli, tiny_tree, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"0_cat.png cat\na\x1b[31mb\x00c\xe2\x80\xaed.png cat\n")
    args = resnet_args(tiny_tree, tmp_path / "run")
    args[args.index("--label-file") + 1] = labels
    line = assert_one_line_error(cli(*args), "a\\x1b[31mb\\x00c\\u202ed.png")
    assert not any(c in line for c in "\x1b\x00\u202e")


def test_errors_naming_a_checkpoint_path_are_escaped(cli, tmp_path):
    code, out, err = cli("inspect", tmp_path / "x\x1b]0;title\x07\u202e.ckpt")
    assert_one_line_error((code, out, err), "x\\x1b]0;title\\x07\\u202e.ckpt")
    assert not any(c in err for c in "\x1b\x07\u202e")


def test_warnings_and_log_lines_are_escaped(capsys):
    from mt_repro.cli import _log_to_console, _warn

    _log_to_console()
    logger = logging.getLogger("mt_repro.a_test")
    logger.warning("image a\x1b[2Jb.png\nis damaged")
    logger.info("read c\u202ed.png\nsecond line")
    _warn("w\x00x")
    out, err = capsys.readouterr()
    assert err.splitlines() == ["mt-repro: warning: image a\\x1b[2Jb.png is damaged", "mt-repro: warning: w\\x00x"]
    assert out.splitlines() == ["read c\\u202ed.png", "second line"]


def test_the_reading_modules_warning_printer_escapes_too(capsys):
    from mt_repro.legacy.reading import stderr_warning

    stderr_warning("global a\x1bb")
    assert capsys.readouterr().err == "mt-repro: warning: global a\\x1bb\n"


# --- 5. permissions ------------------------------------------------------------------------------------
@pytest.fixture
def umask():
    """Set the process's umask for a test; the former one is restored."""
    former = os.umask(0o022)
    os.umask(former)
    yield lambda mask: os.umask(mask)
    os.umask(former)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_atomic_write_gives_a_new_file_the_umasks_permissions(mask, umask, tmp_path):
    umask(mask)
    assert fileio.current_umask() == mask
    fileio.write_text_atomic(tmp_path / "new.json", "{}")
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o666 & ~mask


def test_atomic_write_keeps_a_replaced_files_permissions_and_mode_from(umask, tmp_path):
    umask(0o022)
    target = tmp_path / "f"
    target.write_text("old")
    os.chmod(target, 0o640)
    fileio.write_text_atomic(target, "new")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640 and target.read_text() == "new"
    source = tmp_path / "script"
    source.write_text("")
    os.chmod(source, 0o750)
    fileio.write_bytes_atomic(tmp_path / "copy", b"x", mode_from=source)
    assert stat.S_IMODE(os.stat(tmp_path / "copy").st_mode) == 0o750


def test_the_umask_is_read_without_proc_too(umask, monkeypatch):
    umask(0o037)

    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(fileio, "open", no_proc, raising=False)
    assert fileio.current_umask() == 0o037
    assert os.umask(0o037) == 0o037   # and left as it was


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_port_log_output_gets_the_umask(mask, tmp_path):
    log = tmp_path / "validation.jsonl"
    log.write_text('{"epoch": 1, "step": 6, "top1/avg": 12.5}\n')
    code = ("import os, sys; os.umask(int(sys.argv[1], 8)); from mt_repro.cli import main; "
            "sys.exit(main(['port-log', sys.argv[2], sys.argv[3]]))")
    done = subprocess.run([sys.executable, "-c", code, oct(mask), str(log), str(tmp_path / "validation.csv")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "validation.csv").st_mode) == 0o666 & ~mask
