"""Momentum Contrast (He et al., "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; v2: Chen et al., "Improved Baselines with Momentum Contrastive Learning",
2020): Mean Teacher's EMA teacher turned contrastive. A pre-training stage: it never reads a
label, and what it leaves is an encoder for another run's ``init_from``.

Per step, with two augmented views of every image of the minibatch: those the data pipeline
makes for every method (``views = "pipeline"``: the student's view is the query's, the
teacher's the key's, Mean Teacher's own pair of views), or two views through MoCo v1's or v2's
own augmentation (``views = "v1"`` / ``"v2"``: random resized crop, colour jitter, greyscale,
v2's blur, flip; ``mt_repro.data.contrastive``):

* the key encoder (the run's teacher network and the key head) moves towards the query encoder
  (the student and the query head) with momentum ``m``: ``θ_k ← m θ_k + (1 − m) θ_q``, before
  the keys are computed, as MoCo's ``_momentum_update_key_encoder``; it starts as a copy;
* queries ``q`` = the L2-normalised projection of the student's pooled features (the input of
  its classification head, ``mt_repro.models.registry.representation``), keys ``k`` the same of
  the key encoder, without gradient;
* loss: InfoNCE, the cross-entropy of ``[q·k⁺, q·queue] / τ`` with the positive at index 0,
  averaged over the minibatch, × the run's consistency weight (1 in its settings, no ramp-up:
  the whole loss is the unsupervised part); then the keys are enqueued, the oldest dequeued (a ring of
  ``queue_size`` keys, which must be a multiple of the minibatch, as MoCo asserts).

The projection: v1 a linear layer to ``dim`` (MoCo's encoder with ``num_classes = dim``), v2 an
MLP (hidden layer as wide as the features, ReLU) before it (``head = "mlp"``). The heads are the
method's own modules: the query head is trained beside the student (``extra_parameters``), the
key head follows it with the momentum; the queue and both heads are in ``state_dict``.

Batch norm. MoCo shuffles the keys' minibatch across GPUs so that no sample's key is normalised
with the statistics of its own query's sub-batch (intra-batch communication "cheats" the
pretext task). Both ways MoCo's code offers are here; in each, the encoders see the minibatch in
groups normalised apart, the keys' groups drawn from a shuffled order and put back:

* several processes (``torchrun``, one per GPU, as MoCo's ``_batch_shuffle_ddp``): the
  processes are the groups. Every process holds the whole minibatch (the engine's
  ``ShardedModel``), so the shuffle is a permutation drawn by rank 0 and broadcast, each
  process encodes its share of the shuffled keys, and the gathered keys are put back in place;
  the queries' shares are the unshuffled ones, their gradients averaged by DDP. ``batch_shards``
  gives one process the same groups in turn;
* one process, ``bn_splits = S`` > 1: ``S`` groups, passes one after the other, as the
  single-GPU ``SplitBatchNorm`` of MoCo's CIFAR-10 demo simulates ``S`` GPUs (the running
  statistics take ``S`` updates a step).

``bn_splits`` counts the groups of the whole minibatch, so a run of ``S`` shards takes 1 or ``S``
(both mean the shards). With one group, plain batch norm over the whole minibatch: the cheat the
shuffle exists to stop.

Evaluation is of the encoders' features, not of the untrained classification heads: the
weighted kNN monitor of MoCo's demo (``evaluation = "knn"``, ``mt_repro.engine.evaluation``)
over the run's labeled training images; its error is the run's reported error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mt_repro.core.errors import BadInput
from mt_repro.core.types import Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.registry import method_options, register
from mt_repro.core.networks import feature_size, representation

HEADS = ("linear", "mlp")
# "pipeline": the data pipeline's two views (Mean Teacher's); v1 / v2: MoCo's own augmentation
VIEWS = ("pipeline", "v1", "v2")


@dataclass(frozen=True)
class MoCoOptions:
    head: str = "mlp"          # v2; "linear": v1
    dim: int = 128             # of the projection (both papers)
    queue_size: int = 65536    # K (both papers, ImageNet)
    momentum: float = 0.999    # m (both papers)
    temperature: float = 0.2   # τ: v2 0.2, v1 0.07
    bn_splits: int = 1         # groups of the shuffled batch norm (1: none)
    knn_k: int = 200           # neighbours of the kNN monitor (MoCo's demo)
    knn_temperature: float = 0.1
    views: str = "pipeline"    # "v1" / "v2": two views through MoCo v1's / v2's augmentation

    def check(self) -> None:
        if self.head not in HEADS:
            raise BadInput(f"moco: head must be one of {', '.join(HEADS)} (got {self.head!r})")
        if self.views not in VIEWS:
            raise BadInput(f"moco: views must be one of {', '.join(VIEWS)} (got {self.views!r})")
        if self.dim < 1 or self.queue_size < 1 or self.bn_splits < 1 or self.knn_k < 1:
            raise BadInput("moco: dim, queue_size, bn_splits and knn_k must be at least 1")
        if not 0 <= self.momentum < 1 or self.temperature <= 0 or self.knn_temperature <= 0:
            raise BadInput("moco: momentum must be in [0, 1), the temperatures positive")


def info_nce(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor,
             temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean InfoNCE loss, the logits): rows ``[q·k, q·queue_1 … q·queue_K] / τ``, the positive
    key at index 0; ``queue`` holds the negative keys as its columns (dim × K)."""
    positive = (queries * keys).sum(dim=1, keepdim=True)
    negative = queries @ queue
    logits = torch.cat([positive, negative], dim=1) / temperature
    targets = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    return F.cross_entropy(logits, targets), logits


