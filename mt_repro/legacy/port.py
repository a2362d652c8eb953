"""Porting an old checkpoint: its normalised contents checked, key by key and shape by shape,
against the architecture (built on the meta device: no weights allocated, no random draws) and
written as an ordinary mt-repro checkpoint."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.engine import checkpoint as ckpt
from mt_repro.legacy.normalize import EXTRAS_KEY, STATE_DICTS, normalize
from mt_repro.legacy.reading import FORMAT_DESCRIPTIONS, Warn, read_checkpoint, stderr_warning
from mt_repro.models import create_model, get_model, list_models


@dataclass
class PortReport:
    source: str
    destination: str
    format: str
    arch: str
    arch_from: str
    num_classes: int
    epoch: int
    global_step: int
    best_prec1: float | None
    best_prec1_stored_as: str | None
    tensors: dict[str, int]
    optimizer: str | None
    trusted_globals: list[str]
    notes: list[str]

    def lines(self) -> list[str]:
        best = ("absent" if self.best_prec1 is None
                else f"{self.best_prec1!r} (stored as {self.best_prec1_stored_as})")
        out = [f"ported {self.source} -> {self.destination}",
               f"  format          {FORMAT_DESCRIPTIONS[self.format]}",
               f"  arch            {self.arch} ({self.arch_from}), {self.num_classes} classes",
               f"  epoch           {self.epoch}",
               f"  global_step     {self.global_step}",
               f"  best_prec1      {best}"]
        for key, count in self.tensors.items():
            out.append(f"  {key:<15} {count} tensors ported")
        out.append(f"  optimizer state {'yes: ' + self.optimizer if self.optimizer else 'no'}")
        if self.trusted_globals:
            out.append(f"  trusted         {', '.join(self.trusted_globals)}")
        out += [f"  note: {note}" for note in self.notes]
        return out


def port_checkpoint(old: str | Path, new: str | Path, *, arch: str | None = None,
                    num_classes: int | None = None, trust: bool = False,
                    warn: Warn = stderr_warning) -> PortReport:
    """Read ``old`` (any torch since 0.1.10), check it against ``arch``, write ours to ``new``."""
    normalized = normalize(read_checkpoint(old, trust=trust, warn=warn))
    state, notes = normalized.state, normalized.notes
    for key in ("epoch", "global_step"):
        if key not in state:
            raise BadInput(f"checkpoint {old} has no {key}; our checkpoints need it to resume")
    arch, arch_from = resolve_arch(state, arch, str(old))
    num_classes = _resolve_num_classes(state, num_classes, str(old))
    model = _meta_model(arch, num_classes)
    expected = model.state_dict()
    for key in STATE_DICTS:
        added = complete_and_verify(state[key], expected, key, arch)
        if added:
            notes.append(f"{key}: added {added} BatchNorm num_batches_tracked counters (0), which "
                         "torch < 0.4.1 did not save")
    optimizer = None
    if "optimizer" in state:
        optimizer = verify_optimizer(state["optimizer"], model, arch)
    state["arch"] = arch
    state[EXTRAS_KEY]["ported_from"] = {"file": str(old), "format": normalized.raw.format,
                                        "trusted_globals": list(normalized.raw.trusted_globals)}
    try:
        ckpt.save_atomic(state, new)
    except RunFailed as exc:  # an unwritable destination is the user's input here
        raise BadInput(str(exc)) from None
    return PortReport(
        source=str(old), destination=str(new), format=normalized.raw.format, arch=arch,
        arch_from=arch_from, num_classes=num_classes, epoch=state["epoch"],
        global_step=state["global_step"], best_prec1=state.get("best_prec1"),
        best_prec1_stored_as=normalized.best_prec1_stored_as,
        tensors={key: len(state[key]) for key in STATE_DICTS}, optimizer=optimizer,
        trusted_globals=list(normalized.raw.trusted_globals), notes=notes)


def resolve_arch(state: dict[str, Any], arch: str | None, source: str) -> tuple[str, str]:
    stored = state.get("arch")
    if arch is None:
        if stored is None:
            raise BadInput(f"checkpoint {source} does not say its architecture: pass --arch "
                           f"(one of {', '.join(list_models())})")
        arch, arch_from = stored, "from the checkpoint"
    else:
        arch_from = "given" if stored in (None, arch) else f"given; the checkpoint says {stored}"
    get_model(arch)  # an unknown name fails here, naming the known ones
    return arch, arch_from


def _resolve_num_classes(state: dict[str, Any], num_classes: int | None, source: str) -> int:
    if num_classes is not None:
        if num_classes <= 0:
            raise BadInput(f"--num-classes must be positive, got {num_classes}")
        return num_classes
    head = state["state_dict"].get(ckpt.PREFIX + "fc1.weight")
    if head is None or head.dim() != 2:
        raise BadInput(f"checkpoint {source}: cannot tell the number of classes (no 2-d "
                       "fc1.weight); pass --num-classes")
    return int(head.shape[0])


def _meta_model(arch: str, num_classes: int) -> torch.nn.Module:
    """The architecture's shapes, without allocating weights or drawing random numbers."""
    with torch.device("meta"):
        return create_model(arch, num_classes)


