"""``mt-repro``: a thin Click layer over the library. Each command parses its options, calls one
function of ``mt_repro.apps``, ``mt_repro.paper``, ``mt_repro.legacy``, ``mt_repro.logs`` or
``mt_repro.data``, prints what it returns, and exits: 0 ok, 1 a failed run, 2 bad input, every
error as one line. The library speaks through ``logging`` (the ``mt_repro`` loggers); this layer
prints its records: information on stdout, warnings on stderr.

Each command imports the modules it needs when it runs, so that ``mt-repro --help`` and the
quick commands do not pay for importing torch (seconds).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from mt_repro import __version__
from mt_repro.config.train import COMPILE_MODES, MODES
from mt_repro.core.errors import BadInput, MtReproError, RunFailed, one_line, printable

LABEL_DIR_ENV = "MT_REPRO_LABEL_DIR"
BENCH_OUT = "mt-repro-bench"  # bench's result files, a directory named for what made them
OLD_MODEL_NAMES = {"mean_teacher": "mean_teacher", "pi": "pi_model", "supervised": "supervised"}


class _ConsoleHandler(logging.Handler):
    """The library's log records on the console: plain lines on stdout, warnings on stderr (one
    line each); what a file put in them is shown escaped (``printable``)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            _warn(message)
        else:
            click.echo("\n".join(printable(line) for line in message.split("\n")))


def _first_process() -> bool:
    """Under torchrun only the first process speaks (the others would repeat it)."""
    return os.environ.get("RANK", "0") in ("", "0")


def _log_to_console() -> None:
    logger = logging.getLogger("mt_repro")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    logger.setLevel(logging.INFO if _first_process() else logging.ERROR)
    logger.propagate = False


def _warn(message: str) -> None:
    click.echo(f"mt-repro: warning: {_one_line(message)}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mt-repro")
def cli() -> None:
    """Mean Teacher (Tarvainen & Valpola, 2017), faithfully reproduced on current PyTorch."""
    _log_to_console()


# --- prepare -------------------------------------------------------------------------------
@cli.group()
def prepare() -> None:
    """Write datasets in the layout the original code read."""


@prepare.command("cifar10")
@click.option("--from", "source", required=True, type=click.Path(path_type=Path),
              help="cifar-10-python.tar.gz or the directory of its extracted batches")
@click.option("--to", "destination", required=True, type=click.Path(path_type=Path),
              help="output directory for train+val/ and test/")
@click.option("--no-progress", is_flag=True)
def prepare_cifar10(source: Path, destination: Path, no_progress: bool) -> None:
    """CIFAR-10 as PNGs named like the original's (train+val/<class>/<i>_<class>.png, test/...)."""
    from tqdm import tqdm

    from mt_repro.data import cifar10

    splits = cifar10.read_cifar10(source)
    try:
        counts = cifar10.write_image_tree(
            splits, destination,
            progress=lambda it: tqdm(it, disable=no_progress, unit="img", desc="writing PNGs"))
    except OSError as exc:
        raise BadInput(f"cannot write {destination}: {exc.strerror or exc}") from None
    click.echo(f"wrote {counts['train+val']} training and {counts['test']} test images to {destination}")


@cli.command("synthetic-cifar10")
@click.argument("tarball", type=click.Path(path_type=Path))
@click.option("--train", "n_train", default=1000, show_default=True, help="training images")
@click.option("--test", "n_test", default=200, show_default=True, help="test images")
@click.option("--labels-per-class", default=10, show_default=True,
              help="also write TARBALL.labels.txt labeling this many images per class")
@click.option("--seed", default=0, show_default=True)
def synthetic_cifar10(tarball: Path, n_train: int, n_test: int, labels_per_class: int, seed: int) -> None:
    """Write a small synthetic stand-in for cifar-10-python.tar.gz, in the exact published
    format, to try the pipeline without a download. Its images are noise around one colour per
    class: results on it say nothing about CIFAR-10."""
    from mt_repro.data import synthetic
    from mt_repro.data.labels import write_label_file

    if n_train < 5 or n_test < 1 or n_train % 5:
        raise BadInput("--train must be a positive multiple of 5 (five batches), --test positive")
    label_path = tarball.with_name(tarball.name + ".labels.txt")
    try:
        synthetic.write_cifar_tarball(tarball, n_train=n_train, n_test=n_test, seed=seed)
        labels = synthetic.balanced_labels(tarball, labels_per_class)
        write_label_file(label_path, labels)
    except OSError as exc:
        raise BadInput(f"cannot write {exc.filename or tarball}: {exc.strerror or exc}") from None
    click.echo(f"wrote {tarball} ({n_train} training, {n_test} test images) and {label_path} "
               f"({len(labels)} labels)")


@cli.command("synthetic-svhn")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--train", "n_train", default=1000, show_default=True, help="training images")
@click.option("--test", "n_test", default=200, show_default=True, help="test images")
@click.option("--extra", "n_extra", default=0, show_default=True, help="extra images (0: no extra file)")
@click.option("--seed", default=0, show_default=True)
def synthetic_svhn(directory: Path, n_train: int, n_test: int, n_extra: int, seed: int) -> None:
    """Write a small synthetic stand-in for SVHN's train/test/extra_32x32.mat, in the published
    format (MATLAB v5, X 32x32x3xN uint8, y Nx1 with 10 for the digit 0). Noise around one colour
    per class: results on it say nothing about SVHN."""
    from mt_repro.data import synthetic

    if n_train < 1 or n_test < 1 or n_extra < 0:
        raise BadInput("--train and --test must be positive, --extra at least 0")
    try:
        paths = synthetic.write_svhn_mat(directory, n_train=n_train, n_test=n_test, n_extra=n_extra, seed=seed)
    except OSError as exc:
        raise BadInput(f"cannot write {directory}: {exc.strerror or exc}") from None
    click.echo(f"wrote {', '.join(p.name for p in paths.values())} to {directory}")


# --- label splits (each dataset's tf_split) --------------------------------------------------
@cli.command("splits")
@click.argument("dataset")
@click.option("--labels", "n_labels", required=True, metavar="N|all", help="labeled images, class-balanced")
@click.option("--data-seed", type=int, default=2000, show_default=True,
              help="the split's seed (the paper's ConvNet runs: 2000..2009)")
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="CIFAR-10 tarball or batches directory; directory of the SVHN .mat files")
@click.option("--extra", "n_extra", default=0, show_default=True, help="SVHN: extra images added unlabeled")
@click.option("--validation", is_flag=True,
              help="cut the original's validation partition first (its non-test phase)")
@click.option("--out", type=click.Path(path_type=Path),
              help="label file to write (default: <dataset>_<N>_labels_<seed>.txt)")
def splits_command(dataset: str, n_labels: str, data_seed: int, data_dir: Path | None, n_extra: int,
                   validation: bool, out: Path | None) -> None:
    """Write the label file of the original TensorFlow code's split of DATASET (cifar10, svhn,
    digits) for N labels and a data seed (`<file> <class>` lines, as the original's label files)
    and show per-class counts.

    The file names follow the by-image layouts, so it feeds `--label-file` of the run commands."""
    from mt_repro.data import splits
    from mt_repro.data.labels import write_label_file

    named = splits.dataset_split(dataset, None if n_labels == "all" else _count(n_labels, "--labels"),
                                 data_seed, data=data_dir, test_phase=not validation, n_extra_unlabeled=n_extra)
    out = out or Path(f"{dataset}_{n_labels}_labels_{data_seed}.txt")
    try:
        write_label_file(out, named.label_file_entries())
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None
    split = named.split
    counts = split.per_class_counts(len(named.class_names))
    width = max(len(name) for name in named.class_names)
    click.echo(f"{dataset}, data seed {data_seed}: {len(split.labeled)} labeled, {len(split.unlabeled)} "
               f"unlabeled training images" + (f", {len(split.extra)} extra unlabeled" if len(split.extra) else "")
               + (f", {len(split.validation)} held out for validation" if split.validation is not None else ""))
    for name, n in zip(named.class_names, counts):
        click.echo(f"  {name.ljust(width)}  {n}")
    click.echo(f"wrote {out}")


def _count(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"{flag} must be a number or 'all', got {text!r}") from None


