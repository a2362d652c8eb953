"""Starting and continuing runs: ``train`` a configuration into a run directory, ``resume`` a run
directory from its last checkpoint. Both recipes, one way.

A run directory holds ``config.json`` (the settings, with their recipe), ``training.jsonl``,
``validation.jsonl`` and ``ema_validation.jsonl`` (one row per record, flushed as written),
``checkpoints/`` and, when the run has finished, ``summary.json``.
"""
from __future__ import annotations

import contextlib
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from mt_repro.config.saved import from_saved
from mt_repro.core.errors import BadInput
from mt_repro.core.rng import seed_everything
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import distributed
from mt_repro.engine.trainer import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT, Trainer, resolve_device

log = logging.getLogger(__name__)


def default_out_dir(runner: str, run_name: str) -> Path:
    """The original's layout: results/<runner>/<date>/<run>."""
    return Path("results") / runner / f"{datetime.now():%Y-%m-%d_%H:%M:%S}" / run_name


def train(config, out_dir: str | Path | None = None, *, runner: str = "mt-repro", run_name: str = "0",
          resume_from: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train from Python: seed, build, optionally resume from a checkpoint, fit; returns the
    summary dict. ``config``: a ``TrainConfig`` or a ``ConvNetConfig``.

    Under ``torchrun`` every process calls this with the same config (mt_repro.engine.distributed).
    """
    with process_group(config) as config:
        out = Path(out_dir or config.out_dir or default_out_dir(runner, run_name))
        trainer = start(config, out, progress=progress)
        if resume_from is not None:
            trainer.load_state(ckpt.load_checkpoint(resume_from))
        return trainer.fit()


def start(config, out_dir: Path, *, progress: bool = True) -> Trainer:
    """A built trainer of a new run: its generators seeded first (when the run has a seed)."""
    if config.run_seed is not None:
        seed_everything(config.run_seed)
    return Trainer(config, out_dir, progress=progress).build()


@contextlib.contextmanager
def process_group(config):
    """Join the run's other processes when under ``torchrun`` (and leave at the end); yields the
    config, with a seed shared by all processes if it had none (they must draw the same
    minibatches)."""
    group = distributed.from_environment()
    if not group.distributed:
        yield config
        return
    config.validate()
    if config.recipe.noise != "pipeline":
        raise BadInput("the ConvNet recipe runs in one process, on one device: start it without torchrun")
    device = distributed.device_for(group, resolve_device(config.device))
    started = not torch.distributed.is_initialized()
    distributed.init_process_group(group, device, config.dist_timeout_s)
    try:
        if config.run_seed is None:
            config = config.replace(seed=distributed.shared_seed(group, device))
        yield config
    finally:
        if started:
            distributed.shutdown()


def read_run_config(run_dir: str | Path):
    """The settings a run directory was started with."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BadInput(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        values = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{config_path} cannot be read: {exc}") from None
    return from_saved(values, str(config_path))


def resume(run_dir: str | Path, *, overrides: dict[str, Any] | None = None,
           progress: bool = True) -> dict[str, Any]:
    """Continue an interrupted run directory from its last checkpoint, bit for bit.

    ``overrides`` change settings from here on (e.g. a lower ``lr`` after a diverged run, more
    ``epochs``); they are validated and recorded in the run's config.json. A run killed before
    its first checkpoint starts again from the beginning.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if overrides:
        config = config.replace(**overrides).validate()
        log.info("resuming with " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    with process_group(config) as config:
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not last.exists():
            log.info(f"{run_dir} has no checkpoint yet: starting it again from the beginning")
            trainer = start(config, run_dir, progress=progress)
            for log_file in (trainer.training_log, trainer.validation_log, trainer.ema_validation_log):
                log_file.truncate(lambda row: False)
            return trainer.fit()
        state = ckpt.load_checkpoint(last)
        trainer = Trainer(config, run_dir, progress=progress).build()
        trainer.load_state(state)
        return trainer.fit()
