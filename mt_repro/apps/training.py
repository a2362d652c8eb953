"""The training commands: the paper's ResNet runs (``mt-repro cifar10``, ``mt-repro imagenet``),
its ConvNet runs (``mt-repro svhn``, ``mt-repro cifar10 --arch convnet13``), their ablations,
``--resume`` of any run directory, and the original command line (``mt-repro legacy-main``).

Each composes its runs' settings in the one place (``mt_repro.config.compose``) and runs them
on the one engine (``mt_repro.engine.runs``); this module only maps a command's choices to
those calls and names the run directories.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mt_repro.config import compose
from mt_repro.config.coerce import parse_overrides
from mt_repro.config.convnet import HINTS as CONVNET_HINTS
from mt_repro.config.convnet import ablation_names, experiment_names, load_experiment
from mt_repro.config.paper import load_paper_config
from mt_repro.config.train import HINTS as TRAIN_HINTS
from mt_repro.core.errors import BadInput
from mt_repro.core.rng import seed_everything
from mt_repro.data import downloads
from mt_repro.data.labels import read_label_file
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import launch, runs
from mt_repro.engine.recipes import check_config
from mt_repro.engine.threads import use_threads
from mt_repro.engine.trainer import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT, SUMMARY_FILE, Trainer
from mt_repro.legacy import main_flags

log = logging.getLogger(__name__)

HINTS = {"pytorch": TRAIN_HINTS, "tensorflow": CONVNET_HINTS}


@dataclass(frozen=True)
class RunChoices:
    """What a training command line chose, before its settings are composed."""

    method: str | None = None
    data_dir: str | Path | None = None
    seed: int | None = None
    device: str = "auto"
    mode: str | None = None
    compile: bool = False
    out: str | Path | None = None
    overrides: tuple[str, ...] = ()   # --set KEY=VALUE
    progress: bool = True
    overwrite: bool = False           # --out holds a run: replace it (else the run is refused)
    threads: int | None = None        # --threads (None: chosen from the network's size)
    init_from: str | Path | None = None   # --init-from: a pre-trained encoder's checkpoint

    def run_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"device": self.device}
        if self.init_from is not None:
            values["init_from"] = str(self.init_from)
        if self.data_dir is not None:
            values["data_dir"] = str(self.data_dir)
        if self.seed is not None:
            values["seed"] = self.seed
        if self.mode is not None:
            values["mode"] = self.mode
        if self.compile:
            values["compile"] = True
        return values


def resnet_command(config_name: str, choices: RunChoices, *, label_file=None, data_seed: int | None = None,
                   label_dir=None, gpus: int | None = None, epochs: int | None = None,
                   workers: int | None = None) -> dict[str, Any]:
    """A ResNet run of the paper (Table 4): its original runner's settings for ``gpus`` GPUs,
    the label file of ``data_seed`` (or ``label_file``), the method's, then ``--set``."""
    paper = load_paper_config(config_name)
    overrides = parse_overrides(choices.overrides, TRAIN_HINTS)  # a typo fails before files are looked for
    if label_file is not None and data_seed is not None:
        raise BadInput("give --label-file or --data-seed, not both")
    own_file = label_file is not None
    if label_file is None:
        label_file = compose.resnet_label_file(config_name, data_seed, label_dir)
        run_name = f"{config_name.split('_', 1)[1]}_{paper.data_seeds[0] if data_seed is None else data_seed}"
    else:
        run_name = f"{config_name.split('_', 1)[1]}_{Path(label_file).stem}"
    run = choices.run_values()
    for key, value in (("epochs", epochs), ("workers", workers)):
        if value is not None:
            run[key] = value
    if choices.method is not None:
        run_name = f"{run_name}_{choices.method}"
    config = compose.resnet_run(config_name, label_file=label_file, method=choices.method, gpus=gpus, run=run,
                                overrides=overrides)
    check_config(config)
    out = choices.out or runs.default_out_dir(config_name, run_name)
    runs.refuse_existing_run(out, overwrite=choices.overwrite)  # before the lines that describe the run
    log.info(f"{paper.title} ({paper.source}), {gpus or paper.gpus} GPU(s)' worth of batch and lr")
    if own_file:
        _say_which_labels(config_name, label_file)
    log.info(describe_settings(config, out, overrides))
    use_threads(config, given=choices.threads)
    return runs.train(config, out, overwrite=choices.overwrite, progress=choices.progress)


