"""A run's settings as its run directory keeps them (``config.json``) and as a checkpoint
carries them: the settings class's fields plus ``recipe``, the name of the recipe they are
written in, so that ``--resume`` reads them back with the right class.

Run directories written before the recipes were named hold no ``recipe`` key: a ConvNet run is
recognised by ``training_length``, and its ``model`` (``mean_teacher``, ``pi``, ``supervised``)
and ``ema_consistency`` settings become ``method``.
"""
from __future__ import annotations

import json
import os
from typing import Any

from mt_repro.config.convnet import ConvNetConfig
from mt_repro.config.files import json_depth
from mt_repro.config.protocol import ProtocolConfig
from mt_repro.config.recipes import PYTORCH, TENSORFLOW, USB
from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput
from mt_repro.core.limits import NESTING, check_nesting, read_text

CLASSES = {PYTORCH.name: TrainConfig, TENSORFLOW.name: ConvNetConfig, USB.name: ProtocolConfig}
OLD_CONVNET_MODELS = {"mean_teacher": "mean_teacher", "pi": "pi_model", "supervised": "supervised"}


def to_saved(config) -> dict[str, Any]:
    return {"recipe": config.recipe.name, **config.to_dict()}


def read_saved(path: str | os.PathLike, what: str = "run settings") -> Any:
    """The values of a run's ``config.json`` (or another of its JSON files, ``what`` it is): a
    regular file within TEXT_FILE_BYTES, nested no deeper than NESTING (checked on the text
    before json, which recurses, parses it)."""
    text = read_text(path, what)
    NESTING.check_depth(json_depth(text), str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} cannot be read: {exc}") from None
    except RecursionError:  # not reached after the depth check; kept as a last line
        raise BadInput(f"{path} is nested too deeply: refused") from None


def from_saved(values: Any, source: str):
    """The settings object of a saved ``config.json`` (or a checkpoint's copy of it)."""
    if not isinstance(values, dict):
        raise BadInput(f"{source} is not a configuration (a JSON object)")
    # Also for values that did not come through read_saved (a checkpoint's copy, a caller's
    # dict): a value nested deeper than repr can go would make even the error message fail.
    check_nesting(values, source)
    values = dict(values)
    recipe = values.pop("recipe", TENSORFLOW.name if "training_length" in values else PYTORCH.name)
    if recipe not in CLASSES:
        raise BadInput(f"{source}: unknown recipe {recipe!r}; known: {', '.join(CLASSES)}")
    if recipe == TENSORFLOW.name and "model" in values:
        model = values.pop("model")
        values.pop("ema_consistency", None)
        if model not in OLD_CONVNET_MODELS:
            raise BadInput(f"{source}: model {model!r} is not one of {', '.join(OLD_CONVNET_MODELS)}")
        values.setdefault("method", OLD_CONVNET_MODELS[model])
    config = CLASSES[recipe].from_dict(values, source=source)
    return config.validate()
