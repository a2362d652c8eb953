"""Architectures by the names the original code used for them, each with what the engine must
know about it (as timm keeps a model's defaults beside its builder).

A model is one module of this package with a builder decorated by ``@register_model(...)``;
the registry imports every module of the package, so ``list_models()`` holds every
architecture and the tests that are driven by it take a new one up with nothing else changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mt_repro.core.registry import Registry


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    recipe: str                    # the half of the original that trains it: "pytorch" or "tensorflow"
    description: str
    input_size: tuple[int, int, int]   # channels, height, width of the images it takes
    # Data-dependent initialisation from a first minibatch (weight normalisation), or None.
    init_from_data: Callable[[nn.Module, torch.Tensor], None] | None = None
    in_paper: bool = True          # False: ours, for quick trials and tests
    # Distinct classification and consistency heads (the original's two-head networks); with
    # one, the pair a network returns is the same tensor twice.
    heads: int = 2


_MODELS: Registry[ModelInfo] = Registry("mt_repro.models", "architecture")


def register_model(*, recipe: str, input_size: tuple[int, int, int], init_from_data=None, in_paper: bool = True,
                   heads: int = 2):
    """Register the decorated builder ``name(num_classes, **options) -> nn.Module`` by its name."""
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        description = (builder.__doc__ or "").strip().split("\n")[0]
        _MODELS.add(builder.__name__, ModelInfo(builder.__name__, builder, recipe, description,
                                                tuple(input_size), init_from_data, in_paper, heads))
        return builder
    return add


def list_models() -> list[str]:
    return _MODELS.names()


def get_model(name: str) -> ModelInfo:
    return _MODELS.get(name)


def create_model(name: str, num_classes: int, **options) -> nn.Module:
    """Build ``name``: random draws happen in the same order as the original's constructor."""
    return get_model(name).builder(num_classes=num_classes, **options)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
