"""The one training loop, for both halves of the original: ``pytorch/main.py``'s epochs of SGD
steps and ``tensorflow/mean_teacher/train.py``'s steps, in small named steps.

``Trainer.build`` assembles a run from its configuration: the training data (where the recipe
puts the noise), the student, the teacher, the optimizer, the method, the schedule and the
timeline (``mt_repro.engine.recipes``). ``Trainer.fit`` = for each epoch: ``train_one_epoch``
(``train_step`` after ``train_step``; evaluations inside the epoch where the timeline puts
them), then ``end_of_epoch`` (the method's per-epoch update, evaluation of student and teacher,
a checkpoint). Every operation that draws random numbers happens in the order of the original
half the recipe comes from, so a seeded CPU run with ``workers=0`` reproduces its minibatches,
augmentations, weights and losses.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mt_repro.config.saved import to_saved
from mt_repro.core.errors import BadInput, NonFiniteLoss, RunFailed
from mt_repro.core.fileio import TEMPORARY_SUFFIX, write_text_atomic
from mt_repro.core.rng import restore_rng_state
from mt_repro.core.types import (LABELED_MINIBATCH_SIZE, Batch, HostCopy, StepContext, StepResult, check_loss,
                                 read_logged)
from mt_repro.data.batch_augment import to_device
from mt_repro.data.registry import get_dataset
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import distributed, fast_mode, provenance, recipes
from mt_repro.engine.ema import TEACHER_INITS, TEACHER_UPDATES
from mt_repro.engine.evaluation import evaluate_model, knn_evaluate
from mt_repro.engine.provenance import INPUTS_FILE
from mt_repro.engine.meters import MeterSet
from mt_repro.engine.optimizers import OPTIMIZERS
from mt_repro.engine.schedules import SCHEDULES, StepHyper, apply
from mt_repro.engine.timelines import TIMELINES
from mt_repro.logs import events, wandb_log
from mt_repro.logs.runlog import RunLog
from mt_repro.methods import registry as methods
from mt_repro.models import get_model
from mt_repro.core.networks import encoder_state

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
LOGS = ("training.jsonl", "validation.jsonl", "ema_validation.jsonl")


def run_files(out_dir: str | Path) -> list[Path]:
    """The files of a run in ``out_dir`` (none: it holds no run): its config, summary and logs,
    its checkpoints, and temporary files of theirs that a killed write left behind."""
    out_dir = Path(out_dir)
    names = (CONFIG_FILE, SUMMARY_FILE, INPUTS_FILE, *LOGS, wandb_log.ID_FILE)
    found = [out_dir / name for name in names if os.path.lexists(out_dir / name)]
    found += sorted(p for p in _entries(out_dir) if _is_temporary_of(p.name, names))
    checkpoints = out_dir / CHECKPOINT_DIR
    if checkpoints.is_dir():
        found += sorted(p for p in _entries(checkpoints) if _is_checkpoint_file(p.name))
    event_files = out_dir / events.EVENTS_DIR
    if event_files.is_dir() and not event_files.is_symlink():
        found += sorted(p for p in _entries(event_files) if p.name.startswith("events.out.tfevents."))
    return [p for p in found if p.is_symlink() or not p.is_dir()]


def remove_run_files(out_dir: str | Path) -> list[Path]:
    """Remove the files of the run in ``out_dir`` (``run_files``), and ``checkpoints/`` and
    ``tensorboard/`` if that leaves them empty; nothing else in the directory is touched.
    Returns what was removed."""
    removed = []
    for path in run_files(out_dir):
        path.unlink()
        removed.append(path)
    for directory in (Path(out_dir) / CHECKPOINT_DIR, Path(out_dir) / events.EVENTS_DIR):
        if directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
            directory.rmdir()
    return removed


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


_CHECKPOINT_NAME = re.compile(r"(checkpoint\.[0-9]+|last|best)\.ckpt")


def _is_checkpoint_file(name: str) -> bool:
    """``checkpoint.N.ckpt``, ``last.ckpt``, ``best.ckpt``, or a temporary file of one of them."""
    if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX):
        name = name[1:].rsplit(".", 2)[0]   # .<target>.<random>.partial
    return _CHECKPOINT_NAME.fullmatch(name) is not None


def _is_temporary_of(name: str, targets) -> bool:
    """Whether ``name`` is a temporary file of ``atomic_write`` for one of ``targets``."""
    return name.endswith(TEMPORARY_SUFFIX) and any(name.startswith(f".{target}.") for target in targets)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput("device cuda requested but no CUDA GPU is available")
    return device


# Fast mode reads the steps' logged values at each log row, and at least every this many steps
# (a diverged loss is seen that soon).
MAX_PENDING_STEPS = 64


@dataclass
class PendingStep:
    """A step taken, with what the meters take of it once its logged values are read."""

    epoch: int
    global_step: int    # the SGD steps taken, this one included
    data_time: float
    hp: StepHyper
    result: StepResult
    batch_time: float


@dataclass
class TrainState:
    """Where the run stands: epochs completed, steps taken in the current epoch and in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_prec1: float = 0.0


