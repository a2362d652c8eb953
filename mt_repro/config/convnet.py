"""The settings of a run with the original TensorFlow half's recipe (the paper's ConvNet runs,
Tables 1-3), loaded from ``original_configs/convnet/<experiment>.toml``.

Hyperparameter names are the original's (``tensorflow/mean_teacher/model.py``
``DEFAULT_HYPERPARAMS``), so an experiment file reads like the runner it comes from. An experiment
file holds: the runner's grid (``methods``, ``n_labeled``, ``extra_unlabeled``, ``data_seeds``),
``[hyper]`` changes for every run, ``[by_labels.some]``/``[by_labels.all]`` changes by label
regime (the runner's ``model_hyperparameters``; ``*_per_label`` keys scale with the number of
labels), ``[training_length_by_extra]`` and, for ablations, ``[ablation]`` with its values.

The original chose between Mean Teacher and the Π model with ``ema_consistency`` and ran
supervised-only as Mean Teacher without consistency on labeled minibatches; here the three are
the methods ``mean_teacher``, ``pi_model`` and ``supervised`` (``method``).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mt_repro.config.coerce import typed_values
from mt_repro.config.files import original_configs_dir, read_toml
from mt_repro.config.recipes import TENSORFLOW, Recipe
from mt_repro.config.train import MODES, compile_settings_problem
from mt_repro.core.errors import BadInput

CONVNET_DIR = "convnet"


@dataclass(frozen=True)
class ConvNetConfig:
    recipe: ClassVar[Recipe] = TENSORFLOW
    # the run
    dataset: str = "svhn"
    arch: str = "convnet13"
    method: str = "mean_teacher"          # a registered method (mt_repro.methods.registry)
    method_options: str | None = None     # "name=value,..." over the method's [options]
    n_labeled: int | str = "all"          # a number, or "all"
    n_extra_unlabeled: int = 0
    data_seed: int = 0
    test_phase: bool = True               # evaluate on the test set (else a validation split)
    seed: int | None = None               # torch/numpy seed of the run (default: the data seed)
    device: str = "auto"
    mode: str = "faithful"                # "fast": channels-last, bf16 autocast where supported (mt_repro.engine.fast_mode)
    compile: bool = False                 # fast mode: torch.compile student and teacher
    compile_mode: str = "default"         # with compile: one of config.train.COMPILE_MODES
    data_dir: str | None = None           # SVHN .mat directory, CIFAR-10 tarball/batches or the original's npz
    out_dir: str | None = None            # None: results/<experiment>/<run>
    batch_size: int = 100
    n_labeled_per_batch: int | str = "vary"
    # mean_teacher/model.py DEFAULT_HYPERPARAMS
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

    def validate(self, source: str = "settings") -> "ConvNetConfig":
        def bad(message: str) -> BadInput:
            return BadInput(f"{source}: {message}")

        if self.mode not in MODES:
            raise bad(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        problem = compile_settings_problem(self.mode, self.compile, self.compile_mode)
        if problem:
            raise bad(problem)
        if not 0.0 <= self.consistency_trust <= 1.0:
            raise bad(f"consistency_trust must be in [0, 1], got {self.consistency_trust}")
        if self.num_logits not in (1, 2):
            raise bad(f"num_logits must be 1 or 2, got {self.num_logits}")
        if self.n_labeled != "all" and (not isinstance(self.n_labeled, int) or self.n_labeled <= 0):
            raise bad(f"n_labeled must be a positive number or 'all', got {self.n_labeled!r}")
        per_batch = self.n_labeled_per_batch
        if self.batch_size <= 0:
            raise bad(f"batch_size must be positive, got {self.batch_size}")
        if per_batch != "vary" and (not isinstance(per_batch, int) or not 0 < per_batch <= self.batch_size):
            raise bad(f"n_labeled_per_batch must be 'vary' or 1..{self.batch_size}, got {per_batch!r}")
        if isinstance(per_batch, int) and isinstance(self.n_labeled, int) and per_batch > self.n_labeled:
            raise bad(f"{per_batch} labeled images per minibatch, but only {self.n_labeled} are labeled")
        for name in ("student_dropout_probability", "teacher_dropout_probability"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.training_length < 1 or self.rampdown_length < 0 or self.rampup_length < 0:
            raise bad("training_length must be positive, ramp lengths non-negative")
        if self.print_span < 1 or self.evaluation_span < 1:
            raise bad("print_span and evaluation_span must be at least 1")
        if self.n_extra_unlabeled < 0:
            raise bad(f"n_extra_unlabeled must be at least 0, got {self.n_extra_unlabeled}")
        if not self.width > 0:
            raise bad(f"width must be positive, got {self.width}")
        return self

    # --- what the engine asks every settings class ----------------------------------------
    @property
    def run_seed(self) -> int:
        """The seed of torch and the minibatch streams: ``seed``, else the data seed."""
        return self.seed if self.seed is not None else self.data_seed

    @property
    def labeled_only(self) -> bool:
        return self.n_labeled_per_batch == self.batch_size

    @property
    def declared_labels(self) -> int | str:
        return self.n_labeled

    def run_description(self) -> dict[str, Any]:
        return {"labels": None, "data_seed": self.data_seed, "extra_unlabeled": self.n_extra_unlabeled,
                "experiment": self.experiment or None}

    def network_options(self) -> dict[str, Any]:
        """``convnet13``'s builder arguments: where its noise lives and how much of it."""
        return {"input_noise": self.input_noise, "dropout": self.student_dropout_probability,
                "normalize_input": self.normalize_input, "flip_horizontally": self.flip_horizontally,
                "translate": 2 if self.translate else 0, "num_logits": self.num_logits, "width": self.width}

    def replace(self, **changes: Any) -> "ConvNetConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> "ConvNetConfig":
        return cls(**typed_values(HINTS, values, source)).validate(source)


