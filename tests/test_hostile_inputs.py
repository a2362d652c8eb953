"""Every corrupted or hostile input file gives one clear line and exit 2, and runs nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

import hostile_inputs
from conftest import assert_one_line_error

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("case", hostile_inputs.CASES, ids=lambda c: f"{c.file}: {c.damage}")
def test_hostile_input_is_refused_in_one_line(case, cli, tiny_tree, tmp_path):
    argv = case.build(tmp_path, tiny_tree)
    assert_one_line_error(cli(*argv), case.expected)
    assert not (tmp_path / hostile_inputs.MARKER).exists(), "a payload was executed"


def test_readme_table_lists_exactly_these_cases():
    text = README.read_text()
    start = text.index(hostile_inputs.TABLE_START) + len(hostile_inputs.TABLE_START)
    end = text.index(hostile_inputs.TABLE_END)
    assert text[start:end].strip() == hostile_inputs.render_table(), \
        "README's table is stale; replace it with hostile_inputs.render_table()"