def _say_which_labels(config_name: str, label_file) -> None:
    """The label file decides which images are labeled; ``--labels N`` chose the recipe made for
    N labels: a line when the two disagree (a file that cannot be read is the run's to refuse)."""
    expected = config_name.split("_", 1)[1]
    try:
        found = len(read_label_file(label_file))
    except BadInput:
        return
    if expected.isdigit() and found != int(expected):
        log.info(f"label file {Path(label_file).name}: {found} labeled images, the ones trained with; "
                 f"--labels {expected} chose the recipe ({config_name})")


def _runner(dataset: str, method: str, experiment: str | None) -> str:
    """The original runner of a ConvNet run: ``--experiment``, one of ``dataset``'s runners that
    are not ablation grids, else the paper's runner of ``method``."""
    if experiment is None:
        return compose.convnet_experiment_for(dataset, method)
    grids = ablation_names()
    runners = [name for name in experiment_names() if name not in grids and load_experiment(name).dataset == dataset]
    if experiment not in runners:
        grid = f"; {experiment} is an ablation grid: `mt-repro ablation {experiment}`" if experiment in grids else ""
        raise BadInput(f"--experiment {experiment!r} is not a runner of {dataset}; they are: "
                       f"{', '.join(runners)}{grid}")
    return experiment


def _shortened(config, steps: int, overrides: dict[str, Any]) -> tuple[Any, str | None]:
    """``config`` for ``steps`` steps (``--steps``). Fewer than the recipe's: its ramp-up and
    ramp-down (of lr, Adam's betas, consistency weight, EMA decay) shrink in proportion, so a short
    run is the recipe's schedule in miniature rather than a run that starts inside the recipe's
    25,000-step ramp-down at a vanishing learning rate; ramps set with ``--set`` stay as set. More
    than the recipe's: ramps as they are, as the original lengthened its runs with extra images.
    Returns the settings and the line that says what was scaled (None: nothing)."""
    changes: dict[str, Any] = {"training_length": steps}
    if steps < config.training_length:
        for key in ("rampup_length", "rampdown_length"):
            length = getattr(config, key)
            if key not in overrides and length:
                changes[key] = max(1, round(length * steps / config.training_length))
    scaled = ", ".join(f"{key} {getattr(config, key)} -> {changes[key]}" for key in changes if key != "training_length")
    note = f"--steps {steps} of the recipe's {config.training_length}: {scaled}, in proportion" if scaled else None
    return config.replace(**changes).validate(), note


def convnet_command(dataset: str, n_labels: str | None, choices: RunChoices, *, n_extra: int = 0,
                    data_seed: int | None = None, steps: int | None = None,
                    experiment: str | None = None) -> dict[str, Any]:
    """A ConvNet run of the paper (Tables 1-3): the original TensorFlow runner of its method
    (supervised-only's own, else Mean Teacher's and the Π model's) or ``experiment``, its settings
    for the number of labels (None: the runner's first) and extra images, the method's
    ``[convnet]`` table for a method the runner did not run, then ``--set``; ``steps``: a run of
    that many steps (``_shortened``)."""
    method = choices.method or "mean_teacher"
    if choices.init_from is not None:
        raise BadInput("--init-from starts a ResNet-recipe run (cifar10, imagenet, the digits, a protocol) from a "
                       "pre-trained encoder; the ConvNet runs initialise their networks from the data, as the "
                       "original's TensorFlow code")
    name = _runner(dataset, method, experiment)
    experiment = load_experiment(name)
    n_labels = str(experiment.n_labeled[0]) if n_labels is None else n_labels
    if choices.data_dir is None:
        raise BadInput("pass --data: the CIFAR-10 tarball or batches directory, or the directory of "
                       "the SVHN .mat files")
    overrides = parse_overrides(choices.overrides, CONVNET_HINTS)
    n_labeled = n_labels if n_labels == "all" else int(n_labels)
    config = compose.convnet_run(name, n_labeled=n_labeled, method=method, data_seed=data_seed,
                                 n_extra_unlabeled=n_extra, run=choices.run_values(), overrides=overrides)
    config, shortened = _shortened(config, steps, overrides) if steps is not None else (config, None)
    check_config(config)
    extra = f"_extra{n_extra}" if n_extra else ""
    out = choices.out or Path("results") / name / f"{n_labels}{extra}_{method}_{config.data_seed}"
    runs.refuse_existing_run(out, overwrite=choices.overwrite)  # before the lines that describe the run
    log.info(f"{name} ({experiment.source}): {method}, {n_labels} labels{extra and f', {n_extra} extra'}, "
             f"data seed {config.data_seed}, {config.training_length} steps")
    if shortened:
        log.info(shortened)
    log.info(describe_settings(config, out, overrides))
    use_threads(config, given=choices.threads)
    return runs.train(config, out, overwrite=choices.overwrite, progress=choices.progress)


