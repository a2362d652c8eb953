"""Ramp-up and ramp-down multipliers in [0, 1] for learning rates, cost weights and Adam's betas.

Each takes the current position and the ramp length in the same unit (epochs or steps).
numpy does the scalar arithmetic, as in the original ``pytorch/mean_teacher/ramps.py``,
so that the multipliers are bit-identical to the original's.
"""
from __future__ import annotations

import numpy as np


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """``exp(-5 (1 - t/T)^2)`` for t clipped to [0, T] (Laine & Aila 2017); 1 when T = 0."""
    if rampup_length == 0:
        return 1.0
    phase = 1.0 - np.clip(current, 0.0, rampup_length) / rampup_length
    return float(np.exp(-5.0 * phase * phase))


def linear_rampup(current: float, rampup_length: float) -> float:
    """``t / T`` until T, then 1."""
    if current < 0 or rampup_length < 0:
        raise ValueError(f"linear_rampup needs non-negative arguments, got {current}, {rampup_length}")
    if current >= rampup_length:
        return 1.0
    return current / rampup_length


def cosine_rampdown(current: float, rampdown_length: float) -> float:
    """Half a cosine from 1 at t = 0 to 0 at t = T (one cycle of SGDR, Loshchilov & Hutter)."""
    if not 0 <= current <= rampdown_length:
        raise ValueError(f"cosine_rampdown needs 0 <= {current} <= {rampdown_length}")
    return float(0.5 * (np.cos(np.pi * current / rampdown_length) + 1))


def sigmoid_rampdown(current: float, rampdown_length: float, training_length: float) -> float:
    """``exp(-12.5 (1 - (L - t)/R)^2)`` over the last R of L steps, 1 before (the TensorFlow
    half's ramp-down of the learning rate and Adam's beta1); R = 0: no ramp-down."""
    if current < training_length - rampdown_length or rampdown_length == 0:
        return 1.0
    phase = 1.0 - max(0.0, training_length - current) / rampdown_length
    return float(np.exp(-12.5 * phase * phase))


def step_rampup(current: float, rampup_length: float) -> float:
    """0 during the ramp-up, 1 after it (the switch of Adam's beta2 and the EMA decay)."""
    return 0.0 if current < rampup_length else 1.0
