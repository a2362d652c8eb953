"""One place where a run's settings are put together, for every command that starts runs.

A run's settings are layers, each later one changing the earlier ones, each checked on its
own (so an error names the layer it is in):

1. the experiment: a paper configuration (``original_configs/<name>.toml``, the ResNet runs),
   a ConvNet experiment (``original_configs/convnet/<name>.toml``) or the digits demo's
   settings (``mt_repro/configs/digits.toml``);
2. the method's settings for that recipe (the ``[resnet]``, ``[convnet]`` or ``[digits]``
   table of ``mt_repro/configs/methods/<method>.toml``), when a method is chosen;
3. the run's own choices: label file or split, data directory, seed, device, length;
4. ``--set key=value`` overrides.

The result is validated once. ``mt-repro cifar10/imagenet/svhn``, ``mt-repro table``,
``mt-repro ablation`` and ``mt-repro digits`` all compose their runs here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mt_repro.config.coerce import typed_values
from mt_repro.config.convnet import HINTS as CONVNET_HINTS
from mt_repro.config.convnet import ConvNetConfig, load_experiment
from mt_repro.config.files import our_configs_dir, read_toml
from mt_repro.config.methods import method_settings
from mt_repro.config.paper import load_paper_config
from mt_repro.config.train import HINTS as TRAIN_HINTS
from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput

LABEL_DIR_ENV = "MT_REPRO_LABEL_DIR"
DEFAULT_LABEL_DIR = "data-local/labels"  # where the original code kept its label files
DEMO_CONFIG = "digits.toml"


def layered(config_class, hints: dict[str, Any], layers: Iterable[tuple[str, dict[str, Any]]]):
    """``config_class`` from ``layers`` (source, values), later layers winning; each layer's
    names and types are checked under its own source name, the result validated once."""
    values: dict[str, Any] = {}
    for source, layer in layers:
        typed = typed_values(hints, layer, source)
        if config_class is TrainConfig:
            check_counts(typed, source)
        values.update(typed)
    return config_class(**values).validate()


def method_layer(method: str | None, table: str) -> list[tuple[str, dict[str, Any]]]:
    """The method's table for this kind of run, and the method's name; nothing without a method."""
    if method is None:
        return []
    return [(f"configs/methods/{method}.toml [{table}]", {**method_settings(method).table(table), "method": method})]


# --- the ResNet runs (Table 4) ----------------------------------------------------------------
def resnet_label_file(config_name: str, data_seed: int | None, label_dir: str | os.PathLike | None) -> Path:
    """The original's label file for ``data_seed`` (default: the runner's first) under
    ``label_dir`` (default ``$MT_REPRO_LABEL_DIR`` or ``./data-local/labels``)."""
    paper = load_paper_config(config_name)
    seed = paper.data_seeds[0] if data_seed is None else data_seed
    if seed not in paper.data_seeds:
        seeds = paper.data_seeds
        shown = f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
        raise BadInput(f"--data-seed {seed}: the paper used {shown}")
    base = Path(label_dir or os.environ.get(LABEL_DIR_ENV) or DEFAULT_LABEL_DIR)
    path = base / paper.label_file_for(seed)
    if not path.is_file():
        raise BadInput(f"label file {path} not found; pass --label-file, or --label-dir "
                       "pointing at the original code's data-local/labels")
    return path


def resnet_run(config_name: str, *, label_file: str | os.PathLike, method: str | None = None,
               gpus: int | None = None, run: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A ResNet run of the paper's configuration ``config_name``."""
    paper = load_paper_config(config_name)
    return layered(TrainConfig, TRAIN_HINTS, [
        (f"config {config_name}", paper.settings(gpus)),
        *method_layer(method, "resnet"),
        ("run", {"labels": str(label_file), **(run or {})}),
        ("--set", overrides or {}),
    ])


# --- the ConvNet runs (Tables 1-3) ---------------------------------------------------------------
def convnet_run(experiment_name: str, *, n_labeled: int | str, method: str | None = None,
                data_seed: int | None = None, n_extra_unlabeled: int = 0, run: dict[str, Any] | None = None,
                overrides: dict[str, Any] | None = None) -> ConvNetConfig:
    """A ConvNet run of the original runner ``experiment_name``: its settings for the number of
    labels and extra images, then the method's ``[convnet]`` table when the method is not one
    the runner itself ran."""
    experiment = load_experiment(experiment_name)
    method = method or experiment.methods[0]
    base = experiment.settings(n_labeled=n_labeled, method=method, data_seed=data_seed,
                               n_extra_unlabeled=n_extra_unlabeled)
    return layered(ConvNetConfig, CONVNET_HINTS, [
        (f"experiment {experiment_name}", base),
        *([] if method in experiment.methods else method_layer(method, "convnet")),
        ("run", run or {}),
        ("--set", overrides or {}),
    ])


