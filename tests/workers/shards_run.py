"""A tiny Mean Teacher (or ``--method``) run on the digits, for tests/test_distributed.py: run by
``torchrun`` (one process per shard) or as a plain script (``--shards N``: the shards in turn).

Dropout is switched off so that the forward pass draws no random numbers: the processes of a
distributed run draw dropout masks from their own generators, a single process from one.
"""
import argparse
import sys

import torch

from mt_repro.config import TrainConfig
from mt_repro.core.rng import seed_everything
from mt_repro.engine.runs import process_group, resume
from mt_repro.engine.trainer import Trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("label_file")
    parser.add_argument("--shards", type=int)
    parser.add_argument("--steps-epochs", type=int, default=1)
    parser.add_argument("--mode", default="faithful")
    parser.add_argument("--method", default="mean_teacher")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--method-options", default="")
    parser.add_argument("--logit-distance-cost", type=float, default=0.01, help="< 0: one head")
    parser.add_argument("--resume", action="store_true", help="continue OUT to --steps-epochs epochs")
    args = parser.parse_args(argv)
    if args.resume:
        resume(args.out, overrides={"epochs": args.steps_epochs}, progress=False)
        return 0
    config = TrainConfig(
        dataset="digits", train_subdir="train", eval_subdir="test", arch="digits_convnet",
        labels=args.label_file, workers=0, batch_size=64, labeled_batch_size=16,
        epochs=args.steps_epochs, lr=0.05, nesterov=True, weight_decay=5e-4, ema_decay=0.99,
        consistency=30.0, consistency_rampup=1, logit_distance_cost=args.logit_distance_cost, print_freq=1,
        seed=0, device="cpu", mode=args.mode, method=args.method, batch_shards=args.shards,
        dist_timeout_s=args.timeout)
    if args.method == "moco":   # a pre-training stage: every image, no labels, the contrastive loss alone
        config = config.replace(sampling="uniform", labeled_batch_size=None, logit_distance_cost=-1.0,
                                consistency=1.0, consistency_rampup=0, method_options=args.method_options)
    with process_group(config) as config:
        seed_everything(config.seed)
        trainer = Trainer(config, args.out, progress=False).build()
        for model in (trainer.method.student, trainer.method.teacher):
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        trainer.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
