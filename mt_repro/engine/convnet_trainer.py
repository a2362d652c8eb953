"""Training of the paper's ConvNet runs (Tables 1-3), the procedure of the original TensorFlow
half re-expressed in PyTorch (``tensorflow/mean_teacher/model.py``, ``minibatching.py``).

Per step, in the original's order: the schedule at the current step; the student's pass
(student dropout); the EMA model's pass (teacher dropout, no gradient; the target of Mean
Teacher); for the Π-model a second pass of the same network (teacher dropout) as the target,
which, like the original's separate "secondary" tower, leaves the student's evaluation means
alone; the costs, minimised as the original's ``total_cost`` (each kind summed over the
minibatch, averaged over the three kinds); the EMA update of the teacher from the student's
weights *before* this step's update (the original ran it among the update ops the optimizer
step depended on); Adam with the step's beta1 and beta2 as TensorFlow 1.x computes it
(``TFAdam``).
Evaluation (student and teacher, evaluation mode) at step 0, every ``evaluation_span`` steps and at
the end, each followed by a checkpoint; ``--resume`` continues bit for bit.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from mt_repro.convnet_config import ConvNetSettings
from mt_repro.engine import checkpoint as ckpt
from mt_repro.errors import BadInput, RunFailed
from mt_repro.fileio import write_text_atomic
from mt_repro.logs.runlog import RunLog
from mt_repro.methods import convnet_training as costs
from mt_repro.methods.losses import NO_LABEL
from mt_repro.models.convnet13 import ConvNet13, data_dependent_init, frozen_eval_means

CHECKPOINT = "checkpoints/last.ckpt"
METHOD_NAMES = {"mean_teacher": "mean_teacher", "pi": "pi_model", "supervised": "supervised"}


# --- data -----------------------------------------------------------------------------------
@dataclass
class ConvNetData:
    train_x: torch.Tensor      # N x 3 x 32 x 32: SVHN raw uint8 pixels, CIFAR-10 float32 (GCN + ZCA)
    train_y: np.ndarray        # N, -1 for unlabeled
    eval_x: torch.Tensor
    eval_y: np.ndarray

    def images(self, x: torch.Tensor, index, device) -> torch.Tensor:
        """A minibatch as float32 on ``device`` (SVHN stays uint8 in memory: with 500000 extra
        images float32 would take 7 GB; the original also fed the uint8 pixels to its graph)."""
        return x[index].to(device).float()

    @property
    def n_labeled(self) -> int:
        return int((self.train_y != NO_LABEL).sum())


def load_data(settings: ConvNetSettings, data_dir: str | Path) -> ConvNetData:
    """The original's training and evaluation arrays for the run's split."""
    from mt_repro.data import splits

    labels = None if settings.n_labeled == "all" else int(settings.n_labeled)
    if settings.dataset == "svhn":
        from mt_repro.data import svhn

        split = svhn.split_from_files(data_dir, labels, settings.data_seed, test_phase=settings.test_phase,
                                      n_extra_unlabeled=settings.n_extra_unlabeled)
        train = svhn.read_svhn(data_dir, "train")
        source, index, _ = split.training_order()
        images = [train.images[index[source == 0]]]
        if len(split.extra):
            images.append(svhn.read_svhn(data_dir, "extra").images[split.extra])
        train_x = np.concatenate(images)
        if split.validation is None:
            test = svhn.read_svhn(data_dir, "test")
            eval_x, eval_y = test.images, test.labels
        else:
            eval_x, eval_y = train.images[split.validation], train.labels[split.validation]
    else:
        from mt_repro.data.zca import cifar10_gcn_zca, read_tf_npz

        if Path(data_dir).suffix == ".npz":  # the original's own cifar10_gcn_zca_v2.npz
            arrays = read_tf_npz(data_dir)
        else:
            arrays = cifar10_gcn_zca(data_dir)
        split = splits.cifar10_split(arrays["train_y"].astype(np.int64), labels, settings.data_seed,
                                     test_phase=settings.test_phase)
        train_x = arrays["train_x"][split.training_order()[1]]
        if split.validation is None:
            eval_x, eval_y = arrays["test_x"], arrays["test_y"]
        else:
            eval_x, eval_y = arrays["train_x"][split.validation], arrays["train_y"][split.validation]
    target = split.training_order()[2]

    def tensor(images: np.ndarray) -> torch.Tensor:
        images = np.asarray(images)
        dtype = np.uint8 if images.dtype == np.uint8 else np.float32
        return torch.from_numpy(np.ascontiguousarray(images.astype(dtype, copy=False).transpose(0, 3, 1, 2)))

    return ConvNetData(tensor(train_x), target.astype(np.int64), tensor(eval_x), np.asarray(eval_y, np.int64))


class EternalBatches:
    """Index batches from endless reshuffles of ``range(n)`` (the original's
    ``eternal_random_index_batches``); its state is part of a checkpoint."""

    def __init__(self, n: int, batch_size: int, rng: np.random.RandomState):
        if n <= 0 or batch_size <= 0:
            raise BadInput(f"cannot draw minibatches of {batch_size} from {n} images")
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.order = np.zeros(0, np.int64)
        self.position = 0

    def next(self) -> np.ndarray:
        taken = []
        needed = self.batch_size
        while needed:
            if self.position == len(self.order):
                self.order = np.arange(self.n)
                self.rng.shuffle(self.order)
                self.position = 0
            chunk = self.order[self.position:self.position + needed]
            self.position += len(chunk)
            needed -= len(chunk)
            taken.append(chunk)
        return np.concatenate(taken)

    def state_dict(self) -> dict[str, Any]:
        return {"order": torch.from_numpy(self.order.copy()), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.position = state["order"].numpy().astype(np.int64), int(state["position"])


class Minibatches:
    """The original's three minibatch compositions (``minibatching.training_batches``):
    ``'vary'``: every image, labeled or not, shuffled together; ``batch_size``: labeled images
    only; ``k`` < batch size: ``k`` labeled images plus ``batch_size - k`` drawn from all images
    with their labels hidden."""

    def __init__(self, data: ConvNetData, settings: ConvNetSettings, rng: np.random.RandomState):
        self.labels = data.train_y
        self.labeled = np.flatnonzero(self.labels != NO_LABEL)
        per_batch, batch = settings.n_labeled_per_batch, settings.batch_size
        if per_batch != "vary" and len(self.labeled) == 0:
            raise BadInput("this minibatch mode needs labeled images, and the split has none")
        self.mode = "vary" if per_batch == "vary" else ("labeled" if per_batch == batch else "mixed")
        if self.mode == "vary":
            self.streams = [EternalBatches(len(self.labels), batch, rng)]
        elif self.mode == "labeled":
            self.streams = [EternalBatches(len(self.labeled), batch, rng)]
        else:
            self.streams = [EternalBatches(len(self.labeled), per_batch, rng),
                            EternalBatches(len(self.labels), batch - per_batch, rng)]

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """(image indices, targets) of the next minibatch."""
        if self.mode == "vary":
            index = self.streams[0].next()
            return index, self.labels[index]
        labeled = self.labeled[self.streams[0].next()]
        if self.mode == "labeled":
            return labeled, self.labels[labeled]
        unlabeled = self.streams[1].next()
        return (np.concatenate([labeled, unlabeled]),
                np.concatenate([self.labels[labeled], np.full(len(unlabeled), NO_LABEL)]))

    def state_dict(self) -> list[dict[str, Any]]:
        return [s.state_dict() for s in self.streams]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for stream, state in zip(self.streams, states):
            stream.load_state_dict(state)


# --- optimisation ---------------------------------------------------------------------------
class TFAdam(torch.optim.Optimizer):
    """Adam as TensorFlow 1.x's ``AdamOptimizer`` computes it, with betas that change per step:
    ``m += (g - m)(1 - β1)``, ``v += (g² - v)(1 - β2)``, ``θ -= lr_t·m/(sqrt(v) + ε)`` with
    ``lr_t = lr·sqrt(1 - p2)/(1 - p1)``. The powers ``p1``, ``p2`` are one pair for all variables:
    TensorFlow created them holding the betas of the initialisation run (global step 0), used
    them, and multiplied them by the step's betas after each update, so the k-th update (from 0)
    uses ``β(0)·β(0)·β(1)···β(k-1)``, not ``β(0)···β(k)``; it matters only once the betas change."""

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8):
        # Python floats (float64), kept as they are by load_state_dict; None until the first step
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, beta1_power=None, beta2_power=None))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            if group["beta1_power"] is None:
                group["beta1_power"], group["beta2_power"] = float(beta1), float(beta2)
            lr_t = group["lr"] * math.sqrt(1 - group["beta2_power"]) / (1 - group["beta1_power"])
            for p in group["params"]:
                if p.grad is None:  # the unused second head when num_logits is 1
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["m"].add_((p.grad - state["m"]).mul_(1 - beta1))
                state["v"].add_((p.grad * p.grad - state["v"]).mul_(1 - beta2))
                p.sub_(state["m"] * lr_t / (state["v"].sqrt() + group["eps"]))
            group["beta1_power"] *= beta1
            group["beta2_power"] *= beta2


@torch.no_grad()
def update_teacher(student: torch.nn.Module, teacher: torch.nn.Module, decay: float) -> None:
    """Plain EMA of the trainable variables (TensorFlow's ExponentialMovingAverage without
    ``num_updates``: no warm-up), in its form ``shadow -= (1 - decay)(shadow - variable)``."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.sub_((t - s).mul_(1 - decay))


