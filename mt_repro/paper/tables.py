"""The runs behind each table: which configuration, which data seeds, how long.

The paper's numbers are means over runs with fixed data seeds; ``planned_runs(table)`` lists
exactly the runs the original experiment scripts made for the table's own rows (rows quoted from
other papers are not run). Seeds and training lengths are those of the original runners:

* Tables 1-3, Mean Teacher and Π model: ``tensorflow/experiments/{svhn,cifar10}_final_eval.py``,
  data seeds 2000..2009 (2000..2003 with all labels); 180000 steps on SVHN (400000 / 600000
  with 100000 / 500000 extra images), 150000 on CIFAR-10.
* Tables 1-2, supervised: ``{svhn,cifar10}_supervised_final_eval.py``, data seeds 0..9 (0..3
  with all labels); SVHN 40000 steps (180000 with all labels), CIFAR-10 750 epochs of the
  labeled images at batch 100 (150000 steps with all labels).
* Table 4: ``pytorch/experiments/cifar10_test.py`` (label files 10..19) and
  ``imagenet_valid.py`` (two runs, both with label file 00), via ``original_configs/``.

A run's directory is named after its cell and seed, not its table: Table 3's runs without extra
images are Table 1's, and are run once.
"""
from __future__ import annotations

from dataclasses import dataclass

from mt_repro.errors import BadInput
from mt_repro.paper.results import ALL_LABELS, CellKey, PaperNumber, check_table_number, table_numbers

CONVNET_BATCH = 100
SVHN_STEPS = {0: 180000, 100000: 400000, 500000: 600000}
# ImageNet's training set minus nothing: the unlabeled stream of the ResNet runs is every image.
IMAGENET_TRAIN_IMAGES = ALL_LABELS["imagenet"]


@dataclass(frozen=True)
class PlannedRun:
    table: int
    key: CellKey
    config: str          # configuration name (original_configs/)
    data_seed: int
    run_index: int       # distinguishes runs that share a data seed (ImageNet)
    steps: int
    images_per_step: int

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
    for number in table_numbers(table):
        if not number.runnable:
            continue
        cell_runs = _runs_of(number)
        runs += cell_runs[:seeds] if seeds else cell_runs
    return runs


def _runs_of(number: PaperNumber) -> list[PlannedRun]:
    key = number.key
    all_labels = key.n_labels == ALL_LABELS.get(key.dataset)
    if key.architecture == "convnet13":
        if key.method == "supervised":
            config = f"{key.dataset}_supervised_final_eval"
            seeds = range(4) if all_labels else range(10)
            if key.dataset == "svhn":
                steps = 180000 if all_labels else 40000
            else:
                steps = 150000 if all_labels else 750 * key.n_labels // CONVNET_BATCH
        else:
            config = f"{key.dataset}_final_eval"
            seeds = range(2000, 2004) if all_labels else range(2000, 2010)
            steps = SVHN_STEPS[key.extra_unlabeled] if key.dataset == "svhn" else 150000
        return [PlannedRun(number.table, key, config, s, 0, steps, CONVNET_BATCH) for s in seeds]
    from mt_repro.config import load_paper_config

    config = {("cifar10", 4000): "cifar10_4000", ("cifar10", 1000): "cifar10_1000",
              ("imagenet", 128000): "imagenet_10pct"}[(key.dataset, key.n_labels)]
    paper = load_paper_config(config)
    batch = paper.per_gpu["batch_size"] * paper.gpus
    unlabeled_per_step = batch - paper.per_gpu["labeled_batch_size"] * paper.gpus
    train_images = IMAGENET_TRAIN_IMAGES if key.dataset == "imagenet" else ALL_LABELS[key.dataset]
    steps = (train_images - key.n_labels) // unlabeled_per_step * paper.train["epochs"]
    n_runs = number.n_runs or len(paper.data_seeds)
    if len(paper.data_seeds) >= n_runs:
        pairs = [(seed, 0) for seed in paper.data_seeds[:n_runs]]
    else:  # ImageNet: the runner repeated its one data seed
        pairs = [(paper.data_seeds[0], i) for i in range(n_runs)]
    return [PlannedRun(number.table, key, config, seed, index, steps, batch) for seed, index in pairs]


