"""Runs in a benchmark protocol of the field after the paper: USB/TorchSSL's classic-CV
protocol (WRN-28-2, 2^20 steps, SGD with a cosine learning rate, EMA evaluation), as data.

A protocol is one settings file, ``mt_repro/configs/protocols/<protocol>.toml``: ``[run]``
(every cell), ``[datasets.<name>]`` (network, weight decay, the label counts it defines) and
``[methods.<name>]`` (``uratio``, unlabeled images per labeled one in a step; the consistency
weight; its warm-up as a fraction of the steps; the method's options; and, in a subtable named
by a dataset, the values that differ for that dataset), each value beside the key of the
protocol's own configuration it comes from. ``protocol_config`` composes one cell into a ``ProtocolConfig``:
the PyTorch half's settings (``TrainConfig``, whose data pipeline and methods it uses) with the
``usb`` recipe and the steps it counts in.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from mt_repro.config.coerce import split_overrides, typed_values
from mt_repro.config.files import our_configs_dir, read_toml
from mt_repro.config.recipes import USB, Recipe
from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput

PROTOCOLS_DIR = "protocols"


@dataclass
class ProtocolConfig(TrainConfig):
    """``TrainConfig`` in the ``usb`` recipe's steps. The fields of the epoch-counted recipe that
    nothing reads here (``epochs``, ``lr_rampup``, ``lr_rampdown_epochs``, ``consistency_rampup``,
    ``evaluation_epochs``, ``checkpoint_epochs``, ``print_freq``, ``initial_lr``) keep their
    defaults; a run that sets one is refused rather than silently ignored."""

    recipe: ClassVar[Recipe] = USB
    labeled_may_repeat: ClassVar[bool] = True   # cells from before sampler_epoch_steps: 40 labels fill 64 places
    dataset: str = "cifar10"
    arch: str = "wrn_28_2"
    train_subdir: str = "train+val"
    eval_subdir: str = "test"
    batch_size: int = 512
    labeled_batch_size: int | None = 64
    lr: float = 0.03
    nesterov: bool = True
    weight_decay: float = 5e-4
    consistency: float | None = 1.0
    # ours: the protocol's
    protocol: str = "usb"
    n_labels: int | None = None           # the labeled images of the split (its label file)
    training_length: int = 1048576        # SGD steps
    evaluation_span: int = 5120           # evaluate (and checkpoint) every this many steps
    print_span: int = 256                 # a training-log row every this many steps
    lr_cycles: float = 7 / 16             # lr · cos(lr_cycles · π · step / training_length)
    consistency_rampup_steps: int = 0     # linear warm-up of the consistency weight (0: none)
    extra_unlabeled: int = 0              # images of the dataset's extra part trained on (SVHN's train+extra)

    def validate(self) -> "ProtocolConfig":
        super().validate()
        changed = [name for name in UNUSED if getattr(self, name) != UNUSED[name]]
        if changed:
            raise BadInput(f"bad config: {', '.join(changed)} count in epochs, which the {self.recipe.name} "
                           "recipe does not use: set training_length, evaluation_span, print_span, "
                           "consistency_rampup_steps instead")
        for name in ("training_length", "evaluation_span", "print_span"):
            if getattr(self, name) <= 0:
                raise BadInput(f"bad config: {name} must be positive, got {getattr(self, name)}")
        if self.consistency_rampup_steps < 0 or not 0 <= self.lr_cycles <= 0.5:
            raise BadInput("bad config: need consistency_rampup_steps >= 0 and 0 <= lr_cycles <= 0.5 "
                           f"(got {self.consistency_rampup_steps}, {self.lr_cycles}): the cosine must not turn back up")
        if self.n_labels is not None and self.n_labels <= 0:
            raise BadInput(f"bad config: n_labels must be positive, got {self.n_labels}")
        return self

    @property
    def declared_labels(self) -> int | None:
        return self.n_labels

    def run_description(self) -> dict[str, Any]:
        return {**super().run_description(), "data_seed": self.seed, "protocol": self.protocol,
                "extra_unlabeled": self.extra_unlabeled}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "ProtocolConfig":
        return cls(**typed_values(HINTS, values, source))


HINTS = {f.name: typing.get_type_hints(ProtocolConfig)[f.name] for f in dataclasses.fields(ProtocolConfig)}
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
UNUSED = {name: _TRAIN_DEFAULTS[name] for name in ("epochs", "start_epoch", "lr_rampup", "lr_rampdown_epochs",
                                                  "consistency_rampup", "evaluation_epochs",
                                                  "checkpoint_epochs", "print_freq", "initial_lr")}


DATASET_KEYS = {"arch", "weight_decay", "labels", "source"}
# train_part: the part of the dataset a run trains on (its images not in the split's label file
# are the unlabeled ones); split_part: the part the labeled images are drawn from (default: the
# train_part), both as the dataset's reader names its parts
OPTIONAL_DATASET_KEYS = {"train_part", "split_part", "normalisation"}
METHOD_KEYS = {"uratio", "source"}
# consistency: the weight (USB's ulb_loss_ratio); method_options: "name=value,..." of the method's
# Options (the run's method_options); both may differ per dataset, in [methods.<m>.<dataset>]
PER_DATASET_METHOD_KEYS = {"consistency", "method_options"}
OPTIONAL_METHOD_KEYS = PER_DATASET_METHOD_KEYS | {"consistency_rampup_fraction"}


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str
    run: dict[str, Any]
    datasets: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]

    def labels(self, dataset: str) -> list[int]:
        return list(self.dataset(dataset)["labels"])

    def split_part(self, dataset: str) -> str | None:
        """The part the labeled images are drawn from (None: the run's training part)."""
        return self.dataset(dataset).get("split_part")

    def dataset(self, name: str) -> dict[str, Any]:
        if name not in self.datasets:
            raise BadInput(f"protocol {self.name} has no dataset {name!r}; it defines {', '.join(self.datasets)}")
        return self.datasets[name]

    def method(self, name: str, dataset: str | None = None) -> dict[str, Any]:
        """The method's settings; with ``dataset``, that dataset's values in place of the others."""
        if name not in self.methods:
            raise BadInput(f"protocol {self.name} has no settings for method {name!r}; it defines "
                           f"{', '.join(self.methods)}")
        table = {k: v for k, v in self.methods[name].items() if k not in self.datasets}
        if dataset is not None:
            table.update(self.methods[name].get(dataset, {}))
        return table


def protocol_names() -> list[str]:
    return sorted(p.stem for p in (our_configs_dir() / PROTOCOLS_DIR).glob("*.toml"))


def load_protocol(name: str) -> Protocol:
    path = our_configs_dir() / PROTOCOLS_DIR / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"unknown protocol {name!r}; known: {', '.join(protocol_names())}")
    data = read_toml(path, f"protocol {name!r},")
    unknown = sorted(set(data) - {"source", "run", "datasets", "methods"})
    if unknown or not isinstance(data.get("source"), str):
        raise BadInput(f"configs/protocols/{name}.toml needs a source and only the tables run, datasets, "
                       f"methods (found {', '.join(unknown) or 'no source'})")
    protocol = Protocol(name, data["source"], dict(data.get("run", {})),
                        {k: dict(v) for k, v in data.get("datasets", {}).items()},
                        {k: dict(v) for k, v in data.get("methods", {}).items()})
    for dataset, table in protocol.datasets.items():
        missing = sorted(DATASET_KEYS - set(table))
        unknown = sorted(set(table) - DATASET_KEYS - OPTIONAL_DATASET_KEYS)
        if missing or unknown:
            raise BadInput(f"configs/protocols/{name}.toml [datasets.{dataset}] "
                           + (f"lacks {', '.join(missing)}" if missing else f"has unknown key(s) {', '.join(unknown)}"))
    for method, table in protocol.methods.items():
        where = f"configs/protocols/{name}.toml [methods.{method}]"
        missing = sorted(METHOD_KEYS - set(table))
        unknown = sorted(set(table) - METHOD_KEYS - OPTIONAL_METHOD_KEYS - set(protocol.datasets))
        if missing or unknown:
            raise BadInput(f"{where} " + (f"lacks {', '.join(missing)}" if missing else
                                          f"has unknown key(s) {', '.join(unknown)}"))
        for dataset in sorted(set(table) & set(protocol.datasets)):
            values = table[dataset]
            if not isinstance(values, dict) or not set(values) <= PER_DATASET_METHOD_KEYS:
                raise BadInput(f"{where[:-1]}.{dataset}] may set only {', '.join(sorted(PER_DATASET_METHOD_KEYS))}")
    return protocol