# --- the offline demo (mt_repro.apps.digits_demo) -----------------------------------------------
_THREADS_OPTION = click.option(
    "--threads", type=int,
    help="torch threads per run (default: $OMP_NUM_THREADS if set, else 1 for a network under 1M parameters, "
         "every core this process may use for a larger one)")


def _wandb_on(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--wandb``: every run this command trains, here or in its worker processes, logs to W&B."""
    if value:
        from mt_repro.logs import wandb_log

        os.environ[wandb_log.SWITCH_ENV] = "1"
        wandb_log.enabled()   # the package is there, or one line now


_WANDB_OPTION = click.option("--wandb", is_flag=True, expose_value=False, callback=_wandb_on,
                             help="also log each run to Weights & Biases (WANDB_MODE=offline works without a network)")


@cli.command()
@click.option("--labels", "n_labels", type=int, help="labeled training images (default: the demo config's, 100)")
@click.option("--seeds", "n_seeds", type=int, help="data seeds 0..N-1 (default: the demo config's, 3)")
@click.option("--epochs", type=int, help="Mean Teacher epochs (supervised is matched in steps)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results/digits"), show_default=True)
@click.option("--config", type=click.Path(path_type=Path), help="a demo config (default: the bundled digits.toml)")
@click.option("--method", "methods", default="mean_teacher", show_default=True, metavar="NAME[,NAME]|all",
              help="semi-supervised method(s) to put beside supervised-only; a variant changes options of "
                   "its method: self_training[noise=randaugment,swa=true]")
@click.option("--sampling", type=click.Choice(["two_stream", "uniform"]), default="two_stream", show_default=True,
              help="minibatches of the semi-supervised methods: a fixed labeled share, or drawn from all images")
@click.option("--pretrain", metavar="NAME",
              help="pre-train an encoder on each seed first (moco: no labels, the same steps), train every row "
                   "again from it, and compare its linear probe with a random encoder's")
@click.option("--mode", type=click.Choice(MODES), default="faithful", show_default=True,
              help="fast: the same training, batched augmentation and faster kernels")
@click.option("--corruptions", is_flag=True,
              help="then evaluate each run under the common corruptions (generated, 5 severities): clean error, "
                   "mean corruption error, mCE and relative mCE against supervised-only")
@click.option("--overwrite", is_flag=True,
              help="OUT holds the demo's runs: run them afresh, removing each run's files first "
                   "(config.json, summary.json, inputs.json, the three .jsonl logs, "
                   "checkpoints/{checkpoint.N,last,best}.ckpt; nothing else). Without it a run directory that "
                   "holds a run is refused")
@click.option("--resume", type=click.Path(path_type=Path),
              help="continue the demo last run into this --out, with its options (as `mt-repro resume DIR`)")
@click.option("--jobs", type=int, help="runs trained at once, each in its own process (default: as many as the "
                                       "cores this process may use hold at the chosen thread count)")
@_THREADS_OPTION
@_WANDB_OPTION
@click.option("--no-progress", is_flag=True)
@click.pass_context
def digits(ctx: click.Context, n_labels: int | None, n_seeds: int | None, epochs: int | None, out: Path,
           config: Path | None, methods: str, sampling: str, pretrain: str | None, mode: str, corruptions: bool,
           overwrite: bool, resume: Path | None, jobs: int | None, threads: int | None, no_progress: bool) -> None:
    """Supervised-only against Mean Teacher (or any methods) on scikit-learn's bundled 8x8
    digits (real data, no download): minutes on a laptop CPU, test error over several seeds."""
    from mt_repro.apps import digits_demo
    from mt_repro.methods.registry import method_class, method_names, split_method_list

    if resume is not None:
        _resume_demo(ctx, resume, "resume", "--resume continues the demo with the options it was started with",
                     no_progress, jobs=jobs, threads=threads)
        return
    chosen = ([m for m in method_names() if not method_class(m).pretraining] if methods == "all"
              else split_method_list(methods))
    if "mean_teacher" in chosen:  # first, as in the paper's tables
        chosen.remove("mean_teacher")
        chosen.insert(0, "mean_teacher")
    result = digits_demo.run_demo(n_labels, n_seeds, epochs, out, config=config, methods=chosen,
                                  sampling=sampling, mode=mode, progress=not no_progress, overwrite=overwrite,
                                  jobs=jobs, threads=threads, pretrain=pretrain, corruptions=corruptions)
    _print_demo(result, out)


def _print_demo(result, out: Path) -> None:
    table = result.table()
    click.echo(table)
    try:
        (out / "results.txt").write_text(table + "\n")
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None
    figure = _draw_demo(result, out / "results.png")
    click.echo(f"table written to {out / 'results.txt'}, its figure to {figure}")


def _draw_demo(result, path: Path) -> Path:
    """The table as a figure beside it: each method's test error per seed and mean ± std."""
    from mt_repro.paper import plot

    rows = [(row, result.errors(row)) for row in result.rows]
    title = f"digits, {result.n_labels} labels: test error of the network each method's paper reports"
    return plot.write_result_figure(rows, path, title)


# --- the paper's runs (mt_repro.apps.training) ---------------------------------------------------
_METHOD_HELP = ("method of mt_repro/methods/ (default mean_teacher), with its paper's settings from "
                "configs/methods/NAME.toml")
_OVERWRITE_HELP = ("--out holds a run: start afresh, removing that run's files first (config.json, "
                   "summary.json, inputs.json, the three .jsonl logs, checkpoints/{checkpoint.N,last,best}.ckpt; "
                   "nothing else), once the new run's settings and data are found good. Without it such "
                   "an --out is refused")
_MODE_HELP = ("faithful (default): the original's computation step for step; fast: the same training "
              "with batched augmentation on the device, channels-last, bf16 where supported")


def _common_run_options(fn):
    options = [
        click.option("--method", help=_METHOD_HELP),
        click.option("--seed", type=int, help="seed random, numpy.random and torch, in that order"),
        click.option("--out", type=click.Path(path_type=Path), help="run directory"),
        click.option("--resume", type=click.Path(path_type=Path), help="continue this run directory"),
        click.option("--overwrite", is_flag=True, help=_OVERWRITE_HELP),
        click.option("--mode", type=click.Choice(MODES), help=_MODE_HELP),
        click.option("--compile", "compile_model", is_flag=True, help="fast mode: torch.compile the networks"),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override any setting"),
        click.option("--init-from", type=click.Path(path_type=Path),
                     help="a checkpoint whose encoder (all but the heads) starts student and teacher, "
                          "e.g. a --method moco run's checkpoints/last.ckpt (ResNet-recipe runs)"),
        click.option("--device", default="auto", show_default=True),
        _THREADS_OPTION,
        _WANDB_OPTION,
        click.option("--no-progress", is_flag=True),
        *_DOWNLOAD_OPTIONS,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_DOWNLOAD_OPTIONS = [
    click.option("--download", is_flag=True,
                 help="fetch what --data (and the label file) would name into the data root, verified"),
    click.option("--data-root", type=click.Path(path_type=Path),
                 help="where downloads go (default $MT_REPRO_DATA, else ~/.cache/mt-repro)"),
]


_LAUNCHER_OPTIONS = [
    click.option("--launcher", type=click.Choice(["serial", "local", "torchrun", "slurm"]), default="serial",
                 show_default=True,
                 help="serial: one run after another here; local: one process per --devices slot; torchrun: "
                      "each run in --procs-per-run processes, one per device; slurm: one job per run (an array "
                      "job, through submitit)"),
    click.option("--devices", metavar="LIST",
                 help="--launcher local: the slots, e.g. cuda:0,cuda:1,cuda:2,cuda:3 or cpu,cpu (a device may repeat); "
                      "--launcher torchrun: the devices, taken --procs-per-run at a time"),
    click.option("--procs-per-run", type=int,
                 help="--launcher torchrun: processes (devices) per run (default: all of --devices); "
                      "--launcher slurm: tasks per run's job, one per GPU (default 1)"),
    click.option("--slurm-partition", help="--launcher slurm: the partition"),
    click.option("--slurm-time", type=int, default=24 * 60, show_default=True, help="--launcher slurm: minutes per job"),
    click.option("--gpus-per-run", type=int, default=1, show_default=True, help="--launcher slurm"),
    click.option("--cpus-per-run", type=int, default=8, show_default=True, help="--launcher slurm"),
    click.option("--slurm-setup", multiple=True, metavar="LINE",
                 help="--launcher slurm: a shell line each job runs first (module load ..., source venv/bin/activate)"),
    click.option("--slurm-executor", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
                 help="local: submitit's local executor, the same jobs without a Slurm cluster"),
    click.option("--wait", is_flag=True, help="--launcher slurm: wait for the jobs (else: follow them with --status)"),
]


def _with_launcher_options(fn):
    for option in reversed(_LAUNCHER_OPTIONS):
        fn = option(fn)
    return fn


def _launcher_choices(options: dict, out: Path) -> dict:
    """``launcher``, ``devices`` and ``slurm`` for ``mt_repro.engine.launch.launch``, from the
    launcher options (removed from ``options``); each option only with its launcher."""
    from mt_repro.engine.launch import SlurmSettings

    launcher = options.pop("launcher")
    devices = _launch_devices(launcher, options.pop("devices"))
    procs_per_run = options.pop("procs_per_run")
    if procs_per_run is not None and launcher not in ("torchrun", "slurm"):
        raise BadInput(f"--procs-per-run: an option of --launcher torchrun or slurm, not of --launcher {launcher}")
    names = ("slurm_partition", "slurm_time", "gpus_per_run", "cpus_per_run", "slurm_setup", "slurm_executor", "wait")
    slurm = {name: options.pop(name) for name in names}
    if launcher != "slurm":
        given = _given(click.get_current_context(), names)
        if given:
            raise BadInput(f"{', '.join(given)}: options of --launcher slurm, not of --launcher {launcher}")
        return {"launcher": launcher, "devices": devices, "procs_per_run": procs_per_run}
    for name, value in (("--slurm-time", slurm["slurm_time"]), ("--cpus-per-run", slurm["cpus_per_run"])):
        if value < 1:
            raise BadInput(f"{name} must be at least 1, got {value}")
    if slurm["gpus_per_run"] < 0:
        raise BadInput(f"--gpus-per-run must be 0 or more, got {slurm['gpus_per_run']}")
    procs = 1 if procs_per_run is None else procs_per_run
    if procs < 1:
        raise BadInput(f"--procs-per-run must be at least 1, got {procs}")
    if procs > 1 and slurm["gpus_per_run"] not in (0, procs):
        raise BadInput(f"--procs-per-run {procs} runs one process per GPU: give --gpus-per-run {procs} "
                       f"(got {slurm['gpus_per_run']}), or 0 on CPUs")
    settings = SlurmSettings(folder=Path(out) / "slurm-jobs", partition=slurm["slurm_partition"],
                             time_min=slurm["slurm_time"], gpus_per_run=slurm["gpus_per_run"],
                             cpus_per_run=slurm["cpus_per_run"], setup=tuple(slurm["slurm_setup"]),
                             executor=slurm["slurm_executor"], wait=slurm["wait"], procs_per_run=procs)
    return {"launcher": launcher, "devices": None, "slurm": settings}


def _launch_devices(launcher: str, devices: str | None) -> list[str] | None:
    from mt_repro.engine.launch import parse_devices

    if launcher not in ("local", "torchrun"):
        if devices is not None:
            raise BadInput("--devices lists the devices of --launcher local or torchrun: give one of them too")
        return None
    return parse_devices(devices, launcher)


def _apply_download(options: dict, dataset: str, *, config_name: str | None = None,
                    extra: bool = False) -> None:
    """``--download``: the dataset and label file a run lacks, fetched into ``--data-root``;
    ``options`` then name them as ``--data`` and ``--label-dir`` would."""
    if not options["download"]:
        if options["data_root"] is not None:
            raise BadInput("--data-root is where --download puts files: give --download too")
        return
    from mt_repro.apps import training
    from mt_repro.data import downloads

    options["data_dir"], label_dir = training.downloaded_inputs(
        dataset, downloads.data_root(options["data_root"]), config_name=config_name,
        data_seed=options.get("data_seed"), data_dir=options["data_dir"], label_file=options.get("label_file"),
        label_dir=options.get("label_dir"), extra=extra)
    if "label_dir" in options:
        options["label_dir"] = label_dir


_CIFAR10_DATA = ("CIFAR-10: cifar-10-python.tar.gz, its extracted batches directory or the by-image PNG "
                 "tree (--arch convnet13 also: the original's cifar10_gcn_zca_v2.npz)")
_IMAGENET_DATA = "ImageNet: the directory holding train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"


def _resnet_options(data_help: str):
    """The options of the ResNet runs' commands, ``--data`` described for the command's dataset."""
    def decorate(fn):
        return _with_resnet_options(fn, data_help)
    return decorate


def _with_resnet_options(fn, data_help: str):
    options = [
        click.option("--label-file", type=click.Path(path_type=Path), help="an original-format label file"),
        click.option("--data-seed", type=int, help="which of the original label files (data seed)"),
        click.option("--label-dir", type=click.Path(path_type=Path),
                     help=f"the original code's data-local/labels (default ${LABEL_DIR_ENV} or ./data-local/labels)"),
        click.option("--data", "data_dir", type=click.Path(path_type=Path), help=data_help),
        click.option("--gpus", type=int, help="scale batch, labeled batch and lr as for this many GPUs"),
        click.option("--epochs", type=int, help="train for this many epochs"),
        click.option("--workers", type=int,
                     help="data loading processes, at most one per CPU core (0: faithful random order)"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return _common_run_options(fn)


_MODEL_OPTION = click.option("--model", type=click.Choice(sorted(OLD_MODEL_NAMES)), hidden=True,
                             help="deprecated: use --method (pi is pi_model)")
# what a resumed run takes: --data and --label-file where its inputs are now (checked to hold what it
# started with), --arch if it is the run's
_RESUMABLE = {"resume", "overrides", "epochs", "steps", "no_progress", "data_dir", "label_file", "arch", "threads"}


_STEPS_HELP = ("the ConvNet runs: train this many steps (training_length); fewer than the recipe's "
               "shrink its ramp-up and ramp-down in proportion")
_EXPERIMENT_OPTION = click.option(
    "--experiment", metavar="NAME",
    help="another runner of the original's TensorFlow half (original_configs/convnet/NAME.toml), e.g. "
         "train_svhn or train_cifar10 (its quick runners), *_no_augmentation_final_eval; default: the paper's")


def _check_settings(overrides, recipe: str) -> None:
    """``--set`` checked against the recipe's settings before the command imports torch
    (seconds), so that a misspelled key is refused at once."""
    if not overrides:
        return
    from mt_repro.config.coerce import parse_overrides

    if recipe == "tensorflow":
        from mt_repro.config.convnet import HINTS
    else:
        from mt_repro.config.train import HINTS
    parse_overrides(overrides, HINTS)


def _labels_of(ctx: click.Context, n_labels: str, experiment: str | None) -> str | None:
    """``--labels`` as given; not given with ``--experiment``: None, the runner's own count."""
    if experiment is not None and ctx.get_parameter_source("n_labels") == click.core.ParameterSource.DEFAULT:
        return None
    return n_labels


def _chosen_method(method: str | None, model: str | None) -> str | None:
    """``--method``, or the deprecated ``--model`` of the ConvNet commands, with a line saying so."""
    if model is None:
        return method
    if method is not None:
        raise BadInput("give --method, not both --method and --model (--model is the old name)")
    _warn(f"--model is deprecated: use --method {OLD_MODEL_NAMES[model]}")
    return OLD_MODEL_NAMES[model]


def _given(ctx: click.Context, names) -> list[str]:
    """The options of ``names`` that the command line gave (not their defaults), as flags."""
    flags = {param.name: max(param.opts, key=len) for param in ctx.command.params}
    return [flags.get(name, f"--{name.replace('_', '-')}") for name in names
            if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]


def _resume(ctx: click.Context, resume: Path, overrides, *, epochs=None, steps=None, no_progress=False) -> None:
    from mt_repro.apps import training
    from mt_repro.engine.runs import KeptSummary

    if ctx.params.get("overwrite"):
        raise BadInput("give --resume (continue the run) or --overwrite (start a new one in --out), not both")
    given = _given(ctx, [name for name in ctx.params if name not in _RESUMABLE])
    if given:
        raise BadInput(f"{', '.join(given)}: a resumed run keeps the settings it was started with; "
                       "change one with --set KEY=VALUE")
    inputs = {name: ctx.params[name] if _given(ctx, [name]) else None for name in ("data_dir", "label_file", "arch")
              if name in ctx.params}
    summary = training.resume_command(resume, overrides, epochs=epochs, steps=steps, progress=not no_progress,
                                      data=inputs.get("data_dir"), label_file=inputs.get("label_file"),
                                      arch=inputs.get("arch"), threads=ctx.params.get("threads"))
    if not isinstance(summary, KeptSummary):  # (a finished run, left as it was, said so in one line)
        _print_summary(summary)


def _resume_demo(ctx: click.Context, directory: Path, argument: str, why: str, no_progress: bool,
                 jobs: int | None = None, threads: int | None = None) -> None:
    """Continue the digits demo's grid in ``directory``; options beside it are refused with
    ``why`` (how many runs at a time and threads are not the grid's: they may be given)."""
    from mt_repro.apps import digits_demo

    given = _given(ctx, [name for name in ctx.params if name not in (argument, "no_progress", "jobs", "threads")])
    if given:
        raise BadInput(f"{', '.join(given)}: {why}; to change them, run `mt-repro digits --out {directory}` "
                       "with other options")
    _print_demo(digits_demo.resume_demo(directory, progress=not no_progress, jobs=jobs, threads=threads),
                directory)


def _print_summary(summary: dict) -> None:
    from mt_repro.apps.training import summary_lines

    if not _first_process():
        return
    for line in summary_lines(summary):
        click.echo(line)


def _choices(options: dict, method: str | None):
    from mt_repro.apps.training import RunChoices

    return RunChoices(method=method, data_dir=options["data_dir"], seed=options["seed"], device=options["device"],
                      mode=options["mode"], compile=options["compile_model"], out=options["out"],
                      overrides=options["overrides"], progress=not options["no_progress"],
                      overwrite=options["overwrite"], threads=options["threads"], init_from=options["init_from"])


@cli.command()
@click.option("--labels", "n_labels", type=click.Choice(["1000", "2000", "4000", "all"]), default="4000",
              show_default=True)
@click.option("--arch", type=click.Choice(["cifar_shakeshake26", "convnet13"]), default="cifar_shakeshake26",
              show_default=True, help="ResNet run of Table 4, or the 13-layer ConvNet of Table 2")
@click.option("--steps", type=int, help=_STEPS_HELP)
@_EXPERIMENT_OPTION
@_MODEL_OPTION
@_resnet_options(_CIFAR10_DATA)
@click.pass_context
def cifar10(ctx: click.Context, n_labels: str, arch: str, steps: int | None, experiment: str | None,
            model: str | None, **options) -> None:
    """The paper's CIFAR-10 runs as the original runners configured them: the ResNet
    (shake-shake 26, Table 4; 1000 or 4000 labels) or the 13-layer ConvNet (Table 2)."""
    if options["resume"] is None:
        _check_settings(options["overrides"], "tensorflow" if arch == "convnet13" else "pytorch")
    from mt_repro.apps import training

    method = _chosen_method(options["method"], model)
    if options["resume"] is not None:
        _resume(ctx, options["resume"], options["overrides"], epochs=options["epochs"], steps=steps,
                no_progress=options["no_progress"])
        return
    if arch == "convnet13":
        unused = _given(ctx, ["label_file", "label_dir", "gpus", "epochs", "workers"])
        if unused:
            raise BadInput(f"{', '.join(unused)} apply to the ResNet run, not to --arch convnet13 "
                           "(its length is --steps, its split --data-seed)")
        _apply_download(options, "cifar10")
        summary = training.convnet_command("cifar10", _labels_of(ctx, n_labels, experiment), _choices(options, method),
                                           data_seed=options["data_seed"], steps=steps, experiment=experiment)
    else:
        if steps is not None:
            raise BadInput("--steps applies to --arch convnet13; the ResNet run's length is --epochs")
        if experiment is not None:
            raise BadInput("--experiment names a runner of the ConvNet runs: give --arch convnet13 too")
        if n_labels not in ("1000", "4000"):
            raise BadInput("the ResNet run (Table 4) has 1000 or 4000 labels; for other label counts "
                           "use --arch convnet13")
        _apply_download(options, "cifar10", config_name=f"cifar10_{n_labels}")
        summary = training.resnet_command(f"cifar10_{n_labels}", _choices(options, method),
                                          label_file=options["label_file"], data_seed=options["data_seed"],
                                          label_dir=options["label_dir"], gpus=options["gpus"],
                                          epochs=options["epochs"], workers=options["workers"])
    _print_summary(summary)


@cli.command()
@click.option("--labels", "n_labels", type=click.Choice(["100", "250", "500", "1000", "all"]), default="250",
              show_default=True)
@click.option("--extra", "n_extra", type=click.Choice(["0", "100000", "500000"]), default="0", show_default=True,
              help="extra_32x32.mat images added unlabeled (with 500 labels, as in Table 3)")
@click.option("--data-seed", type=int, help="the split's seed (default: the runner's first, 2000 or 0)")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="directory of the SVHN .mat files")
@click.option("--steps", type=int, help=_STEPS_HELP)
@_EXPERIMENT_OPTION
@_MODEL_OPTION
@_common_run_options
@click.pass_context
def svhn(ctx: click.Context, n_labels: str, n_extra: str, data_seed: int | None, steps: int | None,
         experiment: str | None, model: str | None, **options) -> None:
    """The paper's SVHN runs with the 13-layer ConvNet (Tables 1 and 3), as the original
    TensorFlow runners configured them."""
    if options["resume"] is None:
        _check_settings(options["overrides"], "tensorflow")
    from mt_repro.apps import training

    method = _chosen_method(options["method"], model)
    if options["resume"] is not None:
        _resume(ctx, options["resume"], options["overrides"], steps=steps, no_progress=options["no_progress"])
        return
    _apply_download(options, "svhn", extra=n_extra != "0")
    _print_summary(training.convnet_command("svhn", _labels_of(ctx, n_labels, experiment), _choices(options, method),
                                            n_extra=int(n_extra), data_seed=data_seed, steps=steps,
                                            experiment=experiment))


@cli.command("protocol")
@click.argument("protocol")
@click.argument("dataset")
@click.option("--labels", "labels", required=True, metavar="N[,N...]",
              help="labeled images: one of the protocol's counts, or several (a grid)")
@click.option("--method", "methods", default="mean_teacher", show_default=True, metavar="NAME[,NAME...]",
              help="a method the protocol has settings for, or several")
@click.option("--seed", "seeds", default="0", show_default=True, metavar="S[,S...]",
              help="the split's seed and the run's, as USB's; or several")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="the dataset's tarball or directory")
@click.option("--out", type=click.Path(path_type=Path),
              help="run directory of one cell (default: results/protocol/<protocol>/<dataset>_<labels>_<method>_<seed>); "
                   "of a grid, the directory of its cells' directories (default: results/protocol/<protocol>)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a setting of every cell (training_length=1000 for a short run)")
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="one cell: --out holds a run: remove its files and start afresh")
@click.option("--dry-run", is_flag=True, help="list the cells, their steps and cost; run nothing")
@click.option("--status", is_flag=True, help="every cell's state in --out; run nothing; exit 1 if any failed")
@_DOWNLOAD_OPTIONS[0]
@_DOWNLOAD_OPTIONS[1]
@_with_launcher_options
@_THREADS_OPTION
@_WANDB_OPTION
@click.option("--no-progress", is_flag=True)
def protocol_command(protocol: str, dataset: str, labels: str, methods: str, seeds: str, data_dir: Path | None,
                     out: Path | None, overrides: tuple[str, ...], device: str, overwrite: bool, dry_run: bool,
                     status: bool, download: bool, data_root: Path | None, threads: int | None, no_progress: bool,
                     **launcher_options) -> None:
    """Cells of a benchmark protocol after the paper: `mt-repro protocol usb cifar10 --labels 40
    --method fixmatch --seed 0` (USB/TorchSSL: WRN-28-2, 2^20 steps, the teacher evaluated).
    Lists (`--labels 40,250,4000 --method fixmatch,mean_teacher --seed 0,1,2`) or a --launcher
    run the grid of cells, skipping finished ones and resuming interrupted ones; the same command
    with --status says where each cell stands, with --dry-run what the grid would run."""
    from mt_repro.apps.protocol import default_grid_root, grid_runs, run_cell
    from mt_repro.config.protocol import load_protocol
    from mt_repro.engine import launch

    label_counts, seed_list = _int_list(labels, "--labels"), _int_list(seeds, "--seed")
    method_list = [m.strip() for m in methods.split(",") if m.strip()] or ["mean_teacher"]
    grid = len(label_counts) * len(method_list) * len(seed_list) > 1 or launcher_options["launcher"] != "serial"
    root = out or default_grid_root(protocol)
    if dry_run or status:
        _protocol_plan(protocol, dataset, label_counts, method_list, seed_list, out=out, single=not grid,
                       overrides=overrides, device=device, status=status, dry_run=dry_run)
        return
    choices = _launcher_choices(launcher_options, root)   # checked for one cell too: none is ignored
    if grid and overwrite:
        raise BadInput("--overwrite starts one cell afresh; a grid skips finished cells and resumes interrupted "
                       "ones: remove a cell's directory to run it again")
    options = {"download": download, "data_root": data_root, "data_dir": data_dir}
    table = load_protocol(protocol).dataset(dataset)   # an unknown one is refused before any download
    _apply_download(options, dataset, extra="extra" in table.get("train_part", ""))
    data_dir = options["data_dir"]
    if not grid:
        _print_summary(run_cell(protocol, dataset, label_counts[0], method_list[0], seed_list[0], data_dir=data_dir,
                                out=out, overrides=overrides, device=device, overwrite=overwrite,
                                progress=not no_progress, threads=threads))
        return
    runs = grid_runs(protocol, dataset, label_counts, method_list, seed_list, data_dir=data_dir, out=root,
                     overrides=overrides, device=device)
    counts = launch.launch(runs, threads=threads, progress=not no_progress, say=click.echo, **choices)
    click.echo(f"{protocol} {dataset}: {len(runs)} cells in {root}: {counts.started} started, "
               f"{counts.resumed} resumed, {counts.skipped} already finished"
               + (f"; {len(counts.jobs)} submitted to Slurm" if counts.jobs else ""))


def _protocol_plan(protocol: str, dataset: str, label_counts: list[int], methods: list[str], seeds: list[int], *,
                   out: Path | None, single: bool, overrides: tuple[str, ...], device: str, status: bool,
                   dry_run: bool) -> None:
    """``protocol --status`` (each cell's state, read from its directory) or ``--dry-run`` (the
    cells, their steps and the device-hours committed benchmarks give them)."""
    from mt_repro.apps.protocol import grid_cells
    from mt_repro.engine.trainer import SUMMARY_FILE
    from mt_repro.paper import status as run_status

    if dry_run and status:
        raise BadInput("give --dry-run (the plan) or --status (the cells' states), not both")
    cells = grid_cells(protocol, dataset, label_counts, methods, seeds, out=out, overrides=overrides,
                       device=device, single=single)
    if status:
        states = [(cell, *run_status.directory_state(cell.directory, cell.config.training_length)) for cell in cells]
        for line in run_status.describe_rows([(c.label, state, detail) for c, state, detail in states], "cells"):
            click.echo(line)
        failed = [(c, detail) for c, state, detail in states if state == "failed"]
        if failed:
            raise RunFailed(f"{len(failed)} of the {len(cells)} cells failed; the first: "
                            f"{failed[0][0].directory}: {failed[0][1]}")
        return
    for cell in cells:
        config = cell.config
        click.echo(f"{cell.label}: {cell.directory}, {config.training_length:,} steps of {cell.images_per_step} "
                   f"images ({config.labeled_batch_size or cell.images_per_step} labeled), {config.arch}")
    click.echo("estimated cost on one device, from committed benchmarks:")
    for line in run_status.planned_device_hours([(c.config.arch, c.images_per_step, c.config.training_length)
                                                 for c in cells]):
        click.echo(line)
    finished = sum((cell.directory / SUMMARY_FILE).is_file() for cell in cells)
    click.echo(f"{finished} of the {len(cells)} cells already finished")


def _int_list(text: str, option: str) -> list[int]:
    """``40`` or ``40,250,4000``: the integers of a list option, in order, each once."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or not all(item.lstrip("-").isdigit() for item in items):
        raise BadInput(f"{option}: expected an integer or a comma-separated list of them, got {text!r}")
    return list(dict.fromkeys(int(item) for item in items))


@cli.command()
@click.option("--labels", "n_labels", type=click.Choice(["10%"]), default="10%", show_default=True)
@_resnet_options(_IMAGENET_DATA)
@click.pass_context
def imagenet(ctx: click.Context, n_labels: str, **options) -> None:
    """The paper's ImageNet 10%-label ResNeXt-152 run (Table 4); data as folders train/ and val/."""
    if options["resume"] is None:
        _check_settings(options["overrides"], "pytorch")
    from mt_repro.apps import training

    if options["resume"] is not None:
        _resume(ctx, options["resume"], options["overrides"], epochs=options["epochs"],
                no_progress=options["no_progress"])
        return
    _apply_download(options, "imagenet", config_name="imagenet_10pct")
    _print_summary(training.resnet_command(
        "imagenet_10pct", _choices(options, options["method"]), label_file=options["label_file"],
        data_seed=options["data_seed"], label_dir=options["label_dir"], gpus=options["gpus"],
        epochs=options["epochs"], workers=options["workers"]))


@cli.command("resume")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="change a setting from here on")
@click.option("--epochs", type=int, help="a ResNet run: lengthen it to this many epochs")
@click.option("--steps", type=int, help="a ConvNet run: lengthen it to this many steps")
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="where the run's data is now (it moved): used if its content is the run's, else refused")
@click.option("--label-file", type=click.Path(path_type=Path),
              help="where the run's label file is now: used if its content is the run's, else refused")