def resume_command(run_dir: str | Path, overrides: Iterable[str] = (), *, epochs: int | None = None,
                   steps: int | None = None, progress: bool = True, data: str | Path | None = None,
                   label_file: str | Path | None = None, arch: str | None = None,
                   threads: int | None = None) -> dict[str, Any]:
    """Continue a run directory of either recipe; ``--set`` in the run's own vocabulary, ``epochs``
    (the ResNet runs) or ``steps`` (the ConvNet runs) to lengthen it. ``data`` and ``label_file``:
    where the run's inputs are now, used if they hold what it started with (refused otherwise);
    ``arch``: the command line's ``--arch``, which must be the run's. A run that had finished,
    and still would with these changes, is left as it is: its summary comes back as a
    ``runs.KeptSummary``."""
    config = runs.read_run_config(run_dir)
    recipe = config.recipe.name
    if arch is not None and arch != config.arch:
        raise BadInput(f"--arch {arch}: run {run_dir} is a {config.arch} run, and a resumed run keeps its network")
    changes = parse_overrides(overrides, HINTS[recipe])
    for flag, key, value in (("--epochs", "epochs", epochs), ("--steps", "training_length", steps)):
        if value is not None:
            if key not in HINTS[recipe]:
                raise BadInput(f"{flag} does not apply to this run (a {recipe}-recipe run); "
                               f"use {'--steps' if flag == '--epochs' else '--epochs'}")
            changes[key] = value
    for flag, key, value in (("--data", "data_dir", data), ("--label-file", "labels", label_file)):
        if value is not None:
            if key not in {item.field for item in runs.inputs_of(config)}:
                raise BadInput(f"{flag} does not apply to run {run_dir} (a {recipe}-recipe run: its split "
                               "is its data seed)")
            changes[key] = str(value)
    chosen = use_threads(config, given=threads, say=False)   # said by resume, if there is training left
    return runs.resume(run_dir, overrides=changes, progress=progress, threads=chosen)


def ablation_command(name: str, choices: RunChoices, *, dry_run: bool = False, launcher: str = "serial",
                     devices: list[str] | None = None, slurm: launch.SlurmSettings | None = None,
                     procs_per_run: int | None = None) -> tuple[int, int]:
    """Every run of one of the paper's SVHN ablations (Figure 4), skipping finished runs and
    resuming interrupted ones, serially or in local processes (``mt_repro.engine.launch``);
    returns (runs, already finished)."""
    if name not in ablation_names():  # (the runners of single runs are not grids)
        raise BadInput(f"no ablation {name!r}; the ablations: {', '.join(ablation_names())}")
    experiment = load_experiment(name)
    overrides = parse_overrides(choices.overrides, CONVNET_HINTS)
    out = Path(choices.out or "results/ablations")
    grid = []
    for data_seed, changes in experiment.ablation_runs():
        label = "_".join(f"{k}={v}" for k, v in changes.items())
        directory = out / name / f"seed{data_seed}" / label
        if dry_run:
            log.info(f"{directory}: {experiment.methods[0]}, {experiment.n_labeled[0]} labels, data seed "
                     f"{data_seed}, {label}")
            continue
        if (directory / SUMMARY_FILE).is_file():
            grid.append(launch.GridRun(directory, None, label))
            continue
        if choices.data_dir is None:
            raise BadInput("pass --data: the directory of the SVHN .mat files")
        config = None
        if not (directory / CONFIG_FILE).is_file():
            config = compose.convnet_run(name, n_labeled=experiment.n_labeled[0], method=experiment.methods[0],
                                         data_seed=data_seed, run=choices.run_values(),
                                         overrides={**changes, **overrides})
        # a resumed run takes the data given again, if it moved: checked to be the run's
        grid.append(launch.GridRun(directory, config, f"data seed {data_seed}, {label}",
                                   resume_overrides={"data_dir": str(choices.data_dir)}))
    if dry_run:
        return len(experiment.ablation_runs()), 0
    counts = launch.launch(grid, launcher=launcher, devices=devices, threads=choices.threads, procs_per_run=procs_per_run,
                           progress=choices.progress, slurm=slurm)
    return len(grid), counts.skipped


