"""Settings of the ConvNet runs (the paper's TensorFlow half), loaded from
``original_configs/convnet/<experiment>.toml``.

Hyperparameter names are the original's (``tensorflow/mean_teacher/model.py``
``DEFAULT_HYPERPARAMS``), so an experiment file reads like the runner it comes from. An experiment
file holds: the runner's grid (``models``, ``n_labeled``, ``extra_unlabeled``, ``data_seeds``),
``[hyper]`` changes for every run, ``[by_labels.some]``/``[by_labels.all]`` changes by label
regime (the runner's ``model_hyperparameters``; ``*_per_label`` keys scale with the number of
labels), ``[training_length_by_extra]`` and, for ablations, ``[ablation]`` with its values.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mt_repro.config import coerce_setting
from mt_repro.errors import BadInput

MODELS = ("mean_teacher", "pi", "supervised")
DATASETS = ("svhn", "cifar10")
TRAINING_SET_SIZE = {"svhn": 73257, "cifar10": 50000}


@dataclass(frozen=True)
class ConvNetSettings:
    # the run
    dataset: str = "svhn"
    model: str = "mean_teacher"           # mean_teacher, pi (ema_consistency false), supervised
    n_labeled: int | str = "all"          # a number, or "all"
    n_extra_unlabeled: int = 0
    data_seed: int = 0
    test_phase: bool = True               # evaluate on the test set (else a validation split)
    seed: int | None = None               # torch/numpy seed of the run (the original set none)
    device: str = "auto"
    batch_size: int = 100
    n_labeled_per_batch: int | str = "vary"
    # mean_teacher/model.py DEFAULT_HYPERPARAMS
    ema_consistency: bool = True
    apply_consistency_to_labeled: bool = True
    max_consistency_cost: float = 100.0
    ema_decay_during_rampup: float = 0.99
    ema_decay_after_rampup: float = 0.999
    consistency_trust: float = 0.0
    num_logits: int = 1
    logit_distance_cost: float = 0.0
    max_learning_rate: float = 0.003
    adam_beta_1_before_rampdown: float = 0.9
    adam_beta_1_after_rampdown: float = 0.5
    adam_beta_2_during_rampup: float = 0.99
    adam_beta_2_after_rampup: float = 0.999
    adam_epsilon: float = 1e-8
    input_noise: float = 0.15
    student_dropout_probability: float = 0.5
    teacher_dropout_probability: float = 0.5
    rampup_length: int = 40000
    rampdown_length: int = 25000
    training_length: int = 150000
    flip_horizontally: bool = False
    translate: bool = True
    normalize_input: bool = True
    print_span: int = 20
    evaluation_span: int = 500
    width: float = 1.0                    # ours: scales the channels; 1.0 is the paper's network
    # provenance
    experiment: str = ""
    source: str = ""

    def replace(self, **changes: Any) -> "ConvNetSettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> "ConvNetSettings":
        unknown = sorted(set(values) - set(_HINTS), key=str)
        if unknown:
            raise BadInput(f"{source}: unknown setting(s) {', '.join(map(repr, unknown))}")
        return cls(**{k: coerce_setting(_HINTS, k, v, source) for k, v in values.items()}).validate(source)

    def validate(self, source: str = "settings") -> "ConvNetSettings":
        def bad(message: str) -> BadInput:
            return BadInput(f"{source}: {message}")

        if self.dataset not in DATASETS:
            raise bad(f"dataset must be one of {', '.join(DATASETS)}, not {self.dataset!r}")
        if self.model not in MODELS:
            raise bad(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if not 0.0 <= self.consistency_trust <= 1.0:
            raise bad(f"consistency_trust must be in [0, 1], got {self.consistency_trust}")
        if self.ema_consistency != (self.model != "pi"):
            # the original's switch between the EMA target and the second pass (model.py)
            raise bad(f"ema_consistency {str(self.ema_consistency).lower()} contradicts model {self.model!r}: "
                      "the Pi model is ema_consistency false, the other models true")
        if self.model == "supervised" and self.n_labeled_per_batch != self.batch_size:
            raise bad(f"supervised-only trains on labeled minibatches: n_labeled_per_batch must equal "
                      f"batch_size ({self.batch_size}), got {self.n_labeled_per_batch!r}")
        if self.model == "pi" and self.consistency_trust > 0:
            raise bad("the Pi model needs consistency_trust 0 (its KL costs give the second pass no gradient)")
        if self.num_logits not in (1, 2):
            raise bad(f"num_logits must be 1 or 2, got {self.num_logits}")
        if self.n_labeled != "all" and (not isinstance(self.n_labeled, int) or self.n_labeled <= 0):
            raise bad(f"n_labeled must be a positive number or 'all', got {self.n_labeled!r}")
        per_batch = self.n_labeled_per_batch
        if per_batch != "vary" and (not isinstance(per_batch, int) or not 0 < per_batch <= self.batch_size):
            raise bad(f"n_labeled_per_batch must be 'vary' or 1..{self.batch_size}, got {per_batch!r}")
        if isinstance(per_batch, int) and isinstance(self.n_labeled, int) and per_batch > self.n_labeled:
            raise bad(f"{per_batch} labeled images per minibatch, but only {self.n_labeled} are labeled")
        for name in ("student_dropout_probability", "teacher_dropout_probability"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.training_length < 1 or self.rampdown_length < 0 or self.rampup_length < 0:
            raise bad("training_length must be positive, ramp lengths non-negative")
        if self.n_extra_unlabeled and self.dataset != "svhn":
            raise bad("only SVHN has extra unlabeled images")
        return self

    @property
    def labels_count(self) -> int:
        return TRAINING_SET_SIZE[self.dataset] if self.n_labeled == "all" else int(self.n_labeled)


_HINTS = typing.get_type_hints(ConvNetSettings)


@dataclass(frozen=True)
class Experiment:
    """One original runner script, as data."""

    name: str
    source: str
    dataset: str
    models: tuple[str, ...]
    n_labeled: tuple[int | str, ...]
    extra_unlabeled: tuple[int, ...]
    test_phase: bool
    data_seeds: dict[str, list[int]]
    hyper: dict[str, Any]
    by_labels: dict[str, dict[str, Any]]
    training_length_by_extra: dict[int, int]
    ablation: dict[str, Any] = field(default_factory=dict)
    extra_only_with_labels: int | None = None

    def settings(self, *, n_labeled: int | str, model: str | None = None, data_seed: int | None = None,
                 n_extra_unlabeled: int = 0, overrides: dict[str, Any] | None = None) -> ConvNetSettings:
        """The settings of one run of this experiment."""
        model = model or self.models[0]
        if model not in self.models:
            raise BadInput(f"experiment {self.name} runs {', '.join(self.models)}, not {model!r}")
        if n_extra_unlabeled not in self.extra_unlabeled:
            raise BadInput(f"experiment {self.name} adds {', '.join(map(str, self.extra_unlabeled))} "
                           f"extra images, not {n_extra_unlabeled}")
        regime = "all" if n_labeled == "all" else "some"
        values: dict[str, Any] = {"dataset": self.dataset, "model": model, "n_labeled": n_labeled,
                                  "n_extra_unlabeled": n_extra_unlabeled, "test_phase": self.test_phase,
                                  "experiment": self.name, "source": self.source,
                                  "ema_consistency": model == "mean_teacher" or model == "supervised"}
        values["data_seed"] = self.data_seeds.get(regime, [0])[0] if data_seed is None else data_seed
        if self.training_length_by_extra:
            values["training_length"] = self.training_length_by_extra[n_extra_unlabeled]
        values.update(self.hyper)
        for key, value in self.by_labels.get(regime, {}).items():
            if key.endswith("_per_label"):
                values[key[: -len("_per_label")]] = value * int(n_labeled)
            else:
                values[key] = value
        for key in ("training_length", "rampdown_length"):
            if key in values and isinstance(values[key], float):
                values[key] = int(round(values[key]))
        values.update(overrides or {})
        return ConvNetSettings.from_dict(values, source=f"experiment {self.name}")

    def ablation_runs(self) -> list[tuple[int, dict[str, Any]]]:
        """(data seed, changed settings) of every run of the ablation grid."""
        if not self.ablation:
            raise BadInput(f"experiment {self.name} is not an ablation; ablations: {', '.join(ablation_names())}")
        return [(seed, dict(values)) for seed in self.ablation["data_seeds"] for values in self.ablation["values"]]


def convnet_configs_dir() -> Path:
    try:
        return Path(str(resources.files("mt_repro.original_configs"))) / "convnet"
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "original_configs" / "convnet"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in convnet_configs_dir().glob("*.toml"))


def ablation_names() -> list[str]:
    return [name for name in experiment_names() if "_vary_" in name]


def load_experiment(name: str) -> Experiment:
    path = convnet_configs_dir() / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"no ConvNet experiment {name!r}; known: {', '.join(experiment_names())}")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"experiment {path.name} cannot be read: {exc}") from None
    try:
        return Experiment(
            name=data["name"], source=data["source"], dataset=data["dataset"], models=tuple(data["models"]),
            n_labeled=tuple(data["n_labeled"]), extra_unlabeled=tuple(data.get("extra_unlabeled", [0])),
            test_phase=bool(data["test_phase"]), data_seeds=data.get("data_seeds", {}),
            hyper=data.get("hyper", {}), by_labels=data.get("by_labels", {}),
            training_length_by_extra={int(k): int(v) for k, v in data.get("training_length_by_extra", {}).items()},
            ablation=data.get("ablation", {}), extra_only_with_labels=data.get("extra_only_with_labels"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"experiment {path.name} is incomplete: {exc}") from None
