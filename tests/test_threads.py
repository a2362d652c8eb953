"""Thread counts chosen rather than defaulted (``mt_repro.core.threads``), and the digits demo's
runs in parallel processes: the rule, what overrides it, what the commands say, and that
running a grid's runs at once changes no result."""
from __future__ import annotations

import json

import pytest
import torch

from mt_repro.apps import digits_demo
from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput
from mt_repro.core.threads import SMALL_MODEL_PARAMETERS, choose_threads, parallel_runs
from mt_repro.engine import runs
from mt_repro.engine.threads import network_parameters, use_threads
from mt_repro.models.registry import get_model, list_models, parameter_count


# --- the rule -------------------------------------------------------------------------------------
def test_a_small_network_gets_one_thread_a_large_one_every_core_shared_by_the_runs_at_once():
    small = choose_threads(SMALL_MODEL_PARAMETERS - 1, cores=8, environ={})
    assert small.threads == 1 and "one" in small.reason
    assert choose_threads(SMALL_MODEL_PARAMETERS, cores=8, environ={}).threads == 8
    assert choose_threads(26_000_000, cores=8, processes=3, environ={}).threads == 2
    assert choose_threads(26_000_000, cores=2, processes=4, environ={}).threads == 1   # never 0


def test_threads_given_by_the_option_or_the_environment_decide_instead():
    assert choose_threads(26_000_000, given=3, cores=2, environ={"OMP_NUM_THREADS": "1"}).threads == 3
    from_env = choose_threads(66_000, cores=8, environ={"OMP_NUM_THREADS": "4"})
    assert from_env.threads == 4 and "OMP_NUM_THREADS" in from_env.describe()
    assert choose_threads(66_000, cores=8, environ={"OMP_NUM_THREADS": " "}).threads == 1  # set but empty


@pytest.mark.parametrize("given, environ, message", [
    (0, {}, "--threads must be at least 1, got 0"),
    (None, {"OMP_NUM_THREADS": "many"}, "OMP_NUM_THREADS='many' is not a thread count"),
    (None, {"OMP_NUM_THREADS": "-2"}, "OMP_NUM_THREADS='-2' is not a thread count"),
])
def test_a_bad_thread_count_is_refused_with_what_to_do(given, environ, message):
    with pytest.raises(BadInput, match=message):
        choose_threads(66_000, given=given, environ=environ)


def test_runs_at_once_fill_the_cores_at_the_chosen_threads_and_never_exceed_the_runs():
    assert parallel_runs(12, threads_per_run=1, cores=2) == 2
    assert parallel_runs(12, threads_per_run=2, cores=2) == 1
    assert parallel_runs(1, threads_per_run=1, cores=16) == 1
    assert parallel_runs(12, given_jobs=5, cores=2) == 5
    with pytest.raises(BadInput, match="--jobs must be at least 1, got 0"):
        parallel_runs(12, given_jobs=0)


def test_the_cores_are_those_of_the_affinity_mask(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert choose_threads(26_000_000, environ={}).cores == 1


# --- the network's size -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [m for m in list_models() if get_model(m).recipe == "pytorch"])
def test_the_size_is_counted_without_building_the_network_or_drawing_a_random_number(arch):
    config = TrainConfig(arch=arch)
    torch.manual_seed(0)
    counted = network_parameters(config)
    after = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(4), after)          # the seeded initialisation is untouched
    info = get_model(arch)
    if counted < 5_000_000:                            # the big ones are only built on meta
        assert counted == parameter_count(info.builder(num_classes=10))


def test_the_convnet_recipe_is_counted_with_its_own_options():
    from mt_repro.config.convnet import ConvNetConfig

    assert network_parameters(ConvNetConfig()) > SMALL_MODEL_PARAMETERS       # convnet13: every core
    assert network_parameters(ConvNetConfig(width=0.25)) < network_parameters(ConvNetConfig())


def test_use_threads_sets_torch_and_says_so(caplog, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="mt_repro"):
            choice = use_threads(TrainConfig(arch="digits_convnet"), given=2)
        assert torch.get_num_threads() == 2 == choice.threads
        assert "torch threads: 2 of" in caplog.text and "as --threads says" in caplog.text
    finally:
        torch.set_num_threads(before)


# --- the commands ------------------------------------------------------------------------------------
def test_a_training_command_says_its_thread_count_in_its_first_lines(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runs, "train", lambda config, out, **_: {
        "epochs": 0, "global_step": 0, "n_labeled_in_split": 0, "n_unlabeled": 0, "student_prec1": None,
        "student_error1": None, "teacher_prec1": None, "teacher_error1": None, "checkpoint": "-",
        "out_dir": str(out)})
    label_file = tmp_path / "labels.txt"
    label_file.write_text("0_cat.png cat\n")
    code, out, err = cli("cifar10", "--labels", "1000", "--data", tmp_path, "--label-file", label_file,
                         "--set", "arch=cifar_shakeshake_mini", "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    assert "torch threads: 1 of" in out and "153k-parameter network runs fastest on one" in out
    code, out, err = cli("cifar10", "--labels", "1000", "--data", tmp_path, "--label-file", label_file,
                         "--threads", "0", "--out", tmp_path / "run2", "--no-progress")
    assert code == 2 and err.strip() == "mt-repro: error: --threads must be at least 1, got 0"


def test_the_digits_demo_refuses_a_bad_jobs_count_before_it_trains(cli, tmp_path):
    code, out, err = cli("digits", "--seeds", "1", "--epochs", "1", "--jobs", "0", "--out", tmp_path)
    assert code == 2 and err.strip() == "mt-repro: error: --jobs must be at least 1, got 0"
    assert not (tmp_path / "supervised_0").exists()


@pytest.mark.slow
def test_the_demo_gives_the_same_results_with_its_runs_in_parallel_processes(tmp_path, caplog):
    serial = digits_demo.run_demo(100, 2, 1, tmp_path / "serial", progress=False, jobs=1, threads=1)
    with caplog.at_level("INFO", logger="mt_repro"):
        parallel = digits_demo.run_demo(100, 2, 1, tmp_path / "parallel", progress=True, jobs=2, threads=1)
    assert [(r.method, r.data_seed, r.test_error, r.other_error, r.steps) for r in parallel.runs] == \
        [(r.method, r.data_seed, r.test_error, r.other_error, r.steps) for r in serial.runs]
    for run in serial.runs:   # the whole summaries, not only the errors the table shows
        name = f"{run.method}_{run.data_seed}"
        one, other = (json.loads((tmp_path / d / name / "summary.json").read_text()) for d in ("serial", "parallel"))
        assert {k: v for k, v in one.items() if k not in ("out_dir", "checkpoint", "labels", "provenance")} == \
            {k: v for k, v in other.items() if k not in ("out_dir", "checkpoint", "labels", "provenance")}
    assert "2 runs at a time, each in its own process" in caplog.text
    assert caplog.text.count("runs done)") == 4
    table = parallel.table()
    assert "wall time (2 runs at a time, 1 torch thread each)" in table
    # run again into the same --out: every run is kept, nothing is trained
    again = digits_demo.run_demo(100, 2, 1, tmp_path / "parallel", progress=False, jobs=2, threads=1)
    assert [r.test_error for r in again.runs] == [r.test_error for r in parallel.runs]