@dataclass
class Evaluation:
    student: dict[str, float] = field(default_factory=dict)
    teacher: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Owns the networks, optimizer, data, logs and checkpoints of one run directory."""

    def __init__(self, config, out_dir: str | Path, *, progress: bool = True, overwrite: bool = False):
        """``overwrite``: the files of a run already in ``out_dir`` are removed when the run is
        built (once its settings and data have been found good), before anything is written."""
        self.config = config.validate()
        recipes.check_config(self.config)
        self.recipe = self.config.recipe
        self.out_dir = Path(out_dir)
        self.group = distributed.from_environment()
        self.is_main = self.group.is_main  # the one process that writes logs and checkpoints
        self.progress = progress and self.is_main
        self.device = distributed.device_for(self.group, resolve_device(config.device))
        self.speedups = fast_mode.FAITHFUL
        self.state = TrainState()
        self.meters = MeterSet()
        self.last_eval = Evaluation()
        self.resumed = False
        self.log_sinks: list | None = None
        self.overwrite = overwrite

    def say(self, line: str) -> None:
        if self.is_main:
            log.info(line)

    # --- building -----------------------------------------------------------------------
    def build(self, *, record_config: bool = True) -> "Trainer":
        """Data, then student, then teacher, then optimizer, then method: the original's order.
        Then the run directory, with its ``config.json`` unless not ``record_config`` (a resumed
        run records its settings once it is known to go on: ``record_config()``)."""
        cfg, recipe = self.config, self.recipe
        self.speedups = fast_mode.speedups_for(cfg.mode, cfg.compile, self.device,
                                               note=log.warning if self.is_main else None,
                                               compile_mode=cfg.compile_mode)
        fast_mode.set_float32_precision(self.speedups, self.device)
        method_class = methods.method_class(cfg.method)
        self.data = recipes.training_data(cfg, self.device, method_class.extras_for(cfg))
        build_network = self._network_builder()
        student = build_network()
        teacher = TEACHER_INITS[recipe.teacher_init](cfg, student, build_network)
        student, teacher = self._sharded(student, teacher, method_class)
        self.optimizer = OPTIMIZERS[recipe.optimizer](cfg, student.parameters())
        self.method = methods.create_method(cfg, student, teacher, build_network=build_network)
        cohort = self.method.extra_parameters()  # e.g. the other students of Deep Mutual Learning
        if cohort:
            self.optimizer.add_param_group({"params": cohort})
        self.schedule = SCHEDULES[recipe.schedule](cfg, self.method)
        self.timeline = TIMELINES[recipe.timeline](cfg, self.method, self.data.steps_per_epoch)
        self.teacher_update = TEACHER_UPDATES[recipe.teacher_update] if self.method.updates_teacher else None
        self._prepare_out_dir(record_config)
        return self

    def _network_builder(self):
        """Networks of the run's architecture on its device; a network initialised from data
        (the ConvNet) gets its initialisation pass over the stream's first minibatch."""
        cfg = self.config
        info = get_model(cfg.arch)
        init_batch = self.data.init_batch().to(self.device) if info.init_from_data else None

        def build() -> torch.nn.Module:
            model = info.builder(num_classes=self.data.num_classes, **cfg.network_options())
            model = model.to(self.device)
            if init_batch is not None:
                info.init_from_data(model, init_batch)
            return fast_mode.prepare_model(model, self.speedups)
        return build

    def _sharded(self, student: torch.nn.Module, teacher: torch.nn.Module, method_class):
        """Student and teacher as DataParallel ran them over ``batch_shards`` GPUs (default: the
        number of processes); unchanged when that is 1."""
        cfg, group = self.config, self.group
        if self.recipe.noise != "pipeline":
            if group.distributed:
                raise BadInput("the ConvNet recipe runs in one process, on one device")
            return student, teacher
        shards = cfg.batch_shards or group.world_size
        if shards == 1:
            return student, teacher
        if group.distributed and not method_class.multi_process:
            raise BadInput(f"method {cfg.method} does not run under several processes yet (it makes "
                           "more than one student pass per step or trains extra networks); run it in "
                           f"one process, with batch_shards={group.world_size} for the same statistics")
        if cfg.batch_size % shards:
            raise BadInput(f"batch_size ({cfg.batch_size}) must be a multiple of the {shards} "
                           "processes: each takes an equal share of every minibatch")
        # without logit distance the loss takes both of its terms from the first head
        unused = ("fc2",) if cfg.logit_distance_cost < 0 else ()
        return (distributed.ShardedModel(student, shards, group, self.device, unused_heads=unused),
                distributed.ShardedModel(teacher, shards, group, self.device, trainable=False))

    def _prepare_out_dir(self, record_config: bool = True) -> None:
        if not self.is_main:  # rank 0 writes; the others keep logs that are never written
            self.training_log = self.validation_log = self.ema_validation_log = _Unwritten()
            return
        try:
            if self.overwrite:
                removed = remove_run_files(self.out_dir)
                if removed:
                    log.info(f"removed the {len(removed)} file(s) of the earlier run in {self.out_dir}")
            (self.out_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot write to output directory {self.out_dir}: {exc.strerror or exc}") from None
        if record_config:
            self.record_config()
        self.training_log, self.validation_log, self.ema_validation_log = (RunLog(self.out_dir / name) for name in LOGS)
        if events.enabled() or wandb_log.enabled():
            self.training_log, self.validation_log, self.ema_validation_log = (
                events.TeeLog(run_log, self._log_sinks, name.removesuffix(".jsonl"))
                for run_log, name in zip((self.training_log, self.validation_log, self.ema_validation_log), LOGS))

    def record_config(self) -> None:
        """The run's settings in its ``config.json``."""
        if not self.is_main:
            return
        try:
            write_text_atomic(self.out_dir / CONFIG_FILE, json.dumps(to_saved(self.config), indent=2) + "\n")
        except OSError as exc:
            raise BadInput(f"cannot write to output directory {self.out_dir}: {exc.strerror or exc}") from None

    # --- resuming -----------------------------------------------------------------------
    def load_state(self, state: dict[str, Any], *, restore_rng: bool = True, keep_logs: bool = False) -> None:
        """Continue from a checkpoint: weights, optimizer, counters and (ours) RNG states, the
        data's and the method's state, and the epoch's meters. The logs' rows written after the
        checkpoint are dropped (``drop_rows_after_checkpoint``) unless ``keep_logs``."""
        method = self.method
        extras = state.get("mt_repro") or {}
        try:
            method.student.load_state_dict(ckpt.without_prefix(state["state_dict"]))
            method.teacher.load_state_dict(ckpt.without_prefix(state["ema_state_dict"]))
            self.optimizer.load_state_dict(state["optimizer"])
            self.data.load_state_dict(extras.get("data_state") or {})
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise BadInput(f"checkpoint does not fit {self.config.arch}: {first}") from None
        global_step = int(state["global_step"])
        epoch, step_in_epoch = extras.get("position") or (
            divmod(global_step, self.data.steps_per_epoch) if self.recipe.timeline == "steps" else (int(state["epoch"]), 0))
        self.state = TrainState(int(epoch), int(step_in_epoch), global_step, float(state.get("best_prec1", 0.0)))
        if restore_rng and "rng" in extras:
            restore_rng_state(extras["rng"])
        method.load_state_dict(extras.get("method_state") or {})
        self.meters.load_state_dict(extras.get("meters") or {})
        last = extras.get("last_eval") or {}
        self.last_eval = Evaluation(last.get("student", {}), last.get("teacher", {}))
        self.resumed = True
        if not keep_logs:
            self.drop_rows_after_checkpoint()

    def load_encoder(self, path: str | Path) -> None:
        """Student and teacher start from the encoder of checkpoint ``path`` (its student: a
        pre-training method's query encoder); their heads keep their own initialisation."""
        state = ckpt.load_checkpoint(path)
        if state.get("arch") != self.config.arch:
            raise BadInput(f"--init-from {path} holds a {state.get('arch')} network; this run trains "
                           f"{self.config.arch}")
        encoder = encoder_state(ckpt.without_prefix(state["state_dict"]))
        for network in (self.method.student, self.method.teacher):
            own = encoder_state(network.state_dict())
            missing, unexpected = sorted(set(own) - set(encoder)), sorted(set(encoder) - set(own))
            if missing or unexpected:
                raise BadInput(f"--init-from {path} does not fit {self.config.arch}: "
                               f"{len(missing)} missing, {len(unexpected)} unexpected entries "
                               f"({', '.join((missing + unexpected)[:3])})")
            try:
                network.load_state_dict(encoder, strict=False)
            except RuntimeError as exc:
                raise BadInput(f"--init-from {path} does not fit {self.config.arch}: "
                               f"{str(exc).splitlines()[-1].strip()[:200]}") from None
        self.say(f"student and teacher start from the encoder of {path} "
                 f"(step {state.get('global_step')} of its run; its heads initialised afresh)")

    def drop_rows_after_checkpoint(self) -> None:
        """Rows written after the loaded checkpoint by the interrupted run will be written again."""
        global_step = self.state.global_step
        for log_file in (self.training_log, self.validation_log, self.ema_validation_log):
            log_file.truncate(lambda row: row["step"] <= global_step)

    @property
    def finished(self) -> bool:
        """Whether the run has taken all its steps (``fit`` has nothing left to train)."""
        return self.state.epoch >= self.timeline.epochs

    # --- the loop -----------------------------------------------------------------------
    @property
    def run_epochs(self) -> int:
        return self.timeline.epochs

    def fit(self) -> dict[str, Any]:
        if self.timeline.evaluate_at_start and not self.resumed and self.state.global_step == 0:
            self.evaluate_and_checkpoint()
        bar = tqdm(total=self.timeline.total_steps, initial=self.state.global_step, disable=not self.progress,
                   unit="step", dynamic_ncols=True, desc="training")
        try:
            for epoch in range(self.state.epoch, self.timeline.epochs):
                self.train_one_epoch(epoch, bar)
                self.end_of_epoch(epoch + 1)
        finally:
            bar.close()
        summary = self.write_summary()
        for sink in self.log_sinks or []:
            sink.close()
        return summary

    def _log_sinks(self) -> list:
        """Where the logs' rows go besides the ``.jsonl`` files, made at the first row: the
        TensorBoard writer (a resumed run's starts afresh from the rows its logs kept, those up
        to its checkpoint, so that the event files hold what the logs hold) and the W&B run."""
        if self.log_sinks is None:
            self.log_sinks = []
            if events.enabled():
                logs = {name.removesuffix(".jsonl"): log_file for name, log_file in
                        zip(LOGS, (self.training_log, self.validation_log, self.ema_validation_log))}
                self.log_sinks.append(events.EventFiles.replaying(self.out_dir, logs if self.resumed else {}))
            if wandb_log.enabled():
                self.log_sinks.append(wandb_log.WandbRun(self.out_dir, to_saved(self.config)))
        return self.log_sinks

    def train_one_epoch(self, epoch: int, bar: tqdm | None = None) -> None:
        # a resumed run's epoch goes on where its checkpoint was taken
        steps, start = self.timeline.steps_in(epoch), self.state.step_in_epoch if epoch == self.state.epoch else 0
        if start == 0:
            self.meters = MeterSet()
        self.train_mode()
        pending: list[PendingStep] = []
        end = time.time()
        for i, batch in enumerate(self.data.epoch(epoch, start, steps), start):
            data_time = time.time() - end
            hp, result = self.step(batch, epoch, i, steps)
            pending.append(PendingStep(epoch, self.state.global_step, data_time, hp, result, time.time() - end))
            end = time.time()
            self.state.step_in_epoch = i + 1
            log_row = self.timeline.log_row(i, self.state.global_step)
            evaluate = self.timeline.evaluate_after_step(self.state.global_step)
            if not self.deferred_readout or log_row or evaluate or i + 1 == steps or len(pending) >= MAX_PENDING_STEPS:
                self.read_steps(pending, bar)
                pending = []
            if log_row:
                self.training_log.record(epoch + i / self.timeline.steps_per_epoch,
                                         {"step": self.state.global_step, **self.meters.record()})
            if bar is not None:
                bar.update(1)
            if evaluate:
                self.evaluate_and_checkpoint()
        self.read_steps(pending, bar)

    @property
    def deferred_readout(self) -> bool:
        """Whether the steps' logged values are read once per log row (fast mode: the device
        runs ahead of the host) rather than after each step (faithful mode, as the original)."""
        return self.speedups != fast_mode.FAITHFUL

    def read_steps(self, pending: "list[PendingStep]", bar: tqdm | None = None) -> None:
        """Read the logged values of ``pending`` steps from the device (one wait), check each
        step's loss in order and add them to the epoch's meters, as each step did in the original."""
        if not pending:
            return
        rows = read_logged([p.result for p in pending])
        meters = self.meters
        for step, values in zip(pending, rows):
            if self.deferred_readout:   # faithful mode checked each step before taking it
                self.check_loss(step.epoch, step.global_step, step.result)
            values = dict(values)
            n_labeled = values.pop(LABELED_MINIBATCH_SIZE)
            meters.update("data_time", step.data_time)
            for name, value in step.hp.logged.items():
                meters.update(name, value)
            meters.update(LABELED_MINIBATCH_SIZE, n_labeled)
            for name, value in values.items():
                meters.update(name, value, n_labeled if ("top" in name or "error" in name) else 1)
            meters.update("batch_time", step.batch_time)
        if bar is not None:
            bar.set_postfix(epoch=pending[-1].epoch, loss=f"{rows[-1]['loss']:.3f}",
                            top1=f"{meters['top1'].avg:.1f}", refresh=False)

    def check_loss(self, epoch: int, step_number: int, result: StepResult) -> None:
        """``RunFailed`` naming step ``step_number`` if its loss diverged (its values read)."""
        try:
            check_loss(result.values, result.max_loss)
        except NonFiniteLoss as exc:
            taken_since = self.state.global_step - step_number
            late = (f"; fast mode reads the losses once per log row, so {taken_since} more step(s) were taken"
                    if taken_since > 0 else "")
            raise RunFailed(f"training diverged at step {step_number} (epoch {epoch}): "
                            f"{exc}; the last good checkpoint is kept in "
                            f"{self.out_dir / CHECKPOINT_DIR}{late}") from None

    def train_mode(self) -> None:
        """Both networks in training mode (the teacher too: batch statistics, its own noise)."""
        self.method.student.train()
        self.method.teacher.train()

    def step(self, batch: Batch, epoch: int, step_in_epoch: int, steps_in_epoch: int) -> tuple[StepHyper, StepResult]:
        """The schedule at this step, set in the optimizer, then the step itself."""
        hp = self.schedule.at(epoch, step_in_epoch, steps_in_epoch, self.state.global_step)
        apply(hp, self.optimizer)
        return hp, self.train_step(batch, hp, epoch)

    def train_step(self, batch: Batch, hp: StepHyper, epoch: int) -> StepResult:
        """One step on one minibatch: the method's losses (in fast mode's memory format and
        precision), backward, the optimizer's step and the teacher's update, at the recipe's
        moment (before the optimizer's step, or after it)."""
        method, state = self.method, self.state
        batch = self._on_device(batch)
        step = StepContext(epoch=epoch, global_step=state.global_step, consistency_weight=hp.consistency_weight)
        with fast_mode.autocast(self.speedups, self.device):
            result = method.losses(batch, step)
        if not self.deferred_readout:  # the original's check, before the step is taken
            self.check_loss(epoch, state.global_step + 1, result)
        self.optimizer.zero_grad()
        result.loss.backward()
        update = self.teacher_update
        if update is not None and update.before_step:
            update.update(method.student, method.teacher, hp.ema_decay, state.global_step)
        self.optimizer.step()
        state.global_step += 1
        if update is not None and not update.before_step:
            update.update(method.student, method.teacher, hp.ema_decay, state.global_step)
        return result

    def _on_device(self, batch: Batch) -> Batch:
        def prepare(tensor: torch.Tensor) -> torch.Tensor:
            return fast_mode.prepare_input(tensor.to(self.device, non_blocking=True), self.speedups)

        student_input = prepare(batch.student_input)
        # one tensor for both views where the noise is the network's (the ConvNet recipe)
        teacher_input = student_input if batch.teacher_input is batch.student_input else prepare(batch.teacher_input)
        targets = batch.targets
        rows = host = None
        if targets.device.type == "cpu":   # as the loaders give them: the rows found before the copy
            host = HostCopy.of(targets, batch.extras.get("indices"))
            rows = tuple(to_device(part, self.device) for part in host.rows())
        return Batch(student_input, teacher_input, to_device(targets, self.device),
                     {name: prepare(value) for name, value in batch.extras.items()}, rows, host)

    def evaluate(self, model: torch.nn.Module, name: str = "model") -> dict[str, float]:
        """Precision@1/@5 and class cost on head 1, in eval mode (running statistics), or for a
        method evaluated by its features, their kNN's precision against the labeled training
        images; with a progress bar of its own (the training bar waits, full or not, meanwhile)."""
        progress = f"evaluating the {name}" if self.progress else None
        if self.method.evaluation == "knn":
            options = self.method.options
            return knn_evaluate(model, self.data.labeled_images(), self.data.evaluation(), self.device,
                                self.data.num_classes, k=options.knn_k, temperature=options.knn_temperature,
                                speedups=self.speedups, progress=progress)
        return evaluate_model(model, self.data.evaluation(), self.device, self.speedups, progress=progress)

    def evaluate_both(self) -> bool:
        """Evaluate student then teacher, log both; whether the teacher is the best so far."""
        state, method = self.state, self.method
        position = state.epoch + state.step_in_epoch / self.timeline.steps_per_epoch
        student = self.evaluate(method.student, "student")
        self.validation_log.record(position, {"step": state.global_step, **student})
        teacher = self.evaluate(method.teacher, "teacher")
        self.ema_validation_log.record(position, {"step": state.global_step, **teacher})
        self.last_eval = Evaluation(student, teacher)
        is_best = teacher["top1/avg"] > state.best_prec1
        state.best_prec1 = max(teacher["top1/avg"], state.best_prec1)
        measure = "kNN error" if method.evaluation == "knn" else "error"
        self.say(f"epoch {position:g}, step {state.global_step}: student {measure} {student['error1/avg']:.2f}%  "
                 f"teacher {measure} {teacher['error1/avg']:.2f}%")
        return is_best

    def evaluate_and_checkpoint(self) -> None:
        """An evaluation inside the timeline's epochs, and its checkpoint where the timeline takes
        one there (the ConvNet runs'); training goes on in training mode."""
        self.evaluate_both()
        if self.timeline.checkpoint_with_evaluations:
            self.save_checkpoint(numbered=False, is_best=False)
        self.train_mode()

    def end_of_epoch(self, epochs_done: int) -> None:
        self.method.end_of_epoch(epochs_done)  # before evaluation: e.g. a new self-training teacher
        self.state.epoch, self.state.step_in_epoch = epochs_done, 0
        is_best = self.evaluate_both() if self.timeline.evaluate_after_epoch(epochs_done) else False
        if self.timeline.checkpoint_after_epoch(epochs_done):
            self.save_checkpoint(numbered=self.timeline.numbered_checkpoint(epochs_done), is_best=is_best)

    def save_checkpoint(self, *, numbered: bool, is_best: bool) -> None:
        state, method = self.state, self.method
        extras = {"position": [state.epoch, state.step_in_epoch], "data_state": self.data.state_dict(),
                  "last_eval": {"student": self.last_eval.student, "teacher": self.last_eval.teacher}}
        if state.step_in_epoch:
            extras["meters"] = self.meters.state_dict()
        method_state = method.state_dict()
        if method_state:  # what the method keeps besides the two networks, for --resume
            extras["method_state"] = method_state
        checkpoint = ckpt.build_checkpoint(epoch=state.epoch, global_step=state.global_step, arch=self.config.arch,
                                           student=method.student, teacher=method.teacher, optimizer=self.optimizer,
                                           best_prec1=state.best_prec1, config=to_saved(self.config), **extras)
        if not self.is_main:
            return
        directory = self.out_dir / CHECKPOINT_DIR
        if numbered:
            path = ckpt.save_atomic(checkpoint, directory / f"checkpoint.{state.epoch}.ckpt")
            if is_best:  # as in the original, "best" is only kept on checkpoint epochs
                ckpt.link(path, directory / "best.ckpt")
            ckpt.link(path, directory / LAST_CHECKPOINT)
        else:
            ckpt.save_atomic(checkpoint, directory / LAST_CHECKPOINT)

    def write_summary(self) -> dict[str, Any]:
        cfg = self.config
        student, teacher = self.last_eval.student, self.last_eval.teacher
        declared = cfg.declared_labels
        n_labeled = self.data.n_labeled if declared is None else (
            get_dataset(cfg.dataset).train_size if declared == "all" else int(declared))
        summary = {
            "dataset": cfg.dataset,
            "arch": cfg.arch,
            "method": cfg.method,   # the cell of `mt-repro compare` (mt_repro.paper.runs)
            "evaluation": self.method.evaluation,   # "knn": the errors are of a kNN on the features
            "recipe": self.recipe.name,
            **cfg.run_description(),   # labels, data_seed, extra_unlabeled, experiment
            "n_labeled": n_labeled,
            "n_labeled_in_split": self.data.n_labeled,
            "n_unlabeled": self.data.n_unlabeled,
            # the unlabeled stream drawn from every training image, the labeled ones too
            "unlabeled_includes_labeled": bool(getattr(cfg, "unlabeled_includes_labeled", False)),
            "epochs": self.timeline.epochs,
            "global_step": self.state.global_step,
            "student_prec1": student.get("top1/avg"),
            "teacher_prec1": teacher.get("top1/avg"),
            "student_error1": student.get("error1/avg"),
            "teacher_error1": teacher.get("error1/avg"),
            "best_teacher_prec1": self.state.best_prec1,
            # what that best was selected on: a best-on-test number is said to be one
            "best_teacher_prec1_on": getattr(cfg, "eval_subdir", None),
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT),
        }
        if not self.is_main:
            return summary
        summary["provenance"] = provenance.of_trainer(self)   # code, data, steps, recipe: `compare` reads it
        try:
            write_text_atomic(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise RunFailed(f"cannot write {self.out_dir / SUMMARY_FILE}: {exc.strerror or exc}") from None
        return summary


class _Unwritten:
    """The run logs of a process other than rank 0: nothing is written."""

    def record(self, *args, **kwargs) -> None:
        pass

    def truncate(self, *args, **kwargs) -> int:
        return 0
