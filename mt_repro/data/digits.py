"""scikit-learn's bundled 8 x 8 handwritten digits: the one real dataset available offline.

1797 grey images (pixel values 0..16) of the digits 0..9, about 180 per class, in
``sklearn.datasets.load_digits()`` order. A fixed test set of 500 images is held out by the
same boolean-mask shuffle the original TensorFlow code used for its validation sets
(``RandomState(0)``); the other 1297 are the training set. A labeled subset is drawn
class-balanced from the training set by ``RandomState(data_seed)``, as the TensorFlow half drew
its CIFAR-10/SVHN labels, and written as an original-format label file, so training goes
through the same label-file path as CIFAR-10 and ImageNet.

Image names: ``<i>_<digit>.png``, ``i`` the image's position in ``load_digits()`` (there are no
files: the names only serve label files). Class names: ``"0"`` .. ``"9"``.

Augmentation for 8 x 8 images (two independent views per image, as for CIFAR-10): translate by
up to 1 pixel on each axis with mirrored borders (offsets from numpy's global generator, like
the original's translation), then Gaussian noise (torch's global generator), on pixels scaled to
[0, 1] and standardised with fixed constants (the mean and deviation of all 1797 images).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from mt_repro.core.errors import BadInput
from mt_repro.data.registry import DatasetSpec, register
from mt_repro.data import splits
from mt_repro.data.batch_augment import BatchAugment
from mt_repro.data.splits import NamedSplit, TFSplit, mask_partition
from mt_repro.data.transforms import TransformTwice, reflected_indices, translate_with_reflect

N_TEST = 500
TEST_SEED = 0
CLASS_NAMES = tuple(str(d) for d in range(10))
# Mean and standard deviation of all 1797 images' pixels / 16.
MEAN, STD = 0.3053, 0.3760
MAX_TRANSLATION = 1
NOISE_STD = 0.15


@lru_cache(maxsize=1)
def load_all() -> tuple[np.ndarray, np.ndarray]:
    """(images N x 8 x 8 float32 in [0, 1], labels N int64), in ``load_digits()`` order."""
    try:
        from sklearn.datasets import load_digits  # deferred: a second to import, for the digits only
    except ImportError:
        raise BadInput("the digits demo needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)
    return images, np.asarray(bunch.target, dtype=np.int64)


def test_and_training_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed held-out test images and the training images, indices into ``load_all()``."""
    _, labels = load_all()
    return mask_partition(len(labels), N_TEST, np.random.RandomState(TEST_SEED))


def names(labels: np.ndarray) -> list[str]:
    return [f"{i}_{d}.png" for i, d in enumerate(labels.tolist())]


def label_split(n_labels: int | None, data_seed: int) -> TFSplit:
    """The class-balanced labeled subset of the training images for ``data_seed``; indices in
    the result are positions in the training set."""
    _, labels = load_all()
    _, train = test_and_training_indices()
    return splits.tf_split(labels[train], n_labels, data_seed, validation_size=0, test_phase=True)


def tf_split(root, n_labeled: int | None, data_seed: int, test_phase: bool = True, n_extra: int = 0) -> NamedSplit:
    """The class-balanced labeled subset for ``data_seed``, with the images' names."""
    if not test_phase:
        raise BadInput("the digits demo has a fixed test set and no validation partition")
    _, train = test_and_training_indices()
    all_names = names(load_all()[1])
    return NamedSplit(label_split(n_labeled, data_seed), [all_names[i] for i in train.tolist()], list(CLASS_NAMES))


def label_file_entries(n_labels: int, data_seed: int) -> dict[str, str]:
    """``{image name: class name}`` of the labeled images, for ``write_label_file``."""
    return tf_split(None, n_labels, data_seed).label_file_entries()


