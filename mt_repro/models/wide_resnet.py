"""Wide ResNets WRN-28-2 (CIFAR-10, SVHN) and WRN-28-8 (CIFAR-100) as the USB benchmark defines
them (``semilearn/nets/wrn/wrn.py`` of microsoft/Semi-supervised-learning), and its variant
``wrn_var_37_2`` for STL-10's 96x96 images (``semilearn/nets/wrn/wrn_var.py``), for Mean Teacher
under the protocol of USB/TorchSSL. Not in the Mean Teacher paper.

Matched to USB's module deliberately, so that its numbers carry over:

* pre-activation basic blocks (BN, leaky ReLU, 3x3 conv, BN, leaky ReLU, 3x3 conv), leaky
  slope 0.1 everywhere; a 1x1 convolution on the shortcut where the width changes;
* batch norm ``momentum=0.001`` in PyTorch's convention (``running = 0.999 * running + 0.001 *
  batch``, i.e. a TensorFlow-style decay of 0.999); ``eps`` PyTorch's 1e-5 in the blocks and
  1e-3 in the final batch norm;
* the first block of the first group activates before the residual: its BN and leaky ReLU
  apply to the input of both the branch and the shortcut convolution. The first blocks of the
  other groups do *not*: their branch and shortcut both start from the raw input, and their
  ``bn1`` is computed in training mode only for its running statistics, its output unused (its
  parameters get no gradient) -- USB's ``BasicBlock.forward`` does exactly this;
* a 3x3 stem convolution with a bias, no dropout (USB's ``drop_rate`` 0.0), and after the last
  group BN, leaky ReLU, global average pool and one linear layer;
* initialisation in ``modules()`` order: convolutions Kaiming-normal on fan-out with
  ``nonlinearity="leaky_relu"`` and torch's default ``a=0`` (so a gain of sqrt(2), not the
  slope 0.1's), the stem's bias keeping PyTorch's default; batch norm weight 1, bias 0; the
  linear layer Xavier-normal, bias 0. Modules are built in USB's order, so a torch seed gives
  USB's initial weights, and named as USB names them, so its checkpoints' keys load as they are.

USB's ``WideResNetVar`` (``wrn_var_37_2``) is this network with two changes and nothing else:
a fourth group of blocks (``block4``, twice the third group's width: 16, 32, 64, 128, 256 for a
widen factor of 2), and a stride of 2 in the first group as well, so a 96x96 image reaches the
pooling at 6x6 (96, 48, 24, 12, 6). Its depth argument is still 28 (four blocks a group); it has
37 convolutions (the stem, 4 * 4 * 2 in the blocks, 4 shortcuts), whence, it seems, the name.
Its blocks, group builder, batch norms, activations and initialisation are the same code as
``wrn.py``'s (that file's unused ``mish`` and ``PSBatchNorm2d`` build nothing and are left out),
so here it is ``WideResNet`` with ``groups=4, first_stride=2``; the first block of ``block4``
discards its ``bn1``'s output like those of groups 2 and 3. USB's builder has no default class
count; ours takes STL-10's 10.

The methods take a pair ``(class logits, consistency logits)`` from every network; USB's WRN has
one classifier, so both are the same tensor: registered with ``heads=1``, and a run that asks for a
logit distance cost between the two heads (always zero here) is refused.
``tests/golden/usb_models.json`` holds the parameter counts and initial weights of USB's own
modules, which ``tests/test_wide_resnet.py`` compares with these.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mt_repro.models.memory_format import same_layout_gradient
from mt_repro.models.registry import register_model

LEAKY_SLOPE = 0.1
BN_MOMENTUM = 0.001      # PyTorch's convention: the weight of the new batch's statistics
FINAL_BN_EPS = 0.001     # the blocks' batch norms keep PyTorch's 1e-5


class WideBasicBlock(nn.Module):
    """USB's ``BasicBlock``; attribute names (``convShortcut`` included) are its state-dict keys."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activate_before_residual: bool = False):
        super().__init__()
        # Construction order is USB's: each convolution draws its default init when built.
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=BN_MOMENTUM)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equal_in_out:
            out = F.leaky_relu(self.bn1(x), LEAKY_SLOPE, inplace=True)
            shortcut = x
        elif self.activate_before_residual:
            x = F.leaky_relu(self.bn1(x), LEAKY_SLOPE, inplace=True)
            out, shortcut = x, self.convShortcut(x)
        else:
            if self.training:
                self.bn1(x)   # running statistics only, as USB (which discards the output)
            out, shortcut = x, self.convShortcut(x)
        out = F.leaky_relu(self.bn2(self.conv1(out)), LEAKY_SLOPE, inplace=True)
        return shortcut + self.conv2(out)


class BlockGroup(nn.Module):
    """USB's ``NetworkBlock``: ``n`` blocks in ``.layer``, the first one changing width and stride."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int,
                 activate_before_residual: bool = False):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                           activate_before_residual)
            for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` as USB's ``WideResNet`` (three groups, 32x32 images) or, with
    ``groups=4`` and ``first_stride=2``, as its ``WideResNetVar`` (96x96 images)."""

    def __init__(self, num_classes: int, depth: int = 28, widen_factor: int = 2, first_stride: int = 1,
                 groups: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a wide ResNet's depth is 6n + 4, not {depth}")
        if groups not in (3, 4):
            raise ValueError(f"USB's wide ResNets have 3 or 4 groups of blocks, not {groups}")
        n = (depth - 4) // 6
        # the stem's 16, then each group twice the one before, from 16 * widen_factor
        channels = [16] + [16 * widen_factor * 2 ** g for g in range(groups)]
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=True)
        # block1 ... blockN, registered (and so drawn from the seed) in USB's order
        self.num_groups = groups
        for g in range(groups):
            stride = first_stride if g == 0 else 2
            setattr(self, f"block{g + 1}", BlockGroup(n, channels[g], channels[g + 1], stride,
                                                      activate_before_residual=g == 0))
        self.bn1 = nn.BatchNorm2d(channels[-1], momentum=BN_MOMENTUM, eps=FINAL_BN_EPS)
        self.classifier = nn.Linear(channels[-1], num_classes)
        self.num_features = channels[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier sees (USB's ``only_feat``)."""
        out = self.conv1(x)
        for g in range(self.num_groups):
            out = getattr(self, f"block{g + 1}")(out)
        out = same_layout_gradient(F.leaky_relu(self.bn1(out), LEAKY_SLOPE))   # (pooling's backward gives NCHW)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(self.features(x))
        return logits, logits


@register_model(recipe="pytorch", input_size=(3, 32, 32), in_paper=False, heads=1)
def wrn_28_2(num_classes: int = 10) -> nn.Module:
    """Not in the paper: WRN-28-2 as USB/TorchSSL train it on CIFAR-10 and SVHN (1.47M parameters)."""
    return WideResNet(num_classes, depth=28, widen_factor=2)


@register_model(recipe="pytorch", input_size=(3, 32, 32), in_paper=False, heads=1)
def wrn_28_8(num_classes: int = 100) -> nn.Module:
    """Not in the paper: WRN-28-8 as USB/TorchSSL train it on CIFAR-100 (23.4M parameters)."""
    return WideResNet(num_classes, depth=28, widen_factor=8)


@register_model(recipe="pytorch", input_size=(3, 96, 96), in_paper=False, heads=1)
def wrn_var_37_2(num_classes: int = 10) -> nn.Module:
    """Not in the paper: USB's WRN variant for STL-10's 96x96 images (4 groups, 5.93M parameters)."""
    return WideResNet(num_classes, depth=28, widen_factor=2, first_stride=2, groups=4)