@_THREADS_OPTION
@_WANDB_OPTION
@click.option("--no-progress", is_flag=True)
@click.pass_context
def resume_command(ctx: click.Context, directory: Path, overrides: tuple[str, ...], epochs: int | None,
                   steps: int | None, data_dir: Path | None, label_file: Path | None, threads: int | None,
                   no_progress: bool) -> None:
    """Continue an interrupted run from its last checkpoint, bit for bit, from any working
    directory, with the settings it was started with (its config.json): a run directory of any
    training command, or the --out of `mt-repro digits` (its whole grid)."""
    from mt_repro.apps import digits_demo, training
    from mt_repro.engine.runs import KeptSummary

    if not (directory / "config.json").is_file() and digits_demo.is_demo_dir(directory):
        _resume_demo(ctx, directory, "directory", "a digits demo resumes its grid as it was asked", no_progress,
                     threads=threads)
        return
    summary = training.resume_command(directory, overrides, epochs=epochs, steps=steps, progress=not no_progress,
                                      data=data_dir, label_file=label_file, threads=threads)
    if not isinstance(summary, KeptSummary):  # (a finished run, left as it was, said so in one line)
        _print_summary(summary)


@cli.command()
@click.argument("name")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="directory of the SVHN .mat files")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results/ablations"), show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="applied to every run")
@click.option("--dry-run", is_flag=True, help="list the grid, run nothing")
@click.option("--device", default="auto", show_default=True)
@_with_launcher_options
@_THREADS_OPTION
@_WANDB_OPTION
@click.option("--no-progress", is_flag=True)
def ablation(name: str, data_dir: Path | None, out: Path, overrides: tuple[str, ...], dry_run: bool,
             device: str, threads: int | None, no_progress: bool, **launcher_options) -> None:
    """Run the grid of one of the paper's SVHN ablations (Figure 4), skipping finished runs and
    resuming interrupted ones: svhn_250_vary_{consistency_cost,dropout,ema_decay,
    logit_distance_cost,perturbation,trust}."""
    _check_settings(overrides, "tensorflow")
    from mt_repro.apps import training

    choices = training.RunChoices(data_dir=data_dir, device=device, out=out, overrides=overrides,
                                  progress=not no_progress, threads=threads)
    total, done = training.ablation_command(name, choices, dry_run=dry_run,
                                            **_launcher_choices(launcher_options, out))
    click.echo(f"{name}: {total} runs" + ("" if dry_run else f", {done} were already finished"))


