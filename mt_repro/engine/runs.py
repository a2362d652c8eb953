"""Starting and continuing runs: ``train`` a configuration into a run directory, ``resume`` a run
directory from its last checkpoint. Both recipes, one way.

A run directory holds ``config.json`` (the settings, with their recipe), ``training.jsonl``,
``validation.jsonl`` and ``ema_validation.jsonl`` (one row per record, flushed as written),
``checkpoints/``, ``inputs.json`` (where its data and label file were and a hash of what they
held) and, when the run has finished, ``summary.json``. A new run never goes into a directory
that holds another's files (it would add to their logs) unless told to replace them
(``overwrite``); a finished run resumed is left as it is.

A run directory resumes from any working directory: its config.json names its data, label file
and directory by absolute paths. Data given again on resume (it moved) is used only if it holds
what the run started with, by content hash (``mt_repro.core.hashing``); run directories written
before absolute paths were recorded resume from the directory they were started in.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from mt_repro.config.saved import from_saved, read_saved, to_saved
from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import TEMPORARY_SUFFIX, write_text_atomic
from mt_repro.core.hashing import content_hash
from mt_repro.core.rng import seed_everything
from mt_repro.core.threads import ThreadChoice
from mt_repro.data.registry import get_dataset
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import distributed
from mt_repro.engine.provenance import INPUTS_FILE, recorded_inputs
from mt_repro.engine.trainer import (CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT, SUMMARY_FILE,
                                     Trainer, resolve_device, run_files)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Input:
    """A file a run reads, named in its settings."""

    field: str   # the setting
    flag: str    # the command line's option that gives it
    what: str    # its name in messages


INPUTS = (Input("data_dir", "--data", "data"), Input("labels", "--label-file", "label file"),
          Input("init_from", "--init-from", "pre-trained encoder"))
LOCATIONS = ("data_dir", "labels", "out_dir", "init_from")   # settings that say where, not how, a run trains


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run (or a grid of runs) that can be continued: ``directory`` is what
    ``mt-repro resume`` takes. Still a ``KeyboardInterrupt``, so it stops everything above."""

    def __init__(self, directory: str | Path):
        super().__init__(str(directory))
        self.directory = Path(directory)


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
    with interruptible(out), process_group(config) as config:
        trainer = start(config, out, overwrite=overwrite, progress=progress)
        if resume_from is not None:
            trainer.load_state(ckpt.load_checkpoint(resume_from))
        return trainer.fit()


def start(config, out_dir: Path, *, overwrite: bool = False, progress: bool = True) -> Trainer:
    """A built trainer of a new run: its generators seeded first (when the run has a seed), its
    paths made absolute (``located``) and its inputs' content hashes recorded (``inputs.json``).
    ``out_dir`` must not hold a run, unless ``overwrite`` (see ``train``). Its ``fit`` under
    ``interruptible(out_dir)`` says how to continue it after a Ctrl-C."""
    if distributed.from_environment().is_main:  # the others never write, and rank 0 may have begun
        refuse_existing_run(out_dir, overwrite=overwrite)
    trainer = _seeded_trainer(located(config), out_dir, overwrite=overwrite, progress=progress)
    record_inputs(trainer)
    return trainer


def _seeded_trainer(config, out_dir: Path, *, overwrite: bool = False, progress: bool = True) -> Trainer:
    """A new run's trainer, its networks started from a pre-trained encoder if it names one (no
    random number is drawn for that: a run from scratch and from the encoder see the same
    minibatches)."""
    if config.run_seed is not None:
        seed_everything(config.run_seed)
    trainer = Trainer(config, out_dir, progress=progress, overwrite=overwrite).build()
    if getattr(config, "init_from", None):
        trainer.load_encoder(config.init_from)
    return trainer


@contextlib.contextmanager
def interruptible(directory: str | Path):
    """A Ctrl-C inside becomes ``RunInterrupted(directory)`` once ``directory`` holds a run
    (its config.json) to continue; before that there is nothing to resume."""
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:
        if not (Path(directory) / CONFIG_FILE).is_file():
            raise
        raise RunInterrupted(directory) from exc


# --- where a run's files are ----------------------------------------------------------------------
def inputs_of(config) -> tuple[Input, ...]:
    """The inputs a run's settings name: data (both recipes), label file (the ResNet runs)."""
    return tuple(item for item in INPUTS if hasattr(config, item.field))


