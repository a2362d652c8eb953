"""The train/validate loop of the original ``pytorch/main.py``, in small named steps.

``Trainer.fit`` = for each epoch: ``train_one_epoch`` (Mean Teacher steps), every
``evaluation_epochs`` ``evaluate`` student then teacher, then checkpoints. The order of every
operation that draws random numbers is the original's, so a seeded CPU run with ``workers=0``
reproduces the original's minibatches, augmentations, weights and losses.
"""
from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from mt_repro import models
from mt_repro.config import TrainConfig
from mt_repro.data.datasets import DataBundle, create_data
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import distributed, fast_mode
from mt_repro.engine.meters import MeterSet
from mt_repro.errors import BadInput, RunFailed
from mt_repro.fileio import crash_point, write_text_atomic
from mt_repro.logs.runlog import RunLog
from mt_repro.methods.losses import classification_cost
from mt_repro.methods.mean_teacher import (MeanTeacher, NonFiniteLoss, StepResult, accuracy,
                                           create_teacher, learning_rate)
from mt_repro.methods.registry import create_method

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators, in that order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def default_out_dir(runner: str, run_name: str) -> Path:
    """The original's layout: results/<runner>/<date>/<run>."""
    return Path("results") / runner / f"{datetime.now():%Y-%m-%d_%H:%M:%S}" / run_name


def evaluate_model(model: torch.nn.Module, loader, device: torch.device,
                   speedups: fast_mode.Speedups = fast_mode.FAITHFUL) -> dict[str, float]:
    """The original's validation: precision@1/@5 and class cost on head 1 over ``loader``, in
    eval mode (running BN statistics); returns the meters' values, averages and sums."""
    model.eval()
    meters = MeterSet()
    end = time.time()
    with torch.no_grad():
        for inputs, targets in loader:
            meters.update("data_time", time.time() - end)
            inputs = fast_mode.prepare_input(inputs.to(device, non_blocking=True), speedups)
            targets = targets.to(device, non_blocking=True)
            n_labeled = int(targets.ne(-1).sum())
            meters.update("labeled_minibatch_size", n_labeled)
            with fast_mode.autocast(speedups, device):
                logits, _ = model(inputs)
            logits = logits.float()
            crash_point("evaluate")
            class_loss = classification_cost(logits, targets) / len(targets)
            top1, top5 = accuracy(logits, targets, topk=(1, 5))
            meters.update("class_loss", class_loss.item(), n_labeled)
            meters.update("top1", top1, n_labeled)
            meters.update("error1", 100.0 - top1, n_labeled)
            meters.update("top5", top5, n_labeled)
            meters.update("error5", 100.0 - top5, n_labeled)
            meters.update("batch_time", time.time() - end)
            end = time.time()
    return meters.record()