# --- the run --------------------------------------------------------------------------------
class ConvNetTrainer:
    def __init__(self, settings: ConvNetSettings, data: ConvNetData, out_dir: str | Path, *,
                 progress: bool = True, echo: Callable[[str], None] = print):
        from mt_repro.engine.trainer import resolve_device

        self.s, self.data, self.out_dir = settings, data, Path(out_dir)
        self.progress, self.echo = progress, echo
        self.device = resolve_device(settings.device)
        self.rng = np.random.RandomState(settings.seed if settings.seed is not None else settings.data_seed)
        self.batches = Minibatches(data, settings, self.rng)
        self.student = ConvNet13(10, input_noise=settings.input_noise, dropout=settings.student_dropout_probability,
                                 normalize_input=settings.normalize_input, flip_horizontally=settings.flip_horizontally,
                                 translate=2 if settings.translate else 0, num_logits=settings.num_logits,
                                 width=settings.width).to(self.device)
        self.teacher: ConvNet13 | None = None
        self.optimizer = TFAdam(self.student.parameters(), eps=settings.adam_epsilon)
        self.step = 0
        try:
            (self.out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out_dir / "config.json", json.dumps(settings.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise BadInput(f"cannot write to output directory {self.out_dir}: {exc.strerror or exc}") from None
        self.training_log = RunLog(self.out_dir / "training.jsonl")
        self.validation_log = RunLog(self.out_dir / "validation.jsonl")
        self.ema_validation_log = RunLog(self.out_dir / "ema_validation.jsonl")
        self.last_eval: dict[str, dict[str, float]] = {}

    def initialize(self) -> None:
        """Data-dependent init on the first minibatch; the teacher starts as a copy."""
        index, _ = self.batches.next()
        data_dependent_init(self.student, self.data.images(self.data.train_x, index, self.device))
        self.teacher = copy.deepcopy(self.student)
        self.teacher.dropout = self.s.teacher_dropout_probability
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    # one step ------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        s, student, teacher = self.s, self.student, self.teacher
        hp = costs.step_hyperparameters(self.step, s)
        for group in self.optimizer.param_groups:
            group["lr"], group["betas"] = hp.learning_rate, (hp.adam_beta_1, hp.adam_beta_2)
        index, targets = self.batches.next()
        x = self.data.images(self.data.train_x, index, self.device)
        y = torch.from_numpy(targets).to(self.device)
        student.train()
        teacher.train()
        class_1, cons_1 = student(x)
        with torch.no_grad():
            class_ema, cons_ema = teacher(x)
        if s.ema_consistency:
            target = class_ema
        else:  # the Π model: the original's "secondary" tower, with its own evaluation means
            student.dropout = s.teacher_dropout_probability
            with frozen_eval_means(student):
                target, _ = student(x)
            student.dropout = s.student_dropout_probability
        mask = costs.consistency_mask(y, s.apply_consistency_to_labeled)
        class_costs = costs.classification_costs(class_1, y)
        cons_costs = costs.consistency_costs(cons_1, target, hp.cons_coefficient, mask, s.consistency_trust)
        res_costs = costs.residual_costs(class_1, cons_1, s.logit_distance_cost)
        loss = costs.total_cost(class_costs, cons_costs, res_costs)
        if not torch.isfinite(loss):
            raise RunFailed(f"training diverged at step {self.step + 1}: loss is {loss.item()}; the last good "
                            f"checkpoint is kept in {self.out_dir / 'checkpoints'}")
        self.optimizer.zero_grad()
        loss.backward()
        update_teacher(student, teacher, hp.ema_decay)
        self.optimizer.step()
        self.step += 1
        with torch.no_grad():
            errors_1, errors_ema = costs.errors(class_1, y), costs.errors(class_ema, y)
            return {"learning_rate": hp.learning_rate, "adam_beta_1": hp.adam_beta_1, "adam_beta_2": hp.adam_beta_2,
                    "ema_decay": hp.ema_decay, "cons_coefficient": hp.cons_coefficient,
                    "class_loss": class_costs.mean().item(),
                    "ema_class_loss": costs.classification_costs(class_ema, y).mean().item(),
                    "cons_loss": cons_costs.mean().item(), "res_loss": res_costs.mean().item(),
                    "loss": loss.item(),
                    "error1": 100 * errors_1.mean().item() if len(errors_1) else None,
                    "ema_error1": 100 * errors_ema.mean().item() if len(errors_ema) else None}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        wrong, cost, n = 0.0, 0.0, 0
        for start in range(0, len(self.data.eval_y), self.s.batch_size):
            x = self.data.images(self.data.eval_x, slice(start, start + self.s.batch_size), self.device)
            y = torch.from_numpy(self.data.eval_y[start:start + self.s.batch_size]).to(self.device)
            logits, _ = model(x)
            wrong += costs.errors(logits, y).sum().item()
            cost += costs.classification_costs(logits, y).sum().item()
            n += len(y)
        return {"error1/avg": 100 * wrong / max(n, 1), "class_cost/avg": cost / max(n, 1), "n": n}

    def evaluate_and_checkpoint(self) -> None:
        student, teacher = self.evaluate(self.student), self.evaluate(self.teacher)
        self.validation_log.record(self.step, {"step": self.step, **student})
        self.ema_validation_log.record(self.step, {"step": self.step, **teacher})
        self.last_eval = {"student": student, "teacher": teacher}
        self.echo(f"step {self.step}: student error {student['error1/avg']:.2f}%  "
                  f"teacher error {teacher['error1/avg']:.2f}%")
        state = {"step": self.step, "student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "batches": self.batches.state_dict(),
                 "numpy": _numpy_state(self.rng), "rng": ckpt.capture_rng_state(),
                 "last_eval": self.last_eval, "settings": self.s.to_dict()}
        ckpt.save_atomic(state, self.out_dir / CHECKPOINT)

    def load(self, state: dict[str, Any]) -> None:
        self.teacher = copy.deepcopy(self.student)
        self.teacher.dropout = self.s.teacher_dropout_probability
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        try:
            self.student.load_state_dict(state["student"])
            self.teacher.load_state_dict(state["teacher"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.batches.load_state_dict(state["batches"])
            _restore_numpy_state(self.rng, state["numpy"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise BadInput(f"checkpoint does not fit this run: {str(exc).splitlines()[0][:200]}") from None
        ckpt.restore_rng_state(state["rng"])
        self.step = int(state["step"])
        self.last_eval = state.get("last_eval", {})
        self.training_log.truncate(lambda row: row["step"] <= self.step)
        for log in (self.validation_log, self.ema_validation_log):
            log.truncate(lambda row: row["step"] <= self.step)

    def fit(self) -> dict[str, Any]:
        s = self.s
        if self.teacher is None:
            self.initialize()
            self.evaluate_and_checkpoint()
        bar = tqdm(total=s.training_length, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc="training")
        try:
            while self.step < s.training_length:
                started = time.time()
                values = self.train_step()
                if self.step % s.print_span == 0 or self.step == 1:
                    self.training_log.record(self.step, {"step": self.step, **values,
                                                         "batch_time": time.time() - started})
                bar.update(1)
                if self.step % s.evaluation_span == 0 and self.step < s.training_length:
                    self.evaluate_and_checkpoint()
        finally:
            bar.close()
        self.evaluate_and_checkpoint()
        return self.write_summary()

    def write_summary(self) -> dict[str, Any]:
        s = self.s
        summary = {"dataset": s.dataset, "arch": "convnet13", "method": METHOD_NAMES[s.model],
                   "n_labeled": s.labels_count, "n_labeled_in_split": self.data.n_labeled,
                   "extra_unlabeled": s.n_extra_unlabeled, "data_seed": s.data_seed,
                   "experiment": s.experiment, "config": s.experiment, "model": s.model,
                   "global_step": self.step,
                   "student_error1": self.last_eval["student"]["error1/avg"],
                   "teacher_error1": self.last_eval["teacher"]["error1/avg"], "out_dir": str(self.out_dir)}
        write_text_atomic(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def _numpy_state(rng: np.random.RandomState) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = rng.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _restore_numpy_state(rng: np.random.RandomState, state: dict[str, Any]) -> None:
    rng.set_state(("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                   state["cached"]))


def train(settings: ConvNetSettings, data_dir: str | Path, out_dir: str | Path, *, progress: bool = True,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    """One ConvNet run from Python; returns its summary."""
    torch.manual_seed(settings.seed if settings.seed is not None else settings.data_seed)
    data = load_data(settings, data_dir)
    if data.n_labeled == 0 and settings.model != "pi":
        raise BadInput("the split has no labeled images")
    trainer = ConvNetTrainer(settings, data, out_dir, progress=progress, echo=echo)
    return trainer.fit()


def resume(run_dir: str | Path, data_dir: str | Path, *, overrides: dict[str, Any] | None = None,
           progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    run_dir = Path(run_dir)
    try:
        values = json.loads((run_dir / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{run_dir} is not a ConvNet run directory ({exc})") from None
    settings = ConvNetSettings.from_dict({**values, **(overrides or {})}, source=str(run_dir / "config.json"))
    if not (run_dir / CHECKPOINT).is_file():
        echo(f"{run_dir} has no checkpoint yet: starting it again from the beginning")
        return train(settings, data_dir, run_dir, progress=progress, echo=echo)
    state = ckpt.load_checkpoint_state(run_dir / CHECKPOINT)
    trainer = ConvNetTrainer(settings, load_data(settings, data_dir), run_dir, progress=progress, echo=echo)
    trainer.load(state)
    return trainer.fit()


def run_planned(run, directory, *, data_dirs, device, progress, echo) -> dict[str, Any]:
    """A run of ``mt-repro table`` (``mt_repro.paper.tables.PlannedRun``)."""
    from mt_repro.convnet_config import load_experiment

    from mt_repro.paper.tables import data_dir_for

    data_dir = data_dir_for(run, data_dirs)
    model = {"pi_model": "pi"}.get(run.key.method, run.key.method)
    n_labeled = "all" if run.key.n_labels == {"svhn": 73257, "cifar10": 50000}[run.key.dataset] else run.key.n_labels
    settings = load_experiment(run.config).settings(n_labeled=n_labeled, model=model, data_seed=run.data_seed,
                                                    n_extra_unlabeled=run.key.extra_unlabeled,
                                                    overrides={"device": device})
    return train(settings, data_dir, directory, progress=progress, echo=echo)
