"""The common corruptions of Hendrycks & Dietterich (2019, "Benchmarking neural network robustness
to common corruptions and perturbations"), the CIFAR-10-C benchmark, generated for any images.

The published CIFAR-10-C / CIFAR-100-C files (read by :mod:`mt_repro.data.cifar10_c`) exist only
for those two test sets; to corrupt other images (a validation split, SVHN, grey digits) we make
the corruptions here. The ``imagecorruptions`` package would do it, but version 1.1.2 no longer
imports on today's setuptools (it imports ``pkg_resources``, which setuptools has dropped), and
the benchmark's own generator (``ImageNet-C/create_c/make_cifar_c.py`` in the hendrycks/robustness
repository) needs OpenCV, scikit-image and ImageMagick through Wand. This module is our own code,
with numpy, scipy.ndimage and PIL only; from the generator it takes the facts: the 19 corruptions,
what each does, and their parameters for severities 1 to 5 (those of its CIFAR version).

``STANDARD`` are the 15 corruptions of the benchmark, in its order; ``EXTRA`` the 4 it holds out
for validation. ``corrupt(images, name, severity, seed)`` corrupts a batch of uint8 images,
N x H x W x C with C = 3 (RGB) or C = 1 (grey), and is deterministic given its arguments: every
draw comes from one ``numpy.random.Generator`` seeded with (seed, the corruption's index in
``CORRUPTIONS``, severity), never from the global numpy generator.

What each does (x an image in [0, 1]; the parameters are in the table beside each function below):

- gaussian_noise: x + N(0, c); shot_noise: Poisson(x c) / c; impulse_noise: a fraction c of the
  values (each channel of each pixel on its own) set to 0 or 1, half each; speckle_noise:
  x + x N(0, c).
- defocus_blur: a convolution with a disk of radius r whose edge is smoothed by a Gaussian;
  gaussian_blur: a Gaussian blur; glass_blur: a Gaussian blur, each pixel replaced by a random
  neighbour (one pass per iteration), blurred again; motion_blur: a one-sided motion blur
  along a random angle in [-45, 45] degrees; zoom_blur: the mean of the image and its
  centre zoomed by 1, 1.01, ... .
- snow: flakes (thresholded, zoomed Gaussian noise, motion-blurred along an angle in
  [-135, -45] degrees) added twice (once rotated by 180 degrees) over a greyed, brightened image;
  frost: a blend with a random crop of a frost photograph; fog: a diamond-square plasma fractal
  added, then rescaled; spatter: water (an embossed outline of thresholded smoothed noise, tinted
  pale turquoise, added) at severities 1-3, mud (dark brown blotches) at 4-5.
- brightness: c added to the HSV value; contrast: (x - mean) c + mean, per channel; saturate:
  the HSV saturation times a plus b; pixelate: box-downsampled by c and box-upsampled back;
  jpeg_compression: PIL's JPEG encoder at the benchmark's qualities, in memory;
  elastic_transform: a random affine warp of three control points, then a smoothed random
  displacement field.

Image sizes. The parameters are the benchmark's for 32 x 32 images, and for 32 x 32 images these
are the benchmark's own parameters. For other sizes every spatial parameter is scaled by
side / 32, where side = min(H, W): blur radii and sigmas, the glass-blur displacement (never
below one pixel), the motion-blur radius and sigma, the affine displacement of elastic_transform,
the frost photographs' rescaling; zoom_blur and pixelate are already relative to the image, and
fog's fractal has the size of the image (the next power of two above it, cropped, as the
benchmark does for ImageNet). Intensity parameters are unchanged. The random layers that are
made from per-pixel noise (snow's flakes, spatter's liquid, elastic_transform's displacement
field) are drawn on a grid whose shorter side is 32, made there exactly as the benchmark makes
them for CIFAR, and resampled to the image (the displacement also scaled to its pixels): scaling
the blur of per-pixel noise would change the noise's statistics (how many values pass spatter's
threshold, how far elastic_transform moves a pixel), not its scale. On very small images the
blurs are small: at 8 x 8 the defocus and Gaussian blurs are under a pixel and change little.

Grey images are repeated to 3 channels, corrupted, and brought back to one channel by the mean
of the three (rounded). The per-channel noises (gaussian, shot, impulse, speckle) are then
averaged over three channels and weaker than on colour images; saturate is nearly the identity:
severities 1-3 leave grey unchanged, 4-5 (which add saturation to every pixel, with hue 0: red)
darken it slightly, by 7 and 13 %.

Faithfulness. Computation is in floats in [0, 1] (the benchmark computes some corruptions on
0..255 floats: the same up to the scale), clipped and rounded to uint8 at the end (the benchmark
truncates there, which makes its images half a level darker on average); where it truncates an
intermediate to 8 bits (glass blur's first blur, snow's flakes, spatter's liquid and its distance
map) so does this. What it takes from OpenCV and scikit-image is written out here as they
compute it: OpenCV's Canny edges, 5 x 5 chamfer distance transform, histogram equalisation,
bilinear resize (of the frost photographs) and affine warp, scikit-image's HSV conversions and
salt-and-pepper noise. Checked once against the benchmark's functions run with those libraries
and fed the same random draws, the corruptions differ from them by at most one level in a few
pixels at 32 x 32 (float rounding), except where the one approximation enters (motion_blur and
snow, whose motion blur had to be ours on both sides): ImageMagick's motion blur, which the
benchmark calls through Wand, is written here as the convolution ImageMagick computes, a
one-sided line kernel of Gaussian weights exp(-i^2 / 2 sigma^2) at 2 ceil(radius) + 1 taps
i = 0, 1, ... along the angle, each tap's offset rounded to a pixel, edges extended; it is
computed in floats, without ImageMagick's 16-bit quantum and the 8-bit PNG round trip the
benchmark makes around it. Two quirks of the benchmark's code are kept, as they made the
published files: its glass blur copies neighbours where it means to swap them (see
``_glass_blur``), and its zoom factors are np.arange's floats (see ``_zoom_blur``).

Frost overlays crops of the benchmark's frost photographs, which we do not ship: give their
directory (``--frost-images DIR``; the files are frost1.png, frost2.png, frost3.png, frost4.jpg
and frost5.jpg in the ImageNet-C repository's ``ImageNet-C/create_c/`` folder; frost6.jpg lies
there too, but the generator never draws it). Without it ``generatable()`` lists the other 18.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import regular_file

STANDARD: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS: tuple[str, ...] = STANDARD + EXTRA
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

_FROST_PHOTOS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
_FROST_MAX_SIDE = 4096        # the benchmark's photos are at most 900 x 600
_REFERENCE_SIDE = 32          # the image side the parameters are written for
_CHUNK_PIXELS = 1 << 22       # pixels of a chunk of images: bounds the float copies a corruption makes
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])   # ITU-R 601 luma, as OpenCV's RGB to grey


@dataclass
class _Job:
    """What a corruption needs beyond the images and its parameters."""
    rng: np.random.Generator
    scale: float                              # side / 32
    frost: list[np.ndarray] | None = None     # the frost photographs, rescaled, uint8 RGB


_Function = Callable[[np.ndarray, Any, _Job], np.ndarray]
_TABLE: dict[str, tuple[_Function, tuple]] = {}


def _severities(name: str, *levels) -> Callable[[_Function], _Function]:
    """Register a corruption with its parameters for severities 1 to 5."""
    assert name in CORRUPTIONS and len(levels) == len(SEVERITIES), name

    def register(function: _Function) -> _Function:
        _TABLE[name] = (function, levels)
        return function
    return register


# ----------------------------------------------------------------------------------------------
# The public functions.

def corrupt(images: np.ndarray, name: str, severity: int, seed: int,
            frost_dir: str | os.PathLike | None = None) -> np.ndarray:
    """``images`` (uint8, N x H x W x C, C 1 or 3, H and W at least 4) with corruption ``name``
    at ``severity`` (1..5), the random draws seeded by ``seed``; uint8 of the same shape.
    ``frost_dir`` is the directory of the benchmark's frost photographs, needed for frost only."""
    _check_name(name)
    _check_severity(severity)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BadInput(f"corruption seed {seed!r} must be a whole number, 0 or more")
    _check_images(images)
    n, height, width, channels = images.shape
    scale = min(height, width) / _REFERENCE_SIDE
    frost = _frost_photos(frost_dir, scale, height, width) if name == "frost" else None
    job = _Job(np.random.default_rng([int(seed), CORRUPTIONS.index(name), int(severity)]), scale, frost)
    function, levels = _TABLE[name]
    out = np.empty_like(images)
    step = max(1, _CHUNK_PIXELS // (height * width))
    # One generator, drawn from chunk after chunk: as the chunks' size depends only on the
    # image size, the draws, and so the result, are fixed by the arguments.
    for start in range(0, n, step):
        chunk = images[start:start + step].astype(np.float64) / 255.0
        if channels == 1:
            chunk = np.repeat(chunk, 3, axis=3)
        result = np.clip(function(chunk, levels[severity - 1], job), 0.0, 1.0)
        if channels == 1:
            result = result.mean(axis=3, keepdims=True)
        out[start:start + step] = np.rint(result * 255.0).astype(np.uint8)
    return out


def generatable(frost_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The corruptions ``corrupt`` can make: all 19 with the frost photographs' directory (whose
    files are checked to be there), the 18 others without it."""
    if frost_dir is None:
        return tuple(name for name in CORRUPTIONS if name != "frost")
    _frost_paths(frost_dir)
    return CORRUPTIONS


# ----------------------------------------------------------------------------------------------
# Checks of the arguments: one line naming what is wrong and what is allowed.

def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise BadInput(f"unknown corruption {name!r}: the corruptions are {', '.join(CORRUPTIONS)}")


def _check_severity(severity: int) -> None:
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)) \
            or severity not in SEVERITIES:
        raise BadInput(f"corruption severity {severity!r} is not one of {', '.join(map(str, SEVERITIES))}")


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray):
        raise BadInput(f"images to corrupt must be a numpy array, not {type(images).__name__}")
    if images.dtype != np.uint8:
        raise BadInput(f"images to corrupt must be uint8 (0..255), not {images.dtype}")
    if images.ndim != 4 or images.shape[3] not in (1, 3) or min(images.shape[1:3]) < 4:
        raise BadInput(f"images to corrupt have shape {images.shape}: they must be N x H x W x C "
                       "with C 1 (grey) or 3 (RGB) and H, W at least 4")


# ----------------------------------------------------------------------------------------------
# Helpers.

def _scaled(length: float, job: _Job) -> float:
    return length * job.scale


def _grid(height: int, width: int) -> tuple[int, int]:
    """The shape of the benchmark's 32-pixel grid for an image: shorter side 32."""
    side = min(height, width)
    return (max(1, round(height * _REFERENCE_SIDE / side)), max(1, round(width * _REFERENCE_SIDE / side)))


def _resampled(layers: np.ndarray, height: int, width: int) -> np.ndarray:
    """N x h x w layers resampled to N x height x width: bilinear, averaging when it shrinks."""
    if layers.shape[1:] == (height, width):
        return layers
    out = np.empty((len(layers), height, width))
    for i, layer in enumerate(layers):
        picture = Image.fromarray(layer.astype(np.float32))   # mode F: 32-bit floats
        out[i] = np.asarray(picture.resize((width, height), Image.BILINEAR))
    return out


def _gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """A Gaussian blur over the image axes (1 and 2) of a batch, the channels kept apart."""
    sigmas = [0.0] * x.ndim
    sigmas[1] = sigmas[2] = sigma
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre of each image (N x H x W x C) zoomed by ``factor`` >= 1, bilinearly, to its
    own size: the benchmark's crop of ceil(side / factor), zoom and centred trim, per axis."""
    return np.moveaxis(_zoomed_planes(_planes(x), factor), 1, 3)


def _planes(x: np.ndarray) -> np.ndarray:
    """N x H x W x C images as N x C x H x W planes, contiguous (matmul is slow on strided ones)."""
    return np.ascontiguousarray(np.moveaxis(x, 3, 1))


def _zoomed_planes(planes: np.ndarray, factor: float) -> np.ndarray:
    """``_clipped_zoom`` of N x C x H x W planes."""
    (row_low, row_high, row_weight), (col_low, col_high, col_weight) = (
        _zoom_taps(size, factor) for size in planes.shape[2:])
    if max(planes.shape[2:]) <= 64:
        # small images: as two matrix products, which BLAS does faster than numpy gathers
        rows = np.zeros((len(row_low), planes.shape[2]))
        cols = np.zeros((len(col_low), planes.shape[3]))
        for matrix, low, high, weight in ((rows, row_low, row_high, row_weight),
                                          (cols, col_low, col_high, col_weight)):
            np.add.at(matrix, (np.arange(len(low)), low), 1.0 - weight)
            np.add.at(matrix, (np.arange(len(low)), high), weight)
        return rows @ planes @ np.ascontiguousarray(cols.T)
    # large ones: two gathers, whose cost does not grow with the side
    planes = planes[:, :, row_low] * (1.0 - row_weight)[:, None] + planes[:, :, row_high] * row_weight[:, None]
    return planes[..., col_low] * (1.0 - col_weight) + planes[..., col_high] * col_weight


def _zoom_taps(size: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axis of ``_clipped_zoom``: for each output pixel, the two input pixels it mixes and the
    weight of the second. The crop of ceil(size / factor) at the centre is stretched to
    round(crop x factor) by scipy.ndimage.zoom's linear interpolation at order 1 (the first and
    last samples kept in place), and its centre kept."""
    crop = math.ceil(size / factor)
    start = (size - crop) // 2
    stretched = round(crop * factor)
    where = np.arange(stretched) * ((crop - 1) / (stretched - 1)) if stretched > 1 else np.zeros(1)
    low = np.clip(np.floor(where).astype(np.int64), 0, max(crop - 2, 0))
    high = np.minimum(low + 1, crop - 1)
    kept = slice((stretched - size) // 2, (stretched - size) // 2 + size)
    return start + low[kept], start + high[kept], (where - low)[kept]


def _motion_blurred(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's motion blur of each image (N x H x W x C) along its angle in degrees: the
    mean of the pixels 0, 1, ... 2 ceil(radius) steps along the angle, weighted by a Gaussian of
    the step, each step's offset rounded to a pixel, the image's edge pixels repeated beyond it."""
    n, height, width = x.shape[:3]
    steps = np.arange(2 * math.ceil(radius) + 1)
    weights = np.exp(-steps ** 2 / (2.0 * sigma ** 2))
    weights /= weights.sum()
    radians = np.deg2rad(angles)
    images = np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for step, weight in zip(steps, weights):
        # ImageMagick rounds halves down: ceil(v - 0.5)
        d_col = np.ceil(step * np.cos(radians) - 0.5).astype(np.int64)
        d_row = np.ceil(step * np.sin(radians) - 0.5).astype(np.int64)
        rows = np.clip(np.arange(height)[None, :] + d_row[:, None], 0, height - 1)
        cols = np.clip(np.arange(width)[None, :] + d_col[:, None], 0, width - 1)
        out += weight * x[images, rows[:, :, None], cols[:, None, :]]
    return out


def _eight_bits(x: np.ndarray) -> np.ndarray:
    """``x`` in [0, 1] as the benchmark's uint8 conversion leaves it: truncated to 1/255 steps
    (from a hair above, so that a level computed as 199.9999999 stays 200)."""
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 1e-6) / 255.0