@dataclass
class EpochResult:
    student: dict[str, float] = field(default_factory=dict)
    teacher: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Owns the models, optimizer, logs and checkpoints of one run directory."""

    def __init__(self, config: TrainConfig, out_dir: Path, *, progress: bool = True,
                 echo: Callable[[str], None] = print):
        self.config = config.validate()
        self.out_dir = Path(out_dir)
        self.group = distributed.from_environment()
        self.is_main = self.group.is_main  # the one process that writes logs and checkpoints
        self.progress = progress and self.is_main
        self.echo = echo if self.is_main else (lambda _: None)
        self.device = distributed.device_for(self.group, resolve_device(config.device))
        self.speedups = fast_mode.FAITHFUL
        self.data: DataBundle | None = None
        self.method: MeanTeacher | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.start_epoch = config.start_epoch
        self.best_prec1 = 0.0
        self.last_eval = EpochResult()

    # --- building -----------------------------------------------------------------------
    def build(self) -> "Trainer":
        """Data, then student, then teacher, then optimizer: the original's order."""
        cfg = self.config
        self.speedups = fast_mode.speedups_for(cfg.mode, cfg.compile, self.device, note=self.echo)
        fast_mode.set_float32_precision(self.speedups, self.device)
        self.data = create_data(cfg, self.device)

        def factory() -> torch.nn.Module:
            model = models.create_model(cfg.arch, self.data.num_classes).to(self.device)
            return fast_mode.prepare_model(model, self.speedups)

        student = factory()
        teacher = create_teacher(factory)
        student, teacher = self._sharded(student, teacher)
        self.optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.method = create_method(cfg, student, teacher)
        cohort = self.method.extra_parameters()  # e.g. the other students of Deep Mutual Learning
        if cohort:
            self.optimizer.add_param_group({"params": cohort})
        self._prepare_out_dir()
        return self

    def _sharded(self, student: torch.nn.Module, teacher: torch.nn.Module):
        """Student and teacher as DataParallel ran them over ``batch_shards`` GPUs (default: the
        number of processes); unchanged when that is 1."""
        cfg, group = self.config, self.group
        shards = cfg.batch_shards or group.world_size
        if shards == 1:
            return student, teacher
        from mt_repro.methods.registry import method_class

        if group.distributed and not method_class(cfg.method).multi_process:
            raise BadInput(f"method {cfg.method} does not run under several processes yet (it makes "
                           "more than one student pass per step or trains extra networks); run it in "
                           f"one process, with batch_shards={group.world_size} for the same statistics")
        if cfg.batch_size % shards:
            raise BadInput(f"batch_size ({cfg.batch_size}) must be a multiple of the {shards} "
                           "processes: each takes an equal share of every minibatch")
        return (distributed.ShardedModel(student, shards, group, self.device),
                distributed.ShardedModel(teacher, shards, group, self.device, trainable=False))

    def _prepare_out_dir(self) -> None:
        if not self.is_main:  # rank 0 writes; the others keep logs that are never written
            self.training_log = self.validation_log = self.ema_validation_log = _Unwritten()
            return
        try:
            (self.out_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out_dir / CONFIG_FILE, json.dumps(self.config.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise BadInput(f"cannot write to output directory {self.out_dir}: {exc.strerror or exc}") from None
        self.training_log = RunLog(self.out_dir / "training.jsonl")
        self.validation_log = RunLog(self.out_dir / "validation.jsonl")
        self.ema_validation_log = RunLog(self.out_dir / "ema_validation.jsonl")

    # --- resuming -----------------------------------------------------------------------
    def load_state(self, state: dict[str, Any], *, restore_rng: bool = True) -> None:
        """Continue from a checkpoint: weights, optimizer, counters and (ours) RNG states."""
        method = self.method
        try:
            method.student.load_state_dict(ckpt.without_prefix(state["state_dict"]))
            method.teacher.load_state_dict(ckpt.without_prefix(state["ema_state_dict"]))
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).splitlines()[0][:200]
            raise BadInput(f"checkpoint does not fit {self.config.arch}: {first}") from None
        self.start_epoch = int(state["epoch"])
        method.global_step = int(state["global_step"])
        self.best_prec1 = float(state.get("best_prec1", 0.0))
        extras = state.get("mt_repro") or {}
        if restore_rng and "rng" in extras:
            ckpt.restore_rng_state(extras["rng"])
        method.load_state_dict(extras.get("method_state") or {})
        # Rows written after this checkpoint by the interrupted run will be written again.
        self.training_log.truncate(lambda row: row["step"] <= method.global_step)
        for log in (self.validation_log, self.ema_validation_log):
            log.truncate(lambda row: row["epoch"] <= self.start_epoch)

    # --- the loop -----------------------------------------------------------------------
    @property
    def run_epochs(self) -> int:
        """The epochs the run trains for: the config's, times the trainings a method chains
        (self-training's generations)."""
        return self.method.run_epochs(self.config.epochs)

    def fit(self) -> dict[str, Any]:
        cfg = self.config
        steps_per_epoch = len(self.data.train_loader)
        total = (self.run_epochs - self.start_epoch) * steps_per_epoch
        bar = tqdm(total=total, disable=not self.progress, unit="step", dynamic_ncols=True,
                   desc="training")
        try:
            for epoch in range(self.start_epoch, self.run_epochs):
                self.train_one_epoch(epoch, bar)
                self.end_of_epoch(epoch + 1)
        finally:
            bar.close()
        return self.write_summary()

    def train_one_epoch(self, epoch: int, bar: tqdm | None = None) -> None:
        cfg, method = self.config, self.method
        loader = self.training_loader(epoch)
        steps = len(loader)
        meters = MeterSet()
        end = time.time()
        for i, batch in enumerate(loader):
            meters.update("data_time", time.time() - end)
            meters.update("lr", self.set_learning_rate(epoch, i, steps))
            result = self.train_step(batch, epoch)
            n_labeled = result.labeled_minibatch_size
            meters.update("labeled_minibatch_size", n_labeled)
            for name, value in result.values.items():
                weight = n_labeled if ("top" in name or "error" in name) else 1
                meters.update(name, value, weight)
            meters.update("batch_time", time.time() - end)
            end = time.time()
            if i % cfg.print_freq == 0:
                self.training_log.record(epoch + i / steps, {"step": method.global_step, **meters.record()})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{result.values['loss']:.3f}",
                                top1=f"{meters['top1'].avg:.1f}", refresh=False)

    def training_loader(self, epoch: int):
        """The training loader, ready for ``epoch``, with both networks in training mode."""
        self.method.student.train()
        self.method.teacher.train()
        loader = self.data.train_loader
        if hasattr(loader, "set_epoch"):  # fast mode's augmentation parameters are per epoch
            loader.set_epoch(epoch)
        return loader

    def set_learning_rate(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
        lr = learning_rate(self.config, self.method.schedule_position(epoch + step_in_epoch / steps_per_epoch))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, batch, epoch: int) -> StepResult:
        """One SGD step on one minibatch of the training loader: the method's losses (in fast
        mode's memory format and precision), backward, the optimizer's step, the method's update."""
        method, speedups, device = self.method, self.speedups, self.device
        (student_input, teacher_input), targets, *extras = batch
        student_input = fast_mode.prepare_input(student_input.to(device, non_blocking=True), speedups)
        teacher_input = fast_mode.prepare_input(teacher_input.to(device, non_blocking=True), speedups)
        targets = targets.to(device, non_blocking=True)
        # Per-sample inputs the method asked the loader for (mt_repro.data.sample_extras).
        sample_extras = {name: fast_mode.prepare_input(value.to(device, non_blocking=True), speedups)
                         for extra in extras for name, value in extra.items()}
        try:
            with fast_mode.autocast(speedups, device):
                result = method.losses(student_input, teacher_input, targets, epoch, **sample_extras)
        except NonFiniteLoss as exc:
            raise RunFailed(f"training diverged at step {method.global_step + 1} (epoch {epoch}): "
                            f"{exc}; the last good checkpoint is kept in "
                            f"{self.out_dir / CHECKPOINT_DIR}") from None
        self.optimizer.zero_grad()
        result.loss.backward()
        crash_point("step")
        self.optimizer.step()
        method.after_optimizer_step()
        return result

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Precision@1/@5 and class cost on head 1, in eval mode (running BN statistics)."""
        return evaluate_model(model, self.data.eval_loader, self.device, self.speedups)

    def end_of_epoch(self, epochs_done: int) -> None:
        cfg, method = self.config, self.method
        method.end_of_epoch(epochs_done)  # before evaluation: e.g. a new self-training teacher
        is_best = False
        if cfg.evaluation_epochs and epochs_done % cfg.evaluation_epochs == 0:
            student = self.evaluate(method.student)
            self.validation_log.record(epochs_done, {"step": method.global_step, **student})
            teacher = self.evaluate(method.teacher)
            self.ema_validation_log.record(epochs_done, {"step": method.global_step, **teacher})
            self.last_eval = EpochResult(student, teacher)
            is_best = teacher["top1/avg"] > self.best_prec1
            self.best_prec1 = max(teacher["top1/avg"], self.best_prec1)
            self.echo(f"epoch {epochs_done}: student prec@1 {student['top1/avg']:.2f}  "
                      f"teacher prec@1 {teacher['top1/avg']:.2f}")
        state = ckpt.build_checkpoint(epoch=epochs_done, global_step=method.global_step,
                                      arch=cfg.arch, student=method.student, teacher=method.teacher,
                                      optimizer=self.optimizer, best_prec1=self.best_prec1,
                                      config=cfg.to_dict())
        method_state = method.state_dict()
        if method_state:  # what the method keeps besides the two networks, for --resume
            state["mt_repro"]["method_state"] = method_state
        if not self.is_main:
            return
        directory = self.out_dir / CHECKPOINT_DIR
        if cfg.checkpoint_epochs and epochs_done % cfg.checkpoint_epochs == 0:
            numbered = ckpt.save_atomic(state, directory / f"checkpoint.{epochs_done}.ckpt")
            if is_best:  # as in the original, "best" is only kept on checkpoint epochs
                ckpt.link_atomic(numbered, directory / "best.ckpt")
            ckpt.link_atomic(numbered, directory / LAST_CHECKPOINT)
        else:
            ckpt.save_atomic(state, directory / LAST_CHECKPOINT)

    def write_summary(self) -> dict[str, Any]:
        student, teacher = self.last_eval.student, self.last_eval.teacher
        summary = {
            "dataset": self.config.dataset,
            "arch": self.config.arch,
            "method": self.config.method,   # the cell of `mt-repro compare` (mt_repro.paper.runs)
            "labels": self.config.labels,
            # The label file's number (10.txt -> 10), the ResNet runs' data seed.
            "data_seed": int(Path(self.config.labels).stem) if self.config.labels
            and Path(self.config.labels).stem.isdigit() else None,
            "epochs": self.run_epochs,
            "global_step": self.method.global_step,
            "student_prec1": student.get("top1/avg"),
            "teacher_prec1": teacher.get("top1/avg"),
            "student_error1": student.get("error1/avg"),
            "teacher_error1": teacher.get("error1/avg"),
            "best_teacher_prec1": self.best_prec1,
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT),
            "n_labeled": self.data.n_labeled,
            "n_unlabeled": self.data.n_unlabeled,
        }
        if not self.is_main:
            return summary
        try:
            write_text_atomic(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise RunFailed(f"cannot write {self.out_dir / SUMMARY_FILE}: {exc.strerror or exc}") from None
        return summary


def train(config: TrainConfig, out_dir: str | Path | None = None, *, runner: str = "mt-repro",
          run_name: str = "0", resume_from: str | Path | None = None, progress: bool = True,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train from Python: seed, build, optionally resume, fit; returns the summary dict.

    Under ``torchrun`` every process calls this with the same config (mt_repro.engine.distributed).
    """
    with process_group(config) as config:
        if config.seed is not None:
            seed_everything(config.seed)
        out = Path(out_dir or config.out_dir or default_out_dir(runner, run_name))
        trainer = Trainer(config, out, progress=progress, echo=echo).build()
        if resume_from is not None:
            trainer.load_state(ckpt.load_checkpoint(resume_from))
        return trainer.fit()