class DigitsArrays(Dataset):
    """One part (``train`` or ``test``) of the digits, presented like ``ImageFolder``
    (``samples``, ``class_to_idx``) so that label files apply to it."""

    def __init__(self, part: str, transform: Callable | None = None):
        images, labels = load_all()
        test, train = test_and_training_indices()
        if part not in ("train", "test"):
            raise BadInput(f"the digits have the parts train and test, not {part!r}")
        chosen = train if part == "train" else test
        all_names = names(labels)
        self.transform = transform
        self.classes = list(CLASS_NAMES)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self._images = images[chosen][..., None]  # N x 8 x 8 x 1
        self.samples = [(all_names[i], int(labels[i])) for i in chosen.tolist()]
        self.targets = [t for _, t in self.samples]
        self.imgs = self.samples

    def __len__(self) -> int:
        return len(self.samples)

    def in_memory_images(self) -> np.ndarray:
        """Every image, ``N x 8 x 8 x 1`` float32 in [0, 1], in the dataset's order."""
        return self._images

    def __getitem__(self, index: int):
        image = self._images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index][1]

    def __getitems__(self, indices: list[int]) -> list:
        """The items of a minibatch, transformed together where the transform is one of this
        module's: the same values and random draws as item by item (``DigitsAugment.batch``),
        in a fraction of the time. ``DataLoader`` calls this in place of ``__getitem__``."""
        images = self._images[indices]
        transform = self.transform
        if isinstance(transform, TransformTwice) and isinstance(transform.transform, DigitsAugment):
            views = transform.transform.batch(images, views=2)
            transformed = list(zip(views[:, 0], views[:, 1]))
        elif transform is to_tensor:
            transformed = list(to_tensor_batch(images))
        else:
            return [self[i] for i in indices]
        return [(image, self.samples[i][1]) for image, i in zip(transformed, indices)]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """8 x 8 x 1 float pixels in [0, 1] to a standardised 1 x 8 x 8 tensor."""
    return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))) - MEAN) / STD


def to_tensor_batch(images: np.ndarray) -> torch.Tensor:
    """``to_tensor`` of each of ``... x 8 x 8 x 1`` images at once (elementwise: the same values)."""
    return (torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, -3))) - MEAN) / STD


class DigitsAugment:
    """Translate by up to ``max_translation`` px (mirrored border; numpy's generator), then add
    N(0, ``noise_std``) noise (torch's generator) to the standardised tensor."""

    def __init__(self, max_translation: int = MAX_TRANSLATION, noise_std: float = NOISE_STD):
        self.max_translation = max_translation
        self.noise_std = noise_std

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.max_translation:
            dx, dy = np.random.randint(-self.max_translation, self.max_translation + 1, size=2)
            image = translate_with_reflect(image, int(dx), int(dy))
        tensor = to_tensor(image)
        if self.noise_std:
            tensor = tensor + self.noise_std * torch.randn(tensor.shape)
        return tensor

    def batch(self, images: np.ndarray, views: int = 1) -> torch.Tensor:
        """``views`` independent augmentations of each of ``N x 8 x 8 x 1`` images, ``N x views x
        1 x 8 x 8``: equal to calling the transform image by image, view by view. numpy's and
        torch's generators are separate streams, each drawn here in that same order: one
        ``randint`` of N x views x 2 offsets gives the sequence of N * views ``randint(size=2)``
        calls, and one ``randn`` of N x views x 64 values the sequence of N * views calls of
        64 (torch fills normal values 16 at a time, so whole calls of 64 split evenly)."""
        n, height, width = images.shape[:3]
        if self.max_translation:
            if self.max_translation >= min(height, width):
                raise ValueError(f"translation by {self.max_translation} too large for {width}x{height} images")
            offsets = np.random.randint(-self.max_translation, self.max_translation + 1, size=(n, views, 2))
            rows = reflected_indices(height, offsets[..., 1])  # N x views x H
            cols = reflected_indices(width, offsets[..., 0])  # N x views x W
            images = images[np.arange(n)[:, None, None, None], rows[..., :, None], cols[..., None, :]]
        else:
            images = np.repeat(images[:, None], views, axis=1)
        tensor = to_tensor_batch(images)
        if self.noise_std:
            tensor = tensor + self.noise_std * torch.randn(tensor.shape)
        return tensor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_translation={self.max_translation}, noise_std={self.noise_std})"


def train_transform() -> TransformTwice:
    return TransformTwice(DigitsAugment())


def eval_transform() -> Callable[[np.ndarray], torch.Tensor]:
    return to_tensor


def open_part(root, part: str, transform, damaged_images: str = "refuse") -> DigitsArrays:
    """The bundled arrays (no image files: ``damaged_images`` has nothing to act on)."""
    return DigitsArrays(part, transform)


def batch_augment():
    """``train_transform`` on a whole minibatch on the device (fast mode)."""
    return BatchAugment(max_translation=MAX_TRANSLATION, flip=False, scale=None, mean=MEAN, std=STD,
                        noise_std=NOISE_STD)


SPEC = register(DatasetSpec(
    name="digits", description="scikit-learn's bundled 8x8 handwritten digits: 1297 training, "
                               "500 held-out test images (not in the paper)",
    num_classes=10, train_size=1797 - N_TEST, reads="nothing: bundled with scikit-learn",
    open_part=open_part, train_transform=train_transform, eval_transform=eval_transform,
    batch_augment=batch_augment, tf_split=tf_split))
