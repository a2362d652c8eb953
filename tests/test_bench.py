"""`mt-repro bench`: one run times the pipelines and each mode's steps and writes a dated,
shareable result file; bad input is one line."""
from __future__ import annotations

import datetime

from conftest import assert_one_line_error

TINY = ["--arch", "cifar_shakeshake_mini", "--batch-size", "16", "--labeled-batch-size", "4",
        "--steps", "2", "--warmup", "1", "--workers", "0", "--device", "cpu"]


def test_bench_times_both_modes_and_writes_a_result_file(cli, tmp_path):
    code, out, err = cli("bench", *TINY, "--out", tmp_path / "results")
    assert code == 0, err
    table = out[out.index("mode "):]
    faithful = next(line for line in table.splitlines() if line.startswith("faithful"))
    fast = next(line for line in table.splitlines() if line.startswith("fast "))
    assert "1.00x" in faithful and "float32" in fast and fast.split()[5].endswith("x")
    assert "faithful (per-image PIL)" in out and "fast (batched, CPU)" in out
    assert "no bf16 support" in out  # the CPU's fallback, said once
    files = list((tmp_path / "results").iterdir())
    assert [f.name for f in files] == [f"{datetime.date.today().isoformat()}-cpu-bench-cifar_shakeshake_mini-batch16.txt"]
    text = files[0].read_text()
    for field in ("command: mt-repro bench --arch cifar_shakeshake_mini", "device: CPU", "versions: python",
                  "settings: arch cifar_shakeshake_mini, batch 16 (4 labeled)", "MFU"):
        assert field in text
    assert str(tmp_path) not in text  # where it was written stays out of the shared file


def test_bench_with_a_legacy_checkout_times_its_pipeline(cli, tmp_path):
    package = tmp_path / "pytorch" / "mean_teacher"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    # A stand-in for the original's module: its cifar10() returns a train_transformation.
    (package / "datasets.py").write_text(
        "from mt_repro.data.cifar10 import train_transform\n"
        "def cifar10():\n    return {'train_transformation': train_transform()}\n")
    code, out, err = cli("bench", *TINY, "--mode", "faithful", "--legacy", tmp_path / "pytorch", "--no-save")
    assert code == 0, err
    assert "original code (per-image PIL)" in out and "x original code" in out
    assert "fast " not in out.split("data pipeline")[0]


def test_bench_bad_input(cli, tmp_path):
    assert_one_line_error(cli("bench", *TINY, "--mode", "turbo", "--no-save"), "--mode takes faithful and/or fast")
    assert_one_line_error(cli("bench", *TINY[:-6], "--steps", "0", "--no-save"), "--steps and --warmup")
    assert_one_line_error(cli("bench", *TINY, "--legacy", tmp_path, "--no-save"), "--legacy", "mean_teacher/datasets.py")


def test_bench_compiles_fast_mode_in_the_mode_asked_and_keeps_its_own_file(cli, tmp_path, monkeypatch):
    import torch

    modes = []   # what torch.compile was asked (not run: compiling takes long on a CPU)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **options: modes.append(options.get("mode")))
    code, out, err = cli("bench", *TINY, "--mode", "fast", "--compile-mode", "reduce-overhead",
                         "--out", tmp_path / "results")
    assert code == 0, err
    assert modes == ["reduce-overhead", "reduce-overhead"]   # the student and the teacher
    [result] = (tmp_path / "results").iterdir()
    assert result.name.endswith("-cpu-bench-cifar_shakeshake_mini-batch16-compile-reduce-overhead.txt")
    text = result.read_text()
    assert "--compile --compile-mode reduce-overhead" in text and "compile True (reduce-overhead)" in text
