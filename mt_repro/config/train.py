"""The settings of a run with the original PyTorch half's recipe (Table 4, the digits demo).

``TrainConfig`` has one field per flag of the original ``pytorch/main.py`` (same names, same
defaults) plus a few of ours (seed, data and output directories, device, method, mode). It is
validated once where it enters (CLI, config file, a run's ``config.json``); the names it refers
to (architecture, dataset, method and its options) are checked against their registries when a
run is assembled (``mt_repro.engine.recipes.check_config``).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mt_repro.config.coerce import typed_values
from mt_repro.config.recipes import PYTORCH, Recipe
from mt_repro.core.errors import BadInput

CONSISTENCY_TYPES = ("mse", "kl")
# two_stream: the original's minibatches, a fixed number of labeled samples in each;
# uniform: minibatches drawn uniformly from all training images (Laine & Aila's), one pass an epoch.
SAMPLINGS = ("two_stream", "uniform")
# How images are normalised after augmentation: with the dataset's own statistics, or with
# ImageNet's (as USB normalises CIFAR-10: mt_repro.data.normalisation).
NORMALISATIONS = ("dataset", "imagenet")
MODES = ("faithful", "fast")  # how a run computes (mt_repro.engine.fast_mode), in both recipes
# torch.compile's modes: "reduce-overhead" replays CUDA graphs, "max-autotune" searches kernels
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_settings_problem(mode: str, compile: bool, compile_mode: str) -> str | None:
    """What is wrong with a run's compile settings (both recipes), or None."""
    if compile_mode not in COMPILE_MODES:
        return f"compile_mode {compile_mode!r} is not one of {', '.join(COMPILE_MODES)}"
    if compile and mode != "fast":
        return "compile is a fast-mode setting: set mode = \"fast\" too"
    if compile_mode != "default" and not compile:
        return f"compile_mode {compile_mode!r} is a setting of compile: set compile = true too"
    return None