def describe_plan(runs: list[PlannedRun]) -> list[str]:
    """One line per cell: its runs, steps and images (the cost estimate of ``table --dry-run``)."""
    lines, cells = [], {}
    for run in runs:
        cells.setdefault((run.key, run.config), []).append(run)
    for (key, config), cell in cells.items():
        seeds = [r.data_seed for r in cell]
        seed_text = f"seeds {seeds[0]}..{seeds[-1]}" if len(set(seeds)) > 1 else f"seed {seeds[0]} x{len(seeds)}"
        lines.append(f"{key.describe():52s} {config:34s} {len(cell):3d} runs ({seed_text}), "
                     f"{cell[0].steps:,} steps x {cell[0].images_per_step} images each")
    total = sum(r.images for r in runs)
    lines.append(f"{len(runs)} runs, {sum(r.steps for r in runs):,} training steps, "
                 f"{total / 1e9:.2f} billion images through the student in all")
    return lines


def run_table(table: int, out_dir, *, seeds: int | None = None, data_dirs: dict[str, str] | None = None,
              label_dir=None, gpus: int | None = None, device: str = "auto", progress: bool = True,
              echo=print) -> dict[str, int]:
    """Run, resume or skip every planned run of ``table`` under ``out_dir``; returns counts."""
    from pathlib import Path

    out_dir = Path(out_dir)
    counts = {"skipped": 0, "resumed": 0, "started": 0}
    runs = planned_runs(table, seeds)
    for number, run in enumerate(runs, 1):
        directory = out_dir / run.directory
        if (directory / "summary.json").is_file():
            counts["skipped"] += 1
            continue
        echo(f"[{number}/{len(runs)}] {run.key.describe()}, data seed {run.data_seed}: {directory}")
        if (directory / "config.json").is_file():
            if run.convnet:
                from mt_repro.engine import convnet_trainer

                convnet_trainer.resume(directory, data_dir_for(run, data_dirs or {}), progress=progress, echo=echo)
            else:
                from mt_repro.engine import trainer

                trainer.resume(directory, progress=progress, echo=echo)
            counts["resumed"] += 1
            continue
        if run.convnet:
            _start_convnet_run(run, directory, data_dirs or {}, device, progress, echo)
        else:
            _start_resnet_run(run, directory, data_dirs or {}, label_dir, gpus, device, progress, echo)
        counts["started"] += 1
    return counts


def data_dir_for(run: PlannedRun, data_dirs: dict[str, str]) -> str:
    if run.key.dataset not in data_dirs:
        raise BadInput(f"Table {run.table} needs --data {run.key.dataset}=PATH")
    return data_dirs[run.key.dataset]


def _start_resnet_run(run, directory, data_dirs, label_dir, gpus, device, progress, echo) -> None:
    from pathlib import Path

    from mt_repro.config import load_paper_config
    from mt_repro.engine import trainer

    data_dir_for(run, data_dirs)
    if label_dir is None:
        raise BadInput("Table 4 needs the original label files: --label-dir pointing at the original "
                       "code's data-local/labels")
    paper = load_paper_config(run.config)
    label_file = Path(label_dir) / paper.label_file.format(data_seed=run.data_seed)
    if not label_file.is_file():
        raise BadInput(f"label file {label_file} not found (--label-dir should be the original "
                       "code's data-local/labels)")
    config = paper.resolve(gpus=gpus, labels=str(label_file), data_dir=str(data_dirs[run.key.dataset]),
                           seed=run.run_index, device=device)
    trainer.train(config, directory, progress=progress, echo=echo)


def _start_convnet_run(run, directory, data_dirs, device, progress, echo) -> None:
    from mt_repro.engine import convnet_trainer

    convnet_trainer.run_planned(run, directory, data_dirs=data_dirs, device=device, progress=progress, echo=echo)
