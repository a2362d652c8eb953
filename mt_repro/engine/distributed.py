"""Several processes (``torchrun``) computing what the original computed with ``DataParallel``.

The original ran every paper experiment on one machine with ``nn.DataParallel``: one Python
process loaded each *global* minibatch (batch, labeled batch and lr multiplied by the number of
GPUs), split it into one equal chunk per GPU, ran each chunk through a replica of the network
(so batch norm normalised each chunk by its own statistics, and the running statistics kept
were those of the first GPU's chunk), gathered the outputs and computed the loss on the whole
minibatch.

Here each of ``torchrun``'s processes does the same with ``DistributedDataParallel``:

* every process draws the same global minibatch (same seed, same sampler, same augmentation),
  so nothing needs to be scattered;
* ``ShardedModel`` runs only the process's own chunk through the network (DDP for the student:
  gradients averaged across processes, buffers broadcast from rank 0 before each forward pass),
  then all-gathers the outputs, so every process computes the loss of the whole minibatch; the
  gather's backward pass gives each chunk W times its gradient (the sum over the W processes'
  identical losses), which DDP's average brings back to the whole-minibatch gradient;
* rank 0 alone writes logs and checkpoints; every process evaluates, on its unsharded network.

``batch_shards`` (``TrainConfig``) gives one process the same per-chunk batch-norm statistics:
chunks run one after the other, and only the first chunk's running statistics are kept.
"""
from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass

import torch
from torch import nn

from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.networks import representation


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands among the run's processes (one, unless under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = ProcessGroup()


