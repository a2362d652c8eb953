"""The command line of the original ``pytorch/main.py``, flag for flag, mapped to ``TrainConfig``.

An old command line or experiment script runs unchanged: same flag names and aliases, same
defaults, same boolean spellings, same data paths relative to the working directory. Flags of
ours: ``--seed``, ``--out``, ``--data-dir``, ``--device``, ``--no-progress``.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput
from mt_repro.data.registry import dataset_names, get_dataset
from mt_repro.models import get_model, list_models


def str2bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line and exit code 2, via our error type
        raise BadInput(f"legacy-main: {message}")


def pipeline_datasets() -> list[str]:
    """The datasets the original PyTorch code could train: those read image by image."""
    return [name for name in dataset_names() if get_dataset(name).open_part is not None]


def create_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = _Parser(prog="mt-repro legacy-main", add_help=True,
                description="Run with the original pytorch/main.py flags.")
    p.add_argument("--dataset", default=d.dataset, choices=pipeline_datasets())
    p.add_argument("--train-subdir", default=d.train_subdir)
    p.add_argument("--eval-subdir", default=None,
                   help=f"default {d.eval_subdir}, the original's; a bundled dataset (digits): its own test part")
    p.add_argument("--labels", default=d.labels, metavar="FILE")
    p.add_argument("--exclude-unlabeled", default=d.exclude_unlabeled, type=str2bool, metavar="BOOL")
    p.add_argument("--arch", "-a", default=d.arch, choices=[m for m in list_models() if get_model(m).recipe == "pytorch"])
    p.add_argument("-j", "--workers", default=d.workers, type=int)
    p.add_argument("--epochs", default=d.epochs, type=int)
    p.add_argument("--start-epoch", default=d.start_epoch, type=int)
    p.add_argument("-b", "--batch-size", default=d.batch_size, type=int)
    p.add_argument("--labeled-batch-size", default=d.labeled_batch_size, type=int)
    p.add_argument("--lr", "--learning-rate", default=d.lr, type=float)
    p.add_argument("--initial-lr", default=d.initial_lr, type=float)
    p.add_argument("--lr-rampup", default=d.lr_rampup, type=int)
    p.add_argument("--lr-rampdown-epochs", default=d.lr_rampdown_epochs, type=int)
    p.add_argument("--momentum", default=d.momentum, type=float)
    p.add_argument("--nesterov", default=d.nesterov, type=str2bool, metavar="BOOL")
    p.add_argument("--weight-decay", "--wd", default=d.weight_decay, type=float)
    p.add_argument("--ema-decay", default=d.ema_decay, type=float)
    p.add_argument("--consistency", default=d.consistency, type=float)
    p.add_argument("--consistency-type", default=d.consistency_type, choices=["mse", "kl"])
    p.add_argument("--consistency-rampup", default=d.consistency_rampup, type=int)
    p.add_argument("--logit-distance-cost", default=d.logit_distance_cost, type=float)
    p.add_argument("--checkpoint-epochs", default=d.checkpoint_epochs, type=int)
    p.add_argument("--evaluation-epochs", default=d.evaluation_epochs, type=int)
    p.add_argument("--print-freq", "-p", default=d.print_freq, type=int)
    p.add_argument("--resume", default="", metavar="PATH", help="checkpoint file to continue from")
    p.add_argument("-e", "--evaluate", type=str2bool, metavar="BOOL")
    p.add_argument("--pretrained", action="store_true")
    ours = p.add_argument_group("mt-repro additions")
    ours.add_argument("--seed", type=int, default=None,
                      help="seed random, numpy.random and torch (in that order) before anything else")
    ours.add_argument("--out", default=None, help="run directory (default results/main/<date>/0)")
    ours.add_argument("--data-dir", default=None, help="data directory (default: the original's data-local path)")
    ours.add_argument("--device", default="auto")
    ours.add_argument("--no-progress", action="store_true")
    return p


def _default_eval_part(dataset: str) -> str:
    """The original's ``--eval-subdir`` default (``val``) for a dataset kept in folders; a bundled
    dataset has no folders to choose among, only its own parts: its evaluation part."""
    spec = get_dataset(dataset)
    return spec.eval_part if spec.default_root is None else TrainConfig().eval_subdir


def parse(argv: Sequence[str]) -> tuple[TrainConfig, argparse.Namespace]:
    args = create_parser().parse_args(list(argv))
    if args.pretrained:
        raise BadInput("legacy-main: --pretrained is not supported (the original asserted it off too)")
    skip = {"resume", "evaluate", "pretrained", "out", "data_dir", "no_progress"}
    values = {k: v for k, v in vars(args).items() if k not in skip}
    values["eval_subdir"] = args.eval_subdir or _default_eval_part(args.dataset)
    config = TrainConfig.from_dict(values, source="legacy-main")
    config = config.replace(out_dir=args.out, data_dir=args.data_dir)
    return config.validate(), args
