"""A small two-head ConvNet for the 8 x 8 digits demo (not in the paper).

Shaped after the paper's ConvNet at 1/4 scale for 8 x 8 inputs: two 3 x 3 convolutions,
max-pool, dropout, two more 3 x 3 convolutions, global average pool, two linear heads
(``fc1`` classifies, ``fc2`` is the consistency head, as in the ResNets). Batch norm and leaky
ReLU 0.1 after every convolution. About 66k parameters: a CPU trains it in seconds.
"""
from __future__ import annotations

import torch
from torch import nn

from mt_repro.models.memory_format import SameLayoutGradient
from mt_repro.models.registry import register_model
from mt_repro.models.resnet import init_conv_bn


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]


class DigitsConvNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(1, width), *_conv_block(width, width),
            nn.MaxPool2d(2), nn.Dropout(dropout),
            *_conv_block(width, 2 * width), *_conv_block(2 * width, 2 * width),
            SameLayoutGradient(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),   # (pooling's backward gives NCHW)
        )
        self.fc1 = nn.Linear(2 * width, num_classes)
        self.fc2 = nn.Linear(2 * width, num_classes)
        init_conv_bn(self)  # the ResNets' initialisation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.fc1(features), self.fc2(features)


@register_model(recipe="pytorch", input_size=(1, 8, 8), in_paper=False)
def digits_convnet(num_classes: int = 10) -> nn.Module:
    """Not in the paper: the 8 x 8 digits demo's two-head ConvNet (``mt-repro digits``)."""
    return DigitsConvNet(num_classes)
