"""The thread count of a command's runs, from the size of the run's network
(``mt_repro.core.threads`` has the rule and why)."""
from __future__ import annotations

import logging

import torch

from mt_repro.core.threads import ThreadChoice, choose_threads
from mt_repro.models.registry import get_model, parameter_count

log = logging.getLogger(__name__)
# The count of the builder's classifier barely moves the total; the data (which knows it) is
# not opened to decide a thread count.
_CLASSES_FOR_COUNTING = 10


def network_parameters(config) -> int:
    """Parameters of the run's network, counted on the meta device (nothing allocated, no
    random numbers drawn: the run's seeded initialisation is untouched)."""
    info = get_model(config.arch)
    with torch.device("meta"):
        model = info.builder(num_classes=_CLASSES_FOR_COUNTING, **config.network_options())
    return parameter_count(model)


def use_threads(config, *, given: int | None = None, processes: int = 1, say: bool = True) -> ThreadChoice:
    """Choose the intra-op thread count for ``config``'s network, set it, and say it."""
    choice = choose_threads(network_parameters(config), given=given, processes=processes)
    torch.set_num_threads(choice.threads)
    if say:
        log.info(choice.describe())
    return choice