def convnet_experiment_for(dataset: str, method: str) -> str:
    """The original runner behind ``mt-repro svhn/cifar10 --arch convnet13 --method M``: the
    supervised-only runner for ``supervised``, else the runner of Mean Teacher and the Π model."""
    return f"{dataset}_supervised_final_eval" if method == "supervised" else f"{dataset}_final_eval"


# --- the digits demo -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoConfig:
    """``mt_repro/configs/digits.toml``: how many labels and seeds, and every run's settings."""

    path: Path
    labels: int
    seeds: int
    run: dict[str, Any]


def load_demo_config(path: str | os.PathLike | None = None) -> DemoConfig:
    path = Path(path) if path else our_configs_dir() / DEMO_CONFIG
    data = read_toml(path, "demo config")
    unknown = sorted(set(data) - {"demo", "run"})
    if unknown:
        raise BadInput(f"demo config {path.name}: unknown table(s) {', '.join(f'[{k}]' for k in unknown)}; "
                       "it has [demo] and [run] (a method's changes are in configs/methods/<method>.toml)")
    for table in ("demo", "run"):
        if not isinstance(data.get(table), dict):
            raise BadInput(f"demo config {path.name} lacks the table [{table}]")
    unknown = sorted(set(data["demo"]) - {"labels", "seeds"}, key=str)
    if unknown:
        raise BadInput(f"demo config {path.name}: unknown key(s) {', '.join(map(str, unknown))} in [demo]; "
                       "it has labels and seeds")
    counts = {}
    for key in ("labels", "seeds"):
        value = data["demo"].get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"demo config {path.name}: [demo] {key} must be an integer, got {value!r}")
        if value < 1:
            raise BadInput(f"demo config {path.name}: [demo] {key} must be at least 1, got {value}")
        counts[key] = value
    run = typed_values(TRAIN_HINTS, data["run"], f"demo config {path.name} [run]")
    check_counts(run, f"demo config {path.name} [run]")
    return DemoConfig(path, counts["labels"], counts["seeds"], dict(data["run"]))


# What a layer of TrainConfig settings may not hold whatever the other layers say: sizes and
# counts the runs divide by or loop over (TrainConfig.validate checks the assembled settings
# again, without naming the layer).
POSITIVE = ("batch_size", "labeled_batch_size", "epochs", "print_freq", "batch_shards", "lr_rampdown_epochs")
NOT_NEGATIVE = ("workers", "start_epoch", "checkpoint_epochs", "evaluation_epochs", "lr_rampup", "consistency_rampup")


def check_counts(values: dict[str, Any], source: str) -> None:
    """Refuse a zero or negative size or count in one layer of settings, naming its source and key."""
    for key in POSITIVE:
        if values.get(key) is not None and values[key] < 1:
            raise BadInput(f"{source}: {key} must be at least 1, got {values[key]}")
    for key in NOT_NEGATIVE:
        if values.get(key) is not None and values[key] < 0:
            raise BadInput(f"{source}: {key} must be 0 or more, got {values[key]}")
    batch, labeled = values.get("batch_size"), values.get("labeled_batch_size")
    if batch is not None and labeled is not None and labeled >= batch:
        raise BadInput(f"{source}: labeled_batch_size ({labeled}) must be less than batch_size ({batch}): "
                       "each minibatch needs unlabeled images too")
    epochs, rampdown = values.get("epochs"), values.get("lr_rampdown_epochs")
    if epochs is not None and rampdown is not None and rampdown < epochs:
        raise BadInput(f"{source}: lr_rampdown_epochs ({rampdown}) must be at least epochs ({epochs})")


def digits_run(demo: DemoConfig, method: str, *, label_file: str | os.PathLike, data_seed: int,
               out_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """One run of the digits demo: the demo's settings, the method's ``[digits]`` table, the
    seed's label file; seeded with the data seed."""
    return layered(TrainConfig, TRAIN_HINTS, [
        (f"demo config {demo.path.name} [run]", demo.run),
        *method_layer(method, "digits"),
        ("run", {"labels": str(label_file), "seed": data_seed, "out_dir": str(out_dir)}),
        ("--set", overrides or {}),
    ])
