"""The PyTorch recipe's training data: image datasets augmented per image in the data pipeline
(two views), minibatches composed by a batch sampler, as the original ``create_data_loaders``.

``training_data(config, device, extras)`` builds the datasets from the dataset's description
(``mt_repro.data.registry``), applies the label file, chooses the batch sampler of the run's
minibatch composition (two streams, labeled only, or uniform) and wraps them as
``LoaderData``, which the engine iterates epoch by epoch. With ``workers`` 0 every random draw
happens in the original's order. Fast mode (``config.mode``) trains datasets that have a batch
augmentation from ``DeviceBatches`` on ``device``, over the same batch sampler; the others keep
per-image loading with workers that stay alive between epochs and prefetch further ahead.
The sample extras a method asks for (``mt_repro.data.sample_extras``) come with the faithful
loader's minibatches; the strong view (``strong_input``) and MoCo's views only there, from their
own generator, so a fast run that needs them loads per image too.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Subset, SubsetRandomSampler

from mt_repro.core.errors import BadInput
from mt_repro.core.threads import available_cores
from mt_repro.core.types import NO_LABEL, Batch
from mt_repro.data.device_loader import DeviceBatches, images_in_memory
from mt_repro.data.labels import apply_labels, read_label_file
from mt_repro.data.normalisation import normalised
from mt_repro.data.randaugment import StrongAugment, StrongView
from mt_repro.data.registry import DatasetSpec, get_dataset
from mt_repro.data.contrastive import ContrastiveAugment
from mt_repro.data.sample_extras import CONTRASTIVE, SampleExtras
from mt_repro.data.sampling import EpochSeededBatchSampler, TwoStreamBatchSampler

_log = logging.getLogger("mt_repro.data")


class LoaderData:
    """Training minibatches epoch by epoch, and the evaluation loader. ``hidden_places``: the
    minibatches' first places whose labels are hidden (``NO_LABEL``), where the unlabeled part
    is drawn from labeled images too (``unlabeled_includes_labeled``)."""

    def __init__(self, train_loader, eval_loader, num_classes: int, n_labeled: int, n_unlabeled: int,
                 labeled_loader: Callable[[], DataLoader] | None = None, hidden_places: int = 0):
        self.train_loader = train_loader
        self.hidden_places = hidden_places
        self.eval_loader = eval_loader
        self.num_classes = num_classes
        self.n_labeled = n_labeled
        self.n_unlabeled = n_unlabeled
        self._labeled_loader = labeled_loader
        self._labeled: DataLoader | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def epoch(self, epoch: int, start: int = 0, steps: int | None = None) -> Iterator[Batch]:
        """The minibatches of ``epoch``, or its first ``steps`` (the last epoch of a run counted
        in steps). A loader draws its permutations when an epoch begins, so an epoch is only ever
        trained from its start (checkpoints are taken between epochs)."""
        if start or (steps is not None and not 0 < steps <= len(self.train_loader)):
            raise ValueError("a loader's epoch is trained from its start, for at most its length")
        if hasattr(self.train_loader, "set_epoch"):  # fast mode's augmentation parameters are per epoch
            self.train_loader.set_epoch(epoch)
        sampler = getattr(self.train_loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):  # USB's streams are seeded with the epoch
            sampler.set_epoch(epoch)
        dataset = getattr(self.train_loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):  # the strong view's generator is per epoch (SampleExtras)
            dataset.set_epoch(epoch)
        for count, ((student_input, teacher_input), targets, *extras) in enumerate(self.train_loader, 1):
            if self.hidden_places:  # the two-stream sampler puts the unlabeled part first
                targets = targets.clone()
                targets[:self.hidden_places] = NO_LABEL
            yield Batch(student_input, teacher_input, targets, extras[0] if extras else {})
            if count == steps:
                break

    def evaluation(self):
        return self.eval_loader

    def labeled_images(self) -> DataLoader:
        """The labeled training images through the evaluation transform, in order: the memory
        bank of a kNN monitor (``mt_repro.engine.evaluation.knn_evaluate``)."""
        if self._labeled_loader is None:
            raise BadInput("this run's data has no labeled training images to compare with")
        if self._labeled is None:
            self._labeled = self._labeled_loader()
        return self._labeled

    def init_batch(self) -> torch.Tensor:
        raise BadInput("this network is initialised from a minibatch of raw images, which the "
                       "PyTorch recipe's augmented data pipeline does not give: use the ConvNet recipe")

    def state_dict(self) -> dict:
        # the samplers draw from the global generators (saved with the run's RNG state), or
        # from a generator seeded with the epoch number (USB's)
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def training_data(config, device: torch.device | None = None, extras: Sequence[str] = ()) -> LoaderData:
    """Datasets, label split, sampler and loaders of a ``TrainConfig``; ``extras``: the sample
    extras the run's method asks for (``mt_repro.core.types.SAMPLE_EXTRAS``)."""
    device = device or torch.device("cpu")
    spec = normalised(get_dataset(config.dataset), config.normalisation)
    if spec.open_part is None:
        raise BadInput(f"{spec.name} has no per-image pipeline: train it with the ConvNet recipe "
                       f"(mt-repro {spec.name})")
    root = spec.root(config.data_dir)
    on_device = config.mode == "fast" and spec.batch_augment is not None
    if on_device and ("strong_input" in extras or set(extras) & set(CONTRASTIVE)):
        on_device = False
        _log.info("fast mode: the strong (or MoCo) views are made image by image, so the minibatches are "
                  "loaded per image, by workers that persist and prefetch; the rest of fast mode applies")
    damaged = getattr(config, "damaged_images", "refuse")
    train_set = spec.open_part(root, config.train_subdir, None if on_device else spec.train_transform(), damaged)
    eval_set = spec.open_part(root, config.eval_subdir, spec.eval_transform(), damaged)
    if len(train_set) == 0 or len(eval_set) == 0:
        raise BadInput(f"no images found under {root}")
    if config.labels:
        labeled, unlabeled = apply_labels(train_set, _without_skipped(read_label_file(config.labels), train_set),
                                          source=f"label file {Path(config.labels).name}")
    else:
        labeled, unlabeled = list(range(len(train_set))), []
    hidden_places = 0
    if config.unlabeled_includes_labeled:   # USB's include_lb_to_ulb (semilearn/datasets/utils.py)
        unlabeled, hidden_places = list(range(len(train_set))), config.batch_size - config.labeled_batch_size
    batch_sampler = _batch_sampler(config, len(train_set), labeled, unlabeled)

    pin = torch.cuda.is_available()
    if on_device:
        train_loader = DeviceBatches(images_in_memory(train_set), train_set.targets, batch_sampler,
                                     spec.batch_augment(), device, seed=config.seed, extras=extras)
    else:
        workers = worker_count(config.workers)
        if workers < config.workers:  # the workers draw the augmentations: say that there are fewer
            _log.info(f"loading with {workers} worker process(es), one per CPU core available, "
                      f"not the {config.workers} of workers={config.workers}")
        train_loader = DataLoader(_with_sample_extras(spec, root, config, train_set, extras),
                                  batch_sampler=batch_sampler, num_workers=workers, pin_memory=pin,
                                  **_kept_busy(config))
    eval_loader = DataLoader(eval_set, batch_size=config.batch_size, shuffle=False,
                             num_workers=worker_count(2 * config.workers),  # evaluation needs images twice as fast
                             pin_memory=pin, drop_last=False, **_kept_busy(config))

    def labeled_loader() -> DataLoader:  # built when asked for: only feature monitors read it
        images = spec.open_part(root, config.train_subdir, spec.eval_transform(), damaged)
        return DataLoader(Subset(images, labeled), batch_size=config.batch_size, shuffle=False,
                          num_workers=worker_count(config.workers), pin_memory=pin)

    return LoaderData(train_loader, eval_loader, spec.num_classes, len(labeled), len(unlabeled),
                      labeled_loader if labeled else None, hidden_places)


