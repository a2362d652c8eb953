"""The runs behind each table: which configuration, which data seeds, how long, and running them.

``planned_runs(table)`` lists exactly the runs the original experiment scripts made for the
table's own rows (the ``scheduled`` rows of ``paper_results.csv``; rows quoted from other papers
are context and are not run). Configurations, seeds and lengths come from the shipped
configuration files, which transcribe the original runners:

* Tables 1-3, Mean Teacher and Pi model: ``original_configs/convnet/{svhn,cifar10}_final_eval.toml``
  (``tensorflow/experiments/*_final_eval.py``): data seeds 2000..2009, 2000..2003 with all labels.
* Tables 1-2, supervised-only: ``*_supervised_final_eval.toml``: the original supervised runners
  used data seeds 0..9 (0..3 with all labels), not 2000..2009.
* Table 4: ``original_configs/cifar10_4000.toml`` and ``cifar10_1000.toml``
  (``pytorch/experiments/cifar10_test.py``, label files 10..19; the 1000-label result is the
  paper's appendix A) and ``imagenet_10pct.toml`` (``imagenet_valid.py``: two runs, both with
  label file 00).

A run's directory is named after its cell and seed, not its table, so Table 3's runs without
extra images are Table 1's and run once. The cost of ``--dry-run`` is training steps times images
per minibatch (what passes through the student; the teacher's pass is not counted), with the
ResNet minibatches at the GPU counts of the paper's runs (4 GPUs for CIFAR-10, 10 for ImageNet).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mt_repro.config.compose import convnet_experiment_for, convnet_run, resnet_label_file, resnet_run
from mt_repro.config.convnet import load_experiment
from mt_repro.config.paper import load_paper_config
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.engine import provenance
from mt_repro.engine.launch import GridRun, SlurmSettings, launch
from mt_repro.engine.recipes import check_config
from mt_repro.paper.report import check_output
from mt_repro.paper.results import CellKey, PaperNumber, all_labels, check_table_number, scheduled_numbers

log = logging.getLogger(__name__)

# Table 4's cells and the shipped configuration of each (original_configs/).
RESNET_CONFIGS = provenance.PAPER_CONFIGS


@dataclass(frozen=True)
class PlannedRun:
    table: int
    key: CellKey
    config: str          # configuration name (original_configs/ or original_configs/convnet/)
    data_seed: int       # ConvNet: the split's seed; ResNet: the label file's number
    run_index: int       # distinguishes runs that share a data seed (ImageNet)
    steps: int
    images_per_step: int
    epochs: int | None = None   # ResNet runs: epochs of the unlabeled images

    @property
    def directory(self) -> str:
        """Relative run directory: one per cell and seed, shared between tables."""
        k = self.key
        extra = f"_extra{k.extra_unlabeled}" if k.extra_unlabeled else ""
        return f"{k.dataset}_{k.architecture}_{k.n_labels}{extra}_{k.method}/seed{self.data_seed}_{self.run_index}"

    @property
    def images(self) -> int:
        return self.steps * self.images_per_step

    @property
    def convnet(self) -> bool:
        return self.key.architecture == "convnet13"


def planned_runs(table: int, seeds: int | None = None) -> list[PlannedRun]:
    """Every run the paper made for ``table``'s own rows; ``seeds`` keeps the first N of each cell."""
    check_table_number(table)
    if seeds is not None and seeds < 1:
        raise BadInput(f"--seeds must be at least 1, got {seeds}")
    runs = []
    for number in scheduled_numbers(table):
        cell_runs = _convnet_runs(number) if number.key.architecture == "convnet13" else _resnet_runs(number)
        runs += cell_runs[:seeds] if seeds else cell_runs
    return runs


def _convnet_runs(number: PaperNumber) -> list[PlannedRun]:
    key = number.key
    config = convnet_experiment_for(key.dataset, key.method)
    experiment = load_experiment(config)
    regime = "all" if key.n_labels == all_labels(key.dataset) else "some"
    planned = []
    for seed in experiment.data_seeds[regime]:
        settings = _convnet_config(config, key, seed)
        planned.append(PlannedRun(number.table, key, config, seed, 0, settings.training_length, settings.batch_size))
    if number.n_runs is not None and len(planned) != number.n_runs:
        raise RunFailed(f"{config} lists {len(planned)} data seeds for {key.describe()}, but the paper "
                        f"reports {number.n_runs} runs")
    return planned


