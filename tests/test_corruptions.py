"""The common corruptions (Hendrycks & Dietterich 2019) made by ``mt_repro.data.corruptions``, and
the reader of the published CIFAR-10-C files, ``mt_repro.data.cifar10_c``, on stand-ins written
here in the published format."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from mt_repro.core.errors import BadInput
from mt_repro.data import cifar10_c, corruptions
from mt_repro.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt

# The benchmark's frost photographs that its CIFAR generator draws from (frost6.jpg it never draws).
FROST_NAMES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
# The corruptions that draw random numbers; the others are functions of the image.
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform", "spatter"}
# Where the benchmark's severity 5 is not severity 1 made stronger in every parameter: only
# "severity 5 changes the images" is claimed of them.
NOT_MONOTONE = {
    "snow": "severity 5's flakes are brighter, but its threshold is higher (0.65 against 0.6)",
    "spatter": "water at severities 1-3, mud at 4-5",
    "elastic_transform": "the affine displacement shrinks from 8% to 3% of the side as the elastic one grows",
    "saturate": "severities 1 and 2 desaturate, 3 to 5 saturate",
}


def smooth_rgb(n: int, size: int, seed: int) -> np.ndarray:
    """Natural-looking colour images: sums of a few random plane waves per channel."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    waves = np.zeros((n, size, size, 3))
    for _ in range(6):
        f_col, f_row, phase = (rng.uniform(low, high, (n, 1, 1, 3)) for low, high in ((1, 5), (1, 5), (0, 6.3)))
        waves += np.sin(2 * np.pi * (f_col * cols[None, ..., None] + f_row * rows[None, ..., None]) + phase)
    waves = 128 + 110 * waves / np.abs(waves).max(axis=(1, 2, 3), keepdims=True)
    return np.clip(np.rint(waves), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """scikit-learn's 8 x 8 digits (0..16) as grey uint8 images (0..255)."""
    return np.rint(load_digits().images[:24] * 255 / 16).astype(np.uint8)[..., None]


@pytest.fixture(scope="module")
def grey8(digits) -> np.ndarray:
    return digits[:6]


@pytest.fixture(scope="module")
def rgb32() -> np.ndarray:
    return smooth_rgb(3, 32, seed=0)


@pytest.fixture(scope="module")
def natural(digits) -> dict[str, np.ndarray]:
    """Batches to measure how much a severity changes: the digits enlarged to 32 x 32 (at 8 x 8
    the blurs, scaled to the image, are under a pixel) and colour images."""
    grey = np.stack([np.asarray(Image.fromarray(d[..., 0]).resize((32, 32), Image.BILINEAR)) for d in digits])
    return {"grey": grey[..., None], "rgb": smooth_rgb(12, 32, seed=1)}


@pytest.fixture(scope="module")
def frost_dir(tmp_path_factory):
    """Small stand-ins for the benchmark's frost photographs, under its file names: bright,
    speckled, the PNGs with an alpha channel as the benchmark's."""
    directory = tmp_path_factory.mktemp("frost")
    rng = np.random.default_rng(0)
    for i, name in enumerate(FROST_NAMES):
        height, width = 200 + 10 * i, 260 - 10 * i
        speckles = rng.random((height, width, 1)) ** 3 * 255
        photo = np.clip(np.concatenate([speckles * 0.8, speckles * 0.9, speckles], axis=2) + 40, 0, 255)
        photo = photo.astype(np.uint8)
        if name.endswith(".png"):
            photo = np.concatenate([photo, np.full((height, width, 1), 255, np.uint8)], axis=2)
        Image.fromarray(photo).save(directory / name)
    return directory


def change(images: np.ndarray, name: str, severity: int, frost_dir) -> float:
    """Mean absolute difference of the corrupted images to the clean ones."""
    corrupted = corrupt(images, name, severity, seed=3, frost_dir=frost_dir)
    return float(np.abs(corrupted.astype(np.float64) - images).mean())


# ----------------------------------------------------------------------------------------------
# The registry.

def test_the_names_are_the_benchmarks():
    assert corruptions.STANDARD == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
    assert corruptions.EXTRA == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert CORRUPTIONS == corruptions.STANDARD + corruptions.EXTRA and SEVERITIES == (1, 2, 3, 4, 5)
    assert RANDOM <= set(CORRUPTIONS) and set(NOT_MONOTONE) <= set(CORRUPTIONS)


def test_generatable_lists_frost_only_with_its_photos(frost_dir, tmp_path):
    assert corruptions.generatable() == tuple(name for name in CORRUPTIONS if name != "frost")
    assert corruptions.generatable(frost_dir) == CORRUPTIONS
    with pytest.raises(BadInput, match="lacks frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg"):
        corruptions.generatable(tmp_path)


# ----------------------------------------------------------------------------------------------
# Every corruption at every severity.

@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_and_seed(name, severity, grey8, rgb32, frost_dir):
    for images in (grey8, rgb32):
        before = images.copy()
        out = corrupt(images, name, severity, seed=7, frost_dir=frost_dir)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert np.array_equal(images, before)   # the input is left alone
        assert np.array_equal(out, corrupt(images, name, severity, seed=7, frost_dir=frost_dir))
    other_seed = corrupt(rgb32, name, severity, seed=8, frost_dir=frost_dir)
    assert np.array_equal(out, other_seed) == (name not in RANDOM)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_5_changes_more_than_severity_1(name, natural, frost_dir):
    for images in natural.values():
        strongest = change(images, name, 5, frost_dir)
        if name in NOT_MONOTONE:
            assert strongest > 0.5, (name, NOT_MONOTONE[name])
        else:
            assert strongest > change(images, name, 1, frost_dir) > 0, name


@pytest.mark.parametrize("name", ["contrast", "brightness", "gaussian_blur", "defocus_blur", "zoom_blur", "pixelate",
                                  "glass_blur", "fog"])
def test_grey_images_are_corrupted_as_their_colour_copies(name, natural, frost_dir):
    grey = natural["grey"][:4]
    colour = corrupt(np.repeat(grey, 3, axis=3), name, 3, seed=1)
    assert (colour == colour[..., :1]).all()   # the same input in each channel, the same output
    assert np.abs(corrupt(grey, name, 3, seed=1).astype(int) - colour[..., :1]).max() <= 1


def test_saturate_leaves_grey_images_alone_below_severity_4(natural):
    grey = natural["grey"]
    for severity in (1, 2, 3):
        assert np.array_equal(corrupt(grey, "saturate", severity, seed=0), grey)
    assert corrupt(grey, "saturate", 5, seed=0).mean() < grey.mean()


def test_deterministic_corruptions_treat_each_image_alone(rgb32):
    for name in sorted(set(CORRUPTIONS) - RANDOM):
        assert np.array_equal(corrupt(rgb32[1:2], name, 4, seed=0), corrupt(rgb32, name, 4, seed=0)[1:2]), name


def test_other_image_sizes(frost_dir):
    images = smooth_rgb(2, 48, seed=2)[:, :, :40]   # 48 x 40: side 40, not square
    for name in CORRUPTIONS:
        out = corrupt(images, name, 3, seed=0, frost_dir=frost_dir)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert not np.array_equal(out, images), name
    assert corrupt(np.zeros((0, 32, 32, 3), np.uint8), "fog", 1, seed=0).shape == (0, 32, 32, 3)


# ----------------------------------------------------------------------------------------------
# Frost's photographs.

def test_frost_without_its_photos_says_where_they_are(rgb32):
    with pytest.raises(BadInput) as caught:
        corrupt(rgb32, "frost", 1, seed=0)
    message = str(caught.value)
    assert "\n" not in message
    for needed in ("frost1.png", "frost5.jpg", "ImageNet-C/create_c/", "--frost-images DIR"):
        assert needed in message


def test_frost_photos_are_checked(frost_dir, tmp_path, rgb32):
    for name in FROST_NAMES:
        os.symlink(frost_dir / name, tmp_path / name)
    (tmp_path / "frost2.png").unlink()
    with pytest.raises(BadInput, match="lacks frost2.png"):
        corrupt(rgb32, "frost", 1, seed=0, frost_dir=tmp_path)
    (tmp_path / "frost2.png").mkdir()
    with pytest.raises(BadInput, match="frost2.png is a directory"):
        corrupt(rgb32, "frost", 1, seed=0, frost_dir=tmp_path)
    (tmp_path / "frost2.png").rmdir()
    Image.new("L", (5000, 10)).save(tmp_path / "frost2.png")   # refused from its header
    with pytest.raises(BadInput, match=r"frost2.png is 5000 x 10, larger than 4096 x 4096"):
        corrupt(rgb32, "frost", 1, seed=0, frost_dir=tmp_path)
    (tmp_path / "frost2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(BadInput, match="frost2.png cannot be decoded"):
        corrupt(rgb32, "frost", 1, seed=0, frost_dir=tmp_path)
    with pytest.raises(BadInput, match="is not a directory"):
        corrupt(rgb32, "frost", 1, seed=0, frost_dir=tmp_path / "frost1.png")


# ----------------------------------------------------------------------------------------------
# Bad arguments: one line, naming what is wrong and what is allowed.

def refused(*args, **kwargs) -> str:
    with pytest.raises(BadInput) as caught:
        corrupt(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_bad_arguments(rgb32):
    message = refused(rgb32, "fogg", 1, seed=0)
    assert "unknown corruption 'fogg'" in message and all(name in message for name in CORRUPTIONS)
    for severity in (0, 6, 2.0, True):
        assert "is not one of 1, 2, 3, 4, 5" in refused(rgb32, "fog", severity, seed=0)
    assert "must be uint8" in refused(rgb32.astype(np.float32), "fog", 1, seed=0)
    assert "N x H x W x C" in refused(rgb32[0], "fog", 1, seed=0)
    assert "N x H x W x C" in refused(rgb32[..., :2], "fog", 1, seed=0)
    assert "at least 4" in refused(rgb32[:, :3], "fog", 1, seed=0)
    assert "numpy array" in refused(rgb32.tolist(), "fog", 1, seed=0)
    assert "0 or more" in refused(rgb32, "fog", 1, seed=-1)


# ----------------------------------------------------------------------------------------------
# The reader of the published files.

N = 4   # test images per severity in the stand-ins


def publish(directory, names=("fog",), labels=None, n=N, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Stand-ins of the published files: (images of each severity, test labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (5, n, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, n) if labels is None else labels
    for name in names:
        np.save(directory / f"{name}.npy", images.reshape(5 * n, 32, 32, 3))
    np.save(directory / "labels.npy", np.tile(test_labels, 5).astype(np.uint8))
    return images, test_labels


def unreadable(directory, name="fog", **kwargs) -> str:
    with pytest.raises(BadInput) as caught:
        cifar10_c.read_corruption(directory, name, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_published_directory_round_trips(tmp_path):
    images, labels = publish(tmp_path, names=("jpeg_compression", "fog", "gaussian_noise"))
    assert cifar10_c.corruptions_in(tmp_path) == ("gaussian_noise", "fog", "jpeg_compression")
    got, got_labels = cifar10_c.read_corruption(tmp_path, "fog", expected_labels=labels)
    assert got.shape == (5, N, 32, 32, 3) and got.dtype == np.uint8 and np.array_equal(got, images)
    assert got_labels.dtype == np.int64 and np.array_equal(got_labels, labels)


def test_directories_without_the_files(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        cifar10_c.corruptions_in(tmp_path / "missing")
    with pytest.raises(BadInput, match="none of the published"):
        cifar10_c.corruptions_in(tmp_path)
    publish(tmp_path, names=("fog", "snow"))
    message = unreadable(tmp_path, "frost")
    assert "has no frost.npy" in message and "snow.npy, fog.npy, labels.npy" in message
    (tmp_path / "labels.npy").unlink()
    assert "has no labels.npy" in unreadable(tmp_path)


def test_images_of_the_wrong_shape_or_type(tmp_path):
    publish(tmp_path)
    for shape in ((19, 32, 32, 3), (20, 32, 32, 1), (20, 32, 32), (0, 32, 32, 3)):
        np.save(tmp_path / "fog.npy", np.zeros(shape, np.uint8))
        message = unreadable(tmp_path)
        assert f"fog.npy has shape {shape}" in message and "5 severities" in message
    np.save(tmp_path / "fog.npy", np.zeros((20, 32, 32, 3), np.float32))
    assert "fog.npy holds float32 values: the published images are uint8" in unreadable(tmp_path)
    np.save(tmp_path / "fog.npy", np.asfortranarray(np.zeros((20, 32, 32, 3), np.uint8)))
    assert "fog.npy is in Fortran order" in unreadable(tmp_path)
    (tmp_path / "fog.npy").write_bytes(b"not an array at all")
    assert "fog.npy is not a readable .npy file" in unreadable(tmp_path)


def test_labels_that_do_not_fit(tmp_path):
    images, labels = publish(tmp_path)
    np.save(tmp_path / "labels.npy", np.tile(labels, 5)[:-1])
    assert "labels.npy holds 19 labels but" in unreadable(tmp_path)
    np.save(tmp_path / "labels.npy", np.tile(labels, 5).reshape(4, 5))
    assert "labels.npy has shape (4, 5)" in unreadable(tmp_path)
    shuffled = np.tile(labels, 5)
    shuffled[2 * N + 1] = (shuffled[2 * N + 1] + 1) % 10
    np.save(tmp_path / "labels.npy", shuffled)
    message = unreadable(tmp_path)
    assert "labels.npy is not the test labels repeated for the 5 severities" in message
    assert "severity 3's differ from severity 1's at 1 of 4 images (first at test image 1)" in message
    np.save(tmp_path / "labels.npy", np.tile(labels, 5) + 10)
    assert "labels.npy holds label" in unreadable(tmp_path) and "0..9" in unreadable(tmp_path)
    cifar10_c.read_corruption(tmp_path, "fog", num_classes=100)   # CIFAR-100-C's classes
    np.save(tmp_path / "labels.npy", np.tile(labels, 5).astype(np.float64))
    assert "labels.npy holds float64 values, not integer labels" in unreadable(tmp_path)
    np.save(tmp_path / "labels.npy", np.tile(labels, 5))
    expected = labels.copy()
    expected[[1, 3]] = (expected[[1, 3]] + 1) % 10
    message = unreadable(tmp_path, expected_labels=expected)
    assert "labels.npy differs from the test set's labels at 2 of 4 images (first at test image 1)" in message
    assert "fog.npy holds 4 images per severity, the test set 5" in unreadable(tmp_path, expected_labels=range(5))


UNPICKLED: list[str] = []


def record_unpickling() -> None:
    UNPICKLED.append("unpickled")


class Trap:
    """Unpickling it records that it happened."""

    def __reduce__(self):
        return (record_unpickling, ())


def test_pickled_objects_are_refused_unread(tmp_path):
    publish(tmp_path)
    np.save(tmp_path / "fog.npy", np.array([Trap()] * 20, dtype=object), allow_pickle=True)
    pickle.loads(pickle.dumps(Trap()))   # the trap works
    assert UNPICKLED == ["unpickled"]
    assert "fog.npy holds Python objects (pickled), not numbers: refused unread" in unreadable(tmp_path)
    assert UNPICKLED == ["unpickled"]


def test_declared_sizes_are_checked_before_allocating(tmp_path):
    publish(tmp_path)
    with open(tmp_path / "fog.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (5 * 10 ** 8, 32, 32, 3)})
        f.write(b"\0" * 200)
    assert (tmp_path / "fog.npy").stat().st_size < 400
    message = unreadable(tmp_path)
    assert "fog.npy" in message and "more than the limit" in message and "MT_REPRO_LIMIT_MEMBER_BYTES" in message
    images = np.zeros((20, 32, 32, 3), np.uint8)
    np.save(tmp_path / "fog.npy", images)
    whole = (tmp_path / "fog.npy").read_bytes()
    (tmp_path / "fog.npy").write_bytes(whole[:-1])
    assert "fog.npy declares 61,440 bytes of data" in unreadable(tmp_path) and "truncated" in unreadable(tmp_path)
    (tmp_path / "fog.npy").write_bytes(whole + b"\0")
    assert "padded" in unreadable(tmp_path)


def test_only_regular_files_are_read(tmp_path):
    publish(tmp_path)
    (tmp_path / "fog.npy").unlink()
    (tmp_path / "fog.npy").symlink_to("/dev/zero")
    assert "fog.npy is a character device, not a regular file" in unreadable(tmp_path)
    (tmp_path / "fog.npy").unlink()
    (tmp_path / "fog.npy").mkdir()
    assert "fog.npy is a directory, not a regular file" in unreadable(tmp_path)
    (tmp_path / "labels.npy").unlink()
    os.mkfifo(tmp_path / "labels.npy")
    np.save(tmp_path / "snow.npy", np.zeros((20, 32, 32, 3), np.uint8))
    assert "labels.npy is a FIFO" in unreadable(tmp_path, "snow")   # refused, not waited on
