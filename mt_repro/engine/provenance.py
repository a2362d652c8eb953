"""Where a run's numbers come from, as its ``summary.json`` records them (``provenance``): the
code and torch that computed them, the data (its content hash, and whether it is one of the
synthetic stand-ins of ``mt_repro.data.synthetic``), the steps trained against the paper
recipe's, the network, and every setting that differs from the paper's recipe.

The paper's recipe of a run is what ``mt-repro table`` runs for the run's cell:

* a ConvNet run (the TensorFlow recipe): the original runner of its dataset and method
  (``compose.convnet_experiment_for``: ``svhn_final_eval``, ``cifar10_supervised_final_eval``, ...)
  with the run's labels, extra images and data seed;
* a ResNet run (the PyTorch recipe) of CIFAR-10 or ImageNet: the paper's configuration of its
  label count (``PAPER_CONFIGS``) at the paper's GPU count; a run whose label file holds a count
  none of them has (a trial on a stand-in's label file, as the README's first CIFAR-10 command)
  is held against its dataset's configuration closest to its settings (the fewest differences).

Other runs (the digits demo, other datasets, the USB protocol) have no recipe of the paper:
``recipe`` is null. Settings that say where or how a run computes, not what it trains
(``NOT_RECIPE``: paths, device, workers, seeds, fast mode, log and checkpoint frequencies) are
never differences.
"""
from __future__ import annotations

import functools
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import mt_repro
from mt_repro.config import compose
from mt_repro.config.convnet import ConvNetConfig, load_experiment
from mt_repro.config.paper import load_paper_config
from mt_repro.config.saved import read_saved, to_saved
from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput
from mt_repro.core.hashing import content_hash
from mt_repro.data.registry import get_dataset
from mt_repro.data.synthetic import stand_in_marker

# Table 4's cells (dataset, labels) and the paper configuration of each (original_configs/).
PAPER_CONFIGS = {("cifar10", 4000): "cifar10_4000", ("cifar10", 1000): "cifar10_1000",
                 ("imagenet", 128000): "imagenet_10pct"}
NOT_RECIPE = frozenset({
    "data_dir", "labels", "out_dir", "device", "workers", "seed", "data_seed", "mode", "compile",
    "batch_shards", "dist_timeout_s", "damaged_images", "print_freq", "checkpoint_epochs",
    "evaluation_epochs", "print_span", "evaluation_span", "experiment", "source",
})
GIT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Reference:
    """The paper's recipe for a run's cell."""

    name: str        # its configuration (original_configs/<name>.toml or original_configs/convnet/<name>.toml)
    source: str      # the original runner it transcribes
    config: Any      # the settings `mt-repro table` runs for the cell
    n_labels: int    # the cell's labels
    steps: int       # the recipe's training steps on the published data

    def record(self, differences: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "arch": self.config.arch, "n_labels": self.n_labels,
                "steps": self.steps, "differences": differences}


# --- the recipe ----------------------------------------------------------------------------------
def paper_recipe(config, n_labels: int | str | None) -> Reference | None:
    """The paper's recipe for a run of ``config`` with ``n_labels`` labels (the label file's
    count for the ResNet runs, which declare none), or None where the paper has none."""
    try:
        if isinstance(config, ConvNetConfig):
            return _convnet_recipe(config)
        # (a protocol after the paper, ProtocolConfig, has no recipe of the paper's)
        if isinstance(config, TrainConfig) and config.recipe.name == "pytorch" and isinstance(n_labels, int):
            return _resnet_recipe(config, n_labels)
    except BadInput:   # a cell the runner cannot compose (extra images it never added): none
        return None
    return None


def _convnet_recipe(config: ConvNetConfig) -> Reference | None:
    name = compose.convnet_experiment_for(config.dataset, config.method)
    try:
        experiment = load_experiment(name)
    except BadInput:
        return None
    reference = compose.convnet_run(name, n_labeled=config.n_labeled, method=config.method,
                                    data_seed=config.data_seed, n_extra_unlabeled=config.n_extra_unlabeled)
    n_labels = get_dataset(config.dataset).train_size if config.n_labeled == "all" else int(config.n_labeled)
    return Reference(name, experiment.source, reference, n_labels, reference.training_length)


def _resnet_recipe(config: TrainConfig, n_labels: int) -> Reference | None:
    method = None if config.method == "mean_teacher" else config.method
    candidates = {}
    for (dataset, labels), name in PAPER_CONFIGS.items():
        if dataset == config.dataset:
            candidates[name] = (labels, compose.resnet_run(name, label_file=config.labels or "labels.txt",
                                                           method=method))
    if not candidates:
        return None
    same_count = [name for name, (labels, _) in candidates.items() if labels == n_labels]
    name = same_count[0] if same_count else min(
        candidates, key=lambda n: (len(differences(config, candidates[n][1])), n))
    labels, reference = candidates[name]
    unlabeled_per_step = reference.batch_size - (reference.labeled_batch_size or 0)
    # an epoch is one pass over the unlabeled images (the two-stream sampler, partial minibatch dropped)
    steps = (get_dataset(config.dataset).train_size - labels) // unlabeled_per_step * reference.epochs
    return Reference(name, load_paper_config(name).source, reference, labels, steps)


