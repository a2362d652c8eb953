"""What every architecture of ``mt_repro.models`` shares, for the layers that handle networks
without knowing which: each ends in its heads on the same pooled features, the classification
head ``fc1`` and consistency head ``fc2`` (the original's names), or one head ``classifier``
(USB's wide ResNets, named as USB names it so that their parameters compare). What precedes
them is the encoder: a pre-trained one is loaded without them (``encoder_state``), a
contrastive method learns on those features (``representation``)."""
from __future__ import annotations

import torch
from torch import nn

HEADS = ("fc1", "fc2", "classifier")
CLASSIFIERS = ("fc1", "classifier")   # the head whose input is the pooled features


def _classifier(model: nn.Module) -> nn.Module:
    """The network's classification head (inside a wrapper too: a compiled or sharded network)."""
    found = [module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in CLASSIFIERS]
    if len(found) != 1:
        raise TypeError(f"{type(model).__name__} has {len(found)} modules named {' or '.join(CLASSIFIERS)}, "
                        "not one")
    return found[0]


def representation(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The pooled features the heads classify (the classification head's input), from one forward
    pass. A network that computes them its own way says so with a ``representation`` method of
    its own (``ShardedModel``: in shards, across processes), which is used instead."""
    own = getattr(type(model), "representation", None)
    if callable(own):
        return own(model, inputs)
    captured: list[torch.Tensor] = []
    hook = _classifier(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model(inputs)
    finally:
        hook.remove()
    return captured[0].flatten(1)   # the first call (a network may call its head again)


def feature_size(model: nn.Module) -> int:
    """The width of ``representation``: what the classification head takes (its weight matrix's
    second dimension: a weight-normalised head keeps no ``in_features``)."""
    return next(p for p in _classifier(model).parameters() if p.dim() == 2).shape[1]


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A network's state less its heads: what a pre-trained encoder gives another run."""
    return {key: value for key, value in state.items() if key.split(".", 1)[0] not in HEADS}