def _rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    red, green, blue = x[..., 0], x[..., 1], x[..., 2]
    value = x.max(axis=-1)
    delta = value - x.min(axis=-1)
    saturation = np.divide(delta, value, out=np.zeros_like(value), where=value > 0)
    safe = np.where(delta > 0, delta, 1.0)
    # where two channels tie for the maximum, blue's formula wins over green's over red's:
    # they give the same hue then
    hue = np.where(blue == value, 4.0 + (red - green) / safe,
                   np.where(green == value, 2.0 + (blue - red) / safe, (green - blue) / safe))
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    return np.stack([hue, saturation, value], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = sector.astype(np.int64) % 6
    low = value * (1.0 - saturation)
    falling = value * (1.0 - fraction * saturation)
    rising = value * (1.0 - (1.0 - fraction) * saturation)
    sectors = [sector == k for k in range(6)]
    red = np.select(sectors, [value, falling, low, low, rising, value])
    green = np.select(sectors, [rising, value, value, falling, low, low])
    blue = np.select(sectors, [low, low, rising, value, value, falling])
    return np.stack([red, green, blue], axis=-1)


def _as_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Noise.

@_severities("gaussian_noise", 0.04, 0.06, 0.08, 0.09, 0.10)
def _gaussian_noise(x: np.ndarray, std: float, job: _Job) -> np.ndarray:
    return x + job.rng.normal(0.0, std, x.shape)


@_severities("shot_noise", 500, 250, 100, 75, 50)
def _shot_noise(x: np.ndarray, photons: float, job: _Job) -> np.ndarray:
    return job.rng.poisson(x * photons) / photons


@_severities("impulse_noise", 0.01, 0.02, 0.03, 0.05, 0.07)
def _impulse_noise(x: np.ndarray, fraction: float, job: _Job) -> np.ndarray:
    # as scikit-image's salt-and-pepper noise: every channel value is drawn on its own
    hit = job.rng.random(x.shape) < fraction
    salt = job.rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(np.float64), x)


