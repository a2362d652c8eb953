"""Checkpoints in the original's dict layout, plus what a bit-identical resume needs.

Layout (``pytorch/main.py`` of the original): ``epoch, global_step, arch, state_dict,
ema_state_dict, best_prec1, optimizer``, model keys prefixed ``module.`` as DataParallel wrote
them, so the original code can load our checkpoints and we can load its. Our extras live under
one key, ``mt_repro``: package version, the resolved config and every random generator's state.

Files are written to a temporary name, synced and renamed: a crash leaves the previous
checkpoint intact and never a truncated one. Loading uses ``weights_only=True``: a checkpoint
cannot execute code.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mt_repro import __version__
from mt_repro.errors import BadInput, RunFailed
from mt_repro.fileio import atomic_write

PREFIX = "module."


def with_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {PREFIX + k: v for k, v in state.items()}


def without_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def capture_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_checkpoint(*, epoch: int, global_step: int, arch: str, student: torch.nn.Module,
                     teacher: torch.nn.Module, optimizer: torch.optim.Optimizer, best_prec1: float,
                     config: dict[str, Any]) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "global_step": global_step,
        "arch": arch,
        "state_dict": with_prefix(student.state_dict()),
        "ema_state_dict": with_prefix(teacher.state_dict()),
        "best_prec1": float(best_prec1),
        "optimizer": optimizer.state_dict(),
        "mt_repro": {"version": __version__, "config": config, "rng": capture_rng_state()},
    }


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            torch.save(state, f)
    except OSError as exc:
        raise RunFailed(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                        "the previous checkpoint is intact") from None
    return path


def link_atomic(source: Path, destination: Path) -> None:
    """Make ``destination`` the same file as ``source`` (a hard link, a copy where links fail),
    replacing any previous file in one rename."""
    temporary = destination.with_name(f".{destination.name}.partial")
    temporary.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise RunFailed(f"cannot write checkpoint {destination}: {exc.strerror or exc}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a Mean Teacher checkpoint without executing code; one clear error for any broken file."""
    return load_checkpoint_state(path, required=("epoch", "global_step", "state_dict", "ema_state_dict",
                                                 "optimizer"), kind="a Mean Teacher checkpoint")


def load_checkpoint_state(path: str | os.PathLike, required: tuple[str, ...] = ("step",),
                          kind: str = "a checkpoint of this run") -> dict[str, Any]:
    """Read any checkpoint dict of ours with ``weights_only`` loading; check its ``required`` keys."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = next(iter(re.findall(r"GLOBAL (\S+)", str(exc))), "objects")
        raise BadInput(f"checkpoint {path} needs {needs} outside the safe allow-list; an old "
                       "checkpoint can be converted once with: mt-repro port-checkpoint OLD NEW") from None
    except Exception as exc:  # torch.load on damaged bytes raises many kinds; all mean the same here
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"checkpoint {path} is corrupt or truncated ({first_line[:200]})") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise BadInput(f"checkpoint {path} is not {kind} (lacks {', '.join(missing)})")
    return state