def legacy_main(argv: Iterable[str]) -> list[str] | dict[str, Any]:
    """The original ``pytorch/main.py`` with its flags: a training run's summary, or (``--evaluate``)
    the student's and teacher's precision lines."""
    config, args = main_flags.parse(list(argv))
    if config.seed is not None:
        seed_everything(config.seed)
    out_dir = Path(config.out_dir) if config.out_dir else runs.default_out_dir("main", "0")
    if not args.resume and not args.evaluate:  # a new run into a run directory would add to its logs
        runs.refuse_existing_run(out_dir, remedy=f"continue it with --resume {out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT}")
    # an evaluation writes nothing into the run directory it may share with a run
    trainer = Trainer(config, out_dir, progress=not args.no_progress).build(record_config=not args.evaluate)
    if args.resume:
        trainer.load_state(ckpt.load_checkpoint(args.resume))
    if args.evaluate:
        lines = []
        for name, model in (("student", trainer.method.student), ("teacher", trainer.method.teacher)):
            result = trainer.evaluate(model, name)
            lines.append(f"{name}: prec@1 {result['top1/avg']:.3f}  prec@5 {result['top5/avg']:.3f}")
        return lines
    return trainer.fit()


def describe_settings(config, out_dir, overrides: dict[str, Any]) -> str:
    """The settings a run starts with, for its first lines of output: where every one of them
    is (its config.json, written as it starts), and one per line those ``--set`` changed."""
    lines = [f"settings: all {len(config.to_dict())} in {Path(out_dir) / CONFIG_FILE}"]
    return "\n".join(lines + [f"  --set {key}={value}" for key, value in overrides.items()])


def summary_lines(summary: dict[str, Any]) -> list[str]:
    def pct(value):
        return "n/a" if value is None else f"{value:.2f}%"

    lines = [f"done: {summary['epochs']} epochs, {summary['global_step']} steps, "
             f"{summary['n_labeled_in_split']} labeled / {summary['n_unlabeled']} unlabeled images"
             + (" (the labeled ones among them)" if summary.get("unlabeled_includes_labeled") else ""),
             f"  student  prec@1 {pct(summary['student_prec1'])}  error {pct(summary['student_error1'])}",
             f"  teacher  prec@1 {pct(summary['teacher_prec1'])}  error {pct(summary['teacher_error1'])}"
             # USB and TorchSSL evaluate every algorithm's EMA model
             + ("  (the EMA model: the protocol's result)" if summary.get("protocol") else "")]
    if summary.get("protocol") and summary.get("best_teacher_prec1_on") == "test":
        # USB and TorchSSL report this one; said for what it is, beside the final model's above
        lines.append(f"  teacher  best prec@1 on test during training {pct(summary['best_teacher_prec1'])} "
                     "(best-on-test, as USB and TorchSSL report; the final numbers above are this run's result)")
    return lines + [f"  checkpoint {summary['checkpoint']}",
                    f"  logs       {summary['out_dir']}/{{training,validation,ema_validation}}.jsonl"]


def downloaded_inputs(dataset: str, root: Path, *, config_name: str | None = None, data_seed: int | None = None,
                      data_dir=None, label_file=None, label_dir=None, extra: bool = False) -> tuple[Any, Any]:
    """``--download``: what a run of ``dataset`` lacks, fetched into ``root`` and verified (the
    dataset unless ``--data`` names it; a ResNet run's label file unless ``--label-file`` or
    ``--label-dir`` names one). Returns the run's ``(data_dir, label_dir)``."""
    if data_dir is None:
        downloads.fetch(downloads.dataset_downloads(dataset, extra=extra), root, say=log.info)
        data_dir = downloads.dataset_path(dataset, root)
    if config_name is not None and label_file is None and label_dir is None:
        paper = load_paper_config(config_name)
        seed = paper.data_seeds[0] if data_seed is None else data_seed
        if seed in paper.data_seeds:   # (another seed is refused with the recipe's seeds, later)
            downloads.fetch(downloads.label_downloads([paper.label_file_for(seed)]), root, say=log.info)
        label_dir = root / downloads.LABELS_DIR
    return data_dir, label_dir
