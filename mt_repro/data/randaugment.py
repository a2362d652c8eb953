"""The strong augmentation of FixMatch and UDA: RandAugment with a random magnitude per
operation, then Cutout, on PIL images (CIFAR's 32 x 32 RGB, the digits' 8 x 8 grey).

``RandAugment`` picks ``n_ops`` operations (2, FixMatch's "RA"; with replacement, so one can
come twice) from the 14 below and applies each with a magnitude drawn uniformly from its range,
then blanks a square of Cutout. These are FixMatch's operations (Sohn et al. 2020, their
supplementary list), with the ranges USB gives them (``augment_list`` of
``semilearn/datasets/augmentation/randaugment.py``); signed ranges are drawn whole, so the sign
is part of the draw:

=============  ================  =============================================================
operation      magnitude         what it does
=============  ================  =============================================================
AutoContrast   (none)            stretch each channel so its darkest pixel is 0, its lightest 255
Brightness     factor 0.05-0.95  blend with black (0: black, 1: the image)
Color          factor 0.05-0.95  blend with the grey version (grey images: unchanged)
Contrast       factor 0.05-0.95  blend with the mean grey level
Equalize       (none)            equalise each channel's histogram
Identity       (none)            the image itself
Posterize      bits 4-8          keep the top ``int(bits)`` bits of each value: 4 to 7, as the
                                 ``int`` of USB's draw (8 would be the image itself)
Rotate         degrees -30-30    rotate about the centre, counter-clockwise; black corners
Sharpness      factor 0.05-0.95  blend with a smoothed version (0: smoothed, 1: the image)
ShearX/Y       -0.3-0.3          shear along x (y): the pixel at (x, y) comes from (x + r·y, y)
Solarize       threshold 0-256   invert every value at or above the threshold
TranslateX/Y   -0.3-0.3          shift by that fraction of the width (height); black border
=============  ================  =============================================================

Geometric operations sample the source pixel nearest to each output pixel (PIL's default).
Cutout then fills a square of side ``round(v · width)``, ``v`` uniform in [0, 0.5), centred on
a uniformly drawn pixel and clipped by the border (as DeVries & Taylor's Cutout; USB moves a
square that crosses the top or left border inside instead), with FixMatch's grey (125, 123,
114), or its grey level 123 for grey images.

Every random number comes from the ``numpy.random.Generator`` passed in, in a fixed order
(operation indices, each operation's magnitude, Cutout's side, then its centre's column and
row), never from a global generator: the strong view of a run is a function of its seed, and
drawing it leaves the original's streams (the two weak views, the sampler) as they were.

``StrongAugment`` is the whole strong view of FixMatch/USB before normalisation: the weak
augmentation of the dataset (translation with mirrored borders, then horizontal flip where the
dataset flips), then RandAugment and Cutout. ``StrongView`` adds the dataset's normalisation,
and takes the digits' float arrays as well as PIL images.

How torchvision's ``transforms.RandAugment`` (Cubuk et al. 2020) differs, and why the configs
use this one (every method that asks for ``strong_input``: FixMatch, UDA):

* one magnitude for every operation and image: bin ``magnitude`` (default 9) of
  ``num_magnitude_bins`` (31) of each range, not a fresh uniform draw per operation;
* signed operations take that magnitude with a random sign, and the enhancements are
  ``1 ± m`` for m up to 0.9 (they brighten and sharpen too, where FixMatch's only reduce);
  translations reach 150/331 ≈ 0.45 of the size (whole pixels), posterize goes from 8 to 4
  bits and solarize from 255 to 0 across the bins;
* no Cutout;
* its draws come from torch's global generator.

USB's own strong view draws 3 operations (``RandAugment(3, 5)`` in
``semilearn/datasets/cv_datasets/cifar.py``; its magnitude argument is unused) from Python's
and numpy's global generators; FixMatch's paper draws 2, the default here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from mt_repro.data.transforms import translate_with_reflect

CUTOUT_FILL = (125, 123, 114)  # FixMatch's and USB's Cutout colour
MAX_CUTOUT = 0.5               # the largest Cutout side, as a fraction of the width


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    """PIL's affine map: the output pixel (x, y) takes the input's at (a·x + b·y + c, d·x + e·y + f)."""
    return image.transform(image.size, Image.Transform.AFFINE, coefficients)


def auto_contrast(image: Image.Image, _: float) -> Image.Image:
    return ImageOps.autocontrast(image)


def brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def color(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


def contrast(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def equalize(image: Image.Image, _: float) -> Image.Image:
    return ImageOps.equalize(image)


def identity(image: Image.Image, _: float) -> Image.Image:
    return image


def posterize(image: Image.Image, bits: float) -> Image.Image:
    return ImageOps.posterize(image, max(1, int(bits)))


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees)


def sharpness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Sharpness(image).enhance(factor)


def shear_x(image: Image.Image, r: float) -> Image.Image:
    return _affine(image, (1, r, 0, 0, 1, 0))


def shear_y(image: Image.Image, r: float) -> Image.Image:
    return _affine(image, (1, 0, 0, r, 1, 0))


def solarize(image: Image.Image, threshold: float) -> Image.Image:
    return ImageOps.solarize(image, threshold)


def translate_x(image: Image.Image, fraction: float) -> Image.Image:
    return _affine(image, (1, 0, fraction * image.size[0], 0, 1, 0))


def translate_y(image: Image.Image, fraction: float) -> Image.Image:
    return _affine(image, (1, 0, 0, 0, 1, fraction * image.size[1]))


@dataclass(frozen=True)
class Op:
    name: str
    apply: Callable[[Image.Image, float], Image.Image]
    low: float
    high: float


# FixMatch's list, in its order; the ranges of USB's augment_list.
OPS: tuple[Op, ...] = (
    Op("AutoContrast", auto_contrast, 0.0, 1.0),
    Op("Brightness", brightness, 0.05, 0.95),
    Op("Color", color, 0.05, 0.95),
    Op("Contrast", contrast, 0.05, 0.95),
    Op("Equalize", equalize, 0.0, 1.0),
    Op("Identity", identity, 0.0, 1.0),
    Op("Posterize", posterize, 4.0, 8.0),
    Op("Rotate", rotate, -30.0, 30.0),
    Op("Sharpness", sharpness, 0.05, 0.95),
    Op("ShearX", shear_x, -0.3, 0.3),
    Op("ShearY", shear_y, -0.3, 0.3),
    Op("Solarize", solarize, 0.0, 256.0),
    Op("TranslateX", translate_x, -0.3, 0.3),
    Op("TranslateY", translate_y, -0.3, 0.3),
)
OPS_BY_NAME = {op.name: op for op in OPS}


def cutout(image: Image.Image, side: int, centre_x: int, centre_y: int) -> Image.Image:
    """A copy of ``image`` with the ``side`` x ``side`` square centred on (``centre_x``,
    ``centre_y``) filled with ``CUTOUT_FILL``, clipped by the border."""
    if side <= 0:
        return image
    width, height = image.size
    left, top = centre_x - side // 2, centre_y - side // 2
    box = (max(0, left), max(0, top), min(width, left + side) - 1, min(height, top + side) - 1)
    out = image.copy()
    if box[2] >= box[0] and box[3] >= box[1]:  # PIL's rectangle includes both corners
        ImageDraw.Draw(out).rectangle(box, fill=cutout_fill(image.mode))
    return out


def cutout_fill(mode: str):
    """``CUTOUT_FILL`` in ``mode`` (its grey level for a grey image)."""
    return Image.new("RGB", (1, 1), CUTOUT_FILL).convert(mode).getpixel((0, 0))


class RandAugment:
    """``n_ops`` operations of ``ops``, each with a uniform random magnitude in its range, then
    Cutout of a random square up to ``max_cutout`` of the width (see the module's docstring)."""

    def __init__(self, n_ops: int = 2, ops: tuple[Op, ...] = OPS, max_cutout: float = MAX_CUTOUT):
        if n_ops < 0 or not ops or not 0 <= max_cutout <= 1:
            raise ValueError("RandAugment needs n_ops >= 0, some operations and max_cutout in [0, 1]")
        self.n_ops, self.ops, self.max_cutout = n_ops, tuple(ops), max_cutout

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for index in rng.integers(len(self.ops), size=self.n_ops):
            op = self.ops[int(index)]
            image = op.apply(image, op.low + (op.high - op.low) * rng.random())
        width, height = image.size
        side = round(rng.random() * self.max_cutout * width)
        centre_x, centre_y = int(rng.integers(width)), int(rng.integers(height))
        return cutout(image, side, centre_x, centre_y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_ops={self.n_ops}, ops={len(self.ops)}, max_cutout={self.max_cutout})"


class StrongAugment:
    """The strong view before normalisation: translation by up to ``max_translation`` pixels
    with mirrored borders, a horizontal flip half of the time where ``flip``, then
    ``randaugment``; every draw from the ``rng`` passed in (offsets x, y; the flip; RandAugment's)."""

    def __init__(self, max_translation: int, flip: bool, randaugment: RandAugment | None = None):
        self.max_translation, self.flip = max_translation, flip
        self.randaugment = randaugment or RandAugment()

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        m = self.max_translation
        if m:
            dx, dy = rng.integers(-m, m + 1, size=2)
            pixels = translate_with_reflect(np.asarray(image), int(dx), int(dy))
            image = Image.fromarray(pixels)
        if self.flip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
        return self.randaugment(image, rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_translation={self.max_translation}, flip={self.flip}, {self.randaugment!r})"


class StrongView:
    """``augment`` (``StrongAugment``; MoCo's views use it with ``ContrastiveAugment``) then the
    dataset's ``normalise`` (its evaluation transform), for images as the
    dataset gives them: PIL images, or ``H x W x C`` float arrays in [0, 1] (the digits), which
    go through 8-bit PIL images and come back as float arrays of the same shape."""

    def __init__(self, augment: Callable[[Image.Image, np.random.Generator], Image.Image], normalise: Callable):
        self.augment, self.normalise = augment, normalise

    def __call__(self, image, rng: np.random.Generator):
        if isinstance(image, np.ndarray):
            return self.normalise(from_pil(self.augment(to_pil(image), rng), image.shape))
        return self.normalise(self.augment(image, rng))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.augment!r}, {self.normalise!r})"


def to_pil(pixels: np.ndarray) -> Image.Image:
    """``H x W x 1`` or ``H x W x 3`` float pixels in [0, 1] (or uint8) as an "L" or "RGB" image."""
    if pixels.dtype != np.uint8:
        pixels = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]))
    return Image.fromarray(np.ascontiguousarray(pixels))


def from_pil(image: Image.Image, shape: tuple[int, ...]) -> np.ndarray:
    """An image from ``to_pil`` back as float32 pixels in [0, 1] of ``shape``."""
    return (np.asarray(image, dtype=np.float32) / 255.0).reshape(shape)