@_severities("speckle_noise", 0.06, 0.1, 0.12, 0.16, 0.2)
def _speckle_noise(x: np.ndarray, std: float, job: _Job) -> np.ndarray:
    return x + x * job.rng.normal(0.0, std, x.shape)


# ----------------------------------------------------------------------------------------------
# Blurs.

def _disk_kernel(radius: float, edge_sigma: float) -> np.ndarray:
    """The benchmark's defocus kernel: the pixels within ``radius`` of the centre of a grid at
    least 17 wide, normalised, then smoothed by a 3-tap Gaussian (5 taps above radius 8)."""
    half = max(8, math.ceil(radius))
    offsets = np.arange(-half, half + 1)
    inside = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).astype(np.float64)
    kernel = inside / inside.sum()
    taps = np.arange(-1, 2) if radius <= 8 else np.arange(-2, 3)
    smoothing = np.exp(-taps ** 2 / (2.0 * edge_sigma ** 2))
    smoothing /= smoothing.sum()
    kernel = ndimage.correlate1d(kernel, smoothing, axis=0, mode="mirror")
    kernel = ndimage.correlate1d(kernel, smoothing, axis=1, mode="mirror")
    # the grid around the disk is exactly zero: trimmed, it convolves many times faster
    rows, cols = np.flatnonzero(kernel.any(axis=1)), np.flatnonzero(kernel.any(axis=0))
    return kernel[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


@_severities("defocus_blur", (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))
def _defocus_blur(x: np.ndarray, params: tuple[float, float], job: _Job) -> np.ndarray:
    radius, edge_sigma = params
    kernel = _disk_kernel(_scaled(radius, job), _scaled(edge_sigma, job))
    return ndimage.correlate(x, kernel[None, :, :, None], mode="mirror")


@_severities("gaussian_blur", 0.4, 0.6, 0.7, 0.8, 1.0)
def _gaussian_blur(x: np.ndarray, sigma: float, job: _Job) -> np.ndarray:
    return _gaussian(x, _scaled(sigma, job))


# (blur sigma, largest displacement, iterations)
@_severities("glass_blur", (0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
def _glass_blur(x: np.ndarray, params: tuple[float, int, int], job: _Job) -> np.ndarray:
    sigma, reach, iterations = params
    sigma = _scaled(sigma, job)
    reach = max(1, round(_scaled(reach, job)))
    x = _eight_bits(_gaussian(x, sigma))
    n, height, width = x.shape[:3]
    # The benchmark's raster pass, bottom-right to top-left over the pixels away from the
    # edges, draws at each pixel an offset from [-reach, reach - 1] in each direction
    # (its randint's exclusive upper end). It means to swap the pixel with that neighbour, but
    # its tuple assignment of numpy views copies the neighbour into place and leaves the
    # neighbour as it was; and as its offsets (-1 or 0 for CIFAR) point to pixels the pass has
    # not reached, every pixel reads its neighbour as the pass found it. So here each pass is
    # one gather from the image before it, the offsets drawn in the benchmark's order. For
    # larger images (reach above 1) reading the image before the pass keeps a pixel's value
    # within ``reach`` of where it was, instead of carrying it along the pass.
    rows = np.arange(height - reach, reach, -1)
    cols = np.arange(width - reach, reach, -1)
    images = np.arange(n)[:, None, None]
    for _ in range(iterations):
        offsets = job.rng.integers(-reach, reach, size=(len(rows), len(cols), 2, n))
        d_col, d_row = offsets.transpose(2, 3, 0, 1)
        x[:, rows[:, None], cols[None, :]] = x[images, rows[:, None] + d_row, cols[None, :] + d_col]
    return _gaussian(x, sigma)


# (radius, sigma) of ImageMagick's motion blur
@_severities("motion_blur", (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
def _motion_blur(x: np.ndarray, params: tuple[float, float], job: _Job) -> np.ndarray:
    radius, sigma = params
    angles = job.rng.uniform(-45.0, 45.0, len(x))
    return _motion_blurred(x, _scaled(radius, job), _scaled(sigma, job), angles)


# The ends of the zoom factors 1, 1.01, ...: the benchmark's np.arange(1, end, 0.01), whose
# floating-point steps reach 1.06 and 1.11 but stop at 1.15, 1.20, 1.25 for the others (and
# the factors are its floats: 1.25 and 1.2500000000000002 zoom to different sizes).
@_severities("zoom_blur", 1.06, 1.11, 1.16, 1.21, 1.26)
def _zoom_blur(x: np.ndarray, end: float, job: _Job) -> np.ndarray:
    factors = np.arange(1.0, end, 0.01)
    planes = _planes(x)
    total = planes.copy()
    for factor in factors:
        total += _zoomed_planes(planes, factor)
    return np.moveaxis(total / (len(factors) + 1), 1, 3)


# ----------------------------------------------------------------------------------------------
# Weather.

# (flake noise mean, its standard deviation, zoom, threshold, motion radius, motion sigma,
#  weight of the image against its greyed, brightened self)
@_severities("snow",
             (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
             (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
def _snow(x: np.ndarray, params: tuple, job: _Job) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, weight = params
    n, height, width = x.shape[:3]
    flakes = job.rng.normal(mean, std, (n, *_grid(height, width), 1))
    flakes = _clipped_zoom(flakes, zoom)
    flakes[flakes < threshold] = 0.0
    flakes = _eight_bits(flakes)    # the benchmark blurs an 8-bit picture of them
    angles = job.rng.uniform(-135.0, -45.0, n)
    flakes = _motion_blurred(flakes, radius, sigma, angles)[..., 0]
    flakes = _resampled(flakes, height, width)[..., None]
    grey = (x @ _GREY_WEIGHTS)[..., None]
    x = weight * x + (1.0 - weight) * np.maximum(x, grey * 1.5 + 0.5)
    return x + flakes + flakes[:, ::-1, ::-1]


def _frost_paths(frost_dir: str | os.PathLike) -> list[Path]:
    directory = Path(frost_dir)
    where = ("the benchmark's frost photos are frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg "
             "in the ImageNet-C repository's ImageNet-C/create_c/ folder (github.com/hendrycks/robustness)")
    if not directory.is_dir():
        raise BadInput(f"frost photo directory {directory} is not a directory: {where}")
    missing = [name for name in _FROST_PHOTOS if not (directory / name).exists()]
    if missing:
        raise BadInput(f"frost photo directory {directory} lacks {', '.join(missing)}: {where}")
    return [directory / name for name in _FROST_PHOTOS]


def _read_photo(path: Path) -> np.ndarray:
    """A frost photograph as uint8 RGB, its size checked before its pixels are decoded."""
    regular_file(path, "frost photo")
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked next
            picture = Image.open(f)
            width, height = picture.size
            if width > _FROST_MAX_SIDE or height > _FROST_MAX_SIDE:
                raise BadInput(f"frost photo {path} is {width} x {height}, larger than "
                               f"{_FROST_MAX_SIDE} x {_FROST_MAX_SIDE}: refused")
            picture.load()
            # OpenCV, which the benchmark reads them with, drops the alpha of the PNGs: so does this
            return np.asarray(picture.convert("RGB"))
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise BadInput(f"frost photo {path} cannot be decoded ({message})") from None


def _bilinear(photo: np.ndarray, out_h: int, out_w: int, step_h: float, step_w: float) -> np.ndarray:
    """OpenCV's bilinear resize (the benchmark's): output pixel centres mapped to the input by
    the step, the nearest two rows and columns mixed, no smoothing when it shrinks."""
    def axis(count: int, size: int, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        where = np.clip((np.arange(count) + 0.5) * step - 0.5, 0.0, size - 1)
        low = np.floor(where).astype(np.int64)
        high = np.minimum(low + 1, size - 1)
        return low, high, where - low
    photo = photo.astype(np.float64)
    low, high, t = axis(out_h, photo.shape[0], step_h)
    photo = photo[low] * (1 - t)[:, None, None] + photo[high] * t[:, None, None]
    low, high, t = axis(out_w, photo.shape[1], step_w)
    photo = photo[:, low] * (1 - t)[None, :, None] + photo[:, high] * t[None, :, None]
    return np.rint(photo).astype(np.uint8)


def _frost_photos(frost_dir: str | os.PathLike | None, scale: float, height: int, width: int) -> list[np.ndarray]:
    """The frost photographs rescaled as the benchmark does for CIFAR (by 0.2, here times
    side / 32), and enlarged further where needed so that an image fits inside with room to
    move (the benchmark's crops start anywhere but at the last position)."""
    if frost_dir is None:
        raise BadInput("frost needs the benchmark's frost photos (frost1.png, frost2.png, frost3.png, frost4.jpg, "
                       "frost5.jpg from the ImageNet-C repository's ImageNet-C/create_c/ folder, "
                       "github.com/hendrycks/robustness): give their directory with --frost-images DIR")
    photos = []
    for path in _frost_paths(frost_dir):
        photo = _read_photo(path)
        factor = 0.2 * scale
        out_h, out_w = round(photo.shape[0] * factor), round(photo.shape[1] * factor)
        step_h = step_w = 1.0 / factor
        if out_h <= height:
            out_h, step_h = height + 1, photo.shape[0] / (height + 1)
        if out_w <= width:
            out_w, step_w = width + 1, photo.shape[1] / (width + 1)
        photos.append(_bilinear(photo, out_h, out_w, step_h, step_w))
    return photos


# (weight of the image, weight of the frost)
@_severities("frost", (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
def _frost(x: np.ndarray, params: tuple[float, float], job: _Job) -> np.ndarray:
    image_weight, frost_weight = params
    n, height, width = x.shape[:3]
    crops = np.empty_like(x)
    for i in range(n):
        photo = job.frost[job.rng.integers(len(job.frost))]
        top = job.rng.integers(0, photo.shape[0] - height)
        left = job.rng.integers(0, photo.shape[1] - width)
        crops[i] = photo[top:top + height, left:left + width] / 255.0
    return image_weight * x + frost_weight * crops


def _plasma(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
    """``n`` diamond-square plasma fractals of side ``size`` (a power of two), each scaled to
    [0, 1]: the map wraps around; every new point is the mean of its four neighbours plus a
    uniform draw of half-width w^2 (w starts at 100 and is divided by ``decay`` at every level)."""
    maps = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def mean_plus_noise(sums: np.ndarray) -> np.ndarray:
        return sums / 4.0 + wibble * rng.uniform(-wibble, wibble, sums.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        around = corners + np.roll(corners, -1, axis=1)
        around = around + np.roll(around, -1, axis=2)
        maps[:, half::step, half::step] = mean_plus_noise(around)
        centres, corners = maps[:, half::step, half::step], maps[:, ::step, ::step]
        # the midpoints of the squares' top edges: the two corners beside, the centres above, below
        maps[:, ::step, half::step] = mean_plus_noise(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2))
        # the midpoints of their left edges: the corners above and below, the centres beside
        maps[:, half::step, ::step] = mean_plus_noise(
            centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1))
        step //= 2
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


# (fog strength, the fractal's roughness decay)
@_severities("fog", (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))
def _fog(x: np.ndarray, params: tuple[float, float], job: _Job) -> np.ndarray:
    strength, decay = params
    n, height, width = x.shape[:3]
    size = 1 << max(1, (max(height, width) - 1).bit_length())
    fog = _plasma(job.rng, n, size, decay)[:, :height, :width, None]
    brightest = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + strength * fog) * brightest / (brightest + strength)


def _canny(picture: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV's Canny edges (3 x 3 Sobel, L1 gradient, non-maximum suppression, hysteresis) of
    N x h x w pictures of 0..255 values, each picture on its own."""
    def sobel(along: int) -> np.ndarray:
        across = 1 if along == 2 else 2
        derivative = ndimage.correlate1d(picture, [-1.0, 0.0, 1.0], axis=along, mode="nearest")
        return ndimage.correlate1d(derivative, [1.0, 2.0, 1.0], axis=across, mode="nearest")
    d_col, d_row = sobel(2), sobel(1)
    magnitude = np.abs(d_col) + np.abs(d_row)
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))   # nothing beyond the edge is a maximum

    def neighbour(row: int, col: int) -> np.ndarray:
        return padded[:, 1 + row:padded.shape[1] - 1 + row, 1 + col:padded.shape[2] - 1 + col]

    across, along = np.abs(d_col), np.abs(d_row)
    horizontal = along < across * (math.sqrt(2) - 1)    # gradient within 22.5 degrees of a row
    vertical = along > across * (math.sqrt(2) + 1)
    # the diagonal the gradient lies along: down-right when its components share a sign (a zero
    # component counts as positive)
    falling = (d_col < 0) == (d_row < 0)
    peak = np.where(horizontal, (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1)),
                    np.where(vertical, (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0)),
                             np.where(falling,
                                      (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1)),
                                      (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1)))))
    candidates = peak & (magnitude > low)
    strong = candidates & (magnitude > high)
    within_a_picture = np.zeros((3, 3, 3), bool)
    within_a_picture[1] = True
    labels, count = ndimage.label(candidates, structure=within_a_picture)
    keep = np.zeros(count + 1, bool)
    keep[labels[strong]] = True
    keep[0] = False
    return keep[labels]


# OpenCV's 5 x 5 mask for its L2 distance transform: a step, a diagonal step, a knight's move,
# in its 16-bit fixed point
_CHAMFER_UNIT = 65536.0
_STEP, _DIAGONAL, _KNIGHT = (round(weight * _CHAMFER_UNIT) for weight in (1.0, 1.4, 2.1969))


def _edge_distance(edges: np.ndarray) -> np.ndarray:
    """OpenCV's distance transform (L2, 5 x 5 mask) of N x h x w edge maps: each pixel's chamfer
    distance to the nearest edge of its own picture (infinite where it has none). Two raster
    passes, a row at a time: the rows above (below) first, then the running minimum along it."""
    n, height, width = edges.shape
    distance = np.full((n, height + 4, width + 4), np.inf)   # two rows and columns beyond each edge
    distance[:, 2:-2, 2:-2] = np.where(edges, 0.0, np.inf)
    along = np.arange(width) * float(_STEP)

    def shifted(row: int, col: int) -> np.ndarray:
        return distance[:, row, 2 + col:2 + col + width]

    for row in range(2, height + 2):
        line = np.minimum.reduce([
            shifted(row, 0), shifted(row - 2, -1) + _KNIGHT, shifted(row - 2, 1) + _KNIGHT,
            shifted(row - 1, -2) + _KNIGHT, shifted(row - 1, -1) + _DIAGONAL, shifted(row - 1, 0) + _STEP,
            shifted(row - 1, 1) + _DIAGONAL, shifted(row - 1, 2) + _KNIGHT])
        distance[:, row, 2:-2] = along + np.minimum.accumulate(line - along, axis=1)
    for row in range(height + 1, 1, -1):
        line = np.minimum.reduce([
            shifted(row, 0), shifted(row + 2, 1) + _KNIGHT, shifted(row + 2, -1) + _KNIGHT,
            shifted(row + 1, 2) + _KNIGHT, shifted(row + 1, 1) + _DIAGONAL, shifted(row + 1, 0) + _STEP,
            shifted(row + 1, -1) + _DIAGONAL, shifted(row + 1, -2) + _KNIGHT])[:, ::-1]
        distance[:, row, 2:-2] = (along + np.minimum.accumulate(line - along, axis=1))[:, ::-1]
    return distance[:, 2:-2, 2:-2] / _CHAMFER_UNIT


def _equalised(pictures: np.ndarray) -> np.ndarray:
    """OpenCV's histogram equalisation of each N x h x w picture of 0..255 integers."""
    out = np.empty_like(pictures)
    for i, picture in enumerate(pictures.astype(np.int64)):
        counts = np.bincount(picture.ravel(), minlength=256)
        first = int(np.flatnonzero(counts)[0])
        if counts[first] == picture.size:
            out[i] = picture
            continue
        below = np.cumsum(counts) - counts[first]
        table = np.clip(np.rint(below * 255.0 / (picture.size - counts[first])), 0, 255)
        out[i] = table[picture]
    return out


_EMBOSS = np.array([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
_WATER = np.array([175, 238, 238]) / 255.0   # pale turquoise
_MUD = np.array([63, 42, 20]) / 255.0        # brown


# (liquid noise mean, its standard deviation, its blur sigma, threshold, water strength or mud
#  blur sigma, mud)
@_severities("spatter",
             (0.62, 0.1, 0.7, 0.7, 0.5, False),
             (0.65, 0.1, 0.8, 0.7, 0.5, False),
             (0.65, 0.3, 1, 0.69, 0.5, False),
             (0.65, 0.1, 0.7, 0.69, 0.6, True),
             (0.65, 0.1, 0.5, 0.68, 0.6, True))
def _spatter(x: np.ndarray, params: tuple, job: _Job) -> np.ndarray:
    mean, std, sigma, threshold, last, mud = params
    n, height, width = x.shape[:3]
    liquid = _gaussian(job.rng.normal(mean, std, (n, *_grid(height, width))), sigma)
    liquid[liquid < threshold] = 0.0
    if mud:
        blotches = _gaussian((liquid > threshold).astype(np.float64), last)
        blotches[blotches < 0.8] = 0.0
        blotches = _resampled(blotches, height, width)[..., None]
        return x * (1.0 - blotches) + blotches * _MUD
    liquid = np.floor(np.clip(liquid, 0.0, 1.0) * 255.0)      # its uint8 picture
    distance = np.minimum(_edge_distance(_canny(liquid, 50, 150)), 20.0)
    distance = np.floor(ndimage.uniform_filter(distance, (1, 3, 3), mode="mirror") + 1e-6)
    distance = _equalised(distance)
    distance = np.clip(np.rint(ndimage.correlate(distance.astype(np.float64), _EMBOSS[None], mode="mirror")), 0, 255)
    distance = ndimage.uniform_filter(distance, (1, 3, 3), mode="mirror")
    water = liquid * distance
    brightest = water.max(axis=(1, 2), keepdims=True)
    water = np.divide(water, brightest, out=np.zeros_like(water), where=brightest > 0) * last
    water = _resampled(water, height, width)[..., None]
    return x + water * _WATER


# ----------------------------------------------------------------------------------------------
# Digital.

@_severities("brightness", 0.05, 0.1, 0.15, 0.2, 0.3)
def _brightness(x: np.ndarray, amount: float, job: _Job) -> np.ndarray:
    hsv = _rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + amount, 0.0, 1.0)
    return _hsv_to_rgb(hsv)


@_severities("contrast", 0.75, 0.5, 0.4, 0.3, 0.15)
def _contrast(x: np.ndarray, factor: float, job: _Job) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * factor + means


# (factor, added) of the saturation
@_severities("saturate", (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))
def _saturate(x: np.ndarray, params: tuple[float, float], job: _Job) -> np.ndarray:
    factor, added = params
    hsv = _rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor + added, 0.0, 1.0)
    return _hsv_to_rgb(hsv)


@_severities("jpeg_compression", 80, 65, 58, 50, 40)
def _jpeg_compression(x: np.ndarray, quality: int, job: _Job) -> np.ndarray:
    out = np.empty_like(x)
    for i, image in enumerate(_as_uint8(x)):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB")) / 255.0
    return out


@_severities("pixelate", 0.95, 0.9, 0.85, 0.75, 0.65)
def _pixelate(x: np.ndarray, factor: float, job: _Job) -> np.ndarray:
    height, width = x.shape[1:3]
    small = (max(1, int(width * factor)), max(1, int(height * factor)))
    out = np.empty_like(x)
    for i, image in enumerate(_as_uint8(x)):
        picture = Image.fromarray(image).resize(small, Image.BOX).resize((width, height), Image.BOX)
        out[i] = np.asarray(picture) / 255.0
    return out


def _affine_from(points: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The 2 x 3 matrix of the affine map taking three (x, y) ``points`` to ``images``."""
    design = np.hstack([points, np.ones((3, 1))])
    return np.linalg.solve(design, images).T


# Fractions of the image side: (displacement strength, its smoothing sigma, affine displacement
# of the control points).
@_severities("elastic_transform",
             (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
def _elastic_transform(x: np.ndarray, params: tuple[float, float, float], job: _Job) -> np.ndarray:
    strength, smoothing, affine = params
    n, height, width = x.shape[:3]
    side = min(height, width)
    grid = _grid(height, width)
    centre = np.array([width // 2, height // 2], np.float64)
    reach = side // 3
    control = np.array([centre + reach, [centre[0] + reach, centre[1] - reach], centre - reach])
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    out = np.empty_like(x)
    for i in range(n):
        moved = control + job.rng.uniform(-affine * side, affine * side, control.shape)
        # each output pixel reads the input where the inverse map takes it, edges mirrored
        inverse = _affine_from(moved, control)
        source_cols = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
        source_rows = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
        warped = np.stack([ndimage.map_coordinates(x[i, :, :, c], [source_rows, source_cols], order=1,
                                                   mode="mirror") for c in range(x.shape[3])], axis=-1)
        # the displacement field, made on the 32-pixel grid in its pixels, then in the image's
        fields = job.rng.uniform(-1.0, 1.0, (2, *grid))
        fields = np.stack([ndimage.gaussian_filter(field, smoothing * _REFERENCE_SIDE, mode="reflect", truncate=3.0)
                           for field in fields]) * (strength * _REFERENCE_SIDE)
        d_col, d_row = _resampled(fields, height, width) * job.scale
        out[i] = np.stack([ndimage.map_coordinates(warped[:, :, c], [rows + d_row, cols + d_col], order=1,
                                                   mode="reflect") for c in range(x.shape[3])], axis=-1)
    return out


assert set(_TABLE) == set(CORRUPTIONS), set(CORRUPTIONS) ^ set(_TABLE)   # every corruption has its function