def differences(config, reference) -> dict[str, dict[str, Any]]:
    """``{setting: {"paper": value, "run": value}}`` of every setting of ``config`` that differs
    from ``reference``'s, less ``NOT_RECIPE``."""
    ours, theirs = to_saved(config), to_saved(reference)
    return {key: {"paper": theirs.get(key), "run": ours.get(key)}
            for key in sorted(set(ours) | set(theirs))
            if key not in NOT_RECIPE and ours.get(key) != theirs.get(key)}


# --- what computed it, on what -------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """mt_repro's version, and the git commit (and whether the tracked files differ from it) when
    the package runs from a git checkout and git is there; None where not."""
    root = Path(mt_repro.__file__).resolve().parent.parent
    commit = dirty = None
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"mt_repro": mt_repro.__version__, "git_commit": commit, "git_dirty": dirty}


def _git(root: Path, *args: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not refresh (write) the checkout's index
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


log = logging.getLogger(__name__)
INPUTS_FILE = "inputs.json"   # where a run's data and label file were, and their content hashes


def recorded_inputs(run_dir: str | Path) -> dict[str, dict[str, str]]:
    """What ``inputs.json`` of ``run_dir`` holds, by field (``{"path", "content_hash"}``); empty
    for a run started before runs recorded it. A damaged file counts as absent, with a warning:
    it only serves to check data given again."""
    path = Path(run_dir) / INPUTS_FILE
    if not path.is_file():
        return {}
    try:
        values = read_saved(path)
    except BadInput as exc:
        log.warning(f"{exc}; the run's data are not checked against it")
        return {}
    good = isinstance(values, dict) and all(
        isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("path", "content_hash"))
        for entry in values.values())
    if not good:
        log.warning(f"{path} is not a record of a run's inputs; the run's data are not checked against it")
        return {}
    return values



def input_record(path: str | os.PathLike | None, *, hashed: bool = True, known: str | None = None) -> dict[str, Any]:
    """A run's data (or label file): its path, content hash (``hashed``; ``known``: the one its
    run recorded when it started, not computed again) and, where it is one of the synthetic
    stand-ins, their words (``stand_in``)."""
    if path is None:
        return {"path": None, "content_hash": None, "synthetic": False, "stand_in": None}
    digest = known
    if hashed and digest is None:
        try:
            digest = content_hash(path)
        except BadInput:   # gone since the run read it: the summary says so rather than failing
            digest = None
    marker = stand_in_marker(path) if os.path.exists(path) else None
    return {"path": str(path), "content_hash": digest, "synthetic": marker is not None, "stand_in": marker}


# --- the record ----------------------------------------------------------------------------------
def provenance(config, *, n_labels: int | str | None, trained_steps: int | None, planned_steps: int | None,
               hashed: bool = True, known: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The ``provenance`` of a summary: of a run of ``config`` that trained ``trained_steps`` of
    its ``planned_steps``, with ``n_labels`` labels (see ``paper_recipe``); ``known``: the hashes
    its ``inputs.json`` recorded, by field."""
    reference = paper_recipe(config, n_labels)
    known = known or {}

    def recorded(field: str) -> str | None:
        entry, path = known.get(field), getattr(config, field, None)
        return entry["content_hash"] if entry and path is not None and entry["path"] == str(path) else None

    record: dict[str, Any] = {
        "code": code_version(),
        "torch": torch.__version__,
        "data": input_record(getattr(config, "data_dir", None), hashed=hashed, known=recorded("data_dir")),
        "steps": {"trained": trained_steps, "planned": planned_steps,
                  "recipe": reference.steps if reference else None},
        "network": {"arch": config.arch, "width": getattr(config, "width", None)},
        "recipe": reference.record(differences(config, reference.config)) if reference else None,
    }
    if getattr(config, "labels", None):
        label_file = input_record(config.labels, hashed=hashed, known=recorded("labels"))
        record["label_file"] = {"path": label_file["path"], "content_hash": label_file["content_hash"]}
    return record


def of_trainer(trainer) -> dict[str, Any]:
    """The provenance of the run ``trainer`` has trained (``Trainer.write_summary``)."""
    config = trainer.config
    declared = config.declared_labels
    record = provenance(config, n_labels=trainer.data.n_labeled if declared is None else declared,
                        trained_steps=trainer.state.global_step, planned_steps=trainer.timeline.total_steps,
                        known=recorded_inputs(trainer.out_dir))
    record["processes"] = trainer.group.world_size   # of the run's last part (torchrun: one per device)
    return record
