"""USB's minibatch streams, regenerated (``mt_repro.data.sampling.EpochSeededBatchSampler``).

``tests/golden/usb_sampler.json`` holds index streams recorded by running USB's own
``DistributedSampler`` (``semilearn/datasets/samplers/sampler.py``, at the commit it names) for
the dataset sizes and per-epoch sample counts of the classic-CV protocol, and a few small ones.
Every stream is compared through its sha256, so a single differing position fails.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mt_repro.config import TrainConfig
from mt_repro.config.protocol import protocol_config
from mt_repro.core.errors import BadInput
from mt_repro.data.sampling import EpochSeededBatchSampler, epoch_seeded_stream

GOLDEN = json.loads((Path(__file__).parent / "golden" / "usb_sampler.json").read_text())


def summary(indices) -> dict:
    indices = np.asarray(indices, dtype="<i8")
    return {"n": len(indices), "sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
            "head": indices[:8].tolist(), "tail": indices[-8:].tolist()}


@pytest.mark.parametrize("key", sorted(GOLDEN["cases"]))
def test_a_stream_equals_usbs(key):
    count, length, epoch = map(int, key.split("/"))
    assert summary(epoch_seeded_stream(count, length, epoch)) == GOLDEN["cases"][key]


def test_golden_covers_the_usb_protocol():
    assert GOLDEN["usb_repository"] == "microsoft/Semi-supervised-learning" and len(GOLDEN["usb_commit"]) == 40
    steps = protocol_config("usb", "cifar10", "fixmatch", 40, 0).sampler_epoch_steps
    # CIFAR-10's labeled sets of 40 / 250 / 4000 at 64 places; its 50,000 images at FixMatch's 448
    # unlabeled places and Mean Teacher's 64; each at the first, second and last of 1024 epochs
    wanted = {f"{n}/{steps * places}/{epoch}" for n, places in [(40, 64), (250, 64), (4000, 64), (50000, 448),
                                                                 (50000, 64)] for epoch in (0, 1, 1023)}
    assert wanted <= set(GOLDEN["cases"])


def test_the_minibatches_take_usbs_positions_in_each_stream():
    """Labeled part: USB's stream of 40 at 64 places, epoch 1, through the labeled indices."""
    labeled = [1000 + 3 * i for i in range(40)]
    unlabeled = list(range(200))
    sampler = EpochSeededBatchSampler([(unlabeled, 448), (labeled, 64)], steps_per_epoch=1024)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 1024 and {len(b) for b in batches} == {448 + 64}
    labeled_positions = [(i - 1000) // 3 for batch in batches for i in batch[448:]]
    assert summary(labeled_positions) == GOLDEN["cases"]["40/65536/1"]
    assert np.array_equal(np.concatenate([b[:448] for b in batches]), epoch_seeded_stream(200, 448 * 1024, 1))


def test_a_stream_spans_passes_and_a_minibatch_may_hold_an_image_twice():
    sampler = EpochSeededBatchSampler([(range(10), 4)], steps_per_epoch=30)
    stream = [i for batch in sampler for i in batch]
    for start in range(0, 120, 10):   # 12 whole passes, the second beginning inside a minibatch
        assert sorted(stream[start:start + 10]) == list(range(10))
    few = EpochSeededBatchSampler([(range(3), 4)], steps_per_epoch=5)
    assert all(len(set(batch)) < 4 for batch in few)


def test_an_epoch_gives_the_same_minibatches_whatever_the_global_generators_and_the_next_gives_others():
    sampler = EpochSeededBatchSampler([(range(50, 90), 6), (range(7), 2)], steps_per_epoch=20)
    sampler.set_epoch(5)
    first = list(sampler)
    np.random.seed(1), torch.manual_seed(1)
    np.random.rand(17), torch.rand(17)
    assert list(sampler) == first
    sampler.set_epoch(6)
    assert list(sampler) != first
    assert all(set(b[:6]) <= set(range(50, 90)) and set(b[6:]) <= set(range(7)) for b in first)


@pytest.mark.parametrize("streams, steps, message", [
    ([(range(10), 4)], 0, "an epoch needs at least one step, got 0"),
    ([(range(10), 4), ([], 2)], 3, "0 samples cannot fill 2 places per minibatch"),
    ([(range(10), 0)], 3, "10 samples cannot fill 0 places per minibatch"),
])
def test_impossible_streams_are_refused(streams, steps, message):
    with pytest.raises(ValueError, match=message):
        EpochSeededBatchSampler(streams, steps)


def test_a_non_positive_epoch_length_is_refused_with_the_setting_named():
    with pytest.raises(BadInput, match="bad config: sampler_epoch_steps must be positive"):
        TrainConfig(sampler_epoch_steps=0).validate()