def from_environment(environ=os.environ) -> ProcessGroup:
    """The process group ``torchrun`` describes in RANK / WORLD_SIZE / LOCAL_RANK."""
    if "WORLD_SIZE" not in environ:
        return SINGLE
    try:
        group = ProcessGroup(int(environ.get("RANK", 0)), int(environ["WORLD_SIZE"]),
                             int(environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise BadInput("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if not 0 <= group.rank < group.world_size:
        raise BadInput(f"RANK {group.rank} is outside 0..WORLD_SIZE-1 ({group.world_size - 1})")
    return group


def device_for(group: ProcessGroup, device: torch.device) -> torch.device:
    """One GPU per process on each machine, chosen by LOCAL_RANK."""
    if group.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", group.local_rank)
    return device


def init_process_group(group: ProcessGroup, device: torch.device, timeout_s: float) -> None:
    """Join the other processes (gloo on CPUs, NCCL on GPUs); a peer that does not come within
    ``timeout_s`` ends the run with an error naming the rendezvous address."""
    if not group.distributed or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        torch.distributed.init_process_group(backend, rank=group.rank, world_size=group.world_size,
                                             timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError, OSError) as exc:  # DistStoreError is a RuntimeError
        first = " ".join(str(exc).split())[:200]
        raise RunFailed(f"process {group.rank} of {group.world_size} could not reach its peers at "
                        f"{address} within {timeout_s:g} s ({first})") from None


def shutdown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shared_seed(group: ProcessGroup, device: torch.device) -> int:
    """A fresh seed drawn by rank 0 and known to every process (for runs without a seed: the
    processes must still draw the same minibatches)."""
    seed = torch.tensor([random.SystemRandom().randrange(2**31)], dtype=torch.int64, device=device)
    if group.distributed:
        torch.distributed.broadcast(seed, src=0)
    return int(seed.item())


class ShardedModel(nn.Module):
    """A network that, in training mode, splits each minibatch into ``shards`` equal chunks with
    their own batch-norm statistics, as ``DataParallel`` over that many GPUs did.

    With several processes (``group.distributed``), chunk ``rank`` runs here and the outputs of
    all processes are gathered; in one process the chunks run one after the other. In
    evaluation mode the whole minibatch goes through the network. ``state_dict`` and
    ``load_state_dict`` are the network's own (no prefix), so checkpoints do not change.
    """

    def __init__(self, module: nn.Module, shards: int, group: ProcessGroup = SINGLE,
                 device: torch.device | None = None, trainable: bool = True, unused_heads: tuple[str, ...] = ()):
        super().__init__()
        if group.distributed and shards != group.world_size:
            raise BadInput(f"batch_shards ({shards}) must equal the number of processes "
                           f"({group.world_size}) in a distributed run")
        self.module = module
        self.shards = shards
        self.group = group
        ddp = None
        if group.distributed and trainable:
            device_ids = [device.index] if device is not None and device.type == "cuda" else None
            # static_graph: the set of parameters that get gradients is the same every step.
            # Buffers are broadcast from rank 0 before each forward pass (DDP's default), so
            # the running statistics kept are those of rank 0's chunk, as on DataParallel's GPU 0.
            # The network's forward pass or its features (``representation``) are both passes of
            # DDP's own module, so that what the loss uses is an output DDP watches: a gradient
            # from the features alone (a contrastive method) is averaged as the outputs' is.
            wrapped = _OutputsOrFeatures(module)
            # A head whose output the loss never uses (``unused_heads``: the second head of a run
            # without logit distance) is still reachable from the outputs, which DDP would count
            # as used and wait for its gradient: its parameters are left out of DDP's care. They
            # get no gradient in any process, so they stay alike everywhere.
            ignored = [f"network.{name}" for name, _ in module.named_parameters()
                       if name.split(".", 1)[0] in unused_heads]
            if ignored:
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapped, ignored)
            ddp = nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids, static_graph=True)
        object.__setattr__(self, "_ddp", ddp)  # not a submodule: keeps state_dict keys plain

    def forward(self, inputs: torch.Tensor):
        return self._sharded_pass(inputs, features=False)

    def representation(self, inputs: torch.Tensor) -> torch.Tensor:
        """The pooled features of ``mt_repro.core.networks.representation``, computed as the
        outputs are: each shard normalised by its own statistics, gathered across processes."""
        return self._sharded_pass(inputs, features=True)

    def _sharded_pass(self, inputs: torch.Tensor, features: bool):
        if not self.training or self.shards == 1:
            return _pass(self.module, inputs, features)
        if len(inputs) % self.shards:
            raise RunFailed(f"a minibatch of {len(inputs)} cannot be split into {self.shards} "
                            "equal shards (make batch_size a multiple of the number of shards)")
        if self.group.distributed:
            return self._pass_distributed(inputs, features)
        return self._pass_in_turn(inputs, features)

    def _pass_distributed(self, inputs: torch.Tensor, features: bool):
        rank, world = self.group.rank, self.group.world_size
        chunk = inputs.chunk(self.shards)[rank]
        if torch.is_grad_enabled() and self._ddp is not None:
            outputs = self._ddp(chunk, features=features)
            return _untuple([_GatherChunks.apply(out, rank, world) for out in _as_tuple(outputs)])
        return _untuple([_gather(out, world) for out in _as_tuple(_pass(self.module, chunk, features))])

    def _pass_in_turn(self, inputs: torch.Tensor, features: bool):
        chunks = inputs.chunk(self.shards)
        outputs = [_as_tuple(_pass(self.module, chunks[0], features))]
        # The other chunks update copies of the running statistics, dropped afterwards: the
        # first chunk's are kept, as DataParallel's GPU 0. (Copying values back instead would
        # change tensors that the backward pass of batch norm still needs.)
        kept = [(owner, name, buffer) for owner in self.module.modules()
                for name, buffer in owner.named_buffers(recurse=False)]
        for owner, name, buffer in kept:
            setattr(owner, name, buffer.clone())
        try:
            outputs += [_as_tuple(_pass(self.module, chunk, features)) for chunk in chunks[1:]]
        finally:
            for owner, name, buffer in kept:
                setattr(owner, name, buffer)
        return _untuple([torch.cat(parts) for parts in zip(*outputs)])

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def _pass(network: nn.Module, inputs: torch.Tensor, features: bool):
    return representation(network, inputs) if features else network(inputs)


class _OutputsOrFeatures(nn.Module):
    """What DDP wraps: the network, whose pass gives its outputs or, with ``features``, the
    pooled features its heads take."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor, features: bool = False):
        return _pass(self.network, inputs, features)


def _gather(chunk: torch.Tensor, world: int) -> torch.Tensor:
    """Every process's chunk, concatenated in rank order."""
    parts = [torch.empty_like(chunk) for _ in range(world)]
    torch.distributed.all_gather(parts, chunk.contiguous())
    return torch.cat(parts)


class _GatherChunks(torch.autograd.Function):
    """``_gather`` for outputs that need gradients. Every process computes the same loss from
    the gathered outputs, so the gradient of its own chunk summed over the processes (what a
    reduce-scatter would compute) is ``world`` times its own slice: no communication needed.
    DDP's average over the processes then leaves the whole minibatch's gradient."""

    @staticmethod
    def forward(ctx, chunk: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.size = rank, world, len(chunk)
        return _gather(chunk, world)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mine = grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]
        return mine * ctx.world, None, None


def _as_tuple(output) -> tuple:
    return output if isinstance(output, tuple) else (output,)


def _untuple(outputs: list):
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