def _convnet_config(experiment: str, key: CellKey, data_seed: int, run: dict | None = None):
    n_labeled = "all" if key.n_labels == all_labels(key.dataset) else key.n_labels
    return convnet_run(experiment, n_labeled=n_labeled, method=key.method, data_seed=data_seed,
                       n_extra_unlabeled=key.extra_unlabeled, run=run)


def _resnet_runs(number: PaperNumber) -> list[PlannedRun]:
    key = number.key
    config = RESNET_CONFIGS[(key.dataset, key.n_labels)]
    paper = load_paper_config(config)
    batch = paper.per_gpu["batch_size"] * paper.gpus
    unlabeled_per_step = batch - paper.per_gpu["labeled_batch_size"] * paper.gpus
    epochs = paper.train["epochs"]
    # An epoch is one pass over the unlabeled images (every training image not in the label file).
    steps = (all_labels(key.dataset) - key.n_labels) // unlabeled_per_step * epochs
    n_runs = number.n_runs or len(paper.data_seeds)
    if len(paper.data_seeds) >= n_runs:
        pairs = [(seed, 0) for seed in paper.data_seeds[:n_runs]]
    else:   # ImageNet: the runner repeated its one label file
        pairs = [(paper.data_seeds[0], index) for index in range(n_runs)]
    return [PlannedRun(number.table, key, config, seed, index, steps, batch, epochs) for seed, index in pairs]


def describe_plan(runs: list[PlannedRun]) -> list[str]:
    """The cost estimate of ``table --dry-run``: one line per cell, then the totals."""
    lines, cells = [], {}
    for run in runs:
        cells.setdefault((run.key, run.config), []).append(run)
    for (key, config), cell in cells.items():
        seeds = sorted({r.data_seed for r in cell})
        seed_text = (f"seeds {seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}") \
            + (f" x{len(cell) // len(seeds)}" if len(cell) > len(seeds) else "")
        epochs = f" ({cell[0].epochs} epochs)" if cell[0].epochs else ""
        lines.append(f"{key.describe():54s} {config:28s} {len(cell):3d} runs ({seed_text}), "
                     f"{cell[0].steps:,} steps{epochs} x {cell[0].images_per_step} images")
    total = sum(r.images for r in runs)
    lines.append(f"{len(runs)} runs, {sum(r.steps for r in runs):,} training steps, {total / 1e9:.2f} billion "
                 "images through the student (cost = steps x minibatch images; ResNet minibatches at the "
                 "paper's 4 GPUs for CIFAR-10, 10 for ImageNet)")
    return lines


def inputs_needed(planned: list[PlannedRun], data_dirs: dict[str, str]
                  ) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """What ``--download`` fetches for ``planned``: each dataset ``data_dirs`` does not name (with
    whether a run adds SVHN's extra images), and by dataset the original label files of the
    ResNet runs (relative to ``data-local/labels``), in the order of the runs."""
    datasets: dict[str, bool] = {}
    label_files: dict[str, list[str]] = {}
    for run in planned:
        if run.key.dataset not in data_dirs:
            datasets[run.key.dataset] = datasets.get(run.key.dataset, False) or bool(run.key.extra_unlabeled)
        if not run.convnet:
            files = label_files.setdefault(run.key.dataset, [])
            path = load_paper_config(run.config).label_file_for(run.data_seed)
            if path not in files:
                files.append(path)
    return datasets, label_files