def protocol_config(protocol: str, dataset: str, method: str, n_labels: int, seed: int, *,
                    overrides: Sequence[str] = (), **values: Any) -> ProtocolConfig:
    """One cell: ``protocol``'s run, its ``dataset`` and ``method`` settings, ``n_labels`` labels
    drawn with ``seed`` (also the run's seed, as USB's ``seed``), then ``values`` (paths, device,
    ...) and ``overrides`` (``"name=value"`` pairs, the CLI's ``--set``s) on top; validated."""
    spec = load_protocol(protocol)
    data, method_table = spec.dataset(dataset), spec.method(method, dataset)
    if n_labels not in spec.labels(dataset):
        raise BadInput(f"protocol {protocol} defines {dataset} with {', '.join(map(str, spec.labels(dataset)))} "
                       f"labels, not {n_labels}")
    settings: dict[str, Any] = dict(spec.run)
    settings.update(dataset=dataset, arch=data["arch"], weight_decay=data["weight_decay"], method=method,
                    n_labels=n_labels, seed=seed, protocol=protocol)
    if "train_part" in data:
        settings["train_subdir"] = data["train_part"]
    if "normalisation" in data:
        settings["normalisation"] = data["normalisation"]
    for name in PER_DATASET_METHOD_KEYS & set(method_table):
        settings[name] = method_table[name]
    changes = split_overrides(overrides)
    settings.update(changes)
    settings.update(values)
    unknown = sorted(set(settings) - set(HINTS))
    if unknown:
        near = [m for name in unknown for m in difflib.get_close_matches(name, HINTS, n=1)]
        raise BadInput(f"unknown setting(s) {', '.join(unknown)} of a {protocol} run"
                       + (f"; did you mean {', '.join(near)}?" if near else ""))
    # the minibatch follows its labeled part, as USB's uratio does, unless batch_size is set
    uratio, labeled = method_table["uratio"], int(settings["labeled_batch_size"])
    if "batch_size" not in changes:
        settings["batch_size"] = labeled * (1 + uratio)
    if not uratio:   # labeled minibatches only
        settings.update(labeled_batch_size=None, exclude_unlabeled=True, unlabeled_includes_labeled=False)
    typed = typed_values(HINTS, settings, f"protocol {protocol}")
    if "consistency_rampup_steps" not in changes and "consistency_rampup_steps" not in values:
        # the protocol's warm-up is a fraction of the run: a shortened run keeps its shape
        fraction = method_table.get("consistency_rampup_fraction", 0.0)
        typed["consistency_rampup_steps"] = round(fraction * typed["training_length"])
    return ProtocolConfig(**typed).validate()
