"""``mt-repro``: a thin Click layer over the library. Every error is one line, exit 2 for bad
input, 1 for a failed run; the work itself happens in ``mt_repro.engine`` and ``mt_repro.data``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mt_repro import __version__
from mt_repro.errors import BadInput, MtReproError

LABEL_DIR_ENV = "MT_REPRO_LABEL_DIR"
DEFAULT_LABEL_DIR = "data-local/labels"  # where the original code kept its label files


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mt-repro")
def cli() -> None:
    """Mean Teacher (Tarvainen & Valpola, 2017), faithfully reproduced on current PyTorch."""


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

    if n_train < 5 or n_test < 1 or n_train % 5:
        raise BadInput("--train must be a positive multiple of 5 (five batches), --test positive")
    synthetic.write_cifar_tarball(tarball, n_train=n_train, n_test=n_test, seed=seed)
    labels = synthetic.balanced_labels(tarball, labels_per_class)
    label_path = tarball.with_name(tarball.name + ".labels.txt")
    label_path.write_text("".join(f"{name} {label}\n" for name, label in labels.items()))
    click.echo(f"wrote {tarball} ({n_train} training, {n_test} test images) and {label_path} "
               f"({len(labels)} labels)")


# --- paper runs ----------------------------------------------------------------------------
def _run_options(fn):
    options = [
        click.option("--label-file", type=click.Path(path_type=Path), help="an original-format label file"),
        click.option("--data-seed", type=int, help="which of the original label files (data seed)"),
        click.option("--label-dir", type=click.Path(path_type=Path),
                     help=f"the original code's data-local/labels (default ${LABEL_DIR_ENV} or ./{DEFAULT_LABEL_DIR})"),
        click.option("--data", "data_dir", type=click.Path(path_type=Path),
                     help="data: by-image tree (CIFAR-10 also: tarball or batches directory)"),
        click.option("--gpus", type=int, help="scale batch, labeled batch and lr as for this many GPUs"),
        click.option("--epochs", type=int, help="train for this many epochs"),
        click.option("--workers", type=int, help="data loading processes (0: faithful random order)"),
        click.option("--seed", type=int, help="seed random, numpy.random and torch, in that order"),
        click.option("--out", type=click.Path(path_type=Path), help="run directory"),
        click.option("--resume", type=click.Path(path_type=Path), help="continue this run directory"),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override any setting"),
        click.option("--device", default="auto", show_default=True),
        click.option("--no-progress", is_flag=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _paper_run(config_name: str, *, label_file, data_seed, label_dir, data_dir, gpus, epochs,
               workers, seed, out, resume, overrides, device, no_progress) -> None:
    from mt_repro.config import load_paper_config, parse_overrides
    from mt_repro.engine import trainer

    echo = click.echo
    if resume is not None:
        summary = trainer.resume(resume, epochs=epochs, progress=not no_progress, echo=echo)
        _print_summary(summary)
        return
    paper = load_paper_config(config_name)
    overridden = parse_overrides(overrides)
    if label_file is not None and data_seed is not None:
        raise BadInput("give --label-file or --data-seed, not both")
    if label_file is None:
        seed_of_split = paper.data_seeds[0] if data_seed is None else data_seed
        if seed_of_split not in paper.data_seeds:
            raise BadInput(f"--data-seed {seed_of_split}: the paper used {_seed_range(paper.data_seeds)}")
        base = Path(label_dir or os.environ.get(LABEL_DIR_ENV) or DEFAULT_LABEL_DIR)
        label_file = base / paper.label_file.format(data_seed=seed_of_split)
        if not label_file.is_file():
            raise BadInput(f"label file {label_file} not found; pass --label-file, or --label-dir "
                           "pointing at the original code's data-local/labels")
        run_name = f"{config_name.split('_', 1)[1]}_{seed_of_split}"
    else:
        run_name = f"{config_name.split('_', 1)[1]}_{Path(label_file).stem}"
    values = {"labels": str(label_file), "device": device}
    for key, value in (("epochs", epochs), ("workers", workers), ("seed", seed),
                       ("data_dir", None if data_dir is None else str(data_dir))):
        if value is not None:
            values[key] = value
    values.update(overridden)
    config = paper.resolve(gpus=gpus, **values)
    out_dir = out or trainer.default_out_dir(config_name, run_name)
    echo(f"{paper.title} ({paper.source}), {gpus or paper.gpus} GPU(s)' worth of batch and lr")
    _print_config(config)
    summary = trainer.train(config, out_dir, progress=not no_progress, echo=echo)
    _print_summary(summary)


def _seed_range(seeds) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _print_config(config) -> None:
    items = [f"{k}={v}" for k, v in config.to_dict().items()]
    click.echo("config: " + "  ".join(items))


def _print_summary(summary: dict) -> None:
    def pct(value):
        return "n/a" if value is None else f"{value:.2f}%"

    click.echo(f"done: {summary['epochs']} epochs, {summary['global_step']} steps, "
               f"{summary['n_labeled']} labeled / {summary['n_unlabeled']} unlabeled images")
    click.echo(f"  student  prec@1 {pct(summary['student_prec1'])}  error {pct(summary['student_error1'])}")
    click.echo(f"  teacher  prec@1 {pct(summary['teacher_prec1'])}  error {pct(summary['teacher_error1'])}")
    click.echo(f"  checkpoint {summary['checkpoint']}")
    click.echo(f"  logs       {summary['out_dir']}/{{training,validation,ema_validation}}.jsonl")


@cli.command()
@click.option("--labels", "n_labels", type=click.Choice(["1000", "4000"]), default="4000", show_default=True)
@_run_options
def cifar10(n_labels: str, **options) -> None:
    """The paper's CIFAR-10 ResNet run (Table 4), as the original runner configured it."""
    _paper_run(f"cifar10_{n_labels}", **options)


