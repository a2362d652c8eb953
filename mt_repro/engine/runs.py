"""Starting and continuing runs: ``train`` a configuration into a run directory, ``resume`` a run
directory from its last checkpoint. Both recipes, one way.

A run directory holds ``config.json`` (the settings, with their recipe), ``training.jsonl``,
``validation.jsonl`` and ``ema_validation.jsonl`` (one row per record, flushed as written),
``checkpoints/`` and, when the run has finished, ``summary.json``. A new run never goes into a
directory that holds another's files (it would add to their logs) unless told to replace them
(``overwrite``); a finished run resumed is left as it is.
"""
from __future__ import annotations

import contextlib
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from mt_repro.config.saved import from_saved, read_saved
from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import TEMPORARY_SUFFIX
from mt_repro.core.rng import seed_everything
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import distributed
from mt_repro.engine.trainer import (CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT, SUMMARY_FILE, Trainer,
                                     resolve_device, run_files)

log = logging.getLogger(__name__)


def default_out_dir(runner: str, run_name: str) -> Path:
    """The original's layout: results/<runner>/<date>/<run>."""
    return Path("results") / runner / f"{datetime.now():%Y-%m-%d_%H:%M:%S}" / run_name


class KeptSummary(dict):
    """The summary of a run that had finished already, as its ``summary.json`` holds it: what
    ``resume`` returns when there was nothing left to train (nothing was written)."""


def train(config, out_dir: str | Path | None = None, *, runner: str = "mt-repro", run_name: str = "0",
          resume_from: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train from Python: seed, build, optionally resume from a checkpoint, fit; returns the
    summary dict. ``config``: a ``TrainConfig`` or a ``ConvNetConfig``. A directory that holds
    a run already is refused (``BadInput``) unless ``overwrite``: then that run's files are
    removed first (``mt_repro.engine.trainer.run_files``; nothing else in the directory).

    Under ``torchrun`` every process calls this with the same config (mt_repro.engine.distributed).
    """
    out = Path(out_dir or config.out_dir or default_out_dir(runner, run_name))
    refuse_existing_run(out, overwrite=overwrite)  # every process, before any of them writes
    with process_group(config) as config:
        trainer = start(config, out, overwrite=overwrite, progress=progress)
        if resume_from is not None:
            trainer.load_state(ckpt.load_checkpoint(resume_from))
        return trainer.fit()


def start(config, out_dir: Path, *, overwrite: bool = False, progress: bool = True) -> Trainer:
    """A built trainer of a new run: its generators seeded first (when the run has a seed).
    ``out_dir`` must not hold a run, unless ``overwrite`` (see ``train``)."""
    if distributed.from_environment().is_main:  # the others never write, and rank 0 may have begun
        refuse_existing_run(out_dir, overwrite=overwrite)
    return _seeded_trainer(config, out_dir, overwrite=overwrite, progress=progress)


def _seeded_trainer(config, out_dir: Path, *, overwrite: bool = False, progress: bool = True) -> Trainer:
    if config.run_seed is not None:
        seed_everything(config.run_seed)
    return Trainer(config, out_dir, progress=progress, overwrite=overwrite).build()


def refuse_existing_run(out_dir: str | Path, *, overwrite: bool = False, remedy: str | None = None) -> None:
    """``BadInput`` if ``out_dir`` holds a run's files (a config, a checkpoint, logs), unless
    ``overwrite``: a new run there would add to that run's logs. ``remedy``: what the message
    suggests instead of the training commands' ``--resume`` and ``--overwrite``."""
    # (a temporary file that a killed write left is no run: it is removed with the run's files)
    found = [] if overwrite else [p for p in run_files(out_dir) if not p.name.endswith(TEMPORARY_SUFFIX)]
    if found:
        remedy = remedy or (f"continue it with --resume {out_dir}, start it afresh with --overwrite "
                            "(its files are removed)")
        raise BadInput(f"{out_dir} holds a run already ({found[0].relative_to(out_dir)}): {remedy}, "
                       "or choose another --out")


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
    return from_saved(read_saved(config_path), str(config_path))


def resume(run_dir: str | Path, *, overrides: dict[str, Any] | None = None,
           progress: bool = True) -> dict[str, Any]:
    """Continue an interrupted run directory from its last checkpoint, bit for bit.

    ``overrides`` change settings from here on (e.g. a lower ``lr`` after a diverged run, more
    ``epochs``); they are validated and recorded in the run's config.json. A run killed before
    its first checkpoint starts again from the beginning. A run that has finished (its summary
    written, its last checkpoint at its end, even with ``overrides``) is left untouched: its
    summary is returned as a ``KeptSummary``.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if overrides:
        config = config.replace(**overrides).validate()
    changes = "resuming with " + ", ".join(f"{k}={v}" for k, v in overrides.items()) if overrides else None
    with process_group(config) as config:
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not last.exists():
            if changes:
                log.info(changes)
            log.info(f"{run_dir} has no checkpoint yet: starting it again from the beginning")
            trainer = _seeded_trainer(config, run_dir, progress=progress)
            for log_file in (trainer.training_log, trainer.validation_log, trainer.ema_validation_log):
                log_file.truncate(lambda row: False)
            return trainer.fit()
        state = ckpt.load_checkpoint(last)
        trainer = Trainer(config, run_dir, progress=progress).build(record_config=False)
        trainer.load_state(state, keep_logs=True)
        kept = _finished_summary(trainer)
        if kept is not None:
            log.info(f"run {run_dir} finished at epoch {trainer.state.epoch} (step {trainer.state.global_step}); "
                     "nothing to resume (its summary is kept)")
            return kept
        if changes:
            log.info(changes)
        trainer.record_config()
        trainer.drop_rows_after_checkpoint()
        return trainer.fit()


def _finished_summary(trainer: Trainer) -> KeptSummary | None:
    """The summary of a run whose checkpoint is at its end and whose summary was written."""
    if not trainer.finished:
        return None
    try:
        summary = json.loads((trainer.out_dir / SUMMARY_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None   # killed before its summary, or the summary is damaged: written again
    return KeptSummary(summary) if isinstance(summary, dict) else None
