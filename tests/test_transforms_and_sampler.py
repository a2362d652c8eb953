import numpy as np
import pytest
import torch
from PIL import Image

from mt_repro.data.sampling import TwoStreamBatchSampler
from mt_repro.data import cifar10
from mt_repro.data.transforms import RandomTranslateWithReflect, TransformTwice, translate_with_reflect


def _reflect(i: int, n: int) -> int:
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


@pytest.mark.parametrize("dx,dy", [(0, 0), (4, -4), (-3, 2), (1, 0), (0, -1)])
def test_translation_fills_the_border_with_a_mirror_image(dx, dy):
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, size=(7, 9, 3)).astype(np.uint8)
    out = translate_with_reflect(pixels, dx, dy)
    assert out.shape == pixels.shape
    for y in range(7):
        for x in range(9):
            assert np.array_equal(out[y, x], pixels[_reflect(y - dy, 7), _reflect(x - dx, 9)])


def test_translation_draws_x_then_y_from_numpy():
    image = Image.fromarray(np.random.RandomState(1).randint(0, 256, (32, 32, 3)).astype(np.uint8))
    np.random.seed(3)
    out = np.asarray(RandomTranslateWithReflect(4)(image))
    np.random.seed(3)
    dx, dy = np.random.randint(-4, 5, size=2)
    assert np.array_equal(out, translate_with_reflect(np.asarray(image), int(dx), int(dy)))


def test_the_two_views_are_drawn_independently_in_order():
    image = Image.fromarray(np.random.RandomState(2).randint(0, 256, (32, 32, 3)).astype(np.uint8))
    transform = cifar10.train_transform()
    assert isinstance(transform, TransformTwice)
    np.random.seed(0), torch.manual_seed(0)
    first, second = transform(image)
    np.random.seed(0), torch.manual_seed(0)
    again = transform.transform(image), transform.transform(image)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert first.shape == (3, 32, 32) and not torch.equal(first, second)


def test_batches_put_unlabeled_first_and_cover_unlabeled_once_per_epoch():
    unlabeled, labeled = list(range(100, 123)), list(range(5))
    sampler = TwoStreamBatchSampler(unlabeled, labeled, batch_size=6, labeled_batch_size=2)
    np.random.seed(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 23 // 4
    seen = [i for b in batches for i in b[:4]]
    assert len(set(seen)) == len(seen) == 20 and set(seen) <= set(unlabeled)
    assert all(set(b[4:]) <= set(labeled) for b in batches)
    # labeled indices: consecutive permutations, each complete before the next begins
    stream = [i for b in batches for i in b[4:]]
    assert sorted(stream[:5]) == labeled and sorted(stream[5:10]) == labeled


def test_permutations_are_drawn_lazily_from_numpy():
    # One permutation of the unlabeled indices at iter(); the labeled stream's permutations
    # only when it needs the next item: so the augmentations' draws interleave as in the original.
    unlabeled, labeled = list(range(10, 18)), list(range(4))
    sampler = TwoStreamBatchSampler(unlabeled, labeled, batch_size=4, labeled_batch_size=2)
    np.random.seed(5)
    iterator = iter(sampler)
    first = next(iterator)
    marker = np.random.randint(1 << 30)  # an augmentation draw between batches
    second, third = next(iterator), next(iterator)

    np.random.seed(5)
    u = np.random.permutation(unlabeled)
    l1 = np.random.permutation(labeled)
    expected_marker = np.random.randint(1 << 30)
    l2 = np.random.permutation(labeled)
    assert first == [*u[:2], *l1[:2]]
    assert marker == expected_marker
    assert second == [*u[2:4], *l1[2:4]]
    assert third == [*u[4:6], *l2[:2]]


def test_impossible_sampler_settings_are_refused():
    with pytest.raises(ValueError, match="unlabeled"):
        TwoStreamBatchSampler(list(range(3)), list(range(5)), batch_size=6, labeled_batch_size=2)
    with pytest.raises(ValueError, match="labeled"):
        TwoStreamBatchSampler(list(range(30)), list(range(1)), batch_size=6, labeled_batch_size=2)
