"""Checkpoints in the original's dict layout, plus what a bit-identical resume needs.

Layout (``pytorch/main.py`` of the original): ``epoch, global_step, arch, state_dict,
ema_state_dict, best_prec1, optimizer``, model keys prefixed ``module.`` as DataParallel wrote
them, so the original code can load our checkpoints and we can load its. Our extras live under
one key, ``mt_repro``: package version, the run's settings (``config``, with its ``recipe``),
every random generator's state, and where a resume continues: ``position`` (epoch and step in
it), the data's state (the ConvNet runs' minibatch streams), the epoch's meters, the method's
state and the last evaluation.

Files are written atomically (``mt_repro.core.fileio``): a crash leaves the previous checkpoint
intact and never a truncated one. Loading uses our own reader, never ``torch.load``: a
checkpoint cannot execute code, and its containers and storages are checked before use.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from mt_repro import __version__
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.fileio import atomic_write, link_atomic
from mt_repro.core.rng import capture_rng_state
from mt_repro.core.torch_files import UnsafeCheckpoint, load_file

PREFIX = "module."
REQUIRED = ("epoch", "global_step", "state_dict", "ema_state_dict", "optimizer")


def with_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {PREFIX + k: v for k, v in state.items()}


def without_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def build_checkpoint(*, epoch: int, global_step: int, arch: str, student: torch.nn.Module,
                     teacher: torch.nn.Module, optimizer: torch.optim.Optimizer, best_prec1: float,
                     config: dict[str, Any], **extras: Any) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "global_step": global_step,
        "arch": arch,
        "state_dict": with_prefix(student.state_dict()),
        "ema_state_dict": with_prefix(teacher.state_dict()),
        "best_prec1": float(best_prec1),
        "optimizer": optimizer.state_dict(),
        "mt_repro": {"version": __version__, "config": config, "rng": capture_rng_state(), **extras},
    }


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``state`` written to ``path`` whole or not at all; a Ctrl-C meanwhile takes effect once it
    is written (``ctrl_c_deferred``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with ctrl_c_deferred(), atomic_write(path) as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
        raise RunFailed(f"cannot write checkpoint {path}: {reason}; the previous checkpoint is intact") from None
    return path


@contextlib.contextmanager
def ctrl_c_deferred():
    """A Ctrl-C (SIGINT) inside raises its KeyboardInterrupt on leaving, not inside. torch's
    writer, interrupted in one of its writes, keeps the file it wrote to in its traceback and
    writes to it once more when it is freed, after the file was closed: the process then aborts
    at exit ("terminate called ... write to closed file"). Only where Python's own handler is in
    place, in the main thread (the only one signals reach)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def link(source: Path, destination: Path) -> None:
    """``destination`` becomes the same checkpoint as ``source`` (``best.ckpt``, ``last.ckpt``)."""
    try:
        link_atomic(source, destination)
    except OSError as exc:
        raise RunFailed(f"cannot write checkpoint {destination}: {exc.strerror or exc}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint of ours (or an original one in today's format) without executing
    code, by our own reader (:mod:`mt_repro.core.torch_files`): nothing outside its allow-list
    is imported; one clear error for any broken file."""
    path = Path(path)
    try:
        state = load_file(path)
    except UnsafeCheckpoint as exc:
        raise BadInput(f"checkpoint {path} needs {exc.names[0]} outside the safe allow-list; an old "
                       "checkpoint can be converted once with: mt-repro port-checkpoint OLD NEW") from None
    if isinstance(state, dict) and "student" in state and "step" in state:
        state = _from_convnet_layout(state)
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise BadInput(f"checkpoint {path} is not a Mean Teacher checkpoint (lacks {', '.join(missing)})")
    return state


def _from_convnet_layout(state: dict[str, Any]) -> dict[str, Any]:
    """A ConvNet run's checkpoint as mt-repro wrote it before its runs shared the engine
    (``step, student, teacher, optimizer, batches, numpy, rng, last_eval, settings``), in
    today's layout; the run continues from it bit for bit."""
    step = int(state["step"])
    return {"epoch": 0, "global_step": step, "arch": "convnet13", "state_dict": state["student"],
            "ema_state_dict": state["teacher"], "best_prec1": 0.0, "optimizer": state["optimizer"],
            "mt_repro": {"config": state.get("settings"), "rng": state["rng"],
                         "data_state": {"streams": state["batches"], "numpy": state["numpy"]},
                         "last_eval": state.get("last_eval", {})}}
