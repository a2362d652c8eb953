"""Model registry: architectures by the names the original code used for them."""
from __future__ import annotations

from typing import Callable

from torch import nn

from mt_repro.errors import BadInput

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def available() -> list[str]:
    return sorted(_REGISTRY)


def create_model(arch: str, num_classes: int) -> nn.Module:
    """Build ``arch``: random draws happen in the same order as the original's constructor."""
    try:
        factory = _REGISTRY[arch]
    except KeyError:
        raise BadInput(f"unknown architecture {arch!r}; choose one of {', '.join(available())}") from None
    return factory(num_classes=num_classes)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


from mt_repro.models import resnet  # noqa: E402,F401  (registers the architectures)
from mt_repro.models import digits  # noqa: E402,F401  (digits_convnet, the demo's model)