@cli.command("bench")
@click.option("--arch", default="cifar_shakeshake26", show_default=True)
@click.option("--mode", "modes", default="faithful,fast", show_default=True, metavar="MODE[,MODE]")
@click.option("--legacy", type=click.Path(path_type=Path),
              help="the original code's pytorch/ directory: also time its data pipeline")
@click.option("--batch-size", default=128, show_default=True, help="minibatch (the paper's per GPU)")
@click.option("--labeled-batch-size", default=31, show_default=True)
@click.option("--steps", default=20, show_default=True, help="timed training steps per mode")
@click.option("--warmup", default=3, show_default=True, help="untimed steps first")
@click.option("--workers", type=int, help="faithful mode's loader processes (default: the config's)")
@click.option("--compile", "compile_model", is_flag=True, help="fast mode with torch.compile")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default="default", show_default=True,
              help="torch.compile's mode (implies --compile)")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path(BENCH_OUT), show_default=True,
              help="directory of the dated result file, under the current directory unless absolute "
                   "(this repository's own results: --out benchmarks/results)")
@click.option("--no-save", is_flag=True)
def bench_command(arch: str, modes: str, legacy: Path | None, batch_size: int, labeled_batch_size: int,
                  steps: int, warmup: int, workers: int | None, compile_model: bool, compile_mode: str,
                  device: str, out: Path, no_save: bool) -> None:
    """Time training steps (per mode) and the data pipeline in one run: steps/s, images/s,
    ratios to faithful mode and to the original code, model FLOPs utilisation."""
    from mt_repro.apps import bench as benchmark

    settings = benchmark.BenchSettings(
        arch=arch, modes=tuple(m.strip() for m in modes.split(",") if m.strip()), batch_size=batch_size,
        labeled_batch_size=labeled_batch_size, steps=steps, warmup=warmup, device=device, workers=workers,
        compile=compile_model or compile_mode != "default", compile_mode=compile_mode, legacy=legacy)
    report = benchmark.run_benchmark(settings)
    click.echo(benchmark.render(report))
    if not no_save:
        click.echo(f"wrote {benchmark.save(report, out)}")



