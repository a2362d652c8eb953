"""A comparison as a terminal table, Markdown, CSV, and one self-contained HTML page."""
from __future__ import annotations

import base64
import csv
import html
import io
import math

from mt_repro.paper.compare import ALPHA, CellComparison, notes

HEADER = ["table", "row", "cell", "metric", "ours mean", "ours std", "n", "paper mean", "paper std", "paper n",
          "difference", "t", "p", "verdict", "paper number checked", "context"]
TERMINAL_COLUMNS = ["table", "row", "cell", "ours mean", "ours std", "n", "paper mean", "paper std", "difference",
                    "p", "verdict"]
VERDICTS = (f"reproduced: Welch's t-test finds no significant difference from the paper's mean (p >= {ALPHA}); "
            f"worse / better: p < {ALPHA}, our error higher / lower; not enough runs: fewer than 2 runs. "
            "Our std is the sample standard deviation; the test uses the paper's mean, std and number of runs.")


def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _p_value(p: float | None) -> str:
    return _number(p, 3) if p is None or math.isnan(p) or p >= 0.001 else f"{p:.1e}"


def _cell(c: CellComparison) -> str:
    k = c.paper.key
    extra = f" +{k.extra_unlabeled} extra" if k.extra_unlabeled else ""
    return f"{k.dataset} {k.n_labels} labels{extra}, {k.architecture}"


def rows(comparisons: list[CellComparison]) -> list[dict[str, str]]:
    return [{"table": str(c.paper.table), "row": c.paper.row, "cell": _cell(c), "metric": c.paper.metric,
             "ours mean": _number(c.mean), "ours std": _number(c.std), "n": str(c.n),
             "paper mean": _number(c.paper.mean), "paper std": _number(c.paper.std),
             "paper n": str(c.paper.n_runs or ""), "difference": f"{c.difference:+.2f}", "t": _number(c.t),
             "p": _p_value(c.p), "verdict": c.verdict, "paper number checked": c.paper.checked,
             "context": "; ".join(n.describe() for n in c.context)} for c in comparisons]


def _context_lines(comparisons: list[CellComparison]) -> list[str]:
    return [f"Table {c.paper.table}, {_cell(c)}: " + "; ".join(n.describe() for n in c.context)
            for c in comparisons if c.context]


def terminal_table(comparisons: list[CellComparison]) -> str:
    table = [TERMINAL_COLUMNS] + [[row[h] for h in TERMINAL_COLUMNS] for row in rows(comparisons)]
    widths = [max(len(r[i]) for r in table) for i in range(len(TERMINAL_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    context = _context_lines(comparisons)
    if context:
        lines += ["", "Other results in the same columns of the paper (context, not judged):"]
        lines += [f"  {line}" for line in context]
    lines += [f"note: {note}" for note in notes(comparisons)]
    return "\n".join(lines)


def markdown(comparisons: list[CellComparison]) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    shown = [h for h in HEADER if h != "context"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(escape(row[h]) for h in shown) + " |" for row in rows(comparisons)]
    lines += ["", VERDICTS]
    context = _context_lines(comparisons)
    if context:
        lines += ["", "Other results in the same columns of the paper (context, not judged):", ""]
        lines += [f"* {escape(line)}" for line in context]
    extra_notes = notes(comparisons)
    if extra_notes:
        lines += ["", "Notes:", ""] + [f"* {escape(note)}" for note in extra_notes]
    return "\n".join(lines) + "\n"


def csv_text(comparisons: list[CellComparison]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(comparisons))
    return buffer.getvalue()


def html_page(comparisons: list[CellComparison], plots: list[tuple[str, bytes]]) -> str:
    """The table, the context, the notes and ``plots`` ((caption, PNG bytes), embedded) as one page."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER if h != "context")
    body = "".join(
        f"<tr class='{row['verdict'].replace(' ', '-')}'>"
        + "".join(f"<td>{html.escape(row[h])}</td>" for h in HEADER if h != "context") + "</tr>"
        for row in rows(comparisons))
    context = "".join(f"<li>{html.escape(line)}</li>" for line in _context_lines(comparisons))
    note_items = "".join(f"<li>{html.escape(note)}</li>" for note in notes(comparisons))
    figures = "".join(
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for caption, png in plots)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mt-repro: reproduction report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}} .reproduced{{background:#e6f5e6}}
.worse{{background:#fbe3e3}} .better{{background:#e3ecfb}} .not-enough-runs{{background:#f3f3f3}}
img{{max-width:100%}}</style>
</head><body>
<h1>Tarvainen &amp; Valpola (2017), reproduced: our runs against the paper</h1>
<p>Written by <code>mt-repro compare</code>. {html.escape(VERDICTS)}</p>
<table><tr>{head}</tr>{body}</table>
{f"<h2>Other results in the same columns of the paper (context, not judged)</h2><ul>{context}</ul>" if context else ""}
{f"<h2>Notes</h2><ul>{note_items}</ul>" if note_items else ""}
{f"<h2>Training curves</h2>{figures}" if figures else ""}
</body></html>
"""
