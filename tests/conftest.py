import os
from pathlib import Path

import pytest

from mt_repro.data.synthetic import write_image_tree, write_label_file

REPO = Path(__file__).resolve().parents[1]
# The original label files live outside the repository (they are the original's data files).
ORIGINAL_LABELS = Path(os.environ.get("MT_REPRO_ORIGINAL_LABELS", REPO.parent / "shared" / "original_labels"))


@pytest.fixture(scope="session")
def original_labels() -> Path:
    if not ORIGINAL_LABELS.is_dir():
        pytest.skip(f"original label files not found at {ORIGINAL_LABELS} (set MT_REPRO_ORIGINAL_LABELS)")
    return ORIGINAL_LABELS


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """By-image CIFAR-10 tree: 6 training and 2 test images per class, and a 2-per-class label file."""
    root = tmp_path_factory.mktemp("tiny") / "by-image"
    write_image_tree(root, train_per_class=6, test_per_class=2, seed=0)
    write_label_file(root.parent / "labels.txt", root, per_class=2)
    return root
