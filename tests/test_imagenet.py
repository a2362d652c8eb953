"""The ImageNet pipeline on a tiny folder tree with the original 10% label-file format."""
import json

import numpy as np
import pytest
from PIL import Image

from mt_repro.cli import main
from mt_repro.config import compose

WNIDS = ("n01440764", "n01443537", "n01484850")


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.RandomState(0)
    for split, per_class in (("train", 8), ("val", 2)):
        for c, wnid in enumerate(WNIDS):
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.randint(-40, 41, (40, 48, 3)) + 80 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{100 + i}.JPEG")
    labels = root / "00.txt"
    labels.write_text("".join(f"{wnid}_{100 + i}.JPEG {wnid}\n" for wnid in WNIDS for i in range(2)))
    return root


def test_paper_imagenet_config_is_the_original_runner_on_ten_gpus(tmp_path):
    label_file = tmp_path / "00.txt"
    label_file.write_text(f"{WNIDS[0]}_100.JPEG {WNIDS[0]}\n")
    config = compose.resnet_run("imagenet_10pct", label_file=label_file)
    assert (config.batch_size, config.labeled_batch_size, config.lr) == (400, 200, 0.25)
    assert config.arch == "resnext152" and config.consistency_type == "kl"
    assert (config.initial_lr, config.lr_rampup, config.ema_decay) == (0.1, 2, 0.9997)
    assert (config.epochs, config.lr_rampdown_epochs, config.weight_decay) == (60, 75, 5e-5)


def test_imagenet_command_trains_on_folders_with_an_original_label_file(tiny_imagenet, tmp_path, capsys):
    code = main(["imagenet", "--labels", "10%", "--data", str(tiny_imagenet),
                 "--label-file", str(tiny_imagenet / "00.txt"), "--gpus", "1", "--epochs", "1",
                 "--workers", "0", "--seed", "0", "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", "arch=resnext_mini", "--set", "batch_size=6", "--set", "labeled_batch_size=2"])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_labeled"] == 6 and summary["n_unlabeled"] == 18
    assert summary["global_step"] == 18 // 4
    assert "teacher  prec@1" in out


def test_original_ten_percent_label_file(original_labels):
    """The original's ImageNet split: 128 images of each of the 1000 classes, named as in the
    ILSVRC2012 training folders (``<wnid>/<wnid>_<n>.JPEG``)."""
    from collections import Counter

    from mt_repro.data.labels import read_label_file

    labels = read_label_file(original_labels / "ilsvrc2012" / "128000_balanced_labels" / "00.txt")
    assert len(labels) == 128000
    assert set(Counter(labels.values()).values()) == {128} and len(set(labels.values())) == 1000
    assert all(name.startswith(wnid + "_") and name.endswith(".JPEG") for name, wnid in labels.items())
