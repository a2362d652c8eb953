"""MoCo's own augmentation (v1, v2; mt_repro.data.contrastive): its views, their generators,
how they reach the method, and a MoCo run on them that resumes bit for bit."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from mt_repro.core.errors import BadInput
from mt_repro.data.contrastive import ContrastiveAugment, colour_jitter, random_resized_crop
from mt_repro.data.randaugment import StrongView, to_pil
from mt_repro.data.sample_extras import CONTRASTIVE_VIEW_STREAM, SampleExtras
from mt_repro.methods import registry


def _rgb(seed=0, size=(32, 32)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_view_is_a_function_of_its_generator_keeps_size_and_mode_and_leaves_global_streams(version, mode):
    image = _rgb().convert(mode)
    augment = ContrastiveAugment(version)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    a = augment(image, np.random.default_rng(1))
    b = augment(image, np.random.default_rng(1))
    c = augment(image, np.random.default_rng(2))
    assert a.size == image.size and a.mode == mode
    assert np.array_equal(np.asarray(a), np.asarray(b)) and not np.array_equal(np.asarray(a), np.asarray(c))
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_the_crop_falls_back_to_the_centre_of_the_nearest_ratio():
    # 10 x 100: no box of a fifth of the area with aspect 3/4..4/3 fits, so every try fails
    pixels = np.arange(1000, dtype=np.uint8).reshape(100, 10)
    image = Image.fromarray(pixels)
    out = random_resized_crop(image, np.random.default_rng(0))
    expected = image.resize((10, 100), Image.BILINEAR, box=(0, 43, 10, 56))   # w 10, h round(10 / 0.75)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_the_crop_covers_the_drawn_fraction_of_the_area():
    # a white square in the middle of black: the white share of a crop resized to the image
    # is at most that of the image divided by the crop's area fraction (>= 0.2)
    pixels = np.zeros((40, 40), np.uint8)
    pixels[18:22, 18:22] = 255
    image = Image.fromarray(pixels)
    shares = [np.asarray(random_resized_crop(image, np.random.default_rng(s))).mean() / 255 for s in range(200)]
    assert max(shares) <= 16 / 1600 / 0.2 * 1.3 and min(shares) < 0.005 and len(set(shares)) > 20


def test_the_jitter_leaves_grey_images_grey_and_changes_colour_images():
    grey = _rgb().convert("L")
    assert colour_jitter(grey, (0.0, 0.0, 0.4, 0.4), np.random.default_rng(0)).tobytes() == grey.tobytes()
    colour = _rgb()
    assert colour_jitter(colour, (0.0, 0.0, 0.0, 0.1), np.random.default_rng(0)).tobytes() != colour.tobytes()


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="v1, v2"):
        ContrastiveAugment("v3")


class _Images(torch.utils.data.Dataset):
    def __init__(self, transform=None):
        self.images = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        return (image if self.transform is None else self.transform(image)), 0


def test_sample_extras_give_two_views_from_their_own_stream():
    view = StrongView(ContrastiveAugment("v2"), lambda a: torch.from_numpy(a).permute(2, 0, 1))
    train = _Images(lambda a: (a, a))
    extras = SampleExtras(train, ["moco_v2_views"], raw=_Images(), contrastive_view=view, seed=3)
    views, _, got = extras[0]
    pair = got["moco_v2_views"]
    assert pair.shape == (2, 1, 8, 8) and not torch.equal(pair[0], pair[1])
    # the views are those of the stream's own generator: the strong view's would differ
    rng = np.random.default_rng([CONTRASTIVE_VIEW_STREAM, 3, 0, 0])
    expected = view(_Images().images[0], rng)
    assert torch.equal(pair[0], expected)
    both = SampleExtras(train, ["strong_input", "moco_v2_views"], raw=_Images(), contrastive_view=view,
                        strong_view=view, seed=3)[0][2]
    assert torch.equal(both["moco_v2_views"], pair)   # a strong view beside them changes nothing


def _moco_digits(tmp_path, views, **changes):
    from test_moco import digits_moco_config

    config = digits_moco_config(tmp_path, **changes)
    return config.replace(method_options=config.method_options + f",views={views}").validate()


def test_moco_asks_for_its_views_and_fast_mode_loads_them_per_image(tmp_path):
    from mt_repro.data.device_loader import DeviceBatches
    from mt_repro.data.loaders import training_data

    config = _moco_digits(tmp_path, "v1")
    extras = registry.method_class("moco").extras_for(config)
    assert "moco_v1_views" in extras
    assert registry.method_class("moco").extras_for(_moco_digits(tmp_path, "pipeline")) == ()
    fast = config.replace(mode="fast")
    registry.check_config(fast)   # no longer refused: its views are made image by image
    data = training_data(fast, extras=extras)
    assert not isinstance(data.train_loader, DeviceBatches)
    assert next(iter(data.train_loader))[2]["moco_v1_views"].shape[1] == 2   # query and key
    with pytest.raises(BadInput, match="views must be one of pipeline, v1, v2"):
        registry.method_options("moco", "views=v3")


def test_an_epochs_views_are_the_same_in_a_resumed_run():
    """A resumed run starts its epoch in a fresh process: the views it draws are those the
    straight run drew, whatever that one had drawn before (its earlier epochs)."""
    view = StrongView(ContrastiveAugment("v1"), lambda a: torch.from_numpy(a).permute(2, 0, 1))
    straight = SampleExtras(_Images(lambda a: (a, a)), ["moco_v1_views"], raw=_Images(), contrastive_view=view, seed=5)
    for epoch in range(3):
        straight.set_epoch(epoch)
        drawn = [straight[i][2]["moco_v1_views"] for i in range(6)]
    resumed = SampleExtras(_Images(lambda a: (a, a)), ["moco_v1_views"], raw=_Images(), contrastive_view=view, seed=5)
    resumed.set_epoch(2)
    assert all(torch.equal(resumed[i][2]["moco_v1_views"], drawn[i]) for i in range(6))


def test_moco_takes_its_query_and_key_from_its_views(tmp_path):
    from mt_repro.core.types import Batch, StepContext
    from mt_repro.models.registry import create_model

    config = _moco_digits(tmp_path, "v2")
    torch.manual_seed(0)
    method = registry.create_method(config, create_model("digits_convnet", 10), create_model("digits_convnet", 10))
    seen = []
    for network in (method.student, method.teacher):
        forward = network.forward
        network.forward = lambda x, forward=forward: (seen.append(x), forward(x))[1]
    views = torch.rand(64, 2, 1, 8, 8)
    pipeline = torch.zeros(64, 1, 8, 8)
    result = method.losses(Batch(pipeline, pipeline, torch.full((64,), -1), {"moco_v2_views": views}),
                           StepContext(epoch=0, global_step=0, consistency_weight=1.0))
    assert torch.isfinite(result.loss)
    student_seen = torch.cat(seen[:4])    # bn_splits = 4: the query encoder's four groups, in order
    assert torch.equal(student_seen, views[:, 0])
    keys_seen = torch.cat(seen[4:])       # the key encoder's groups, in a shuffled order
    assert sorted(map(tuple, keys_seen.flatten(1).tolist())) == sorted(map(tuple, views[:, 1].flatten(1).tolist()))


def test_to_pil_round_trip_keeps_grey_digits():   # the views of the digits go through 8-bit grey PIL images
    pixels = np.random.default_rng(0).random((8, 8, 1), dtype=np.float32)
    assert to_pil(pixels).mode == "L"
