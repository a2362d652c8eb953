"""The paper's 13-layer ConvNet (Tables 1-3), as the original TensorFlow half built it.

Input pipeline inside the model, as ``tensorflow/mean_teacher/model.py``'s ``tower``: optional
per-image standardisation (SVHN), random horizontal flip (optional), random translation by up to
±2 px with reflected borders, Gaussian noise σ 0.15; then 3×(3×3 conv 128), 2×2 max-pool, dropout,
3×(3×3 conv 256), max-pool, dropout, 3×3 conv 512 (valid), 1×1 conv 256, 1×1 conv 128, 6×6
average pool, two dense heads of 10. Flip, translation, noise and dropout act in training mode
only and draw new values on every pass, so two passes over one batch see two different inputs.

Every conv and dense layer is weight-normalised with mean-only batch normalisation
(``tensorflow/mean_teacher/weight_norm.py``, after Salimans & Kingma 2016): ``y = g·(V/‖V‖)*x -
mean + b``; in training mode ``mean`` is the batch mean per channel, and an evaluation mean is
updated as ``m ← m - (1 - 0.999)(m - batch mean)`` starting from zero; evaluation mode subtracts
that. ``data_dependent_init`` sets ``g`` and ``b`` from the first training batch so that every
layer's pre-activations have mean 0 and variance 1 per channel on it. Convs are followed by leaky
ReLU 0.1; V is drawn from N(0, 0.05).

Quirks kept from the original: the dense layers keep their evaluation mean before scaling by
``g/‖V‖`` (``fully_connected`` subtracts the mean of ``x·V``), the convs after (``conv2d``
subtracts the mean of the normalised convolution). Both heads are always computed, so the second
one is initialised from data even when ``num_logits`` is 1 (``tower`` builds both). Every tower of
the original graph (``model.py`` ``inference``: primary, secondary, EMA) owned its evaluation
means; ``frozen_eval_means`` runs a pass that leaves this network's untouched (the Π model's
second pass, the original's secondary tower).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mt_repro.models.memory_format import is_channels_last, same_layout_gradient
from mt_repro.models.registry import register_model

EVAL_MEAN_DECAY = 0.999
# slim.layer_norm(center=False, scale=False) of the original: variance epsilon of TF 1.x layer_norm.
STANDARDIZE_EPSILON = 1e-12
INIT_EPSILON = {"conv": 1e-8, "dense": 1e-10}  # as weight_norm.py: tf.sqrt(v_init + eps)


class _WeightNormLayer(nn.Module):
    """Shared part of the weight-normalised conv and dense layers."""

    kind = "conv"

    def __init__(self, weight_shape: tuple[int, ...], out_features: int):
        super().__init__()
        self.V = nn.Parameter(torch.randn(weight_shape) * 0.05)
        self.g = nn.Parameter(torch.ones(out_features))
        self.b = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("eval_mean", torch.zeros(out_features))
        self.initializing = False
        self.track_eval_mean = True

    def _normalized_V(self) -> torch.Tensor:
        dims = tuple(range(1, self.V.dim()))
        return self.V / self.V.pow(2).sum(dim=dims, keepdim=True).sqrt()

    def _center(self, x: torch.Tensor, channel_dims: tuple[int, ...]) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=channel_dims)
            if self.track_eval_mean:
                with torch.no_grad():
                    self.eval_mean.sub_((1 - EVAL_MEAN_DECAY) * (self.eval_mean - mean.detach()))
        else:
            mean = self.eval_mean
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x - mean.view(shape)

    @torch.no_grad()
    def _initialize(self, projected: torch.Tensor, channel_dims: tuple[int, ...]) -> None:
        # The mean-only batch norm removes the mean: the offset starts at zero (weight_norm.py).
        var = projected.var(dim=channel_dims, unbiased=False)
        self.g.copy_(1.0 / torch.sqrt(var + INIT_EPSILON[self.kind]))
        self.b.zero_()


class WNConv2d(_WeightNormLayer):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: str = "same"):
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), out_channels)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.initializing:
            self._initialize(F.conv2d(x, self._normalized_V(), padding=self.padding), (0, 2, 3))
        weight = self.g.view(-1, 1, 1, 1) * self._normalized_V()
        out = self._center(F.conv2d(x, weight, padding=self.padding), (0, 2, 3))
        return out + self.b.view(1, -1, 1, 1)


class WNLinear(_WeightNormLayer):
    kind = "dense"

    def __init__(self, in_features: int, out_features: int):
        super().__init__((out_features, in_features), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.initializing:
            self._initialize(F.linear(x, self._normalized_V()), (0,))
        out = self._center(F.linear(x, self.V), (0,))  # mean of x·V, before the scaling (quirk above)
        scale = self.g / self.V.pow(2).sum(dim=1).sqrt()
        return scale * out + self.b


def per_image_standardize(images: torch.Tensor, epsilon: float = STANDARDIZE_EPSILON) -> torch.Tensor:
    """Each image minus its mean, divided by ``sqrt(its variance + epsilon)``, over all of its
    pixels and channels: the original ConvNet's input normalisation for SVHN
    (``slim.layer_norm`` without scale or offset)."""
    x = images if images.is_floating_point() else images.float()
    axes = tuple(range(1, x.dim()))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    return (x - mean) / torch.sqrt(var + epsilon)


def translate_batch(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """``out[n, :, y, x] = images[n, :, reflect(y - dy[n]), reflect(x - dx[n])]`` (N×C×H×W),
    the borders filled with the image mirrored about its edge pixel (TF's 'REFLECT' padding)."""
    n, c, h, w = images.shape

    def source(size: int, shift: torch.Tensor) -> torch.Tensor:
        index = (torch.arange(size, device=images.device).view(1, -1) - shift.view(-1, 1)).abs()
        return torch.where(index >= size, 2 * (size - 1) - index, index)

    rows = source(h, dy).view(n, 1, h, 1).expand(n, c, h, w)
    shifted = images.gather(2, rows)
    columns = source(w, dx).view(n, 1, 1, w).expand(n, c, h, w)
    return shifted.gather(3, columns)


class ConvNet13(nn.Module):
    def __init__(self, num_classes: int = 10, *, input_noise: float = 0.15, dropout: float = 0.5,
                 normalize_input: bool = True, flip_horizontally: bool = False, translate: int = 2,
                 num_logits: int = 1, width: float = 1.0):
        super().__init__()
        # ``width`` scales every layer's channels (not in the original: 1.0 is the paper's
        # network; smaller widths make quick trials and tests affordable on a CPU).
        c1, c2, c3 = (max(1, round(c * width)) for c in (128, 256, 512))
        c4, c5 = max(1, round(256 * width)), max(1, round(128 * width))
        self.input_noise = input_noise
        self.dropout = dropout
        self.normalize_input = normalize_input
        self.flip_horizontally = flip_horizontally
        self.translate = translate
        self.num_logits = num_logits
        self.block1 = nn.ModuleList([WNConv2d(3, c1, 3), WNConv2d(c1, c1, 3), WNConv2d(c1, c1, 3)])
        self.block2 = nn.ModuleList([WNConv2d(c1, c2, 3), WNConv2d(c2, c2, 3), WNConv2d(c2, c2, 3)])
        self.block3 = nn.ModuleList([WNConv2d(c2, c3, 3, padding="valid"), WNConv2d(c3, c4, 1),
                                     WNConv2d(c4, c5, 1)])
        self.fc1 = WNLinear(c5, num_classes)
        self.fc2 = WNLinear(c5, num_classes)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Normalisation and the training-mode input noise of the original tower."""
        if self.normalize_input:
            x = per_image_standardize(x)
        if self.training:
            n = x.shape[0]
            if self.flip_horizontally:
                flip = torch.rand(n, device=x.device) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            if self.translate:
                dy = torch.randint(-self.translate, self.translate + 1, (n,), device=x.device)
                dx = torch.randint(-self.translate, self.translate + 1, (n,), device=x.device)
                x = translate_batch(x, dy, dx)
            if self.input_noise:
                x = x + self.input_noise * torch.randn_like(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The translation gathers into torch's default layout: back to the input's (fast mode's
        # channels-last), so that the first convolution sees one layout.
        layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        x = self.augment(x).contiguous(memory_format=layout)
        for block, pool in ((self.block1, True), (self.block2, True), (self.block3, False)):
            for conv in block:
                x = F.leaky_relu(conv(x), 0.1)
            if pool:
                x = F.dropout(F.max_pool2d(x, 2), self.dropout, self.training)
        x = same_layout_gradient(x).mean(dim=(2, 3))   # (the mean's backward broadcasts in NCHW)
        primary, secondary = self.fc1(x), self.fc2(x)
        return primary, (secondary if self.num_logits == 2 else primary)


@contextmanager
def frozen_eval_means(model: nn.Module):
    """Training-mode passes inside leave every layer's evaluation mean as it was."""
    layers = [m for m in model.modules() if isinstance(m, _WeightNormLayer)]
    for layer in layers:
        layer.track_eval_mean = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.track_eval_mean = True


@torch.no_grad()
def data_dependent_init(model: nn.Module, batch: torch.Tensor) -> None:
    """One training-mode pass over ``batch`` that sets every layer's ``g`` and ``b`` so its
    pre-activations have mean 0 and variance 1 per channel (``init=True`` towers of the
    original). Evaluation means are left at zero, as the original initialised them."""
    layers = [m for m in model.modules() if isinstance(m, _WeightNormLayer)]
    was_training = model.training
    model.train()
    for layer in layers:
        layer.initializing = True
    try:
        with frozen_eval_means(model):
            model(batch)
    finally:
        for layer in layers:
            layer.initializing = False
        model.train(was_training)


@register_model(recipe="tensorflow", input_size=(3, 32, 32), init_from_data=data_dependent_init)
def convnet13(num_classes: int = 10, **options) -> nn.Module:
    """The paper's 13-layer ConvNet (Tables 1-3), weight-normalised, noise inside the model."""
    return ConvNet13(num_classes, **options)
