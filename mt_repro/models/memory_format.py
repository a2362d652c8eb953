"""Gradients in the activations' memory format.

Fast mode trains in channels-last. A few backward functions give their gradient back in
torch's default (NCHW) layout whatever the forward pass used: slicing's (``x[:, :, ::2, ::2]``
backward fills a fresh NCHW tensor) and global average pooling's (its 1x1 output is both
layouts at once, and the gradient takes NCHW). From there every backward op of the layers
below gets one tensor of each layout, which their kernels handle on a slower, strided path (on a
2-core AMD EPYC: channels-last batch norm's backward 3x slower in shake-shake 26, leaky ReLU's
13x; benchmarks/README.md). ``same_layout_gradient`` marks where a network's gradient would change
layout; in NCHW (faithful mode) it is the identity both ways.
"""
from __future__ import annotations

import torch


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels-last and not also in NCHW (as a 1x1 or one-channel map is)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _SameLayoutGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.channels_last = is_channels_last(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        # A copy when the layouts differ: the same values, so the same numbers downstream.
        return gradient.contiguous(memory_format=torch.channels_last) if ctx.channels_last else gradient


def same_layout_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself; its gradient comes back in ``x``'s memory format (channels-last stays
    channels-last)."""
    return _SameLayoutGradient.apply(x) if x.requires_grad else x


class SameLayoutGradient(torch.nn.Module):
    """``same_layout_gradient`` as a layer (for ``nn.Sequential``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return same_layout_gradient(x)
