"""Old checkpoints in our layout.

What old files hold that ours do not, and how :func:`normalize` brings it into our layout
without losing a value: ``best_prec1`` as a Python float (0.3), a 0-dim or 1-element tensor
(0.4+) or a numpy scalar becomes a float (a widening conversion, exact); optimizer states keyed
by ``id(param)`` (0.3) are re-keyed by parameter index as torch >= 0.4 does (the mapping is the
order of ``param_groups``, which is how ``Optimizer.load_state_dict`` pairs them anyway);
state-dict keys get the ``module.`` prefix DataParallel gave them; BatchNorm layers saved before
torch 0.4.1 lack ``num_batches_tracked``, which is added as 0 when porting (what
``BatchNorm._load_from_state_dict`` does; it only matters with ``momentum=None``); any other
top-level key is kept under ``mt_repro.legacy_extras``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mt_repro import __version__
from mt_repro.core.errors import BadInput
from mt_repro.engine.checkpoint import PREFIX
from mt_repro.legacy.reading import RawCheckpoint, Warn, read_checkpoint, short, stderr_warning, type_name

ORIGINAL_KEYS = ("epoch", "global_step", "arch", "state_dict", "ema_state_dict", "best_prec1", "optimizer")
STATE_DICTS = ("state_dict", "ema_state_dict")
EXTRAS_KEY = "mt_repro"


@dataclass
class Normalized:
    """A checkpoint in our layout (``state``), and what was changed to get there (``notes``)."""

    state: dict[str, Any]
    raw: RawCheckpoint
    notes: list[str] = field(default_factory=list)
    best_prec1_stored_as: str | None = None


def normalize(raw: RawCheckpoint) -> Normalized:
    """Our checkpoint dict from any original-layout checkpoint (see the module docstring)."""
    try:
        return _normalize(raw)
    except BadInput:
        raise
    except Exception as exc:  # a layout no torch wrote, e.g. nesting deep enough to recurse
        raise BadInput(f"checkpoint {raw.source} has an unexpected layout ({type(exc).__name__}: "
                       f"{short(str(exc))})") from None


def load_any_checkpoint(path: str | Path, *, trust: bool = False,
                        warn: Warn = stderr_warning) -> dict[str, Any]:
    """Any Mean Teacher checkpoint (torch 0.3 to today, ours included) as our checkpoint dict."""
    return normalize(read_checkpoint(path, trust=trust, warn=warn)).state


def _normalize(raw: RawCheckpoint) -> Normalized:
    obj, source = raw.obj, raw.source
    if not isinstance(obj, Mapping):
        raise BadInput(f"checkpoint {source} holds a {type_name(obj)}, not a checkpoint dict")
    if all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
        raise BadInput(f"checkpoint {source} is a bare state dict ({len(obj)} tensors), not a Mean "
                       "Teacher checkpoint: it has no ema_state_dict (the teacher's weights)")
    for key in STATE_DICTS:
        if key not in obj:
            what = "the teacher's weights" if key == "ema_state_dict" else "the student's weights"
            present = ", ".join(map(str, list(obj)[:10])) or "nothing"
            raise BadInput(f"checkpoint {source} has no {key} ({what}); it holds {present}")
    result = Normalized({}, raw)
    state = result.state
    for key in ("epoch", "global_step"):
        if key in obj:
            state[key] = _integer(obj[key], f"{source}: {key}")
    if obj.get("arch") is not None:
        if not isinstance(obj["arch"], str):
            raise BadInput(f"checkpoint {source}: arch is a {type_name(obj['arch'])}, not a name")
        state["arch"] = obj["arch"]
    for key in STATE_DICTS:
        state[key] = _state_dict(obj[key], key, source, result.notes)
    if "best_prec1" in obj:
        state["best_prec1"], result.best_prec1_stored_as = best_prec1_value(obj["best_prec1"], source)
    if obj.get("optimizer") is not None:
        state["optimizer"] = _optimizer(obj["optimizer"], source, result.notes)
    extras = {k: v for k, v in obj.items() if k not in ORIGINAL_KEYS and k != EXTRAS_KEY}
    ours = obj.get(EXTRAS_KEY)
    mt_extras: dict[str, Any] = dict(ours) if isinstance(ours, Mapping) else {}
    if ours is not None and not isinstance(ours, Mapping):
        extras[EXTRAS_KEY] = ours
    mt_extras.setdefault("version", __version__)
    if extras:
        mt_extras["legacy_extras"] = {str(k): _plain(v, str(k), result.notes) for k, v in extras.items()}
        result.notes.append(f"kept {', '.join(map(str, extras))} under {EXTRAS_KEY}.legacy_extras")
    state[EXTRAS_KEY] = mt_extras
    return result


def _integer(value: Any, where: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise BadInput(f"checkpoint {where} is {short(value)}, not an integer")


def best_prec1_value(value: Any, source: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise BadInput(f"checkpoint {source}: best_prec1 is a bool, not a number")
    if isinstance(value, (np.floating, np.integer)):  # before float: np.float64 is a float
        return float(value), f"a numpy {type(value).__name__} scalar"
    if isinstance(value, (int, float)):
        return float(value), f"a Python {type(value).__name__}"
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        shape = "0-dim" if value.dim() == 0 else f"{list(value.shape)}"
        return float(value.item()), f"a {shape} tensor ({str(value.dtype).replace('torch.', '')})"
    raise BadInput(f"checkpoint {source}: best_prec1 is {type_name(value)}"
                   f"{' of shape ' + str(list(value.shape)) if hasattr(value, 'shape') else ''}, "
                   "expected a number")


def _state_dict(value: Any, key: str, source: str, notes: list[str]) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping):
        raise BadInput(f"checkpoint {source}: {key} is a {type_name(value)}, not a state dict")
    result: dict[str, torch.Tensor] = {}
    added = 0
    for name, tensor in value.items():
        if not isinstance(name, str):
            raise BadInput(f"checkpoint {source}: {key} has a key {short(name)} that is not a name")
        if not isinstance(tensor, torch.Tensor):
            raise BadInput(f"checkpoint {source}: {key}: {name} is a {type_name(tensor)}, not a tensor")
        if not name.startswith(PREFIX):
            name = PREFIX + name
            added += 1
        if name in result:
            raise BadInput(f"checkpoint {source}: {key} has {name[len(PREFIX):]} both with "
                           f"and without the {PREFIX!r} prefix")
        result[name] = tensor.detach() if isinstance(tensor, torch.nn.Parameter) else tensor
    if added:
        notes.append(f"{key}: added the {PREFIX!r} prefix to {added} of {len(result)} keys")
    return result


def _optimizer(value: Any, source: str, notes: list[str]) -> dict[str, Any]:
    where = f"checkpoint {source}: optimizer"
    if not isinstance(value, Mapping) or not isinstance(value.get("param_groups"), list) \
            or not isinstance(value.get("state", {}), Mapping):
        raise BadInput(f"{where} is not an optimizer state dict (state, param_groups)")
    groups, index = [], {}
    for number, group in enumerate(value["param_groups"]):
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):
            raise BadInput(f"{where}: param group {number} has no list of params")
        ids = []
        for pid in group["params"]:
            if not isinstance(pid, int) or isinstance(pid, bool) or pid in index:
                raise BadInput(f"{where}: param group {number} lists {short(pid)}, which is not "
                               "a parameter id or appears twice")
            index[pid] = len(index)
            ids.append(index[pid])
        groups.append({**_plain(dict(group), "optimizer", notes), "params": ids})
    state = {}
    for pid, values in value.get("state", {}).items():
        if pid not in index:
            raise BadInput(f"{where}: state for parameter id {short(pid)} that no param group lists")
        state[index[pid]] = _plain(values, "optimizer state", notes)
    if any(pid != i for i, pid in enumerate(index)):
        notes.append("optimizer: parameters re-keyed from id(param) (torch 0.3) to their index, "
                     "in param_groups order")
    return {"state": state, "param_groups": groups}


def _plain(value: Any, where: str, notes: list[str]) -> Any:
    """A value our checkpoints can hold (loadable with weights_only): tensors, numbers, strings,
    containers. Objects (e.g. an ``argparse.Namespace``, only with trust) become their fields."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach() if isinstance(value, torch.nn.Parameter) else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value)) if value.dtype.kind in "biuf" else value.tolist()
    if isinstance(value, Mapping):
        return {_plain(k, where, notes): _plain(v, where, notes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, where, notes) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (set, frozenset)):
        return [_plain(v, where, notes) for v in value]
    if hasattr(value, "__dict__"):
        notes.append(f"{where}: kept the fields of {type_name(value)} as a dict")
        return _plain(dict(vars(value)), where, notes)
    notes.append(f"{where}: kept {type_name(value)} as its text")
    return repr(value)


