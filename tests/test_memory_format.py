"""Fast mode trains channels-last; no layer of a registered network may hand its neighbours
tensors of the other layout (NCHW), which their kernels take on a slower, strided path. Checked
on every op of a training pass, forward and backward, of every registered network, and of a
fast training step of every registered method."""
from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import digits_demo_config
from mt_repro import models
from mt_repro.core.rng import seed_everything
from mt_repro.engine.trainer import Trainer
from mt_repro.methods.registry import method_names
from mt_repro.models.memory_format import SameLayoutGradient, is_channels_last, same_layout_gradient

# The weight-normalised ConvNet's mean-only batch norm: its mean's backward is an NCHW tensor,
# which autograd adds to the channels-last gradient of the centred output. Copying it to
# channels-last first was slower on the CPU than the mixed addition (45 against 30 ms at
# 64x128x32x32, 20 against 6 ms at 64x256x16x16).
KNOWN_MIXED = {"convnet13": {"aten.add.Tensor"}}


def layout(tensor) -> str | None:
    """Which layout a 4-D map is in, where the two differ (not for 1x1 or one-channel maps)."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.size(1) == 1 \
            or tensor.size(2) * tensor.size(3) == 1:
        return None
    if is_channels_last(tensor):
        return "channels_last"
    return "nchw" if tensor.is_contiguous() else None


class MixedLayouts(TorchDispatchMode):
    """Counts the ops given 4-D tensors of both layouts."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        if len({layout(t) for t in tensors} - {None}) > 1:
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", models.list_models())
def test_a_channels_last_training_pass_keeps_one_layout(name):
    torch.manual_seed(0)
    info = models.get_model(name)
    model = models.create_model(name, num_classes=10).to(memory_format=torch.channels_last).train()
    images = torch.randn(2, *info.input_size).contiguous(memory_format=torch.channels_last)
    mixed = MixedLayouts()
    with mixed:
        outputs = model(images)
        sum(output.sum() for output in outputs).backward()
    assert set(mixed.ops) <= KNOWN_MIXED.get(name, set()), f"{name}: ops given both layouts: {dict(mixed.ops)}"


@pytest.mark.parametrize("method", method_names())
def test_a_fast_step_of_every_method_keeps_one_layout(tmp_path, method):
    """The whole step in fast mode, with the method's digits settings: its extra passes,
    backward, optimizer and teacher update. (The digits have one channel, where the two layouts
    coincide: what a method does to its input images is not checked here, only what follows.)"""
    config = digits_demo_config(tmp_path, method, "fast")
    seed_everything(0)
    trainer = Trainer(config, tmp_path / "run", progress=False).build()
    assert trainer.speedups.channels_last
    batch = next(iter(trainer.data.epoch(0)))
    trainer.train_mode()
    mixed = MixedLayouts()
    with mixed:
        trainer.step(batch, 0, 0, trainer.data.steps_per_epoch)
    assert not mixed.ops, f"{method}: ops given both layouts: {dict(mixed.ops)}"


def test_the_check_finds_what_it_is_for():
    """Without the mark, global average pooling's gradient reaches the last activation in NCHW."""
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    for marked, expected in ((False, {"aten.leaky_relu_backward.default"}), (True, set())):
        mixed = MixedLayouts()
        with mixed:
            y = torch.nn.functional.leaky_relu(x, 0.1)
            torch.nn.functional.adaptive_avg_pool2d(same_layout_gradient(y) if marked else y, 1).sum().backward()
        assert set(mixed.ops) == expected


@pytest.mark.parametrize("channels_last", [False, True])
def test_same_layout_gradient_changes_no_value(channels_last):
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weights = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    (same_layout_gradient(x)[:, :, ::2, ::2] * weights[:, :, ::2, ::2]).sum().backward()
    expected = torch.zeros_like(weights)
    expected[:, :, ::2, ::2] = weights[:, :, ::2, ::2]
    assert torch.equal(x.grad, expected)
    assert is_channels_last(x.grad) is channels_last and (channels_last or x.grad.is_contiguous())
    plain = torch.randn(2, 3)
    assert same_layout_gradient(plain) is plain and SameLayoutGradient()(plain) is plain  # no gradient: no node
