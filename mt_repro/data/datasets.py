"""Training and evaluation datasets and loaders, built as the original ``create_data_loaders``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SubsetRandomSampler
from torchvision.datasets import ImageFolder

from mt_repro.config import TrainConfig
from mt_repro.data import cifar10
from mt_repro.data.labels import apply_labels, read_label_file
from mt_repro.data.sampling import TwoStreamBatchSampler
from mt_repro.data.transforms import eval_transform, train_transform
from mt_repro.errors import BadInput

# Where the original code expected each dataset, relative to its working directory.
DEFAULT_DATA_DIRS = {
    "cifar10": "data-local/images/cifar/cifar10/by-image",
    "imagenet": "data-local/images/ilsvrc2012/",
}
NUM_CLASSES = {"cifar10": 10, "imagenet": 1000, "digits": 10}
# Datasets small enough for fast mode to hold on the training device (mt_repro.data.device_loader).
DEVICE_RESIDENT = ("cifar10", "digits")


@dataclass
class DataBundle:
    train_loader: DataLoader
    eval_loader: DataLoader
    num_classes: int
    n_labeled: int
    n_unlabeled: int


def data_dir_of(config: TrainConfig) -> Path:
    return Path(config.data_dir or DEFAULT_DATA_DIRS[config.dataset])


def load_split(config: TrainConfig, subdir: str, transform) -> Dataset:
    """One split: an image folder ``<data>/<subdir>``, or (CIFAR-10) the tarball or batches."""
    if config.dataset == "digits":  # bundled with scikit-learn, in memory: no data directory
        from mt_repro.data.digits import DigitsArrays
        return DigitsArrays(subdir, transform)
    root = data_dir_of(config)
    if not root.exists():
        hint = " (prepare it with: mt-repro prepare cifar10 --from <tarball> --to DIR)" if config.dataset == "cifar10" else ""
        raise BadInput(f"data directory {root} does not exist{hint}")
    folder = root / subdir
    if folder.is_dir():
        try:
            return ImageFolder(str(folder), transform)
        except (FileNotFoundError, OSError) as exc:
            raise BadInput(f"{folder}: {exc}") from None
    if config.dataset == "cifar10" and (root.is_file() or _has_batches(root)):
        splits = _cached_cifar(root)
        if subdir not in splits:
            raise BadInput(f"CIFAR-10 batches have the splits train+val and test, not {subdir!r}")
        return cifar10.CifarArrays(splits[subdir], transform)
    raise BadInput(f"{folder} does not exist: expected {root} to hold {subdir}/<class>/<image> folders")


def _has_batches(root: Path) -> bool:
    return (root / cifar10.BATCH_DIR).is_dir() or (root / cifar10.META).is_file()


_CIFAR_CACHE: dict[Path, dict] = {}


def _cached_cifar(root: Path) -> dict:
    key = root.resolve()
    if key not in _CIFAR_CACHE:
        _CIFAR_CACHE.clear()
        _CIFAR_CACHE[key] = cifar10.read_cifar10(root)
    return _CIFAR_CACHE[key]


def create_data(config: TrainConfig, device: torch.device | None = None) -> DataBundle:
    """Datasets, label split, sampler and loaders. Workers 0 keeps every random draw in order.

    Fast mode (``config.mode``) trains CIFAR-10 and the digits from ``DeviceBatches`` on
    ``device``, over the same batch sampler; ImageNet keeps per-image loading with workers
    that stay alive between epochs and prefetch further ahead."""
    device = device or torch.device("cpu")
    on_device = config.mode == "fast" and config.dataset in DEVICE_RESIDENT
    train_set = load_split(config, config.train_subdir,
                           None if on_device else train_transform(config.dataset))
    eval_set = load_split(config, config.eval_subdir, eval_transform(config.dataset))
    if len(train_set) == 0 or len(eval_set) == 0:
        raise BadInput(f"no images found under {data_dir_of(config)}")
    if config.labels:
        labeled, unlabeled = apply_labels(train_set, read_label_file(config.labels),
                                          source=f"label file {Path(config.labels).name}")
    else:
        labeled, unlabeled = list(range(len(train_set))), []

    if config.sampling == "uniform":  # labeled and unlabeled alike, one pass an epoch
        if len(train_set) < config.batch_size:
            raise BadInput(f"only {len(train_set)} training images: fewer than one batch of {config.batch_size}")
        batch_sampler = BatchSampler(SubsetRandomSampler(range(len(train_set))), config.batch_size, drop_last=True)
    elif config.exclude_unlabeled:
        if len(labeled) < config.batch_size:
            raise BadInput(f"only {len(labeled)} labeled images: fewer than one batch of {config.batch_size}")
        batch_sampler = BatchSampler(SubsetRandomSampler(labeled), config.batch_size, drop_last=True)
    else:
        try:
            batch_sampler = TwoStreamBatchSampler(unlabeled, labeled, config.batch_size,
                                                  config.labeled_batch_size)
        except ValueError as exc:
            raise BadInput(f"impossible split: {exc}") from None

    pin = torch.cuda.is_available()
    if on_device:
        from mt_repro.data.batch_augment import batch_augment
        from mt_repro.data.device_loader import DeviceBatches, images_in_memory
        from mt_repro.methods.registry import method_class

        train_loader = DeviceBatches(images_in_memory(train_set), train_set.targets, batch_sampler,
                                     batch_augment(config.dataset), device, seed=config.seed,
                                     extras=method_class(config.method).sample_extras)
    else:
        train_set = with_sample_extras(config, train_set)
        train_loader = DataLoader(train_set, batch_sampler=batch_sampler,
                                  num_workers=config.workers, pin_memory=pin, **_kept_busy(config))
    eval_loader = DataLoader(eval_set, batch_size=config.batch_size, shuffle=False,
                             num_workers=2 * config.workers,  # evaluation needs images twice as fast
                             pin_memory=pin, drop_last=False, **_kept_busy(config))
    return DataBundle(train_loader, eval_loader, NUM_CLASSES[config.dataset], len(labeled), len(unlabeled))


def _kept_busy(config: TrainConfig) -> dict:
    """Fast mode's loader settings: workers that live across epochs and prefetch further."""
    if config.mode != "fast" or config.workers == 0:
        return {}
    return {"persistent_workers": True, "prefetch_factor": 4}


def with_sample_extras(config: TrainConfig, train_set: Dataset) -> Dataset:
    """The training set as the run's method needs it: unchanged, or wrapped to add per-sample
    indices or clean images (``mt_repro.data.sample_extras``)."""
    from mt_repro.data.sample_extras import SampleExtras
    from mt_repro.methods.registry import method_class

    wanted = method_class(config.method).sample_extras
    if not wanted:
        return train_set
    clean = None
    if "clean_input" in wanted:
        clean = load_split(config, config.train_subdir, eval_transform(config.dataset))
    return SampleExtras(train_set, wanted, clean)