class KeyQueue:
    """The dictionary: the last ``size`` keys as the columns of a ring buffer."""

    def __init__(self, dim: int, size: int, device: torch.device | None = None):
        # random unit vectors to begin with, as MoCo's queue
        self.keys = F.normalize(torch.randn(dim, size, device=device), dim=0)
        self.position = 0

    def enqueue(self, keys: torch.Tensor) -> None:
        """The minibatch's keys replace the oldest ones."""
        size = self.keys.shape[1]
        if size % len(keys):
            raise ValueError(f"the queue ({size}) is not a multiple of the minibatch ({len(keys)})")
        self.keys[:, self.position:self.position + len(keys)] = keys.detach().t().to(self.keys.dtype)
        self.position = (self.position + len(keys)) % size

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self.keys, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["keys"].shape) != tuple(self.keys.shape):
            raise BadInput(f"moco: the checkpoint's queue is {tuple(state['keys'].shape)}, this run's "
                           f"{tuple(self.keys.shape)} (dim × queue_size)")
        self.keys = state["keys"].to(self.keys.device).clone()
        self.position = int(state["position"])


def projection_head(features: int, dim: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(features, dim)
    return nn.Sequential(nn.Linear(features, features), nn.ReLU(), nn.Linear(features, dim))


@torch.no_grad()
def momentum_update(key: nn.Module, query: nn.Module, momentum: float) -> None:
    """``θ_k ← m θ_k + (1 − m) θ_q`` over the parameters (not the batch-norm buffers: each
    encoder keeps the running statistics of its own passes, as in MoCo)."""
    key_params = [p for p in key.parameters()]
    query_params = [p.detach() for p in query.parameters()]
    torch._foreach_lerp_(key_params, query_params, 1.0 - momentum)


@register("moco")
class MoCo(EMAMethod):
    Options = MoCoOptions
    updates_teacher = False   # the momentum update is the method's, before the keys of each step
    reported_model = "student"  # the query encoder, as both papers evaluate it
    evaluation = "knn"
    pretraining = True
    multi_process = True   # one student pass a step; the heads' gradients are the same in every process

    def __init__(self, config, student, teacher, options=None, *, build_network=None):
        super().__init__(config, student, teacher, options, build_network=build_network)
        opts = self.options
        # the engine's shards (processes, or batch_shards in one process) are batch-norm groups
        # already: MoCo adds passes of its own only to an unsharded network
        self.shards = getattr(student, "shards", 1)
        if self.shards > 1 and opts.bn_splits not in (1, self.shards):
            raise BadInput(f"moco: this run's networks see each minibatch in {self.shards} shards, which are "
                           f"its batch-norm groups: bn_splits must be 1 or {self.shards} "
                           f"(got {opts.bn_splits})")
        self.groups = max(self.shards, opts.bn_splits)
        device = next(student.parameters()).device
        width = feature_size(student)
        self.query_head = projection_head(width, opts.dim, opts.head).to(device)
        self.key_head = projection_head(width, opts.dim, opts.head).to(device)
        with torch.no_grad():  # the key encoder starts as the query encoder
            teacher.load_state_dict(student.state_dict())
            self.key_head.load_state_dict(self.query_head.state_dict())
        for parameter in [*teacher.parameters(), *self.key_head.parameters()]:
            parameter.requires_grad_(False)
        self.queue = KeyQueue(opts.dim, opts.queue_size, device)

    @classmethod
    def extras_for(cls, config) -> tuple[str, ...]:
        views = method_options("moco", config.method_options).views
        return cls.sample_extras if views == "pipeline" else (*cls.sample_extras, f"moco_{views}_views")

    @classmethod
    def check_config(cls, config) -> None:
        if config.recipe.noise != "pipeline":
            raise BadInput("moco trains on the data pipeline's two views and evaluates its features against "
                           "the labeled images it loads; the ConvNet recipe feeds raw arrays with the noise "
                           "inside the model: train it with the ResNet recipe's settings or on the digits")
        opts = method_options("moco", config.method_options)
        if opts.queue_size % config.batch_size:
            raise BadInput(f"moco: queue_size ({opts.queue_size}) must be a multiple of batch_size "
                           f"({config.batch_size}): each step replaces one minibatch of keys")
        if config.batch_size % opts.bn_splits:
            raise BadInput(f"moco: batch_size ({config.batch_size}) must be a multiple of bn_splits "
                           f"({opts.bn_splits}): the groups of the shuffled batch norm are equal")

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.query_head.parameters())

    def _projected(self, network: nn.Module, head: nn.Module, inputs: torch.Tensor,
                   order: torch.Tensor | None) -> torch.Tensor:
        """Unit-length projections of ``inputs``' features, the encoder's passes over
        ``bn_splits`` groups of the minibatch taken in ``order`` (then put back in place)."""
        if order is not None:
            inputs = inputs[order]
        passes = 1 if self.shards > 1 else self.options.bn_splits
        features = torch.cat([representation(network, group) for group in inputs.chunk(passes)])
        projected = F.normalize(head(features.float()), dim=1)
        if order is None:
            return projected
        restored = torch.empty_like(projected)
        restored[order] = projected
        return restored

    def _key_shuffle(self, size: int, device: torch.device) -> torch.Tensor | None:
        """The order in which the keys are grouped; None when there is one group. Every process
        draws it (their generators stay in step) and takes rank 0's, as MoCo broadcasts it."""
        if self.groups == 1:
            return None
        order = torch.randperm(size, device=device)
        if self.shards > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(order, src=0)
        return order

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        if self.options.views == "pipeline":
            queries_in, keys_in = batch.student_input, batch.teacher_input
        else:   # MoCo's own two views, the query's first
            views = batch.extras[f"moco_{self.options.views}_views"]
            queries_in, keys_in = views[:, 0], views[:, 1]
        momentum_update(self.teacher, self.student, self.options.momentum)
        momentum_update(self.key_head, self.query_head, self.options.momentum)
        queries = self._projected(self.student, self.query_head, queries_in, None)
        with torch.no_grad():
            keys = self._projected(self.teacher, self.key_head, keys_in, self._key_shuffle(len(keys_in), keys_in.device))
        # the queue as it was: enqueuing below changes it in place before the backward pass
        contrastive, logits = info_nce(queries, keys, self.queue.keys.clone(), self.options.temperature)
        self.queue.enqueue(keys)
        positives = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        values = {"contrastive_loss": contrastive.detach(), "cons_weight": step.consistency_weight}
        # top1/top5 of a contrastive step: how often the positive key is the best match of K + 1
        return step_result(step.consistency_weight * contrastive, values, logits, logits, positives)

    def state_dict(self) -> dict[str, Any]:
        return {"queue": self.queue.state_dict(), "query_head": self.query_head.state_dict(),
                "key_head": self.key_head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.queue.load_state_dict(state["queue"])
        self.query_head.load_state_dict(state["query_head"])
        self.key_head.load_state_dict(state["key_head"])