def located(config):
    """``config`` with its data, label file and run directory as absolute paths (a relative one
    taken from the working directory), and no data directory meaning the dataset's default
    place, named: what config.json records, so the run resumes from any working directory."""
    changes = {}
    for name in (*(item.field for item in inputs_of(config)), "out_dir"):
        value = getattr(config, name)
        if name == "data_dir" and value is None:
            value = _default_data_dir(config)
        if value is not None and os.path.abspath(value) != value:
            changes[name] = os.path.abspath(value)
    return config.replace(**changes).validate() if changes else config


def _default_data_dir(config) -> str | None:
    """Where the original code kept the dataset (relative), for a run that names no data."""
    root = get_dataset(config.dataset).root(None)
    return None if root is None else str(root)


def without_locations(config) -> dict[str, Any]:
    """A run's settings less where its files are: two runs with equal ones train alike."""
    return {k: v for k, v in to_saved(config).items() if k not in LOCATIONS}


def record_inputs(trainer: Trainer, known: dict[str, str] | None = None) -> None:
    """``inputs.json`` of the trainer's run: each input's path and content hash (``known``:
    hashes computed already, by field)."""
    if not trainer.is_main:
        return
    known = known or {}
    entries = {}
    for item in inputs_of(trainer.config):
        path = getattr(trainer.config, item.field)
        if path is not None and os.path.exists(path):
            entries[item.field] = {"path": path, "content_hash": known.get(item.field) or content_hash(path)}
    try:
        write_text_atomic(trainer.out_dir / INPUTS_FILE, json.dumps(entries, indent=2) + "\n")
    except OSError as exc:
        raise BadInput(f"cannot write to output directory {trainer.out_dir}: {exc.strerror or exc}") from None


def checked_inputs(run_dir: Path, config, given: dict[str, Any],
                   recorded: dict[str, dict[str, str]]) -> tuple[Any, dict[str, str]]:
    """The settings of a run to resume with its inputs' absolute paths, and the hashes of those
    given again (``given``: a new path by field, e.g. the data moved). Each input must exist; one
    given again must hold what the run started with (its hash in ``recorded``, the run's
    ``recorded_inputs``, or for a run that recorded none, the content at its former path if that
    is still there)."""
    changes, hashes = {}, {}
    for item in inputs_of(config):
        former = getattr(config, item.field)
        if item.field == "data_dir" and former is None:
            former = _default_data_dir(config)
        if given.get(item.field) is not None:
            path = os.path.abspath(given[item.field])
            hashes[item.field] = _same_input(run_dir, item, path, former, recorded.get(item.field))
        elif former is None:
            continue
        else:
            path = os.path.abspath(former)
            if not os.path.exists(path):
                raise BadInput(_missing_input(run_dir, item, former, path))
        if path != getattr(config, item.field):
            changes[item.field] = path
    return (config.replace(**changes).validate() if changes else config), hashes


def _same_input(run_dir: Path, item: Input, path: str, former: str | None, recorded: dict | None) -> str:
    """The content hash of ``path``, given again for ``item``, if it is what the run started with."""
    if not os.path.exists(path):
        raise BadInput(f"{item.flag} {path} does not exist")
    new = content_hash(path)
    if recorded is not None:
        expected, source = recorded["content_hash"], f"recorded in {run_dir / INPUTS_FILE} for {recorded['path']}"
    elif former is not None and os.path.exists(former):
        expected, source = content_hash(former), f"of {os.path.abspath(former)}, which it was started with"
    else:
        log.warning(f"run {run_dir} recorded no hash of its {item.what} (it was started before runs did): "
                    f"{path} is used unchecked")
        return new
    if new != expected:
        raise BadInput(f"{item.flag} {path} is not the {item.what} run {run_dir} was started with: its content "
                       f"hash {_short(new)} differs from {_short(expected)} {source}; a resumed run keeps the "
                       f"{item.what} it started with: start a new run (another --out) for another")
    return new


def _short(digest: str) -> str:
    kind, _, hexdigest = digest.partition(":")
    return f"{kind}:{hexdigest[:12]}"