def _shape(shape) -> str:
    return str(list(shape))


def complete_and_verify(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        key: str, arch: str) -> int:
    """Check a ``module.``-prefixed state dict against a model's, in the model's order.

    Adds the ``num_batches_tracked`` counters torch < 0.4.1 did not save (returns how many);
    raises ``BadInput`` naming the first missing or unexpected key or shape mismatch.
    """
    added = 0
    for name, reference in expected.items():
        tensor = state.get(ckpt.PREFIX + name)
        if tensor is None:
            if name.endswith(".num_batches_tracked"):
                state[ckpt.PREFIX + name] = torch.tensor(0, dtype=torch.long)
                added += 1
                continue
            raise BadInput(f"{key}: {name} is missing; {arch} expects it with shape {_shape(reference.shape)}")
        if tensor.shape != reference.shape:
            raise BadInput(f"{key}: {name} has shape {_shape(tensor.shape)}, "
                           f"{arch} expects {_shape(reference.shape)}")
        if tensor.is_floating_point() != reference.is_floating_point():
            raise BadInput(f"{key}: {name} holds {tensor.dtype}, {arch} expects {reference.dtype}")
    for name, tensor in state.items():
        if name[len(ckpt.PREFIX):] not in expected:
            raise BadInput(f"{key}: unexpected {name[len(ckpt.PREFIX):]} (shape "
                           f"{_shape(tensor.shape)}), which {arch} does not have")
    return added


def verify_optimizer(optimizer: dict[str, Any], model: torch.nn.Module, arch: str) -> str:
    """Check param count and per-parameter state shapes against ``model``; a one-line summary."""
    params = list(model.named_parameters())
    ids = [pid for group in optimizer["param_groups"] for pid in group["params"]]
    if len(ids) != len(params):
        raise BadInput(f"optimizer: its param groups list {len(ids)} parameters, {arch} has {len(params)}")
    kinds: set[str] = set()
    for pid, (name, param) in zip(ids, params):
        for kind, value in optimizer["state"].get(pid, {}).items():
            kinds.add(str(kind))
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise BadInput(f"optimizer: {kind} of parameter {pid} ({name}) has shape "
                               f"{_shape(value.shape)}, {arch} expects {_shape(param.shape)}")
    groups = len(optimizer["param_groups"])
    return (f"{groups} param group{'s' if groups != 1 else ''}, state for "
            f"{len(optimizer['state'])} of {len(ids)} parameters"
            f"{' (' + ', '.join(sorted(kinds)) + ')' if kinds else ''}")


def load_models(state: dict[str, Any], arch: str, num_classes: int,
                device: torch.device | str = "cpu") -> tuple[torch.nn.Module, torch.nn.Module]:
    """Student and teacher of ``arch`` holding a normalised checkpoint's weights, in eval mode."""
    built = []
    for key in STATE_DICTS:
        model = _meta_model(arch, num_classes)
        complete_and_verify(state[key], model.state_dict(), key, arch)
        model = model.to_empty(device=device)
        model.load_state_dict(ckpt.without_prefix(state[key]))
        built.append(model.eval())
    return built[0], built[1]


