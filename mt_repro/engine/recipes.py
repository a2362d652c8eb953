"""The pieces of a run, looked up by the names its recipe gives them (``mt_repro.config.recipes``),
and the check that every name a configuration uses exists and that its pieces fit together.

======================  ===============================  ==================================
piece                    ``pytorch``                      ``tensorflow``
======================  ===============================  ==================================
optimizer                ``sgd``                          ``tf_adam`` (``optimizers``)
schedule                 ``per_epoch``                    ``per_step`` (``schedules``)
timeline                 ``epochs``                       ``steps`` (``timelines``)
teacher init / update    ``separate`` / ``after_step``    ``copy`` / ``before_step`` (``ema``)
noise (training data)    ``pipeline`` (``data.loaders``)  ``model`` (``data.arrays``)
costs                    ``pytorch``                      ``tensorflow`` (the methods')
======================  ===============================  ==================================
"""
from __future__ import annotations

from typing import Sequence

import torch

from mt_repro.core.errors import BadInput
from mt_repro.data import arrays, loaders
from mt_repro.data.registry import get_dataset
from mt_repro.engine.ema import TEACHER_INITS, TEACHER_UPDATES
from mt_repro.engine.optimizers import OPTIMIZERS
from mt_repro.engine.schedules import SCHEDULES
from mt_repro.engine.timelines import TIMELINES
from mt_repro.methods import registry as methods
from mt_repro.models import get_model


def training_data(config, device: torch.device, extras: Sequence[str]):
    """The run's training and evaluation data, where its recipe puts the noise."""
    if config.recipe.noise == "pipeline":
        return loaders.training_data(config, device, extras)
    return arrays.training_data(config, extras)


def check_config(config) -> None:
    """Raise ``BadInput`` (one line, with the reason) unless the dataset, architecture and
    method exist and can run with the configuration's recipe."""
    recipe = config.recipe
    for name, table in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("timeline", TIMELINES),
                        ("teacher_init", TEACHER_INITS), ("teacher_update", TEACHER_UPDATES)):
        if getattr(recipe, name) not in table:
            raise BadInput(f"recipe {recipe.name}: no {name} {getattr(recipe, name)!r}")
    spec = get_dataset(config.dataset)
    model = get_model(config.arch)
    # A model registered for the PyTorch half takes augmented images from the pipeline (as every
    # recipe with the noise there does); one of the TensorFlow half carries its own noise.
    if (model.recipe == "tensorflow") != (recipe.noise == "model"):
        how = {"tensorflow": "it carries its own noise and is initialised from data, as the TensorFlow half "
                             "built it: run it with the ConvNet settings (mt-repro svhn, mt-repro cifar10 --arch "
                             "convnet13)",
               "pytorch": "it takes augmented images from the data pipeline, as the PyTorch half trained it: "
                          "run it with the ResNet settings (mt-repro cifar10, mt-repro imagenet)"}[model.recipe]
        raise BadInput(f"bad config: architecture {config.arch} is not trained with the {recipe.name} recipe: {how}")
    # In the PyTorch half's settings a logit distance cost >= 0 turns the second head on.
    if model.heads < 2 and recipe.name == "pytorch" and getattr(config, "logit_distance_cost", -1.0) >= 0:
        raise BadInput(f"bad config: logit_distance_cost {config.logit_distance_cost} needs two heads, and "
                       f"{config.arch} has one classifier (its two outputs are the same tensor, so the cost "
                       "would be zero): leave logit_distance_cost at -1")
    if recipe.noise == "pipeline" and spec.open_part is None:
        raise BadInput(f"bad config: {spec.name} has no per-image pipeline; it trains with the ConvNet recipe")
    if recipe.noise == "model" and spec.tf_arrays is None:
        raise BadInput(f"bad config: {spec.name} has no ConvNet input; it trains with the ResNet recipe")
    methods.check_config(config)