@contextlib.contextmanager
def process_group(config: TrainConfig):
    """Join the run's other processes when under ``torchrun`` (and leave at the end); yields the
    config, with a seed shared by all processes if it had none (they must draw the same
    minibatches)."""
    group = distributed.from_environment()
    if not group.distributed:
        yield config
        return
    config.validate()
    device = distributed.device_for(group, resolve_device(config.device))
    started = not torch.distributed.is_initialized()
    distributed.init_process_group(group, device, config.dist_timeout_s)
    try:
        if config.seed is None:
            config = config.replace(seed=distributed.shared_seed(group, device))
        yield config
    finally:
        if started:
            distributed.shutdown()


class _Unwritten:
    """The run logs of a process other than rank 0: nothing is written."""

    def record(self, *args, **kwargs) -> None:
        pass

    def truncate(self, *args, **kwargs) -> int:
        return 0


def resume(run_dir: str | Path, *, epochs: int | None = None, overrides: dict[str, Any] | None = None,
           progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Continue an interrupted run directory from its last checkpoint, bit for bit.

    ``overrides`` change settings from here on (e.g. a lower ``lr`` after a diverged run); they
    are validated and recorded in the run's config.json. A run killed before its first
    checkpoint starts again from the beginning.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BadInput(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        values = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{config_path} cannot be read: {exc}") from None
    if not isinstance(values, dict):
        raise BadInput(f"{config_path} is not a configuration (a JSON object)")
    config = TrainConfig.from_dict(values, source=str(config_path))
    changes = dict(overrides or {})
    if epochs is not None:
        changes["epochs"] = epochs
    if changes:
        config = config.replace(**changes).validate()
        echo("resuming with " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    with process_group(config) as config:
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not last.exists():
            echo(f"{run_dir} has no checkpoint yet: starting it again from the beginning")
            if config.seed is not None:
                seed_everything(config.seed)
            trainer = Trainer(config, run_dir, progress=progress, echo=echo).build()
            for log in (trainer.training_log, trainer.validation_log, trainer.ema_validation_log):
                log.truncate(lambda row: False)
            return trainer.fit()
        state = ckpt.load_checkpoint(last)
        trainer = Trainer(config, run_dir, progress=progress, echo=echo).build()
        trainer.load_state(state)
        return trainer.fit()