def _without_skipped(labels: dict[str, str], train_set: Dataset) -> dict[str, str]:
    """The label file's entries less the damaged images the dataset skipped (``damaged_images``
    "skip"): those are left out of training, labeled or not."""
    skipped = {os.path.basename(path) for path in getattr(train_set, "skipped", ())} & labels.keys()
    if skipped:
        _log.warning(f"{len(skipped)} labeled image(s) among the damaged ones skipped: "
                     f"{', '.join(sorted(skipped)[:3])}{', …' if len(skipped) > 3 else ''}")
    return {name: label for name, label in labels.items() if name not in skipped}


def evaluation_loader(spec: DatasetSpec, data_dir, part: str, batch_size: int, workers: int,
                      pin_memory: bool = False) -> DataLoader:
    """A dataset part through its evaluation transform, in order (``mt-repro evaluate``)."""
    dataset = spec.open_part(spec.root(data_dir), part, spec.eval_transform())
    if len(dataset) == 0:
        raise BadInput(f"no images found under {spec.root(data_dir)}/{part}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=worker_count(workers),
                      pin_memory=pin_memory)


def worker_count(requested: int) -> int:
    """``requested`` loading processes, at most one per CPU core this process may run on: more
    only queue for the same cores (and torch warns about each such loader)."""
    return min(requested, available_cores())