@cli.command("legacy-main", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                               "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def legacy_main(argv: tuple[str, ...]) -> None:
    """Run with the original pytorch/main.py flags, verbatim (plus --seed, --out, --data-dir)."""
    from mt_repro.apps import training

    result = training.legacy_main(argv)
    if isinstance(result, list):
        for line in result:
            click.echo(line)
    else:
        _print_summary(result)


# --- old checkpoints (mt_repro.legacy, mt_repro.apps.evaluate) -------------------------------------
_TRUST_HELP = "load with Python's full pickle if the file needs more than tensors (can run its code)"


@cli.command("port-checkpoint")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--arch", help="architecture (default: the checkpoint's arch key)")
@click.option("--num-classes", type=int, help="classes (default: from fc1.weight)")
@click.option("--trust", is_flag=True, help=_TRUST_HELP)
def port_checkpoint(old: Path, new: Path, arch: str | None, num_classes: int | None, trust: bool) -> None:
    """Convert a checkpoint of the original code, written by any PyTorch version, into ours."""
    from mt_repro.legacy import port

    report = port.port_checkpoint(old, new, arch=arch, num_classes=num_classes, trust=trust, warn=_warn)
    click.echo("\n".join(report.lines()))


@cli.command("inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--trust", is_flag=True, help=_TRUST_HELP)
def inspect_command(file: Path, trust: bool) -> None:
    """What a checkpoint (.ckpt, any PyTorch), a log (.jsonl, original .msgpack) or a run's JSON
    file (config.json, summary.json) holds."""
    from mt_repro.legacy import inspect

    click.echo("\n".join(inspect.inspect_file(file, trust=trust, warn=_warn)))


_GENERATE = ""   # --corruptions without a directory


@cli.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="data: by-image tree (CIFAR-10 also: tarball or batches directory); default: the run's, "
                   "when CHECKPOINT lies in RUN/checkpoints/ (the digits need none)")
@click.option("--dataset", help="a dataset of the ResNet runs (default: the run's, else cifar10)")
@click.option("--eval-subdir", help="split to evaluate (default: test, for imagenet val)")
@click.option("--arch", help="architecture (default: the checkpoint's arch key)")
@click.option("--corruptions", "corruptions_dir", is_flag=False, flag_value=_GENERATE, metavar="[DIR]",
              help="error under the common corruptions (Hendrycks & Dietterich 2019) at 5 severities: read from "
                   "the published CIFAR-10-C / CIFAR-100-C directory DIR, or without DIR generated from the "
                   "test images (any dataset). Writes JSON, CSV and a plot (--out)")
@click.option("--corruption", "corruption_names", metavar="NAME[,NAME]",
              help="only these corruptions (default: all there are; frost needs --frost-images)")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="with --corruptions: a checkpoint to compare with (CE, mCE, relative mCE), on the same images")
