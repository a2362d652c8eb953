"""The original's validation (``pytorch/main.py`` ``validate``): precision@1/@5 and the class
cost on head 1, in evaluation mode (running normalisation statistics, no noise); and the
evaluations of an encoder's features (a pre-training method's networks, a pre-trained encoder):
the weighted kNN monitor and the linear probe."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mt_repro.core.metrics import accuracy, hundred_less
from mt_repro.core.types import NO_LABEL
from mt_repro.engine import fast_mode
from mt_repro.engine.meters import MeterSet
from mt_repro.methods.losses import classification_cost
from mt_repro.core.networks import representation


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
            top1, top5 = (float(p) for p in accuracy(logits, targets, topk=(1, 5)))
            meters.update("class_loss", class_loss.item(), n_labeled)
            meters.update("top1", top1, n_labeled)
            meters.update("error1", hundred_less(top1), n_labeled)
            meters.update("top5", top5, n_labeled)
            meters.update("error5", hundred_less(top5), n_labeled)
            meters.update("batch_time", time.time() - end)
            end = time.time()
    return meters.record()


def features_of(model: torch.nn.Module, batches, device: torch.device,
                speedups: fast_mode.Speedups = fast_mode.FAITHFUL) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features, targets) of ``model`` over ``batches``, in eval mode, on ``device``."""
    model.eval()
    features, labels = [], []
    with torch.no_grad():
        for inputs, targets in batches:
            inputs = fast_mode.prepare_input(inputs.to(device, non_blocking=True), speedups)
            with fast_mode.autocast(speedups, device):
                features.append(representation(model, inputs).float())
            labels.append(targets.to(device))
    return torch.cat(features), torch.cat(labels)


def knn_predictions(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                    k: int = 200, temperature: float = 0.1) -> torch.Tensor:
    """Class scores (queries × classes) of a weighted kNN on unit-length features: each of a
    query's ``k`` nearest bank features by cosine similarity ``s`` votes for its class with
    ``exp(s / temperature)`` (Wu et al. 2018's instance-discrimination monitor, as MoCo's demo)."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    similarity = queries @ bank.t()
    weights, nearest = similarity.topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(queries), num_classes, device=queries.device)
    votes.scatter_add_(1, bank_labels[nearest], (weights / temperature).exp())
    return votes


def knn_evaluate(model: torch.nn.Module, bank_batches, batches, device: torch.device, num_classes: int, *,
                 k: int = 200, temperature: float = 0.1, speedups: fast_mode.Speedups = fast_mode.FAITHFUL,
                 progress: str | None = None) -> dict[str, float]:
    """Precision@1/@5 of the weighted kNN (``knn_predictions``) of ``model``'s features of the
    evaluation ``batches`` against those of ``bank_batches`` (the labeled training images), in
    the meters' columns of ``evaluate_model`` (no class cost: a kNN has none)."""
    if progress is not None:
        batches = tqdm(batches, desc=progress, unit="batch", leave=False, dynamic_ncols=True)
    start = time.time()
    bank, bank_labels = features_of(model, bank_batches, device, speedups)
    queries, targets = features_of(model, batches, device, speedups)
    top1, top5 = (float(p) for p in accuracy(knn_predictions(bank, bank_labels, queries, num_classes, k,
                                                              temperature), targets, topk=(1, min(5, num_classes))))
    meters = MeterSet()
    n = int(targets.ne(NO_LABEL).sum())
    meters.update("labeled_minibatch_size", n)
    for name, value in (("top1", top1), ("error1", hundred_less(top1)), ("top5", top5), ("error5", hundred_less(top5))):
        meters.update(name, value, n)
    meters.update("batch_time", time.time() - start)
    return meters.record()


def linear_probe(model: torch.nn.Module, train_batches, batches, device: torch.device, num_classes: int, *,
                 weight_decay: float = 1e-3, steps: int = 500) -> float:
    """Test error (%) of a linear classifier on ``model``'s frozen features: multinomial logistic
    regression on the standardised features of ``train_batches`` (the labeled images), its L2
    penalty ``weight_decay``, fitted to convergence by L-BFGS (a convex problem: the result
    depends on the features alone, not on a learning-rate schedule), applied to ``batches``."""
    train, train_labels = features_of(model, train_batches, device)
    test, test_labels = features_of(model, batches, device)
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    layer = torch.nn.Linear(train.shape[1], num_classes).to(device)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=steps, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(train), train_labels) + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = layer(test).argmax(1)
    return 100.0 * float(predicted.ne(test_labels).float().mean())
