"""ILSVRC 2012 (ImageNet) as the original read it: folders ``<root>/train/<wnid>/*.JPEG`` and
``<root>/val/<wnid>/*.JPEG`` (torchvision ``ImageFolder``), with its augmentation."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset
from torchvision import transforms

from mt_repro.core.errors import BadInput
from mt_repro.data.images import checked_folder
from mt_repro.data.normalisation import IMAGENET_STATS
from mt_repro.data.registry import DatasetSpec, register
from mt_repro.data.transforms import TransformTwice


def open_part(root: Path, part: str, transform, damaged_images: str = "refuse") -> Dataset:
    """``root/part`` as an ``ImageFolder`` whose every image was checked to decode
    (``mt_repro.data.images.checked_folder``; the verdict is cached until a file changes)."""
    if not root.exists():
        raise BadInput(f"data directory {root} does not exist")
    folder = root / part
    if not folder.is_dir():
        raise BadInput(f"{folder} does not exist: expected {root} to hold {part}/<wnid>/<image> folders")
    return checked_folder(folder, transform, damaged_images)


def train_transform():
    """The original's ImageNet augmentation, twice per image (student and teacher views)."""
    return TransformTwice(transforms.Compose([
        transforms.RandomRotation(10),
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        transforms.ToTensor(),
        transforms.Normalize(**IMAGENET_STATS),
    ]))


def eval_transform():
    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                               transforms.ToTensor(), transforms.Normalize(**IMAGENET_STATS)])


SPEC = register(DatasetSpec(
    name="imagenet", description="ILSVRC 2012: 1281167 training images, 50000 validation images, 1000 classes",
    num_classes=1000, train_size=1281167, default_root="data-local/images/ilsvrc2012/",
    reads="the directory with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG",
    train_part="train", eval_part="val",
    open_part=open_part, train_transform=train_transform, eval_transform=eval_transform))