@click.option("--baseline-network", type=click.Choice(["student", "teacher"]),
              help="the baseline's network every network is compared with (default: the one of the same name)")
@click.option("--corruption-seed", default=0, show_default=True, help="seed of the generated corruptions")
@click.option("--frost-images", type=click.Path(path_type=Path),
              help="the benchmark's frost photographs (frost1.png ... frost5.jpg of ImageNet-C/create_c/)")
@click.option("--out", type=click.Path(path_type=Path),
              help="with --corruptions: where the results go (default: RUN/corruptions/, or beside CHECKPOINT)")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--workers", default=4, show_default=True, help="loading processes (x2, as the original; at most one per CPU core)")
@click.option("--device", default="auto", show_default=True)
@click.option("--trust", is_flag=True, help=_TRUST_HELP)
@click.option("--no-progress", is_flag=True)
def evaluate_command(checkpoint: Path, data_dir: Path | None, dataset: str | None, eval_subdir: str | None,
                     arch: str | None, corruptions_dir: str | None, corruption_names: str | None,
                     baseline: Path | None, baseline_network: str | None, corruption_seed: int,
                     frost_images: Path | None, out: Path | None, batch_size: int, workers: int, device: str,
                     trust: bool, no_progress: bool) -> None:
    """Student and teacher prec@1/prec@5 of a checkpoint, as the original's validation; with
    --corruptions, their error under the common corruptions."""
    from mt_repro.apps import evaluate

    if corruptions_dir is None:
        given = [flag for flag, value in (("--corruption", corruption_names), ("--baseline", baseline),
                                          ("--baseline-network", baseline_network),
                                          ("--frost-images", frost_images), ("--out", out)) if value is not None]
        if given:
            raise BadInput(f"{', '.join(given)} go with --corruptions")
        result = evaluate.evaluate_checkpoint(
            checkpoint, data_dir, dataset=dataset, eval_subdir=eval_subdir, arch=arch,
            batch_size=batch_size, workers=workers, device=device, trust=trust, warn=_warn, progress=not no_progress)
        click.echo("\n".join(result.lines()))
        return
    from mt_repro.apps import robustness

    if eval_subdir is not None:
        raise BadInput("--eval-subdir: the corruptions are of the test part")
    names = None if corruption_names is None else [n.strip() for n in corruption_names.split(",") if n.strip()]
    measured = robustness.evaluate_corruptions(
        checkpoint, data_dir, dataset=dataset, published=corruptions_dir or None, baseline=baseline,
        baseline_network=baseline_network, names=names, seed=corruption_seed, frost_dir=frost_images,
        arch=arch, batch_size=batch_size, device=device, trust=trust, warn=_warn,
        progress=None if no_progress else (lambda what: click.echo(f"corrupting: {what}", err=True)))
    click.echo("\n".join(measured.lines()))
    from mt_repro.engine.robustness import severity_curves
    from mt_repro.paper import plot

    out_dir = out or robustness.default_out_dir(checkpoint)
    written = robustness.write_results(measured, out_dir, Path(checkpoint).stem)
    title = f"{Path(checkpoint).name} ({measured.arch}), {measured.dataset}: {measured.source}"
    written.append(plot.write_severity_figure(severity_curves(measured), out_dir / f"{Path(checkpoint).stem}.png", title))
    click.echo(f"wrote {', '.join(map(str, written))}")