HINTS = {name: hint for name, hint in typing.get_type_hints(ConvNetConfig).items() if name != "recipe"}


@dataclass(frozen=True)
class Experiment:
    """One original runner script, as data."""

    name: str
    source: str
    dataset: str
    methods: tuple[str, ...]
    n_labeled: tuple[int | str, ...]
    extra_unlabeled: tuple[int, ...]
    test_phase: bool
    data_seeds: dict[str, list[int]]
    hyper: dict[str, Any]
    by_labels: dict[str, dict[str, Any]]
    training_length_by_extra: dict[int, int]
    ablation: dict[str, Any] = field(default_factory=dict)
    extra_only_with_labels: int | None = None

    def settings(self, *, n_labeled: int | str, method: str | None = None, data_seed: int | None = None,
                 n_extra_unlabeled: int = 0) -> dict[str, Any]:
        """The settings of one run of this experiment, before the method's and the user's."""
        method = method or self.methods[0]
        if n_extra_unlabeled not in self.extra_unlabeled:
            raise BadInput(f"experiment {self.name} adds {', '.join(map(str, self.extra_unlabeled))} "
                           f"extra images, not {n_extra_unlabeled}")
        regime = "all" if n_labeled == "all" else "some"
        values: dict[str, Any] = {"dataset": self.dataset, "method": method, "n_labeled": n_labeled,
                                  "n_extra_unlabeled": n_extra_unlabeled, "test_phase": self.test_phase,
                                  "experiment": self.name, "source": self.source}
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
        return values

    def ablation_runs(self) -> list[tuple[int, dict[str, Any]]]:
        """(data seed, changed settings) of every run of the ablation grid."""
        if not self.ablation:
            raise BadInput(f"experiment {self.name} is not an ablation; ablations: {', '.join(ablation_names())}")
        return [(seed, dict(values)) for seed in self.ablation["data_seeds"] for values in self.ablation["values"]]


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (original_configs_dir() / CONVNET_DIR).glob("*.toml"))


def ablation_names() -> list[str]:
    return [name for name in experiment_names() if "_vary_" in name]


def load_experiment(name: str) -> Experiment:
    path = original_configs_dir() / CONVNET_DIR / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"no ConvNet experiment {name!r}; known: {', '.join(experiment_names())}")
    data = read_toml(path, "experiment")
    try:
        return Experiment(
            name=data["name"], source=data["source"], dataset=data["dataset"], methods=tuple(data["methods"]),
            n_labeled=tuple(data["n_labeled"]), extra_unlabeled=tuple(data.get("extra_unlabeled", [0])),
            test_phase=bool(data["test_phase"]), data_seeds=data.get("data_seeds", {}),
            hyper=data.get("hyper", {}), by_labels=data.get("by_labels", {}),
            training_length_by_extra={int(k): int(v) for k, v in data.get("training_length_by_extra", {}).items()},
            ablation=data.get("ablation", {}), extra_only_with_labels=data.get("extra_only_with_labels"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"experiment {path.name} is incomplete: {exc}") from None
