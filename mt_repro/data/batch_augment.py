"""Fast mode's augmentation: the faithful per-image transforms, applied to a whole minibatch.

Faithful mode augments image by image in the loader (PIL, ``mt_repro.data.transforms``;
``DigitsAugment`` for the digits). Here the same operations run on a stacked ``N x H x W x C``
tensor, on whatever device holds it (the GPU when there is one):

* translation with mirrored borders and the horizontal flip become one gather per minibatch,
  with the same source index as ``transforms.translate_with_reflect`` (``out[y, x] =
  pixels[reflect(y - dy), reflect(x - dx)]``; the flip reverses the column index);
* CIFAR-10's ``ToTensor`` + ``Normalize`` (``x / 255``, then ``(x - mean) / std`` in float32)
  and the digits' standardisation and Gaussian noise, in the same order of float operations.

Given the same offsets, flips and noise, the output equals the faithful transforms' bit for
bit (``tests/test_fast_mode.py``). What differs is where those parameters come from: one
``torch.Generator`` per epoch, seeded from the run's seed and the epoch (``epoch_generator``),
instead of numpy's and torch's global generators image by image. So a fast run is
deterministic and resumable at epoch boundaries, and every process of a distributed run draws
the same parameters for the same global minibatch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AugmentParams:
    """The random choices for ``n`` images: offsets in pixels, flips, additive noise."""

    dx: torch.Tensor                   # n, int64, column offset
    dy: torch.Tensor                   # n, int64, row offset
    flip: torch.Tensor | None = None   # n, bool
    noise: torch.Tensor | None = None  # n x C x H x W, standard normal


def reflected_index(size: int, shift: torch.Tensor) -> torch.Tensor:
    """Source index of each output index ``i`` for each shift: ``reflect(i - shift)`` about the
    edges (the edge pixel is not repeated), shape ``len(shift) x size``; ``|shift| < size``."""
    index = (torch.arange(size, device=shift.device) - shift[:, None]).abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor drawn on the CPU, on ``device`` without making the host wait: a copy from
    pageable memory to a GPU waits for the work queued before it, one from pinned memory does
    not (and the copy leaves it alone until it is done)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def translate_flip(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
                   flip: torch.Tensor | None = None, *, check: bool = True) -> torch.Tensor:
    """Translate each ``H x W x C`` image of ``images`` by its (dx, dy) with mirrored borders,
    then mirror it left-right where ``flip``: one gather for the whole minibatch. ``check``
    False: the caller knows the offsets fit (reading them would make a step wait for them)."""
    n, height, width = images.shape[:3]
    if check and n and (dx.abs().max() >= width or dy.abs().max() >= height):
        raise ValueError(f"translations up to ({int(dx.abs().max())}, {int(dy.abs().max())}) "
                         f"are too large for {width}x{height} images")
    rows = reflected_index(height, dy)
    cols = reflected_index(width, dx)
    if flip is not None:  # flipping after the shift reads the shifted columns backwards
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    # One index_select of whole pixels (C values each) from the flattened minibatch.
    first = torch.arange(n, device=images.device)[:, None, None] * (height * width)
    pixels = (first + rows[:, :, None] * width + cols[:, None, :]).reshape(-1)
    channels = images.shape[3]
    return images.reshape(-1, channels).index_select(0, pixels).view(n, height, width, channels)


class BatchAugment:
    """One augmented view of a minibatch of raw images (``N x H x W x C``, the dataset's own
    dtype), as a normalised float32 ``N x C x H x W`` tensor."""

    def __init__(self, *, max_translation: int, flip: bool, scale: float | None,
                 mean, std, noise_std: float = 0.0):
        self.max_translation = max_translation
        self.flip = flip
        self.scale = scale          # 255 for uint8 images (ToTensor); None for float pixels
        self.mean = mean            # per channel (a sequence) or one number
        self.std = std
        self.noise_std = noise_std

    def draw(self, n: int, channels: int, height: int, width: int,
             generator: torch.Generator) -> AugmentParams:
        """The random choices for ``n`` images, from ``generator`` (on the CPU), in a fixed order:
        offsets, then flips, then noise."""
        m = self.max_translation
        offsets = torch.randint(-m, m + 1, (2, n), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5 if self.flip else None
        noise = (torch.randn(n, channels, height, width, generator=generator)
                 if self.noise_std else None)
        return AugmentParams(dx=offsets[0], dy=offsets[1], flip=flip, noise=noise)

    def __call__(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        device = images.device
        # draw() offsets by at most max_translation: checked once against the image size, not read
        if self.max_translation >= min(images.shape[1:3]):
            raise ValueError(f"max_translation {self.max_translation} is too large for "
                             f"{images.shape[2]}x{images.shape[1]} images")
        moved = translate_flip(images, to_device(params.dx, device), to_device(params.dy, device),
                               None if params.flip is None else to_device(params.flip, device), check=False)
        tensor = self.normalise(moved)
        if params.noise is not None:
            tensor.add_(self.noise_std * to_device(params.noise, device))
        return tensor

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``N x H x W x C`` raw pixels to the normalised ``N x C x H x W`` float32 tensor, with the
        float operations of the faithful path (``ToTensor`` then ``Normalize``, or the digits'
        ``(x - MEAN) / STD``): also the evaluation transform."""
        # One new contiguous float tensor (never the caller's), then in place: large
        # temporaries cost page faults on the CPU.
        tensor = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format,
                                                copy=True)
        if self.scale is not None:
            tensor.div_(self.scale)
        if isinstance(self.mean, (int, float)):
            return tensor.sub_(self.mean).div_(self.std)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=tensor.device)[:, None, None]
        std = torch.as_tensor(self.std, dtype=torch.float32, device=tensor.device)[:, None, None]
        return tensor.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(max_translation={self.max_translation}, flip={self.flip}, "
                f"noise_std={self.noise_std})")


def epoch_generator(seed: int | None, epoch: int) -> torch.Generator:
    """The generator of an epoch's augmentation parameters: a function of (seed, epoch) only,
    so that a resumed run and every process of a distributed run draw the same ones."""
    return torch.Generator().manual_seed((seed or 0) * 1_000_003 + epoch)
