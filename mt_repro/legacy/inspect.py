"""``mt-repro inspect``: what a checkpoint (any PyTorch), a log (ours, the original's msgpack) or
a JSON file (a run's config.json or summary.json) holds, as lines of text; builds no model and
runs nothing of the file."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mt_repro.config.saved import CLASSES as RECIPES
from mt_repro.config.saved import read_saved
from mt_repro.core.errors import BadInput
from mt_repro.core.limits import regular_file
from mt_repro.engine.checkpoint import PREFIX
from mt_repro.legacy.normalize import EXTRAS_KEY, ORIGINAL_KEYS, STATE_DICTS, best_prec1_value
from mt_repro.legacy.reading import (FORMAT_DESCRIPTIONS, RawCheckpoint, Warn, read_checkpoint, short,
                                     stderr_warning, type_name)
from mt_repro.logs.pandas_msgpack import read_legacy_log
from mt_repro.logs.runlog import read_runlog

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


LOG_SUFFIXES = (".msgpack", ".jsonl")


def inspect_file(path: str | Path, *, trust: bool = False, warn: Warn = stderr_warning) -> list[str]:
    """What a checkpoint or run log holds, as lines of text; builds no model."""
    path = Path(path)
    if path.suffix in LOG_SUFFIXES:
        return describe_log(path)
    if path.suffix == ".json" or _starts_like_json(path):
        return describe_json(path)
    raw = read_checkpoint(path, trust=trust, warn=warn)
    try:
        return describe_checkpoint(raw)
    except Exception as exc:  # a layout no torch wrote
        raise BadInput(f"checkpoint {path} has an unexpected layout ({type(exc).__name__}: "
                       f"{short(str(exc))})") from None


def describe_log(path: Path) -> list[str]:
    regular_file(path, "log")  # not a FIFO, a device, a directory
    if path.suffix == ".msgpack":
        frame, kind = read_legacy_log(path), "legacy pandas msgpack log (the original's)"
    else:
        try:
            frame = read_runlog(path)
        except (ValueError, OSError) as exc:
            raise BadInput(f"log {path} cannot be read: {str(exc).splitlines()[0][:160]}") from None
        kind = "run log (mt-repro jsonl)"
    lines = [f"{path}: {kind}", f"  rows            {len(frame)}",
             f"  columns         {len(frame.columns)}: {', '.join(map(str, frame.columns))}"]
    if len(frame):
        lines.append(f"  index           {frame.index.name or '(unnamed)'} from {frame.index.min()} "
                     f"to {frame.index.max()}")
    return lines


def _starts_like_json(path: Path) -> bool:
    """Whether a regular file opens with ``{`` or ``[``: no checkpoint (a zip archive or a
    pickle stream) does."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as file:
            return file.read(64).lstrip()[:1] in (b"{", b"[")
    except OSError:
        return False


# What a run directory's JSON files hold, recognised by their keys (mt_repro.engine.trainer).
_RUN_IDENTITY = ("dataset", "arch", "method")
_SUMMARY_KEYS = {"global_step", "student_error1", "teacher_error1"}


def describe_json(path: Path) -> list[str]:
    """A JSON file: a run's settings (``config.json``), its summary (``summary.json``), a digits
    demo's record (``demo.json``), or any other JSON, said to be no checkpoint."""
    regular_file(path, "JSON file")
    values = read_saved(path)
    if isinstance(values, dict) and _SUMMARY_KEYS <= values.keys():
        identity = ", ".join(f"{k} {values[k]}" for k in _RUN_IDENTITY if k in values)
        return [f"{path}: summary of a finished run (a run directory's summary.json), not a checkpoint",
                f"  run             {identity}",
                f"  global_step     {values['global_step']}",
                f"  student error   {values['student_error1']}",
                f"  teacher error   {values['teacher_error1']}"]
    if isinstance(values, dict) and values.get("recipe") in RECIPES and "arch" in values:
        identity = ", ".join(f"{k} {values[k]}" for k in _RUN_IDENTITY if k in values)
        return [f"{path}: run settings (a run directory's config.json), not a checkpoint",
                f"  recipe          {values['recipe']}",
                f"  run             {identity}",
                f"  settings        {len(values) - 1}",
                f"  checkpoints     in {path.parent / 'checkpoints'}"]
    if isinstance(values, dict) and values.get("command") == "digits":
        return [f"{path}: record of a digits demo (its --out's demo.json), not a checkpoint",
                f"  choices         {', '.join(f'{k}={v}' for k, v in values.items() if k != 'command')}"]
    if isinstance(values, dict):
        keys = ", ".join(map(str, list(values)[:12])) + (", …" if len(values) > 12 else "")
        return [f"{path}: JSON object, not a checkpoint", f"  keys            {keys or '(none)'}"]
    if isinstance(values, list):
        return [f"{path}: JSON array of {len(values)} item(s), not a checkpoint"]
    return [f"{path}: JSON {type_name(values)}, not a checkpoint"]


def _count(n: int) -> str:
    return f"{n:,}"


def describe_checkpoint(raw: RawCheckpoint) -> list[str]:
    obj = raw.obj
    lines = [f"{raw.source}: checkpoint, {FORMAT_DESCRIPTIONS[raw.format]}"]
    if raw.trusted_globals:
        lines.append(f"  trusted         {', '.join(raw.trusted_globals)} (loaded with --trust)")
    if not isinstance(obj, Mapping):
        return lines + [f"  holds           a {type_name(obj)}"]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return lines + ["  holds           a bare state dict", *_describe_state_dict("tensors", obj)]
    lines.append(f"  keys            {', '.join(map(str, obj))}")
    for key in ("arch", "epoch", "global_step"):
        if key in obj:
            lines.append(f"  {key:<15} {_scalar_text(obj[key])}")
    if "best_prec1" in obj:
        value = obj["best_prec1"]
        try:
            number, stored = best_prec1_value(value, raw.source)
            lines.append(f"  best_prec1      {number!r} (stored as {stored})")
        except BadInput:
            lines.append(f"  best_prec1      {type_name(value)} (not a number)")
    for key in STATE_DICTS:
        if key in obj:
            if isinstance(obj[key], Mapping):
                lines += _describe_state_dict(key, obj[key])
            else:
                lines.append(f"  {key:<15} a {type_name(obj[key])}, not a state dict")
    if "optimizer" in obj:
        lines += _describe_optimizer(obj["optimizer"])
    if isinstance(obj.get(EXTRAS_KEY), Mapping):
        lines.append(f"  {EXTRAS_KEY:<15} {_describe_extras(obj[EXTRAS_KEY])}")
    others = [k for k in obj if k not in ORIGINAL_KEYS and k != EXTRAS_KEY]
    for key in others:
        lines.append(f"  {str(key):<15} a {type_name(obj[key])}")
    return lines


def _scalar_text(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return f"{value.item()!r} (a tensor)"
    if isinstance(value, np.generic):
        return f"{value.item()!r} (a numpy scalar)"
    return str(value) if isinstance(value, (str, int, float)) else f"a {type_name(value)}"


def _describe_state_dict(key: str, state: Mapping) -> list[str]:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    buffers = {k: v for k, v in tensors.items() if str(k).rsplit(".", 1)[-1] in BN_BUFFERS}
    params = {k: v for k, v in tensors.items() if k not in buffers}
    names = [str(k) for k in state]
    prefixed = sum(n.startswith(PREFIX) for n in names)
    prefix = ("all keys prefixed 'module.'" if names and prefixed == len(names)
              else "no 'module.' prefix" if not prefixed else f"{prefixed} of {len(names)} keys prefixed 'module.'")
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in tensors.values()})
    line = (f"  {key:<15} {len(tensors)} tensors: {_count(sum(v.numel() for v in params.values()))} "
            f"parameters in {len(params)}, {len(buffers)} BatchNorm buffers; {prefix}; "
            f"{'/'.join(dtypes) or 'no tensors'}")
    if len(tensors) != len(state):
        line += f"; {len(state) - len(tensors)} values that are not tensors"
    missing_counters = (any(str(k).endswith("running_mean") for k in buffers)
                        and not any(str(k).endswith("num_batches_tracked") for k in buffers))
    if missing_counters:
        line += "; no num_batches_tracked (saved by torch < 0.4.1)"
    return [line]


def _describe_optimizer(value: Any) -> list[str]:
    if not isinstance(value, Mapping) or not isinstance(value.get("param_groups"), list):
        return [f"  optimizer       a {type_name(value)}, not an optimizer state dict"]
    groups = value["param_groups"]
    state = value.get("state", {})
    kinds = sorted({str(k) for v in state.values() if isinstance(v, Mapping) for k in v})
    lines = [f"  optimizer       {len(groups)} param group{'s' if len(groups) != 1 else ''}, state "
             f"for {len(state)} parameters{' (' + ', '.join(kinds) + ')' if kinds else ''}"]
    for number, group in enumerate(groups):
        if isinstance(group, Mapping):
            settings = "  ".join(f"{k}={v!r}" for k, v in group.items() if k != "params")
            params = group.get("params")
            count = len(params) if isinstance(params, list) else "no list of"
            lines.append(f"    group {number}: {count} params  {settings}")
    return lines


def _describe_extras(extras: Mapping) -> str:
    parts = []
    if "version" in extras:
        parts.append(f"version {extras['version']}")
    if isinstance(extras.get("config"), Mapping):
        parts.append(f"config ({len(extras['config'])} settings)")
    if isinstance(extras.get("rng"), Mapping):
        parts.append(f"rng states ({', '.join(map(str, extras['rng']))})")
    if isinstance(extras.get("ported_from"), Mapping):
        parts.append(f"ported from {extras['ported_from'].get('file')}")
    if isinstance(extras.get("legacy_extras"), Mapping):
        parts.append(f"legacy extras ({', '.join(map(str, extras['legacy_extras']))})")
    return "; ".join(parts) or f"keys {', '.join(map(str, extras))}"


