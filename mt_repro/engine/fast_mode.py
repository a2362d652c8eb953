"""What ``mode = "fast"`` changes in how a run computes, and nothing in what it computes.

Fast mode keeps the algorithm, the hyperparameters, the minibatch composition and every loss of
faithful mode. It changes only:

* data: augmentation of whole minibatches on the training device (``mt_repro.data.device_loader``);
* memory format: channels-last activations and weights (faster convolutions on GPUs and oneDNN);
* precision: bf16 autocast where the device computes bf16 natively (CUDA GPUs from Ampere on;
  CPUs with AVX512-BF16 or AMX, through oneDNN), float32 elsewhere, with a note saying so; on
  CUDA, TF32 tensor cores for what stays float32 (faithful mode turns TF32 off: full float32,
  as the original's GPUs computed);
* the optimizer: SGD's multi-tensor (``foreach``) implementation on every device, the same
  arithmetic per element (``mt_repro.engine.optimizers``);
* when the host reads the steps' logged values: once per training-log row (and at least every
  ``MAX_PENDING_STEPS`` steps) instead of after each step, so that a GPU runs ahead of the
  host; a diverged loss fails the run at that read, naming its step
  (``Trainer.read_steps``). The values, and so the logs, are the same numbers. The steps of
  ``tests/test_fast_mode.py``'s ``STEPS_WITHOUT_READS`` methods read nothing else either;
* optionally ``torch.compile`` of student and teacher (``compile = true``; ``compile_mode``:
  torch's modes, ``reduce-overhead`` replaying CUDA graphs, ``max-autotune`` searching kernels). Not the default on
  CPUs: on 2 cores, compiling the digits ConvNet's step took 26 to 51 s, and the compiled step
  then ran at 0.96x to 0.97x the uncompiled one (README, "Fast mode and several GPUs").

The EMA update uses multi-tensor ``torch._foreach_*`` operations in both modes
(``mean_teacher.update_teacher``): they round exactly as the per-tensor loop did.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Speedups:
    """The speed settings a run ends up with on its device."""

    channels_last: bool = False
    autocast_dtype: torch.dtype | None = None
    compile: bool = False
    compile_mode: str = "default"   # torch.compile's mode

    @property
    def precision(self) -> str:
        return "bf16 autocast" if self.autocast_dtype is torch.bfloat16 else "float32"


FAITHFUL = Speedups()


def bf16_supported(device: torch.device) -> bool:
    """CUDA GPUs with bf16 (Ampere on); CPUs whose oneDNN has native bf16 arithmetic
    (AVX512-BF16 or AMX: recent Xeons and EPYCs), where it is ~1.3-2x faster than float32 for
    convolutions. Elsewhere bf16 would be emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def speedups_for(mode: str, compile: bool, device: torch.device,
                 note: Callable[[str], None] | None = None, compile_mode: str = "default") -> Speedups:
    """Fast mode's settings on ``device``; ``note`` hears about what had to fall back."""
    if mode != "fast":
        return FAITHFUL
    bf16 = bf16_supported(device)
    if not bf16 and note is not None:
        what = "this GPU" if device.type == "cuda" else device.type
        note(f"{what} has no bf16 support for training: fast mode computes in float32 "
             "(the data pipeline, memory format and EMA speed-ups still apply)")
    return Speedups(channels_last=True, autocast_dtype=torch.bfloat16 if bf16 else None, compile=compile,
                    compile_mode=compile_mode)


def set_float32_precision(speedups: Speedups, device: torch.device) -> None:
    """TF32 tensor cores for float32 convolutions and matrix products on CUDA: off in faithful
    mode (the original's GPUs computed in full float32), on in fast mode. Process-wide, as
    PyTorch's own switches are."""
    if device.type == "cuda":
        allowed = speedups != FAITHFUL
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed


def prepare_model(model: torch.nn.Module, speedups: Speedups) -> torch.nn.Module:
    """Channels-last weights and, if asked, compile in place (``state_dict`` keys unchanged)."""
    if speedups.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if speedups.compile:
        model.compile(mode=speedups.compile_mode)
    return model


def prepare_input(tensor: torch.Tensor, speedups: Speedups) -> torch.Tensor:
    if speedups.channels_last and tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def autocast(speedups: Speedups, device: torch.device):
    """The forward passes' precision context (a no-op in float32)."""
    if speedups.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=speedups.autocast_dtype)
