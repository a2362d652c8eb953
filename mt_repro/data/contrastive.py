"""The augmentations of MoCo v1 and v2 (He et al. 2020; Chen et al. 2020), on PIL images.

MoCo draws two views of each image, the query's and the key's, each through the same random
augmentation. As the papers and their code give it (``main_moco.py`` of facebookresearch/moco,
``--aug-plus`` for v2), with torchvision's parameters:

====================  ========================================  ========================================
step                  v1 ("the same as InstDisc")                v2 ("aug+")
====================  ========================================  ========================================
random resized crop   scale 0.2-1, ratio 3/4-4/3                 the same
colour jitter         brightness, contrast, saturation and hue   with probability 0.8: brightness,
                      0.4 each, always                           contrast, saturation 0.4, hue 0.1
random greyscale      probability 0.2                            the same, after the jitter
Gaussian blur         none                                       with probability 0.5, σ uniform in
                                                                 [0.1, 2.0] (on 224-pixel images)
horizontal flip       probability 0.5                            the same
====================  ========================================  ========================================

v1 applies the greyscale before the jitter, as its code lists them. The crop is resized back to
the image's own size (the papers' 224 on ImageNet; 32 on CIFAR as MoCo's CIFAR demo; 8 on the
digits). The blur's σ is the papers' for 224-pixel images, scaled by side / 224 here, so that
it blurs the same fraction of an image (on 32 x 32 it is at most 0.29 pixels: MoCo's CIFAR demo
leaves the blur out, and it changes little).

Like torchvision's transforms, and in their order of draws: the crop tries 10 times for a box
of a drawn area fraction and log-uniform aspect ratio that fits, then falls back to the centre
crop of the ratio nearest the image's; the jitter draws its four factors and applies them in a
random order (brightness: blend with black; contrast: with the mean grey level; saturation:
with the greyscale image; hue: a shift of the HSV hue), through PIL's enhancers as torchvision's
PIL path does. Grey images (the digits) skip saturation, hue and greyscale, which leave them
unchanged. Every random number comes from the ``numpy.random.Generator`` passed in, never from
torch's or numpy's global generators (``mt_repro.data.sample_extras`` seeds it per run, epoch
and loader worker), so that drawing the views leaves the pipeline's own streams as they were.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

VERSIONS = ("v1", "v2")
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
BLUR_SIGMA = (0.1, 2.0)
BLUR_REFERENCE_SIDE = 224


class ContrastiveAugment:
    """One view of MoCo ``version`` of a PIL image ("L" or "RGB"), of the image's own size."""

    def __init__(self, version: str = "v2"):
        if version not in VERSIONS:
            raise ValueError(f"MoCo augmentation {version!r}: one of {', '.join(VERSIONS)}")
        self.version = version
        # (brightness, contrast, saturation, hue) and the probability the jitter is applied
        self.jitter, self.jitter_p = ((0.4, 0.4, 0.4, 0.4), 1.0) if version == "v1" else ((0.4, 0.4, 0.4, 0.1), 0.8)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        image = random_resized_crop(image, rng)
        if self.version == "v1":
            image = _random_greyscale(image, rng)
            image = colour_jitter(image, self.jitter, rng)
        else:
            if rng.random() < self.jitter_p:
                image = colour_jitter(image, self.jitter, rng)
            image = _random_greyscale(image, rng)
            if rng.random() < 0.5:
                sigma = rng.uniform(*BLUR_SIGMA) * min(image.size) / BLUR_REFERENCE_SIDE
                image = image.filter(ImageFilter.GaussianBlur(radius=sigma))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.version!r})"


def random_resized_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A box of 0.2-1 of the area and aspect 3/4-4/3, resized (bilinear) to the image's size."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            break
    else:   # the centre crop of the ratio nearest the image's
        aspect = width / height
        if aspect < CROP_RATIO[0]:
            w, h = width, round(width / CROP_RATIO[0])
        elif aspect > CROP_RATIO[1]:
            w, h = round(height * CROP_RATIO[1]), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    return image.resize((width, height), Image.BILINEAR, box=(left, top, left + w, top + h))


def colour_jitter(image: Image.Image, strengths: tuple[float, float, float, float],
                  rng: np.random.Generator) -> Image.Image:
    """torchvision's ``ColorJitter``: factors uniform in [1 - s, 1 + s] (hue: [-s, s]), applied in
    a random order."""
    brightness, contrast, saturation, hue = strengths
    order = rng.permutation(4)
    factors = [rng.uniform(max(0.0, 1 - brightness), 1 + brightness),
               rng.uniform(max(0.0, 1 - contrast), 1 + contrast),
               rng.uniform(max(0.0, 1 - saturation), 1 + saturation),
               rng.uniform(-hue, hue)]
    for index in order:
        if index == 0:
            image = ImageEnhance.Brightness(image).enhance(factors[0])
        elif index == 1:
            image = ImageEnhance.Contrast(image).enhance(factors[1])
        elif image.mode == "RGB" and index == 2:
            image = ImageEnhance.Color(image).enhance(factors[2])
        elif image.mode == "RGB" and index == 3:
            image = _shift_hue(image, factors[3])
    return image


def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
    hue, saturation, value = image.convert("HSV").split()
    shifted = ((np.asarray(hue, dtype=np.int16) + int(round(shift * 255))) % 256).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(shifted, "L"), saturation, value)).convert("RGB")


def _random_greyscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.2 and image.mode == "RGB":
        return image.convert("L").convert("RGB")
    return image