def run_table(table: int, out_dir: str | os.PathLike, *, seeds: int | None = None,
              data_dirs: dict[str, str] | None = None, label_dir=None, gpus: int | None = None,
              device: str = "auto", progress: bool = True, waiting: dict[str, str] | None = None,
              launcher: str = "serial", devices: list[str] | None = None, threads: int | None = None,
              slurm: SlurmSettings | None = None, procs_per_run: int | None = None) -> dict[str, int]:
    """Run, resume or skip every planned run of ``table`` under ``out_dir``; returns counts.
    Every run's settings are composed and checked before the first one starts, and runs that
    will differ from the paper's recipe (``gpus`` other than the paper's) are named then.
    ``waiting``: datasets whose runs wait (not run, counted), each with the reason, said once.
    ``launcher``, ``devices``, ``threads``, ``slurm``, ``procs_per_run``: how the runs are run
    (``mt_repro.engine.launch``)."""
    out_dir = check_output(out_dir, "--out", directory=True)
    data_dirs = data_dirs or {}
    waiting = waiting or {}
    planned = planned_runs(table, seeds)
    left = [run for run in planned if run.key.dataset in waiting]
    for dataset, reason in waiting.items():
        count = sum(run.key.dataset == dataset for run in left)
        if count:
            log.warning(f"Table {table}'s {count} {dataset} run(s) wait: {reason}")
    planned = [run for run in planned if run.key.dataset not in waiting]
    for run in planned:   # every dataset the table needs, before hours of training
        data_dir_for(run, data_dirs)
    if label_dir is None and any(not run.convnet for run in planned):
        raise BadInput("Table 4 needs the original label files: --download fetches them, or --label-dir "
                       "points at the original code's data-local/labels")
    configs = {}
    for run in planned:   # every run's settings, composed and checked before the first starts
        directory = out_dir / run.directory
        if (directory / "summary.json").is_file() or (directory / "config.json").is_file():
            continue
        configs[run] = config_of(run, data_dir_for(run, data_dirs), label_dir, gpus, device)
        check_config(configs[run])
    for line in differences_from_the_paper(configs):
        log.warning(line)
    grid = [GridRun(out_dir / run.directory, configs.get(run), f"{run.key.describe()}, data seed {run.data_seed}",
                    resume_overrides=moved_inputs(run, data_dirs, label_dir) if _interrupted(out_dir / run.directory)
                    else {})
            for run in planned]
    counts = launch(grid, launcher=launcher, devices=devices, threads=threads, progress=progress, slurm=slurm,
                    procs_per_run=procs_per_run)
    return {"skipped": counts.skipped, "resumed": counts.resumed, "started": counts.started, "waiting": len(left)}


def differences_from_the_paper(configs: dict[PlannedRun, object]) -> list[str]:
    """A line for each cell whose runs' settings differ from the paper's recipe (the runs
    ``compare`` will call not comparable), naming the settings."""
    lines = {}
    for run, config in configs.items():
        reference = provenance.paper_recipe(config, run.key.n_labels)
        changed = provenance.differences(config, reference.config) if reference else {}
        if changed and run.key not in lines:
            told = ", ".join(f"{k} {d['paper']} -> {d['run']}" for k, d in changed.items())
            lines[run.key] = (f"{run.key.describe()}: these runs differ from the paper's recipe "
                              f"({reference.name}: {told}); `mt-repro compare` will report them as not "
                              "comparable with the paper")
    return list(lines.values())


def _interrupted(directory: Path) -> bool:
    return (directory / "config.json").is_file() and not (directory / "summary.json").is_file()


def moved_inputs(run: PlannedRun, data_dirs: dict[str, str], label_dir) -> dict[str, str]:
    """What a resumed run of the table is given: where its data (and label file) are now, in
    case they moved since it started; ``runs.resume`` uses them only if they hold what the run
    started with, and refuses them otherwise."""
    given = {"data_dir": str(data_dir_for(run, data_dirs))}
    if not run.convnet and label_dir is not None:
        given["labels"] = str(resnet_label_file(run.config, run.data_seed, label_dir))
    return given


def data_dir_for(run: PlannedRun, data_dirs: dict[str, str]) -> str:
    if run.key.dataset not in data_dirs:
        raise BadInput(f"Table {run.table} needs --data {run.key.dataset}=PATH")
    return data_dirs[run.key.dataset]


def config_of(run: PlannedRun, data_dir: str, label_dir, gpus: int | None, device: str):
    """The settings of a planned run, composed as ``mt-repro cifar10/svhn/imagenet`` composes them."""
    if run.convnet:
        return _convnet_config(run.config, run.key, run.data_seed, {"data_dir": str(data_dir), "device": device})
    label_file = resnet_label_file(run.config, run.data_seed, label_dir)
    return resnet_run(run.config, label_file=label_file, gpus=gpus,
                      run={"data_dir": str(data_dir), "seed": run.run_index, "device": device})
