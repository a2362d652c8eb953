"""Image files of the by-image trees (CIFAR-10's PNGs, ImageNet's JPEGs), read within budget.

``load_rgb`` is the loader of every ``ImageFolder`` the package builds: the file must be a
regular file and the pixels its header declares are checked against ``IMAGE_PIXELS`` before
anything is decoded (a small PNG can declare a picture of billions of pixels).

``checked_folder`` also opens every image of the tree once, when the dataset is built, and
decodes it fully, so that a truncated or damaged file is found before training starts rather
than by a worker in the middle of an epoch. The result of that pass is cached (in the package's
cache directory, see ``mt_repro.data.zca.default_cache_dir``) under a hash of every file's
name, size and modification time: a tree checked once is not decoded again until a file of it
changes. What to do with damaged images is ``damaged_images``: ``"refuse"`` (one line naming
the first of them and their count) or ``"skip"`` (train without them; a warning gives the count).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import warnings
from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder

from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import atomic_write
from mt_repro.core.limits import IMAGE_PIXELS, regular_file
from mt_repro.data.zca import default_cache_dir

DAMAGED_IMAGES = ("refuse", "skip")
CHECK_VERSION = "mt-repro image check v1"   # part of every cache key: change it when the check changes
_log = logging.getLogger("mt_repro.data")


def load_rgb(path: str) -> Image.Image:
    """An image file as RGB, as torchvision's default loader, within ``IMAGE_PIXELS``."""
    regular_file(path, "image")
    try:
        with open(path, "rb") as f:
            image = _open(f)
            _check_pixels(image, path)
            return image.convert("RGB")
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, MemoryError) as exc:
        raise BadInput(f"image {path} cannot be decoded ({_one_line(exc)}): damaged or truncated?") from None


def _open(f) -> Image.Image:
    """``Image.open`` without PIL's warning about large images: their pixels are checked
    against ``IMAGE_PIXELS`` next, and refused in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(f)


def _check_pixels(image: Image.Image, path) -> None:
    width, height = image.size
    IMAGE_PIXELS.check(width * height, f"image {path} ({width} x {height})")


def damage(path: str) -> str | None:
    """Why the image at ``path`` cannot be used (one short phrase), or None if it decodes fully."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return exc.strerror or "cannot be read"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    try:
        with open(path, "rb") as f:
            image = _open(f)
            width, height = image.size
            if width * height > IMAGE_PIXELS.value:
                return f"declares {width} x {height}, more than {IMAGE_PIXELS.value:,} pixels ({IMAGE_PIXELS.variable})"
            image.load()
    except Image.DecompressionBombError:  # PIL's own bound, above IMAGE_PIXELS, refused it on opening
        return f"declares more than {IMAGE_PIXELS.value:,} pixels ({IMAGE_PIXELS.variable})"
    except MemoryError:
        return "too large to decode"
    except Exception as exc:  # PIL raises many kinds for damaged files; all mean the same here
        return _one_line(exc) or type(exc).__name__
    return None


def checked_folder(folder: Path, transform, damaged_images: str = "refuse") -> ImageFolder:
    """``ImageFolder(folder)`` with ``load_rgb``, every image of which decodes (see the module)."""
    if damaged_images not in DAMAGED_IMAGES:
        raise BadInput(f"damaged_images={damaged_images!r} is not one of {', '.join(DAMAGED_IMAGES)}")
    try:
        dataset = ImageFolder(str(folder), transform, loader=load_rgb)
    except (FileNotFoundError, OSError) as exc:
        raise BadInput(f"{folder}: {_one_line(exc)}") from None
    damaged = damaged_files(folder, [path for path, _ in dataset.samples])
    if not damaged:
        return dataset
    shown = "; ".join(f"{os.path.relpath(path, folder)} ({why})" for path, why in damaged[:3])
    if damaged_images == "refuse":
        raise BadInput(f"{folder}: {len(damaged)} damaged image(s) of {len(dataset.samples)}: {shown}"
                       f"{'; …' if len(damaged) > 3 else ''} (replace them, or train without them: "
                       "--set damaged_images=skip)")
    bad = {path for path, _ in damaged}
    dataset.skipped = [path for path, _ in damaged]
    dataset.samples = [sample for sample in dataset.samples if sample[0] not in bad]
    dataset.imgs = dataset.samples
    dataset.targets = [target for _, target in dataset.samples]
    _log.warning(f"{folder}: skipping {len(damaged)} damaged image(s) of {len(bad) + len(dataset.samples)}, "
                 f"first {shown}")
    return dataset


def damaged_files(folder: Path, paths: list[str]) -> list[tuple[str, str]]:
    """``(path, why)`` of each image of ``paths`` that does not decode, in their order; the
    verdict for a tree whose files have not changed comes from the cache."""
    key = _tree_key(folder, paths)
    cache = default_cache_dir() / "image-checks" / f"{key}.json"
    cached = _read_verdict(cache, paths)
    if cached is not None:
        return cached
    damaged = [(path, why) for path in paths if (why := damage(path)) is not None]
    _write_verdict(cache, folder, damaged)
    return damaged


def _tree_key(folder: Path, paths: list[str]) -> str:
    digest = hashlib.sha256(f"{CHECK_VERSION}\0{IMAGE_PIXELS.value}\0{Path(folder).resolve()}\0".encode())
    for path in paths:
        try:
            info = os.stat(path)
            entry = f"{path}\0{info.st_mode}\0{info.st_size}\0{info.st_mtime_ns}\n"
        except OSError:
            entry = f"{path}\0missing\n"
        digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _read_verdict(cache: Path, paths: list[str]) -> list[tuple[str, str]] | None:
    try:
        if not cache.is_file() or cache.stat().st_size > 1 << 20:
            return None
        damaged = json.loads(cache.read_text())["damaged"]
        known = set(paths)
        if all(isinstance(p, str) and p in known and isinstance(w, str) for p, w in damaged):
            return [(p, w) for p, w in damaged]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # damaged cache: check again and overwrite
    return None


def _write_verdict(cache: Path, folder: Path, damaged: list[tuple[str, str]]) -> None:
    if len(damaged) > 1000:
        return  # a tree that damaged is refused or fixed, not trained from again and again
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache, sync=False) as f:
            f.write(json.dumps({"folder": str(folder), "damaged": damaged}).encode())
    except OSError:
        pass  # a read-only or full cache directory costs time, not correctness


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