@dataclass
class TrainConfig:
    recipe: ClassVar[Recipe] = PYTORCH
    # fewer labeled images than labeled places per minibatch: refused, as the original's sampler did
    labeled_may_repeat: ClassVar[bool] = False
    # Flags of the original pytorch/main.py, with its defaults.
    dataset: str = "imagenet"
    train_subdir: str = "train"
    eval_subdir: str = "val"
    labels: str | None = None
    exclude_unlabeled: bool = False
    arch: str = "resnet18"
    workers: int = 4
    epochs: int = 90
    start_epoch: int = 0
    batch_size: int = 256
    labeled_batch_size: int | None = None
    lr: float = 0.1
    initial_lr: float = 0.0
    lr_rampup: int = 0
    lr_rampdown_epochs: int | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    consistency: float | None = None
    consistency_type: str = "mse"
    consistency_rampup: int = 30
    logit_distance_cost: float = -1.0
    checkpoint_epochs: int = 1
    evaluation_epochs: int = 1
    print_freq: int = 10
    # Ours.
    data_dir: str | None = None   # None: the original's data-local/images/... path
    out_dir: str | None = None    # None: results/<runner>/<date>/<run>
    seed: int | None = None       # seeds random, numpy.random, torch in that order
    device: str = "auto"          # auto: cuda when available, else cpu
    method: str = "mean_teacher"  # a registered method (mt_repro.methods.registry)
    method_options: str | None = None  # "name=value,..." over the method's [options] (its settings file)
    sampling: str = "two_stream"  # how minibatches are composed: one of SAMPLINGS
    # An epoch of this many steps, each stream of images drawn as USB's sampler draws it
    # (mt_repro.data.sampling.EpochSeededBatchSampler); None: an epoch is a pass over the
    # (unlabeled) images, drawn as the original's samplers draw it.
    sampler_epoch_steps: int | None = None
    # The unlabeled part of two-stream minibatches drawn from every training image, the labeled
    # ones too with their labels hidden there (USB's include_lb_to_ulb); off: from the images
    # without a label only, as the original's TwoStreamBatchSampler.
    unlabeled_includes_labeled: bool = False
    normalisation: str = "dataset"  # one of NORMALISATIONS
    mode: str = "faithful"        # "fast": same maths, faster execution (mt_repro.engine.fast_mode)
    compile: bool = False         # fast mode: torch.compile student and teacher
    compile_mode: str = "default"  # with compile: one of COMPILE_MODES
    # Split each minibatch into this many equal chunks with their own batch-norm statistics, as
    # DataParallel over that many GPUs did (mt_repro.engine.distributed); None: one per process.
    batch_shards: int | None = None
    dist_timeout_s: float = 600.0  # how long a process of a torchrun run waits for its peers
    # A checkpoint whose encoder (the network less its heads) starts the student and
    # the teacher of a new run: a pre-trained one (mt-repro digits --pretrain moco, --method moco).
    init_from: str | None = None
    damaged_images: str = "refuse"  # images of a by-image tree that do not decode: "refuse" or "skip" them

    def validate(self) -> "TrainConfig":
        """Raise ``BadInput`` naming the first inconsistent setting."""
        def bad(message: str) -> BadInput:
            return BadInput(f"bad config: {message}")

        if self.consistency_type not in CONSISTENCY_TYPES:
            raise bad(f"consistency_type {self.consistency_type!r} is not one of mse, kl")
        if self.mode not in MODES:
            raise bad(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        problem = compile_settings_problem(self.mode, self.compile, self.compile_mode)
        if problem:
            raise bad(problem)
        if self.batch_shards is not None and self.batch_shards < 1:
            raise bad(f"batch_shards must be at least 1, got {self.batch_shards}")
        if self.batch_shards and self.batch_size % self.batch_shards:
            raise bad(f"batch_size ({self.batch_size}) must be a multiple of batch_shards "
                      f"({self.batch_shards}): every shard gets the same number of images")
        if not self.dist_timeout_s > 0:
            raise bad(f"dist_timeout_s must be positive, got {self.dist_timeout_s}")
        if self.normalisation not in NORMALISATIONS:
            raise bad(f"normalisation {self.normalisation!r} is not one of {', '.join(NORMALISATIONS)}")
        if self.sampling not in SAMPLINGS:
            raise bad(f"sampling {self.sampling!r} is not one of {', '.join(SAMPLINGS)}")
        if self.sampler_epoch_steps is not None and self.sampler_epoch_steps <= 0:
            raise bad(f"sampler_epoch_steps must be positive (or unset), got {self.sampler_epoch_steps}")
        if self.damaged_images not in ("refuse", "skip"):
            raise bad(f"damaged_images {self.damaged_images!r} is not one of refuse, skip")
        if self.sampling == "uniform":
            if self.exclude_unlabeled or self.labeled_batch_size is not None:
                raise bad("sampling 'uniform' draws minibatches from all training images: leave "
                          "labeled_batch_size unset and exclude_unlabeled off")
        elif bool(self.exclude_unlabeled) == bool(self.labeled_batch_size):
            raise bad("set exactly one of exclude_unlabeled and labeled_batch_size "
                      f"(got exclude_unlabeled={self.exclude_unlabeled}, "
                      f"labeled_batch_size={self.labeled_batch_size})")
        if self.unlabeled_includes_labeled and (self.sampling == "uniform" or self.exclude_unlabeled):
            raise bad("unlabeled_includes_labeled needs minibatches with an unlabeled part: "
                      f"sampling 'two_stream' with labeled_batch_size set (got sampling {self.sampling!r}, "
                      f"exclude_unlabeled={self.exclude_unlabeled})")
        if self.batch_size <= 0:
            raise bad(f"batch_size must be positive, got {self.batch_size}")
        if self.labeled_batch_size is not None and not 0 < self.labeled_batch_size < self.batch_size:
            raise bad(f"labeled_batch_size ({self.labeled_batch_size}) must be between 1 and "
                      f"batch_size - 1 ({self.batch_size - 1}): each minibatch needs unlabeled samples too")
        if self.epochs <= 0 or not 0 <= self.start_epoch <= self.epochs:
            raise bad(f"need 0 <= start_epoch ({self.start_epoch}) <= epochs ({self.epochs}) and epochs > 0")
        if self.lr_rampdown_epochs is not None and self.lr_rampdown_epochs < self.epochs:
            raise bad(f"lr_rampdown_epochs ({self.lr_rampdown_epochs}) must be >= epochs "
                      f"({self.epochs}): the cosine would turn the learning rate back up")
        if not 0 <= self.ema_decay < 1:
            raise bad(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("lr", "initial_lr", "weight_decay", "momentum", "lr_rampup",
                     "consistency_rampup", "checkpoint_epochs", "evaluation_epochs", "workers"):
            if getattr(self, name) < 0:
                raise bad(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.print_freq <= 0:
            raise bad(f"print_freq must be positive, got {self.print_freq}")
        return self

    # --- what the engine asks every settings class ----------------------------------------
    @property
    def run_seed(self) -> int | None:
        """The seed of the run's generators (None: unseeded, as the original)."""
        return self.seed

    @property
    def labeled_only(self) -> bool:
        """Whether every minibatch holds labeled images only."""
        return self.exclude_unlabeled

    @property
    def declared_labels(self) -> int | None:
        """The number of labels the configuration itself names (None: the label file's count)."""
        return None

    def run_description(self) -> dict[str, Any]:
        """What a run's summary says of its data besides the counts: the label file, its data
        seed (the original's label files are named by it: 10.txt), no extra images."""
        stem = Path(self.labels).stem if self.labels else ""
        return {"labels": self.labels, "data_seed": int(stem) if stem.isdigit() else None,
                "extra_unlabeled": 0, "experiment": None}

    def network_options(self) -> dict[str, Any]:
        """Keyword arguments of the architecture's builder (the ResNets take none)."""
        return {}

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        return cls(**typed_values(HINTS, values, source))


HINTS = {f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)}
