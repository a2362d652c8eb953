"""The linear probe of an encoder (the evaluation of both MoCo papers): a linear classifier on its
frozen features of a run's labeled training images, tested on the run's evaluation images
(``mt_repro.engine.evaluation.linear_probe``). Against it, the same probe of a random encoder:
what pre-training adds beyond the architecture's own random features.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mt_repro.core.errors import BadInput
from mt_repro.core.rng import capture_rng_state, restore_rng_state, seed_everything
from mt_repro.engine import checkpoint as ckpt
from mt_repro.engine import recipes
from mt_repro.engine.evaluation import linear_probe
from mt_repro.models import create_model

CPU = torch.device("cpu")


def encoder_from_checkpoint(path: str | Path, arch: str, num_classes: int) -> torch.nn.Module:
    """The student of checkpoint ``path`` (a pre-training run's query encoder), built as ``arch``."""
    state = ckpt.load_checkpoint(path)
    if state.get("arch") != arch:
        raise BadInput(f"{path} holds a {state.get('arch')} network, not {arch}")
    model = create_model(arch, num_classes)
    try:
        model.load_state_dict(ckpt.without_prefix(state["state_dict"]))
    except RuntimeError as exc:
        raise BadInput(f"{path} does not fit {arch}: {str(exc).splitlines()[0][:200]}") from None
    return model


def linear_probe_errors(config, checkpoint: str | Path) -> tuple[float, float]:
    """(probe error of a random encoder, of the encoder in ``checkpoint``), in %, on ``config``'s
    labeled training images and evaluation images. The random encoder is the run's network as
    its seed initialises it; the generators are left as they were."""
    data = recipes.training_data(config, CPU, ())
    saved = capture_rng_state()
    try:
        if config.run_seed is not None:
            seed_everything(config.run_seed)
        random_encoder = create_model(config.arch, data.num_classes)
    finally:
        restore_rng_state(saved)
    pretrained = encoder_from_checkpoint(checkpoint, config.arch, data.num_classes)
    return tuple(linear_probe(model, data.labeled_images(), data.evaluation(), CPU, data.num_classes)
                 for model in (random_encoder, pretrained))
