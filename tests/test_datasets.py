"""Every registered dataset (``mt_repro.data.registry``), driven by the registry: its description
holds together, and it trains with each recipe it offers, a few steps on a stand-in written in
its published format. A new dataset is picked up here; it needs a stand-in below."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mt_repro.config import ConvNetConfig, TrainConfig
from mt_repro.data import synthetic
from mt_repro.data.registry import dataset_names, get_dataset
from mt_repro.engine import runs
from mt_repro.models import get_model, list_models


def imagenet_tree(root: Path) -> Path:
    rng = np.random.RandomState(0)
    for part, per_class in (("train", 8), ("val", 2)):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            (root / part / wnid).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.randint(-40, 41, (40, 48, 3)) + 100 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / part / wnid / f"{wnid}_{i}.JPEG")
    return root


# name -> writer of a small copy in the dataset's published format (None: bundled, no files)
STAND_INS = {
    "cifar10": lambda d: synthetic.write_cifar_tarball(d / "cifar-10-python.tar.gz", n_train=100, n_test=20),
    "cifar100": lambda d: synthetic.write_cifar100_tarball(d / "cifar-100-python.tar.gz", n_train=200, n_test=100),
    "svhn": lambda d: synthetic.write_svhn_mat(d / "svhn", n_train=100, n_test=20) and d / "svhn",
    "digits": None,
    "imagenet": lambda d: imagenet_tree(d / "imagenet"),
    "stl10": lambda d: synthetic.write_stl10_binary(d / "stl10_binary.tar.gz", n_train=40, n_test=20, n_unlabeled=20),
}


def test_every_dataset_has_a_stand_in_here():
    assert sorted(STAND_INS) == dataset_names(), "add the new dataset's stand-in to STAND_INS"


@pytest.fixture(params=dataset_names())
def dataset(request, tmp_path):
    name = request.param
    writer = STAND_INS[name]
    return get_dataset(name), None if writer is None else writer(tmp_path)


def test_the_description_holds_together(dataset):
    spec, _ = dataset
    assert spec.num_classes > 1 and spec.train_size > 0 and spec.description
    assert spec.open_part is not None or spec.tf_arrays is not None, "it trains with neither recipe"
    if spec.open_part is not None:
        assert spec.train_transform is not None and spec.eval_transform is not None
    assert (spec.default_root is None) == (STAND_INS[spec.name] is None)  # bundled or on disk


def a_model_for(recipe: str, input_size) -> str:
    """The registered network of ``recipe`` that takes images of this size, the smallest first."""
    fitting = [m for m in list_models() if get_model(m).recipe == recipe and get_model(m).input_size == input_size]
    assert fitting, f"no {recipe} model takes {input_size} images"
    return sorted(fitting, key=lambda m: get_model(m).in_paper)[0]


def test_trains_with_the_pytorch_recipe_where_it_has_a_pipeline(dataset, tmp_path):
    spec, root = dataset
    if spec.open_part is None:
        pytest.skip(f"{spec.name} trains with the ConvNet recipe only")
    sample, _ = spec.open_part(spec.root(None if root is None else str(root)), spec.train_part, spec.eval_transform())[0]
    config = TrainConfig(dataset=spec.name, arch=a_model_for("pytorch", tuple(sample.shape)),
                         data_dir=None if root is None else str(root), train_subdir=spec.train_part,
                         eval_subdir=spec.eval_part, sampling="uniform", batch_size=8, epochs=1, workers=0,
                         consistency=1.0, lr=0.01, checkpoint_epochs=0, seed=0, device="cpu")
    summary = runs.train(config, tmp_path / "run", progress=False)
    assert summary["global_step"] >= 1 and summary["teacher_error1"] is not None


def test_trains_with_the_convnet_recipe_where_it_has_arrays(dataset, tmp_path):
    spec, root = dataset
    if spec.tf_arrays is None:
        pytest.skip(f"{spec.name} has no ConvNet input")
    config = ConvNetConfig(dataset=spec.name, data_dir=str(root), n_labeled=10 * spec.num_classes // 10 * 2,
                           n_labeled_per_batch=1, batch_size=10, training_length=2, evaluation_span=1,
                           width=0.0625, rampup_length=1, rampdown_length=1, device="cpu")
    summary = runs.train(config, tmp_path / "run", progress=False)
    assert summary["global_step"] == 2 and summary["recipe"] == "tensorflow"