def _batch_sampler(config, n_train: int, labeled: list[int], unlabeled: list[int]):
    if config.sampler_epoch_steps is not None:
        return _epoch_seeded_sampler(config, n_train, labeled, unlabeled)
    if config.sampling == "uniform":  # labeled and unlabeled alike, one pass an epoch
        if n_train < config.batch_size:
            raise BadInput(f"only {n_train} training images: fewer than one batch of {config.batch_size}")
        return BatchSampler(SubsetRandomSampler(range(n_train)), config.batch_size, drop_last=True)
    if config.exclude_unlabeled:
        if len(labeled) < config.batch_size:
            raise BadInput(f"only {len(labeled)} labeled images: fewer than one batch of {config.batch_size}")
        return BatchSampler(SubsetRandomSampler(labeled), config.batch_size, drop_last=True)
    try:
        return TwoStreamBatchSampler(unlabeled, labeled, config.batch_size, config.labeled_batch_size,
                                     labeled_may_repeat=config.labeled_may_repeat)
    except ValueError as exc:
        raise BadInput(f"impossible split: {exc}") from None


def _epoch_seeded_sampler(config, n_train: int, labeled: list[int], unlabeled: list[int]) -> EpochSeededBatchSampler:
    """USB's streams: every minibatch is full, whatever the number of images behind a stream."""
    if config.sampling == "uniform":
        streams = [(range(n_train), config.batch_size)]
    elif config.exclude_unlabeled:
        streams = [(labeled, config.batch_size)]
    else:
        streams = [(unlabeled, config.batch_size - config.labeled_batch_size), (labeled, config.labeled_batch_size)]
    try:
        return EpochSeededBatchSampler(streams, config.sampler_epoch_steps)
    except ValueError as exc:
        raise BadInput(f"impossible split: {exc}") from None


def _kept_busy(config) -> dict:
    """Fast mode's loader settings: workers that live across epochs and prefetch further."""
    if config.mode != "fast" or config.workers == 0:
        return {}
    return {"persistent_workers": True, "prefetch_factor": 4}


def _with_sample_extras(spec: DatasetSpec, root, config, train_set: Dataset, wanted: Sequence[str]) -> Dataset:
    """The training set as the run's method needs it: unchanged, or wrapped to add per-sample
    indices, clean images or strong views (``mt_repro.data.sample_extras``)."""
    if not wanted:
        return train_set
    damaged = getattr(config, "damaged_images", "refuse")
    clean = raw = strong_view = contrastive_view = None
    if "clean_input" in wanted:
        clean = spec.open_part(root, config.train_subdir, spec.eval_transform(), damaged)
    if "strong_input" in wanted:
        strong_view = _strong_view(spec)
    versions = [name.split("_")[1] for name in wanted if name in CONTRASTIVE]
    if versions:
        contrastive_view = _contrastive_view(spec, versions[0])
    if strong_view is not None or contrastive_view is not None:
        raw = spec.open_part(root, config.train_subdir, None, damaged)
    return SampleExtras(train_set, wanted, clean, raw=raw, strong_view=strong_view,
                        contrastive_view=contrastive_view, seed=config.seed)


def _contrastive_view(spec: DatasetSpec, version: str) -> StrongView:
    """MoCo ``version``'s view of the dataset's images, then its evaluation transform's
    normalisation (the images resized back to their own size: the datasets of one image size)."""
    if spec.batch_augment is None:
        raise BadInput(f"{spec.name} has no MoCo views of its own (moco_{version}_views): they are made for "
                       "the datasets of one image size; train moco with views = \"pipeline\" (its random "
                       "resized crop and flip)")
    return StrongView(ContrastiveAugment(version), spec.eval_transform())


def _strong_view(spec: DatasetSpec) -> StrongView:
    """FixMatch's strong view of the dataset's images: its weak translation and flip (those of
    its batch augmentation, which repeats its per-image ones), RandAugment and Cutout, then its
    evaluation transform's normalisation."""
    if spec.batch_augment is None:
        raise BadInput(f"{spec.name} has no strong view (strong_input): it is made for the datasets whose "
                       "weak augmentation is a translation and flip (those with a fast mode)")
    weak = spec.batch_augment()
    return StrongView(StrongAugment(weak.max_translation, weak.flip), spec.eval_transform())
