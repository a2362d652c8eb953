"""The budgets every reader of an untrusted file takes from ``mt_repro.core.limits``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mt_repro.core import limits
from mt_repro.core.errors import BadInput


def test_every_limit_is_listed_once_with_its_own_variable():
    names = [limit.name for limit in limits.LIMITS]
    assert len(names) == len(set(names))
    defined = [value for value in vars(limits).values() if isinstance(value, limits.Limit)]
    assert set(defined) == set(limits.LIMITS)
    assert all(limit.variable == f"MT_REPRO_LIMIT_{limit.name.upper()}" for limit in limits.LIMITS)


def test_a_declared_size_above_the_limit_names_it_and_the_variable(monkeypatch):
    monkeypatch.setenv(limits.MEMBER_BYTES.variable, str(limits.MiB))
    with pytest.raises(BadInput, match=r"tar member x declares 2\.0 MiB, more than the limit of 1\.0 MiB .*"
                                       r"MT_REPRO_LIMIT_MEMBER_BYTES=N"):
        limits.MEMBER_BYTES.check(2 * limits.MiB, "tar member x")
    limits.MEMBER_BYTES.check(limits.MiB, "tar member x")  # at the limit: accepted


@pytest.mark.parametrize("value", ["lots", "0", "-3"])
def test_an_override_that_is_not_a_positive_count_is_refused(monkeypatch, value):
    monkeypatch.setenv(limits.NESTING.variable, value)
    with pytest.raises(BadInput, match="MT_REPRO_LIMIT_NESTING"):
        limits.NESTING.value


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match=r"label file .*labels.txt is a FIFO \(named pipe\), not a regular file"):
        limits.read_text(fifo, "label file")  # would block forever if it were opened
    zero = tmp_path / "zero.txt"
    zero.symlink_to("/dev/zero")
    with pytest.raises(BadInput, match="is a character device, not a regular file"):
        limits.read_bytes(zero, "label file")
    with pytest.raises(BadInput, match="is a directory"):
        limits.read_bytes(tmp_path, "label file")
    with pytest.raises(BadInput, match="does not exist"):
        limits.read_bytes(tmp_path / "missing", "label file")


def test_a_file_above_its_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 2000)
    monkeypatch.setenv(limits.TEXT_FILE_BYTES.variable, "1000")
    with pytest.raises(BadInput, match="declares 2,000 bytes, more than the limit of 1,000 bytes"):
        limits.read_text(path, "config")
    monkeypatch.setenv(limits.TEXT_FILE_BYTES.variable, "2000")
    assert limits.read_text(path, "config") == "x" * 2000


def test_text_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(BadInput, match=r"cannot be read as UTF-8 text \(byte 3\)"):
        limits.read_text(path, "label file")


def test_nesting_is_bounded_without_recursion(monkeypatch):
    deep: list = []
    for _ in range(100_000):  # far deeper than Python's recursion limit
        deep = [deep]
    with pytest.raises(BadInput, match="row 3 is nested more than 64 levels deep"):
        limits.check_nesting({"a": deep}, "row 3")
    shallow = {"a": [{"b": (1, 2)}], "c": {"d": {3}}}
    limits.check_nesting(shallow, "row 1")
    monkeypatch.setenv(limits.NESTING.variable, "3")
    with pytest.raises(BadInput, match="nested more than 3 levels"):
        limits.check_nesting(shallow, "row 1")
    looped: list = []
    looped.append(looped)
    limits.check_nesting(looped, "a list that holds itself")  # terminates


LIMITS_START = "<!-- limits table: generated from mt_repro/core/limits.py -->"
LIMITS_END = "<!-- end of limits table -->"


def render_limits_table() -> str:
    def amount(limit):
        value = limit.default
        if limit.name.endswith("bytes"):
            return f"{value // limits.GiB} GiB" if value >= limits.GiB else f"{value // limits.MiB} MiB"
        return f"{value:,}" if limit.name != "image_pixels" else f"{value // limits.MiB} Mi pixels"
    lines = ["| limit | default | bounds | raise it with |", "|---|---|---|---|"]
    lines += [f"| {limit.name} | {amount(limit)} | {limit.what} | `{limit.variable}` |" for limit in limits.LIMITS]
    return "\n".join(lines)


def test_readme_lists_every_limit():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index(LIMITS_START) + len(LIMITS_START)
    assert text[start:text.index(LIMITS_END)].strip() == render_limits_table(), \
        "README's limits table is stale; replace it with test_limits.render_limits_table()"
