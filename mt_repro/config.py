"""Typed run configuration, validated once where it enters (CLI, config file, checkpoint).

``TrainConfig`` has one field per flag of the original ``pytorch/main.py`` (same names, same
defaults) plus a few of ours (seed, data and output directories, device). Paper configurations
are data files in ``original_configs/``; each names the original file it comes from.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from mt_repro.errors import BadInput

DATASETS = ("cifar10", "imagenet", "digits")  # digits: sklearn's bundled 8x8 demo
CONSISTENCY_TYPES = ("mse", "kl")
# two_stream: the original's minibatches, a fixed number of labeled samples in each;
# uniform: minibatches drawn uniformly from all training images (Laine & Aila's), one pass an epoch.
SAMPLINGS = ("two_stream", "uniform")
MODES = ("faithful", "fast")  # how a run computes (mt_repro.engine.fast_mode)


@dataclass
class TrainConfig:
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
    mode: str = "faithful"        # "fast": same maths, faster execution (mt_repro.engine.fast_mode)
    compile: bool = False         # fast mode: torch.compile student and teacher
    # Split each minibatch into this many equal chunks with their own batch-norm statistics, as
    # DataParallel over that many GPUs did (mt_repro.engine.distributed); None: one per process.
    batch_shards: int | None = None
    dist_timeout_s: float = 600.0  # how long a process of a torchrun run waits for its peers

    def validate(self) -> "TrainConfig":
        """Raise ``BadInput`` naming the first inconsistent setting."""
        from mt_repro import models

        def bad(message: str) -> BadInput:
            return BadInput(f"bad config: {message}")

        if self.dataset not in DATASETS:
            raise bad(f"dataset {self.dataset!r} is not one of {', '.join(DATASETS)}")
        if self.arch not in models.available():
            raise bad(f"arch {self.arch!r} is not one of {', '.join(models.available())}")
        if self.consistency_type not in CONSISTENCY_TYPES:
            raise bad(f"consistency_type {self.consistency_type!r} is not one of mse, kl")
        from mt_repro.methods import registry

        if self.method not in registry.method_names():
            raise bad(f"method {self.method!r} is not one of {', '.join(registry.method_names())}")
        registry.method_options(self.method, self.method_options)  # names and types of the options
        if self.mode not in MODES:
            raise bad(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.compile and self.mode != "fast":
            raise bad("compile is a fast-mode setting: set mode = \"fast\" too")
        if self.batch_shards is not None and self.batch_shards < 1:
            raise bad(f"batch_shards must be at least 1, got {self.batch_shards}")
        if self.batch_shards and self.batch_size % self.batch_shards:
            raise bad(f"batch_size ({self.batch_size}) must be a multiple of batch_shards "
                      f"({self.batch_shards}): every shard gets the same number of images")
        if not self.dist_timeout_s > 0:
            raise bad(f"dist_timeout_s must be positive, got {self.dist_timeout_s}")
        if self.sampling not in SAMPLINGS:
            raise bad(f"sampling {self.sampling!r} is not one of {', '.join(SAMPLINGS)}")
        if self.sampling == "uniform":
            if self.exclude_unlabeled or self.labeled_batch_size is not None:
                raise bad("sampling 'uniform' draws minibatches from all training images: leave "
                          "labeled_batch_size unset and exclude_unlabeled off")
        elif bool(self.exclude_unlabeled) == bool(self.labeled_batch_size):
            raise bad("set exactly one of exclude_unlabeled and labeled_batch_size "
                      f"(got exclude_unlabeled={self.exclude_unlabeled}, "
                      f"labeled_batch_size={self.labeled_batch_size})")
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

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known, key=str)
        if unknown:
            raise BadInput(f"{source}: unknown setting(s) {', '.join(map(_shown, unknown))}")
        return cls(**{k: _coerce(k, v, source) for k, v in values.items()})


_HINTS = typing.get_type_hints(TrainConfig)


def _shown(name: Any) -> str:
    """A setting name as an error message shows it: plain if it is a plain word, else quoted."""
    return name if isinstance(name, str) and name.isidentifier() else repr(name)


def _coerce(name: str, value: Any, source: str) -> Any:
    return coerce_setting(_HINTS, name, value, source)


def coerce_setting(hints: dict[str, Any], name: str, value: Any, source: str) -> Any:
    """Check ``value`` against the type of the dataclass field ``name`` (``hints``: its type
    hints); accept strings as from ``--set key=value``."""
    hint = hints[name]
    options = typing.get_args(hint) or (hint,)
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if type(None) in options:
            return None
        raise BadInput(f"{source}: {name} cannot be empty")
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(option, value)
        except (TypeError, ValueError):
            continue
    expected = " or ".join(o.__name__ for o in options)
    raise BadInput(f"{source}: {name}={value!r} is not a valid {expected}")


def _convert(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("yes", "true", "t", "y", "1", "no", "false", "f", "n", "0"):
            return value.lower() in ("yes", "true", "t", "y", "1")
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(kind)


def parse_overrides(pairs: typing.Iterable[str], hints: dict[str, Any] | None = None) -> dict[str, Any]:
    """``["lr=0.1", "nesterov=false"]`` -> checked values, for ``--set`` (of ``TrainConfig``,
    or of the dataclass whose type ``hints`` are given)."""
    hints = _HINTS if hints is None else hints
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise BadInput(f"--set expects key=value, got {pair!r}")
        if key not in hints:
            raise BadInput(f"--set: unknown setting {key!r}; known: {', '.join(sorted(hints))}")
        overrides[key] = coerce_setting(hints, key, value.strip(), "--set")
    return overrides


@dataclass(frozen=True)
class PaperConfig:
    """One experiment of the paper as the original runner script defined it."""

    name: str
    title: str
    source: str
    per_gpu: dict[str, Any]
    gpus: int
    label_file: str
    data_seeds: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)

    def resolve(self, gpus: int | None = None, **overrides: Any) -> TrainConfig:
        """The run's ``TrainConfig``: batch, labeled batch and lr scale with the GPU count,
        exactly as the original runner multiplied them by ``torch.cuda.device_count()``."""
        gpus = self.gpus if gpus is None else gpus
        if gpus <= 0:
            raise BadInput(f"--gpus must be positive, got {gpus}")
        scaled = {
            "batch_size": self.per_gpu["batch_size"] * gpus,
            "labeled_batch_size": self.per_gpu["labeled_batch_size"] * gpus,
            "lr": self.per_gpu["lr"] * gpus,
        }
        values = {**self.train, **scaled, **overrides}
        return TrainConfig.from_dict(values, source=f"config {self.name}").validate()


def original_configs_dir() -> Path:
    """Installed: package data ``mt_repro/original_configs``; in a source checkout that is
    imported directly (not installed), the top-level ``original_configs/`` beside the package."""
    try:
        return Path(str(resources.files("mt_repro.original_configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "original_configs"


def paper_config_names() -> list[str]:
    return sorted(p.stem for p in original_configs_dir().glob("*.toml"))


def load_paper_config(name: str) -> PaperConfig:
    path = original_configs_dir() / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"no paper configuration {name!r}; known: {', '.join(paper_config_names())}")
    return read_paper_config(path)


def read_paper_config(path: Path) -> PaperConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"config {path.name} cannot be read: {exc}") from None
    required = {"name", "title", "source", "per_gpu", "gpus", "label_file", "data_seeds", "train"}
    missing = sorted(required - set(data))
    if missing:
        raise BadInput(f"config {path.name} lacks {', '.join(missing)}")
    TrainConfig.from_dict(data["train"], source=f"config {path.name}")  # type-check early
    return PaperConfig(name=data["name"], title=data["title"], source=data["source"],
                       per_gpu=dict(data["per_gpu"]), gpus=int(data["gpus"]),
                       label_file=data["label_file"], data_seeds=tuple(data["data_seeds"]),
                       train=dict(data["train"]))
