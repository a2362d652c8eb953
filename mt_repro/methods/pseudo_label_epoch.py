"""Pseudo-Label (Lee, ICML 2013 workshop), epoch variant: the pseudo-labels used during an epoch
are fixed at the end of the previous one, from the predictions the network made on each
unlabeled sample while training on it (its arg-max class, where the probability reached
``threshold``). The first epoch has none. Otherwise as the iteration variant
(``mt_repro.methods.pseudo_label``): each part a mean over its own samples, as Lee's Eq. 15,
the pseudo-label part × the ramped-up weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mt_repro.core.types import NO_LABEL, Batch, StepContext, StepResult
from mt_repro.methods.base import EMAMethod, step_result
from mt_repro.methods.losses import chosen_cross_entropy
from mt_repro.methods.registry import register


@dataclass(frozen=True)
class EpochPseudoLabelOptions:
    threshold: float = 0.95


class EpochPseudoLabels:
    """The pseudo-label of every sample for this epoch (``NO_LABEL``: none) and the candidates
    collected during it; grows to the largest index it is given. Kept on the host, or with
    ``on_training_device`` on the device of the predictions recorded (fast mode)."""

    def __init__(self, threshold: float, on_training_device: bool = False):
        self.threshold = threshold
        self.on_training_device = on_training_device
        self.current = torch.zeros(0, dtype=torch.long)
        self.next = torch.zeros(0, dtype=torch.long)

    def _grow(self, size: int, device: torch.device) -> None:
        if self.current.device != device:   # (a checkpoint's memories are loaded on the host)
            self.current, self.next = self.current.to(device), self.next.to(device)
        if size > len(self.current):
            extra = torch.full((size - len(self.current),), NO_LABEL, dtype=torch.long, device=device)
            self.current = torch.cat([self.current, extra])
            self.next = torch.cat([self.next, extra.clone()])

    def record(self, indices: torch.Tensor, probabilities: torch.Tensor, unlabeled: torch.Tensor,
               size: int | None = None) -> None:
        """``size``: the length that holds ``indices`` as the host knows it (None: read from them)."""
        device = probabilities.device if self.on_training_device else torch.device("cpu")
        indices = indices.to(device)
        self._grow(int(indices.max()) + 1 if size is None else size, device)
        confidence, guess = probabilities.detach().to(device).max(dim=1)
        chosen = unlabeled.to(device) & confidence.ge(self.threshold)
        self.next[indices] = torch.where(chosen, guess, torch.full_like(guess, NO_LABEL))

    def labels(self, indices: torch.Tensor) -> torch.Tensor:
        return self.current[indices.to(self.current.device)]

    def end_epoch(self) -> None:
        self.current = self.next.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = state["current"].clone()
        # the candidates of the epoch under way (a checkpoint inside an epoch: the ConvNet runs')
        self.next = state["next"].clone() if "next" in state else torch.full_like(self.current, NO_LABEL)


@register("pseudo_label_epoch")
class EpochPseudoLabel(EMAMethod):
    Options = EpochPseudoLabelOptions
    sample_extras = ("indices",)
    mean_over_parts = True  # as the iteration variant: Lee's Eq. 15

    def __init__(self, config, student, teacher, options=None, *, build_network=None):
        super().__init__(config, student, teacher, options, build_network=build_network)
        self.pseudo_labels = EpochPseudoLabels(self.options.threshold, on_training_device=self.wait_free)

    def losses(self, batch: Batch, step: StepContext) -> StepResult:
        targets, indices = batch.targets, batch.extras.get("indices")
        if indices is None:
            raise ValueError("pseudo_label_epoch needs the samples' indices")
        logits, ema_logits, class_loss, weight = self.common_part(batch, step)
        unlabeled = targets.eq(NO_LABEL)
        self.pseudo_labels.record(indices, F.softmax(logits, dim=1), unlabeled, size=batch.on_host().size_to_hold())
        guesses = self.pseudo_labels.labels(indices).to(logits.device)
        guesses = torch.where(unlabeled, guesses, torch.full_like(guesses, NO_LABEL))
        chosen = guesses.ne(NO_LABEL)
        cost = chosen_cross_entropy(logits, guesses, chosen, wait_free=self.wait_free)
        pseudo = weight * self.part_mean(cost, unlabeled.sum(), len(targets))
        values = {"class_loss": class_loss.detach(), "cons_weight": weight, "cons_loss": pseudo.detach(),
                  "pseudo_labeled": chosen.sum()}
        return step_result(class_loss + pseudo, values, logits, ema_logits, targets)

    def end_of_epoch(self, epochs_done: int) -> None:
        self.pseudo_labels.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"pseudo_labels": self.pseudo_labels.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.pseudo_labels.load_state_dict(state["pseudo_labels"])
