"""The original's validation (``pytorch/main.py`` ``validate``): precision@1/@5 and the class
cost on head 1, in evaluation mode (running normalisation statistics, no noise)."""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from mt_repro.core.metrics import accuracy
from mt_repro.core.types import NO_LABEL
from mt_repro.engine import fast_mode
from mt_repro.engine.meters import MeterSet
from mt_repro.methods.losses import classification_cost


def evaluate_model(model: torch.nn.Module, batches, device: torch.device,
                   speedups: fast_mode.Speedups = fast_mode.FAITHFUL, progress: str | None = None) -> dict[str, float]:
    """``model`` over the (inputs, targets) ``batches``; returns the meters' values, averages
    and sums, as the original logged them. ``progress``: the label of a progress bar of its own
    (gone when the evaluation ends), else none."""
    if progress is not None:
        batches = tqdm(batches, desc=progress, unit="batch", leave=False, dynamic_ncols=True)
    model.eval()
    meters = MeterSet()
    end = time.time()
    with torch.no_grad():
        for inputs, targets in batches:
            meters.update("data_time", time.time() - end)
            inputs = fast_mode.prepare_input(inputs.to(device, non_blocking=True), speedups)
            targets = targets.to(device, non_blocking=True)
            n_labeled = int(targets.ne(NO_LABEL).sum())
            meters.update("labeled_minibatch_size", n_labeled)
            with fast_mode.autocast(speedups, device):
                logits, _ = model(inputs)
            logits = logits.float()
            class_loss = classification_cost(logits, targets) / len(targets)
            top1, top5 = accuracy(logits, targets, topk=(1, 5))
            meters.update("class_loss", class_loss.item(), n_labeled)
            meters.update("top1", top1, n_labeled)
            meters.update("error1", 100.0 - top1, n_labeled)
            meters.update("top5", top5, n_labeled)
            meters.update("error5", 100.0 - top5, n_labeled)
            meters.update("batch_time", time.time() - end)
            end = time.time()
    return meters.record()
