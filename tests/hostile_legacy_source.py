"""Hostile legacy source trees given to patch-legacy: cases for ``hostile_inputs.CASES``."""
from __future__ import annotations

import os
from pathlib import Path

from hostile_case import Case

OLD = "import torch\n\n\ndef f(loss):\n    return loss.data[0]\n"


def _tree(d: Path) -> Path:
    root = d / "tree"
    root.mkdir()
    (root / "train.py").write_text(OLD)
    return root


def fifo_in_tree(d: Path, tree: Path) -> list:
    root = _tree(d)
    os.mkfifo(root / "pipe.py")  # reading it would block forever
    return ["patch-legacy", root, "--write"]


def link_to_dev_zero(d: Path, tree: Path) -> list:
    root = _tree(d)
    (root / "zero.py").symlink_to("/dev/zero")  # reading it would never end
    return ["patch-legacy", root, "--write"]


def huge_source(d: Path, tree: Path) -> list:
    root = _tree(d)
    with open(root / "huge.py", "wb") as f:  # sparse: 3 MiB declared, no disk used
        f.truncate(3 << 20)
    return ["patch-legacy", root, "--check"]


def deep_parentheses(d: Path, tree: Path) -> list:
    path = d / "deep.py"
    path.write_text("x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n")  # crashed libcst's parser
    return ["patch-legacy", path]


def long_operator_chain(d: Path, tree: Path) -> list:
    path = d / "chain.py"
    path.write_text("x = " + " + ".join(["loss.data[0]"] * 1_000) + "\n")  # slow, then RecursionError
    return ["patch-legacy", path]


def backup_is_a_directory(d: Path, tree: Path) -> list:
    root = _tree(d)
    (root / "train.py.orig").mkdir()
    return ["patch-legacy", root, "--write"]


CASES: list[Case] = [
    Case("legacy source tree", "FIFO named `*.py`", "patch-legacy", "is a FIFO (named pipe), not a regular file",
         fifo_in_tree),
    Case("legacy source tree", "`*.py` link to `/dev/zero`", "patch-legacy",
         "is a character device, not a regular file", link_to_dev_zero),
    Case("legacy source file", "3 MiB", "patch-legacy", "MT_REPRO_LIMIT_SOURCE_BYTES", huge_source,
         extra_mib=256),
    Case("legacy source file", "10,000 nested parentheses", "patch-legacy", "nested too deeply to parse",
         deep_parentheses),
    Case("legacy source file", "1,000-term operator chain", "patch-legacy", "nested more than 200 levels deep",
         long_operator_chain),
    Case("legacy source tree", "`x.py.orig` is a directory", "patch-legacy",
         "train.py.orig exists and is a directory", backup_is_a_directory),
]
