"""The strong augmentation (mt_repro.data.randaugment): each operation on a tiny image does what
it says, RandAugment draws only from the generator it is given, reaches every operation and
keeps the image's size and mode, and the strong view of the digits and of CIFAR-style images."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from mt_repro.data import randaugment as ra

OP_NAMES = {"AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize", "Rotate",
            "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY"}


def rgb(seed: int = 0, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def grey(values) -> Image.Image:
    return Image.fromarray(np.asarray(values, dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def apply(name: str, image: Image.Image, magnitude: float) -> Image.Image:
    return ra.OPS_BY_NAME[name].apply(image, magnitude)


# --- the operations ---------------------------------------------------------------------------------
def test_the_operations_are_fixmatchs_fourteen_with_usbs_ranges():
    assert {op.name for op in ra.OPS} == OP_NAMES and len(ra.OPS) == 14
    ranges = {op.name: (op.low, op.high) for op in ra.OPS}
    assert ranges["Rotate"] == (-30.0, 30.0) and ranges["Posterize"] == (4.0, 8.0)
    assert ranges["Solarize"] == (0.0, 256.0) and ranges["ShearX"] == ranges["TranslateY"] == (-0.3, 0.3)
    assert ranges["Brightness"] == ranges["Sharpness"] == (0.05, 0.95)


def test_identity_returns_the_image_unchanged():
    image = rgb()
    assert np.array_equal(pixels(apply("Identity", image, 0.7)), pixels(image))


def test_solarize_inverts_the_values_at_or_above_the_threshold():
    image = grey([[0, 99, 100, 101, 255]])
    assert pixels(apply("Solarize", image, 100)).tolist() == [[0, 99, 155, 154, 0]]
    assert np.array_equal(pixels(apply("Solarize", image, 256)), pixels(image))  # the range's end: none


@pytest.mark.parametrize("bits", [4, 5, 7])
def test_posterize_keeps_the_top_bits(bits):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = pixels(apply("Posterize", grey(values), bits + 0.9))  # the int of the draw
    assert np.array_equal(out, values & (0xFF << (8 - bits) & 0xFF))


def test_translate_and_shear_move_pixels_as_their_affine_maps_say():
    values = np.arange(64, dtype=np.uint8).reshape(8, 8) + 1
    image = grey(values)
    shifted = pixels(apply("TranslateX", image, 0.25))  # 2 of 8 columns: out[y, x] = in[y, x + 2]
    assert np.array_equal(shifted[:, :6], values[:, 2:]) and (shifted[:, 6:] == 0).all()
    down = pixels(apply("TranslateY", image, -0.25))  # out[y, x] = in[y - 2, x]
    assert np.array_equal(down[2:], values[:6]) and (down[:2] == 0).all()
    sheared = pixels(apply("ShearX", image, 0.25))  # out[y, x] = in[y, x + y/4], nearest
    assert np.array_equal(sheared[0], values[0]) and sheared[4, 0] == values[4, 1]


def test_rotate_by_ninety_degrees_turns_a_square_image_counter_clockwise():
    values = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(pixels(apply("Rotate", grey(values), 90)), np.rot90(values))
    assert np.array_equal(pixels(apply("Rotate", grey(values), 0)), values)


def test_the_enhancements_blend_towards_their_degenerate_image():
    image = rgb()
    darker = pixels(apply("Brightness", image, 0.5))
    assert np.abs(darker - pixels(image) * 0.5).max() <= 1  # blend with black
    flat = pixels(apply("Contrast", image, 0.05))
    assert flat.std() < 0.1 * pixels(image).std()  # nearly the mean grey
    greyish = pixels(apply("Color", image, 0.05))
    assert np.abs(greyish - greyish.mean(axis=2, keepdims=True)).mean() < 0.2 * np.abs(
        pixels(image) - pixels(image).mean(axis=2, keepdims=True)).mean()
    assert np.array_equal(pixels(apply("Color", grey([[3, 200]]), 0.05)), [[3, 200]])  # grey: no colour
    blurred = pixels(apply("Sharpness", image, 0.05))
    assert np.abs(np.diff(blurred[1:-1, 1:-1], axis=1)).mean() < np.abs(np.diff(pixels(image)[1:-1, 1:-1], axis=1)).mean()


def test_autocontrast_and_equalize_stretch_the_values():
    image = grey([[100, 110], [120, 130]])
    assert pixels(apply("AutoContrast", image, 0.5)).tolist() == [[0, 85], [170, 255]]
    narrow = grey(np.repeat(np.arange(100, 132, dtype=np.uint8), 32).reshape(32, 32))  # 32 values, 32 each
    equalized = pixels(apply("Equalize", narrow, 0.5))
    assert equalized.max() - equalized.min() > 200 and (np.diff(equalized.ravel()) >= 0).all()  # order kept


@pytest.mark.parametrize("name", sorted(OP_NAMES))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_every_operation_keeps_the_size_and_mode(name, mode):
    image = rgb(1).convert(mode) if mode == "L" else rgb(1)
    small = image.resize((8, 8))
    op = ra.OPS_BY_NAME[name]
    for picture in (image, small):
        for magnitude in (op.low, (op.low + op.high) / 2, op.high - 1e-9):
            out = op.apply(picture, magnitude)
            assert out.size == picture.size and out.mode == picture.mode


# --- Cutout --------------------------------------------------------------------------------------------
def test_cutout_fills_a_square_of_the_given_side_and_clips_it_at_the_border():
    image = Image.new("RGB", (32, 32), (0, 0, 0))
    out = pixels(ra.cutout(image, 10, 16, 16))
    filled = (out == ra.CUTOUT_FILL).all(axis=2)
    assert filled.sum() == 100 and filled[11:21, 11:21].all()
    corner = (pixels(ra.cutout(image, 10, 0, 0)) == ra.CUTOUT_FILL).all(axis=2)
    assert corner.sum() == 25 and corner[:5, :5].all()  # the quarter of the square inside
    assert np.array_equal(pixels(ra.cutout(image, 0, 5, 5)), pixels(image))
    assert pixels(image).sum() == 0  # a copy: the input is left alone
    grey_out = pixels(ra.cutout(image.convert("L"), 4, 4, 4))
    assert (grey_out == 123).sum() == 16  # FixMatch's grey as a grey level


def test_randaugment_cutout_is_at_most_half_the_side():
    rng = np.random.default_rng(0)
    black = Image.new("RGB", (32, 32), (0, 0, 0))
    only_cutout = ra.RandAugment(n_ops=0)
    areas = [int((pixels(only_cutout(black, rng)) == ra.CUTOUT_FILL).all(axis=2).sum()) for _ in range(300)]
    assert max(areas) <= 16 * 16 and max(areas) > 12 * 12 and min(areas) == 0


# --- RandAugment ---------------------------------------------------------------------------------------
def test_randaugment_is_a_function_of_its_generator_and_leaves_the_global_ones_alone():
    image = rgb(2)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    augment = ra.RandAugment()
    first = [pixels(augment(image, rng)) for rng in [np.random.default_rng(7)] for _ in range(5)]
    again = [pixels(augment(image, rng)) for rng in [np.random.default_rng(7)] for _ in range(5)]
    other = [pixels(augment(image, rng)) for rng in [np.random.default_rng(8)] for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_randaugment_reaches_every_operation_with_magnitudes_across_its_range(monkeypatch):
    seen: dict[str, list[float]] = {}

    def recording(op):
        def apply(image, magnitude):
            seen.setdefault(op.name, []).append(magnitude)
            return op.apply(image, magnitude)
        return ra.Op(op.name, apply, op.low, op.high)

    augment = ra.RandAugment(n_ops=2, ops=tuple(recording(op) for op in ra.OPS))
    rng = np.random.default_rng(0)
    image = rgb(3, size=8)
    for _ in range(400):
        out = augment(image, rng)
        assert out.size == image.size and out.mode == image.mode
    assert set(seen) == OP_NAMES and sum(map(len, seen.values())) == 800  # 2 operations per image
    for op in ra.OPS:
        values = seen[op.name]
        assert op.low <= min(values) and max(values) < op.high
        assert min(values) < op.low + 0.3 * (op.high - op.low) and max(values) > op.high - 0.3 * (op.high - op.low)


def test_the_strong_augment_of_a_grey_digit_keeps_its_shape_and_range():
    digit = np.random.default_rng(4).integers(0, 17, (8, 8, 1)).astype(np.float32) / 16
    view = ra.StrongView(ra.StrongAugment(max_translation=1, flip=False), normalise=lambda x: x)
    rng = np.random.default_rng(0)
    outputs = [view(digit, rng) for _ in range(50)]
    assert all(o.shape == (8, 8, 1) and o.dtype == np.float32 and 0 <= o.min() <= o.max() <= 1 for o in outputs)
    assert len({o.tobytes() for o in outputs}) > 40  # a different strong view nearly every time
    same = ra.to_pil(digit)
    assert same.mode == "L" and np.abs(ra.from_pil(same, digit.shape) - digit).max() <= 0.5 / 255 + 1e-6


def test_the_strong_augment_translates_and_flips_from_the_generator_before_randaugment():
    image = rgb(5)
    identity_only = ra.RandAugment(n_ops=1, ops=(ra.OPS_BY_NAME["Identity"],), max_cutout=0.0)
    strong = ra.StrongAugment(max_translation=4, flip=True, randaugment=identity_only)
    rng, replay = np.random.default_rng(9), np.random.default_rng(9)
    out = pixels(strong(image, rng))
    dx, dy = replay.integers(-4, 5, size=2)
    from mt_repro.data.transforms import translate_with_reflect
    expected = translate_with_reflect(np.asarray(image), int(dx), int(dy))
    if replay.random() < 0.5:
        expected = expected[:, ::-1]
    assert np.array_equal(out, expected)