# --- patch-legacy (mt_repro.legacy.patching, rules in legacy_patches) -----------------------
@cli.command("patch-legacy")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--check", "mode", flag_value="check", default=True,
              help="list what would change, per file and rule; exit 1 if anything would (default)")
@click.option("--diff", "mode", flag_value="diff", help="print the changes as a unified diff")
@click.option("--write", "mode", flag_value="write",
              help="rewrite the files in place, keeping FILE.py.orig backups")
@click.option("--cpu", is_flag=True, help="also make .cuda() calls device-agnostic (rule cuda-to-device)")
@click.option("--rules", "rule_ids", metavar="ID,...",
              help="run only these rules ('default' = the default set, e.g. default,trainlog-flush-at-exit)")
@click.option("--list-rules", is_flag=True, help="list the rules and exit")
def patch_legacy(path: Path | None, mode: str, cpu: bool, rule_ids: str | None, list_rules: bool) -> None:
    """Rewrite old checkouts of the original code (and forks) to run on today's PyTorch/pandas/Python.

    PATH is a .py file or a directory (searched for *.py). Files that are not Python 3 are
    reported and left alone, as is TensorFlow code."""
    from mt_repro.legacy import patching

    if list_rules:
        click.echo(patching.render_rules())
        return
    if path is None:
        raise BadInput("patch-legacy needs a PATH (a .py file or a directory)")
    plan = patching.plan_patches(path, rules=None if rule_ids is None else rule_ids.split(","), cpu=cpu)
    if path.is_file() and plan.skipped:
        raise BadInput(f"{path}: {plan.skipped[0].message}; nothing done")
    if mode == "diff":
        click.echo(patching.render_diff(plan), nl=False)
        click.echo(patching.render_notes(plan), err=True)
    elif mode == "write":
        touched = patching.write_patches(plan)
        click.echo(patching.render_write(plan, touched))
        failed = [f for f in touched if f.status == "failed"]
        if failed:
            raise BadInput(f"{len(failed)} file(s) not patched: "
                           + "; ".join(f"{f.rel}: {f.message}" for f in failed))
    else:
        click.echo(patching.render_check(plan))
        if plan.changed:
            raise RunFailed(f"{len(plan.changed)} file(s) would change: --diff shows how, --write applies")


# --- port-log (mt_repro.logs.port) ---------------------------------------------------------
@cli.command("port-log")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
def port_log_command(old: Path, new: Path) -> None:
    """Convert a log, the original's pandas .msgpack or ours (.jsonl), to NEW.csv or NEW.parquet.

    The index becomes a column named after it, or `epoch`. Parquet needs pyarrow."""
    from mt_repro.logs import port

    click.echo(port.port_log(old, new).line())


@cli.command("download")
@click.argument("what", nargs=-1, required=True,
                type=click.Choice(["cifar10", "svhn", "svhn-extra", "cifar100", "stl10", "labels"]))
@_DOWNLOAD_OPTIONS[1]
def download_command(what: tuple[str, ...], data_root: Path | None) -> None:
    """Fetch CIFAR-10, SVHN (svhn-extra: with extra_32x32.mat), CIFAR-100, STL-10 or the
    original's label files (labels: those its runners used) into the data root, each verified
    against its digest."""
    from mt_repro.config.paper import load_paper_config
    from mt_repro.data import downloads
    from mt_repro.paper.tables import RESNET_CONFIGS

    root = downloads.data_root(data_root)
    for item in dict.fromkeys(what):
        if item == "labels":
            papers = [load_paper_config(name) for name in dict.fromkeys(RESNET_CONFIGS.values())]
            wanted = list(dict.fromkeys(p.label_file_for(seed) for p in papers for seed in p.data_seeds))
            paths = downloads.fetch(downloads.label_downloads(wanted), root, say=click.echo)
            click.echo(f"label files: {len(paths)} in {root / downloads.LABELS_DIR} (--label-dir)")
        else:
            dataset = item.removesuffix("-extra")
            downloads.fetch(downloads.dataset_downloads(dataset, extra=item.endswith("-extra")), root, say=click.echo)
            click.echo(f"{dataset}: {downloads.dataset_path(dataset, root)} (--data)")


# --- the paper's tables (mt_repro.paper) ---------------------------------------------------
@cli.command("table")
@click.argument("number", type=int)
@click.option("--seeds", type=int, help="only the first N runs of each cell")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results/paper"), show_default=True)
@click.option("--dry-run", is_flag=True, help="list the runs and their cost, run nothing")
@click.option("--status", is_flag=True, help="every run's state in --out; exit 1 if any failed")
@click.option("--data", "data_dirs", multiple=True, metavar="DATASET=PATH",
              help="where each dataset is (e.g. cifar10=cifar-10-python.tar.gz)")
@click.option("--label-dir", type=click.Path(path_type=Path), help="the original's data-local/labels (Table 4)")
@click.option("--gpus", type=int, help="Table 4: scale batch and lr as for this many GPUs")
@click.option("--device", default="auto", show_default=True)
@click.option("--no-progress", is_flag=True)
@_DOWNLOAD_OPTIONS[0]
@_DOWNLOAD_OPTIONS[1]
@_with_launcher_options
@_THREADS_OPTION
@_WANDB_OPTION
def table_command(number: int, seeds: int | None, out: Path, dry_run: bool, status: bool, data_dirs: tuple[str, ...],
                  label_dir: Path | None, gpus: int | None, device: str, no_progress: bool,
                  download: bool, data_root: Path | None, threads: int | None, **launcher_options) -> None:
    """Run (or resume) every run behind Table NUMBER of the paper, with its configurations and
    data seeds; finished runs are skipped. Compare them afterwards with `mt-repro compare OUT`."""
    from mt_repro.paper import tables

    if dry_run or status:
        from mt_repro.paper import status as run_status

        if dry_run and status:
            raise BadInput("give --dry-run (the plan) or --status (the runs' states), not both")
        if status:
            states = run_status.run_states(number, out, seeds)
            for line in run_status.describe_states(states):
                click.echo(line)
            failed = [s for s in states if s.state == "failed"]
            if failed:
                raise RunFailed(f"{len(failed)} of Table {number}'s runs failed; the first: "
                                f"{failed[0].run.directory}: {failed[0].detail}")
            return
        runs = tables.planned_runs(number, seeds)
        for line in tables.describe_plan(runs):
            click.echo(line)
        click.echo("estimated cost on one device, from committed benchmarks:")
        for line in run_status.device_hours(runs):
            click.echo(line)
        finished = sum((out / run.directory / "summary.json").is_file() for run in runs)
        click.echo(f"{finished} of them already finished in {out}")
        return
    parsed = {}
    for item in data_dirs:
        dataset, sep, path = item.partition("=")
        if not sep or not dataset or not path:
            raise BadInput(f"--data expects DATASET=PATH, got {item!r}")
        parsed[dataset] = path
    waiting: dict[str, str] = {}
    if download:
        label_dir = _download_for_table(number, seeds, parsed, label_dir, data_root, waiting)
    elif data_root is not None:
        raise BadInput("--data-root is where --download puts files: give --download too")
    counts = tables.run_table(number, out, seeds=seeds, data_dirs=parsed, label_dir=label_dir, gpus=gpus,
                              device=device, progress=not no_progress, waiting=waiting, threads=threads,
                              **_launcher_choices(launcher_options, out))
    wait = f", {counts['waiting']} waiting for their data" if counts["waiting"] else ""
    click.echo(f"Table {number}: {counts['started']} run(s) started, {counts['resumed']} resumed, "
               f"{counts['skipped']} already finished{wait}; compare with: mt-repro compare {out} --table {number}")