def _missing_input(run_dir: Path, item: Input, former: str, path: str) -> str:
    remedy = f"pass {item.flag} PATH where it is now (it is checked to hold the same {item.what} by content)"
    if os.path.isabs(former):
        return f"{item.what} {former} of run {run_dir} does not exist (moved or deleted?): {remedy}"
    return (f"{item.what} {former} of run {run_dir} does not exist here ({path}): the run was started "
            f"before runs recorded absolute paths, so it is relative to the directory the run was started "
            f"in: resume from there, or {remedy}")


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
    if not os.path.lexists(config_path):   # (one that is there but no regular file: read_saved says so)
        raise BadInput(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return from_saved(read_saved(config_path), str(config_path))


def resume(run_dir: str | Path, *, overrides: dict[str, Any] | None = None,
           progress: bool = True, threads: ThreadChoice | None = None) -> dict[str, Any]:
    """Continue an interrupted run directory from its last checkpoint, bit for bit, from any
    working directory.

    ``overrides`` change settings from here on (e.g. a lower ``lr`` after a diverged run, more
    ``epochs``); they are validated and recorded in the run's config.json. ``data_dir`` and
    ``labels`` among them are where the run's inputs are now (they moved): used only if they
    hold what the run started with (``checked_inputs``), refused otherwise. A run killed before
    its first checkpoint starts again from the beginning. A run that has finished (its summary
    written, its last checkpoint at its end, even with ``overrides``) is left untouched: its
    summary is returned as a ``KeptSummary``. A Ctrl-C raises ``RunInterrupted``. ``threads``:
    the thread count the command chose (``mt_repro.engine.threads``), said once training goes on.
    """
    run_dir = Path(run_dir)
    overrides = dict(overrides or {})
    config = read_run_config(run_dir)
    given = {item.field: overrides.pop(item.field) for item in inputs_of(config) if item.field in overrides}
    if overrides:
        config = config.replace(**overrides).validate()
    recorded = recorded_inputs(run_dir)
    config, hashes = checked_inputs(run_dir, config, given, recorded)
    config = located(config)
    changes = {**overrides, **{k: v for k, v in given.items() if v is not None}}
    told = "resuming with " + ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else None
    with interruptible(run_dir), process_group(config) as config:
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not last.exists():
            if told:
                log.info(told)
            log.info(f"{run_dir} has no checkpoint yet: starting it again from the beginning")
            if threads is not None:
                log.info(threads.describe())
            trainer = _seeded_trainer(config, run_dir, progress=progress)
            record_inputs(trainer, hashes)
            for log_file in (trainer.training_log, trainer.validation_log, trainer.ema_validation_log):
                log_file.truncate(lambda row: False)
            return trainer.fit()
        state = ckpt.load_checkpoint(last)
        trainer = Trainer(config, run_dir, progress=progress).build(record_config=False)
        trainer.load_state(state, keep_logs=True)
        _lengthened_inside_an_epoch(trainer)
        kept = _finished_summary(trainer)
        if kept is not None:
            log.info(f"run {run_dir} finished at epoch {trainer.state.epoch} (step {trainer.state.global_step}); "
                     "nothing to resume (its summary is kept)")
            return kept
        if told:
            log.info(told)
        at = trainer.state   # its position as the evaluations' lines give it
        position = at.epoch + at.step_in_epoch / trainer.timeline.steps_per_epoch
        log.info(f"resuming {run_dir} at epoch {position:g}, step {at.global_step}")
        if threads is not None:
            log.info(threads.describe())
        trainer.record_config()
        if given or not recorded:
            record_inputs(trainer, hashes)
        trainer.drop_rows_after_checkpoint()
        return trainer.fit()


def _lengthened_inside_an_epoch(trainer: Trainer) -> None:
    """A run of the steps recipe that ended inside a pass of its minibatch stream checkpointed
    at the end of that pass (epoch N, step 0 in it); lengthened (more ``training_length``), it
    goes on inside the pass, where its step count says it is."""
    state, timeline = trainer.state, trainer.timeline
    if (trainer.recipe.timeline == "steps" and state.step_in_epoch == 0
            and state.global_step < min(state.epoch * timeline.steps_per_epoch, timeline.total_steps)):
        state.epoch, state.step_in_epoch = divmod(state.global_step, timeline.steps_per_epoch)


def _finished_summary(trainer: Trainer) -> KeptSummary | None:
    """The summary of a run whose checkpoint is at its end and whose summary was written."""
    if not trainer.finished:
        return None
    try:
        summary = json.loads((trainer.out_dir / SUMMARY_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None   # killed before its summary, or the summary is damaged: written again
    return KeptSummary(summary) if isinstance(summary, dict) else None
