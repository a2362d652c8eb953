"""Plain-text tables, as the commands print them: columns two spaces apart."""
from __future__ import annotations


def aligned(rows: list[list[str]], *, rule: bool = False, right_align: bool = True, indent: str = "") -> list[str]:
    """``rows`` (the first a header when ``rule``) as lines: the first column left-aligned, the
    others right-aligned (numbers) unless not ``right_align``; with ``rule``, a line of dashes
    under the header. Trailing spaces are dropped."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        cells = (cell.ljust(w) if i == 0 or not right_align else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths)))
        return (indent + "  ".join(cells)).rstrip()

    lines = [line(row) for row in rows]
    if rule:
        lines.insert(1, indent + "  ".join("-" * w for w in widths))
    return lines
