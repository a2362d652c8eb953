"""A small two-head ConvNet for the 8 x 8 digits demo (not in the paper).

Shaped after the paper's ConvNet at 1/4 scale for 8 x 8 inputs: two 3 x 3 convolutions,
max-pool, dropout, two more 3 x 3 convolutions, global average pool, two linear heads
(``fc1`` classifies, ``fc2`` is the consistency head, as in the ResNets). Batch norm and leaky
ReLU 0.1 after every convolution. About 66k parameters: a CPU trains it in seconds.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mt_repro.models import register


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]


class DigitsConvNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(1, width), *_conv_block(width, width),
            nn.MaxPool2d(2), nn.Dropout(dropout),
            *_conv_block(width, 2 * width), *_conv_block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc1 = nn.Linear(2 * width, num_classes)
        self.fc2 = nn.Linear(2 * width, num_classes)
        # The ResNets' initialisation: conv N(0, sqrt(2 / (k*k*out))), BN 1/0, linear default.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                module.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.data.fill_(1)
                module.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.fc1(features), self.fc2(features)


@register
def digits_convnet(num_classes: int = 10) -> nn.Module:
    """Not in the paper: the 8 x 8 digits demo's two-head ConvNet (``mt-repro digits``)."""
    return DigitsConvNet(num_classes)
