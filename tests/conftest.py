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


@pytest.fixture
def cli(capsys):
    """Run ``mt-repro ARGS...`` in this process; returns (exit code, stdout, stderr)."""
    from mt_repro.cli import main

    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_one_line_error(result, *fragments, code=2):
    """``result`` of the ``cli`` fixture: exit ``code``, one ``mt-repro: error:`` line naming
    every fragment, no traceback."""
    exit_code, _, err = result
    assert exit_code == code, result
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mt-repro: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


FUZZ_SCALE_ENV = "MT_REPRO_FUZZ_SCALE"


def fuzz_examples(n: int) -> int:
    """``n`` property-test cases in CI; ``$MT_REPRO_FUZZ_SCALE`` times as many for the long
    fuzzing run (benchmarks/fuzz/run_fuzz.sh)."""
    return n * int(os.environ.get(FUZZ_SCALE_ENV, "1"))