@cli.command()
@click.option("--labels", "n_labels", type=click.Choice(["10%"]), default="10%", show_default=True)
@_run_options
def imagenet(n_labels: str, **options) -> None:
    """The paper's ImageNet 10%-label ResNeXt-152 run (Table 4); data as folders train/ and val/."""
    _paper_run("imagenet_10pct", **options)


@cli.command("legacy-main", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                               "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def legacy_main(argv: tuple[str, ...]) -> None:
    """Run with the original pytorch/main.py flags, verbatim (plus --seed, --out, --data-dir)."""
    from mt_repro.engine import checkpoint as ckpt
    from mt_repro.engine import trainer
    from mt_repro.legacy.main_flags import parse

    config, args = parse(argv)
    if config.seed is not None:
        trainer.seed_everything(config.seed)
    out_dir = Path(config.out_dir) if config.out_dir else trainer.default_out_dir("main", "0")
    run = trainer.Trainer(config, out_dir, progress=not args.no_progress).build()
    if args.resume:
        run.load_state(ckpt.load_checkpoint(args.resume))
    if args.evaluate:
        for name, model in (("student", run.method.student), ("teacher", run.method.teacher)):
            result = run.evaluate(model)
            click.echo(f"{name}: prec@1 {result['top1/avg']:.3f}  prec@5 {result['top5/avg']:.3f}")
        return
    _print_summary(run.fit())


def main(argv: list[str] | None = None) -> int:
    """Console entry point: errors become one line on stderr and an exit code."""
    try:
        cli.main(args=argv, prog_name="mt-repro", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("mt-repro: interrupted", err=True)
        return 1
    except click.UsageError as exc:
        click.echo(f"mt-repro: error: {exc.format_message()}", err=True)
        return 2
    except MtReproError as exc:
        click.echo(f"mt-repro: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("mt-repro: interrupted; continue with --resume <run directory>", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
