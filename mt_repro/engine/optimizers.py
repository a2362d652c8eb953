"""The recipes' optimizers, by the recipe's name for them: the PyTorch half's SGD, the
TensorFlow half's Adam (``TFAdam``, TensorFlow 1.x's arithmetic, with betas the schedule sets
per step) and the USB protocol's SGD."""
from __future__ import annotations

import math

import torch


class TFAdam(torch.optim.Optimizer):
    """Adam as TensorFlow 1.x's ``AdamOptimizer`` computes it, with betas that change per step:
    ``m += (g - m)(1 - β1)``, ``v += (g² - v)(1 - β2)``, ``θ -= lr_t·m/(sqrt(v) + ε)`` with
    ``lr_t = lr·sqrt(1 - p2)/(1 - p1)``. The powers ``p1``, ``p2`` are one pair for all variables:
    TensorFlow created them holding the betas of the initialisation run (global step 0), used
    them, and multiplied them by the step's betas after each update, so the k-th update (from 0)
    uses ``β(0)·β(0)·β(1)···β(k-1)``, not ``β(0)···β(k)``; it matters only once the betas change."""

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8):
        # Python floats (float64), kept as they are by load_state_dict; None until the first step
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, beta1_power=None, beta2_power=None))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            if group["beta1_power"] is None:
                group["beta1_power"], group["beta2_power"] = float(beta1), float(beta2)
            lr_t = group["lr"] * math.sqrt(1 - group["beta2_power"]) / (1 - group["beta1_power"])
            for p in group["params"]:
                if p.grad is None:  # the unused second head when num_logits is 1
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["m"].add_((p.grad - state["m"]).mul_(1 - beta1))
                state["v"].add_((p.grad * p.grad - state["v"]).mul_(1 - beta2))
                p.sub_(state["m"] * lr_t / (state["v"].sqrt() + group["eps"]))
            group["beta1_power"] *= beta1
            group["beta2_power"] *= beta2


def _foreach(config) -> bool | None:
    """Fast mode: SGD's multi-tensor implementation on every device (PyTorch picks it only on
    CUDA): one kernel per operation for all parameters instead of one per tensor, the same
    arithmetic per element. Faithful mode: PyTorch's own choice."""
    return True if getattr(config, "mode", "faithful") == "fast" else None


def sgd(config, params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov, foreach=_foreach(config))


def sgd_no_decay_1d(config, params) -> torch.optim.Optimizer:
    """USB's SGD (``get_optimizer`` and ``param_groups_weight_decay`` of ``semilearn``): weight
    decay on the weight matrices and kernels only; biases and normalisation weights (every
    parameter of one dimension) get none."""
    params = list(params)
    groups = [{"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
              {"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay}]
    return torch.optim.SGD([g for g in groups if g["params"]], config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, foreach=_foreach(config))


def tf_adam(config, params) -> torch.optim.Optimizer:
    return TFAdam(params, eps=config.adam_epsilon)


OPTIMIZERS = {"sgd": sgd, "tf_adam": tf_adam, "sgd_no_decay_1d": sgd_no_decay_1d}