def _download_for_table(number: int, seeds: int | None, data_dirs: dict[str, str], label_dir: Path | None,
                        data_root: Path | None, waiting: dict[str, str]) -> Path | None:
    """``table --download``: every dataset the table's runs need and ``--data`` does not name,
    and their label files, fetched; a dataset that cannot be downloaded (ImageNet) makes its
    runs wait. Returns the label directory the runs use."""
    from mt_repro.data import downloads
    from mt_repro.paper import tables

    root = downloads.data_root(data_root)
    planned = tables.planned_runs(number, seeds)
    datasets, label_files = tables.inputs_needed(planned, data_dirs)
    for dataset, extra in datasets.items():
        if dataset in downloads.MANUAL:
            waiting[dataset] = f"pass --data {dataset}=DIR ({downloads.MANUAL[dataset].split(':')[0]})"
            continue
        downloads.fetch(downloads.dataset_downloads(dataset, extra=extra), root, say=click.echo)
        data_dirs[dataset] = str(downloads.dataset_path(dataset, root))
    if label_dir is not None:
        return label_dir
    wanted = [path for dataset, paths in label_files.items() if dataset not in waiting for path in paths]
    downloads.fetch(downloads.label_downloads(wanted), root, say=click.echo)
    return root / downloads.LABELS_DIR


@cli.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--table", "table", type=int, help="judge the runs against this table only")
@click.option("--out", type=click.Path(path_type=Path), help="also write comparison.md and comparison.csv here")
@click.option("--html", "html_file", type=click.Path(path_type=Path),
              help="a self-contained HTML report: the table and each cell's training curves")
@click.option("--published", "source", metavar="SOURCE",
              help="judge the runs against another source's numbers instead (fixmatch, torchssl, usb, "
                   "oliver2018: `mt-repro published`)")
@click.pass_context
def compare_command(ctx, run_dirs: tuple[Path, ...], table: int | None, out: Path | None, html_file: Path | None,
                    source: str | None) -> None:
    """Our runs (or the original code's) against the paper's numbers: mean ± std, n, difference,
    Welch's t-test and a verdict per cell; runs that differ from the paper's recipe (steps,
    synthetic data, network, width, labels, settings) are "not comparable", with the reasons.
    Exit 0 when every cell is reproduced, 1 otherwise.

    RUN_DIR may be a run or a directory holding runs. Ours are found by summary.json, the
    original PyTorch code's by ema_validation.msgpack or its `port-log` CSV, ema_validation.csv,
    in the original's results/<runner>/<date>/<labels>_<seed>/ layout.

    With --published SOURCE, each cell of the runs is put beside that source's numbers for the
    same dataset, network, method and labels instead (a protocol grid beside USB's table, say):
    the same test, none against a number marked invalid or for runs that are not the protocol's."""
    from mt_repro.paper import compare, report, results, runs

    if source is not None:
        _compare_published(ctx, run_dirs, source, given=_given(ctx, ["table", "out", "html_file"]))
        return
    if table is not None:
        results.check_table_number(table)
    if out is not None:   # before any run is read: a long comparison does not end in a bad path
        report.check_output(out, "--out", directory=True)
    if html_file is not None:
        report.check_output(html_file, "--html")
    found = runs.find_runs(list(run_dirs))
    comparisons = compare.compare(found, table)
    click.echo(report.terminal_table(comparisons))
    if out is not None:
        report.write_report_file(out / "comparison.md", report.markdown(comparisons))
        report.write_report_file(out / "comparison.csv", report.csv_text(comparisons))
        click.echo(f"wrote {out / 'comparison.md'} and {out / 'comparison.csv'}")
    if html_file is not None:
        report.write_report_file(html_file, report.html_page(comparisons, report.figures(comparisons)))
        click.echo(f"wrote {html_file}")
    click.echo(report.summary_line(comparisons))
    if not compare.all_reproduced(comparisons):
        ctx.exit(1)


def _compare_published(ctx: click.Context, run_dirs: tuple[Path, ...], source: str, given: list[str]) -> None:
    from mt_repro.paper import against_published, runs

    if given:
        raise BadInput(f"{', '.join(given)}: options of a comparison with the Mean Teacher paper, not of --published")
    against_published.check_source(source)   # before any run is read
    comparisons = against_published.compare_published(runs.find_runs(list(run_dirs)), source)
    click.echo("\n".join(against_published.lines(comparisons)))
    if not against_published.all_reproduced(comparisons):
        ctx.exit(1)


@cli.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
def report_command(run_dirs: tuple[Path, ...]) -> None:
    """What the runs in RUN_DIR (or below it) measured: each run's reported test error, the mean
    ± std of each method, and their results under the common corruptions (`evaluate
    --corruptions`). `compare` judges runs against the paper; this only reports them."""
    from mt_repro.paper import runs_report

    click.echo("\n".join(runs_report.build_report(list(run_dirs)).lines()))


@cli.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("curves.png"), show_default=True,
              help="the figure: .png, .pdf or .svg, by its extension")
@click.option("--title", help="a title above the curves")
def plot_command(run_dirs: tuple[Path, ...], out: Path, title: str | None) -> None:
    """Training curves in the style of the paper's Figure 3: test error of the student (solid)
    and the teacher (dashed) against steps, and the training classification cost; one colour
    per method, the mean over its runs (seeds) with a band of ± std.

    RUN_DIR may be a run (it holds training.jsonl) or a directory holding runs."""
    from mt_repro.paper import plot

    click.echo(f"wrote {plot.write_plot(list(run_dirs), out, title)}")


@cli.command("published")
@click.option("--source", help="fixmatch, torchssl, usb or oliver2018")
@click.option("--dataset", help="cifar10, cifar100, svhn, stl10 or imagenet")
@click.option("--method", help="a method name as the rows give it (mean_teacher, fixmatch, ...)")
def published_command(source: str | None, dataset: str | None, method: str | None) -> None:
    """Other published numbers for the WRN-28-2 protocol (FixMatch's Table 2, TorchSSL's README,
    USB's classic_cv.csv, Oliver et al. 2018's Table 1), as error rates, with invalid ones
    marked and why; provenance per number is in mt_repro/paper/published.csv."""
    from mt_repro.paper import published

    published.check_filters(source, dataset)
    click.echo(published.terminal_table(published.published_numbers(source, dataset, method)))


def _one_line(message: str) -> str:
    """Errors and warnings are one printable line, whatever a file name or a value in the
    message contains: line breaks become spaces, control characters escapes (``\\x1b``)."""
    return one_line(message)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: errors become one line on stderr and an exit code."""
    _log_to_console()
    try:
        result = cli.main(args=argv, prog_name="mt-repro", standalone_mode=False)
        if isinstance(result, int):  # a command that ended with ctx.exit(code)
            return result
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort as exc:  # click's form of a Ctrl-C: what was interrupted is its cause
        click.echo(_interrupted(exc.__cause__, sys.argv[1:] if argv is None else argv), err=True)
        return 1
    except click.UsageError as exc:
        click.echo(f"mt-repro: error: {_one_line(exc.format_message())}", err=True)
        return 2
    except MtReproError as exc:
        click.echo(f"mt-repro: error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        click.echo(_interrupted(exc, sys.argv[1:] if argv is None else argv), err=True)
        return 1
    return 0


_GRID_COMMANDS = ("table", "ablation")   # run again, they keep finished runs and resume the interrupted one


def _interrupted(cause: BaseException | None, argv: list[str]) -> str:
    """The line a Ctrl-C leaves: how to go on. A grid (``GridInterrupted``) goes on with the same
    command; a run (or the digits demo's grid) interrupted names its directory
    (``RunInterrupted``): ``mt-repro resume DIR`` continues it."""
    import shlex

    from mt_repro.engine.launch import GridInterrupted  # (the cli's imports stay lazy: a fast --help)

    if argv and (argv[0] in _GRID_COMMANDS or isinstance(cause, GridInterrupted)):   # a protocol's grid
        return _one_line(f"mt-repro: interrupted; continue with the same command: {shlex.join(['mt-repro', *argv])}")
    directory = getattr(cause, "directory", None)
    if directory is None:
        return "mt-repro: interrupted"
    return _one_line(f"mt-repro: interrupted; continue with: mt-repro resume {shlex.quote(str(directory))}")


if __name__ == "__main__":
    sys.exit(main())
