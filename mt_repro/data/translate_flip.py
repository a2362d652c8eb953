"""The weak augmentation of the 32 x 32 datasets and of STL-10: a translation of up to
``max_translation`` pixels with mirrored borders (numpy's generator) and a horizontal flip
(torch's), then ``ToTensor`` and the dataset's normalisation. CIFAR-10's is the original
code's (±4 px); USB's ``RandomCrop(size, padding=p, padding_mode="reflect")`` and flip draw the
same images, so CIFAR-100, SVHN (±4 px) and STL-10 (±12 px) use it with USB's statistics.

One ``TranslateFlip`` per dataset gives the three transforms its ``DatasetSpec`` names: the
per-image pipeline's two views, the evaluation transform, and fast mode's batched version on
the device (``BatchAugment``), whose translation and flip are also the first steps of
FixMatch's strong view (``mt_repro.data.loaders``).
"""
from __future__ import annotations

from dataclasses import dataclass

from torchvision import transforms

from mt_repro.data.batch_augment import BatchAugment
from mt_repro.data.transforms import RandomTranslateWithReflect, TransformTwice


@dataclass(frozen=True)
class TranslateFlip:
    max_translation: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def train_transform(self) -> TransformTwice:
        """Two views of each image (student and teacher), each translated, flipped, normalised."""
        return TransformTwice(transforms.Compose([
            RandomTranslateWithReflect(self.max_translation),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(self.mean), std=list(self.std)),
        ]))

    def eval_transform(self) -> transforms.Compose:
        return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=list(self.mean), std=list(self.std))])

    def batch_augment(self) -> BatchAugment:
        """``train_transform`` on a whole minibatch of uint8 images on the device (fast mode)."""
        return BatchAugment(max_translation=self.max_translation, flip=True, scale=255.0,
                            mean=list(self.mean), std=list(self.std))
