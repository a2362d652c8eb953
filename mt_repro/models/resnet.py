"""The two ResNets of the original PyTorch code: shake-shake 26 for CIFAR, ResNeXt-152 for ImageNet.

Module names and construction order follow ``pytorch/mean_teacher/architectures.py`` of the
original, for two reasons: checkpoints written by the original load without renaming keys, and
the weight initialisation consumes torch's random generator in the same order, so a seeded
run starts from the same weights. Two consequences worth knowing:

* every ``nn.Conv2d`` / ``nn.Linear`` first draws its default (Kaiming-uniform) init in its
  constructor; the convolutions are then redrawn from N(0, sqrt(2 / (k*k*out_channels))) in
  ``modules()`` order. Only the draw order matters, so the downsampling module of a stage is
  constructed *before* the stage's first block, as the original did;
* both heads (``fc1``, ``fc2``) are always computed; how they are used is the method's business.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mt_repro.models.memory_format import same_layout_gradient
from mt_repro.models.registry import register_model


class ShakeGate(torch.autograd.Function):
    """Shake-shake mixing ``a*g + b*(1-g)`` with one gate per sample.

    Training: the gate is U(0, 1) in the forward pass and a *fresh, independent* U(0, 1) in the
    backward pass (shake-shake's "shake-shake-image" variant). Evaluation: 0.5 both ways.
    Gates are drawn from torch's global generator on the input's device, as in the original.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, training: bool) -> torch.Tensor:
        gate_shape = (a.size(0),) + (1,) * (a.dim() - 1)
        gate = a.new_empty(gate_shape)
        if training:
            gate.uniform_(0, 1)
        else:
            gate.fill_(0.5)
        return a * gate + b * (1.0 - gate)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        gate_shape = (grad_output.size(0),) + (1,) * (grad_output.dim() - 1)
        gate = grad_output.new_empty(gate_shape).uniform_(0, 1)
        grad_a = grad_output * gate if ctx.needs_input_grad[0] else None
        grad_b = grad_output * (1 - gate) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ShakeShakeBlock(nn.Module):
    """Two residual branches (ReLU-conv-BN-ReLU-conv-BN) mixed by a shake gate."""

    @staticmethod
    def out_channels(planes: int, groups: int) -> int:
        if groups != 1:
            raise ValueError("shake-shake blocks have no groups")
        return planes

    def __init__(self, inplanes: int, planes: int, groups: int = 1, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.out_channels(planes, groups)
        self.conv_a1 = conv3x3(inplanes, planes, stride)
        self.bn_a1 = nn.BatchNorm2d(planes)
        self.conv_a2 = conv3x3(planes, planes)
        self.bn_a2 = nn.BatchNorm2d(planes)
        self.conv_b1 = conv3x3(inplanes, planes, stride)
        self.bn_b1 = nn.BatchNorm2d(planes)
        self.conv_b2 = conv3x3(planes, planes)
        self.bn_b2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def _branch(self, x, conv1, bn1, conv2, bn2):
        # The inner ReLU works in place, as in the original: same numbers, but one activation-sized
        # allocation less per branch (fresh memory is page-faulted in; ~2% of a CPU step).
        # The outer one must not: x is shared by both branches and the shortcut.
        return bn2(conv2(F.relu(bn1(conv1(F.relu(x))), inplace=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._branch(x, self.conv_a1, self.bn_a1, self.conv_a2, self.bn_a2)
        b = self._branch(x, self.conv_b1, self.bn_b1, self.conv_b2, self.bn_b2)
        mixed = ShakeGate.apply(a, b, self.training)
        shortcut = x if self.downsample is None else self.downsample(x)
        return shortcut + mixed


class BottleneckBlock(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce, grouped 3x3, 1x1 expand (x2 with groups, x4 without)."""

    @staticmethod
    def out_channels(planes: int, groups: int) -> int:
        return 2 * planes if groups > 1 else 4 * planes

    def __init__(self, inplanes: int, planes: int, groups: int = 1, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        width_out = self.out_channels(planes, groups)
        self.relu = nn.ReLU(inplace=True)
        self.conv_a1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn_a1 = nn.BatchNorm2d(planes)
        self.conv_a2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1,
                                 bias=False, groups=groups)
        self.bn_a2 = nn.BatchNorm2d(planes)
        self.conv_a3 = nn.Conv2d(planes, width_out, kernel_size=1, bias=False)
        self.bn_a3 = nn.BatchNorm2d(width_out)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_a1(self.conv_a1(x)))
        out = self.relu(self.bn_a2(self.conv_a2(out)))
        out = self.bn_a3(self.conv_a3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + out)


class ShiftConvDownsample(nn.Module):
    """Halve the resolution by stacking the even/even and odd/odd pixel grids, then a grouped 1x1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(2 * in_channels, out_channels, kernel_size=1, groups=2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = same_layout_gradient(x)   # (the slices' backward would give NCHW)
        x = torch.cat((x[:, :, 0::2, 0::2], x[:, :, 1::2, 1::2]), dim=1)
        return self.bn(self.conv(self.relu(x)))


def init_conv_bn(model: nn.Module) -> None:
    """The original ResNets' initialisation, in module order (it draws from torch's generator):
    conv weights N(0, sqrt(2 / (k * k * out_channels))), batch norm weight 1 and bias 0; linear
    layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()


class _ResNetBase(nn.Module):
    """Stages of residual blocks and two linear heads; subclasses build the stem first."""

    def _make_stages(self, block, stage_sizes, channels, groups, downsample_mode):
        self.downsample_mode = downsample_mode
        for index, n_blocks in enumerate(stage_sizes):
            stage = self._make_stage(block, channels * 2 ** index, groups, n_blocks,
                                     stride=1 if index == 0 else 2)
            self.add_module(f"layer{index + 1}", stage)

    def _make_stage(self, block, planes, groups, n_blocks, stride):
        width_out = block.out_channels(planes, groups)
        downsample = None
        if stride != 1 or self.inplanes != width_out:
            if self.downsample_mode == "basic" or stride == 1:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, width_out, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(width_out),
                )
            elif self.downsample_mode == "shift_conv":
                downsample = ShiftConvDownsample(self.inplanes, width_out)
            else:
                raise ValueError(f"unknown downsample mode {self.downsample_mode!r}")
        blocks = [block(self.inplanes, planes, groups, stride, downsample)]
        self.inplanes = width_out
        blocks += [block(self.inplanes, planes, groups) for _ in range(1, n_blocks)]
        return nn.Sequential(*blocks)

    def _make_heads(self, features: int, num_classes: int):
        self.fc1 = nn.Linear(features, num_classes)
        self.fc2 = nn.Linear(features, num_classes)

    def _init_weights(self):
        init_conv_bn(self)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        return self.fc1(x), self.fc2(x)


class ResNet32x32(_ResNetBase):
    """3x3 stem without pooling, three stages, 8x8 average pool: for 32x32 inputs."""

    def __init__(self, block, stage_sizes, channels, groups=1, num_classes=1000,
                 downsample="basic"):
        super().__init__()
        if len(stage_sizes) != 3:
            raise ValueError("ResNet32x32 has three stages")
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self._make_stages(block, stage_sizes, channels, groups, downsample)
        self.avgpool = nn.AvgPool2d(8)
        self._make_heads(block.out_channels(channels * 4, groups), num_classes)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self._heads(x)


class ResNet224x224(_ResNetBase):
    """7x7/2 stem with BN, ReLU and 3x3/2 max-pool, four stages, 7x7 average pool."""

    def __init__(self, block, stage_sizes, channels, groups=1, num_classes=1000,
                 downsample="basic"):
        super().__init__()
        if len(stage_sizes) != 4:
            raise ValueError("ResNet224x224 has four stages")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._make_stages(block, stage_sizes, channels, groups, downsample)
        self.avgpool = nn.AvgPool2d(7)
        self._make_heads(block.out_channels(channels * 8, groups), num_classes)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self._heads(x)


@register_model(recipe="pytorch", input_size=(3, 32, 32))
def cifar_shakeshake26(num_classes: int = 10) -> nn.Module:
    """Shake-shake 26 2x96d: three stages of four blocks, widths 96/192/384, shift-conv downsampling."""
    return ResNet32x32(ShakeShakeBlock, [4, 4, 4], channels=96, num_classes=num_classes,
                       downsample="shift_conv")


@register_model(recipe="pytorch", input_size=(3, 224, 224))
def resnext152(num_classes: int = 1000) -> nn.Module:
    """ResNeXt-152 32x4d with the original's widths (bottleneck blocks [3, 8, 36, 3], 32 groups)."""
    return ResNet224x224(BottleneckBlock, [3, 8, 36, 3], channels=32 * 4, groups=32,
                         num_classes=num_classes, downsample="basic")


@register_model(recipe="pytorch", input_size=(3, 32, 32), in_paper=False)
def cifar_shakeshake_mini(num_classes: int = 10) -> nn.Module:
    """Not in the paper: shake-shake with one block per stage, widths 16/32/64, for tests and
    smoke runs on a CPU. Same blocks, downsampling, heads and initialisation as shake-shake 26."""
    return ResNet32x32(ShakeShakeBlock, [1, 1, 1], channels=16, num_classes=num_classes,
                       downsample="shift_conv")


@register_model(recipe="pytorch", input_size=(3, 224, 224), in_paper=False)
def resnext_mini(num_classes: int = 1000) -> nn.Module:
    """Not in the paper: a one-block-per-stage ResNeXt (widths 16..128, 2 groups) on the
    ImageNet stem, for tests and smoke runs of the ImageNet pipeline on a CPU."""
    return ResNet224x224(BottleneckBlock, [1, 1, 1, 1], channels=8, groups=2,
                         num_classes=num_classes, downsample="basic")
