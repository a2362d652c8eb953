"""A comparison as a terminal table, Markdown, CSV, and one self-contained HTML page.

Every form says which cells are not comparable with the paper and why (the runs differ from
its recipe: ``mt_repro.paper.compare``), and the page is titled by what it shows: "reproduced"
only when every cell is. The page also lists each run with its steps (trained, and the recipe's),
its data (content hash, synthetic stand-in or not) and the versions of mt-repro and torch that
trained it, from its summary's provenance.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import tempfile
from pathlib import Path

import torch

from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import write_text_atomic
from mt_repro.engine.provenance import code_version
from mt_repro.logs.runlog import read_rows
from mt_repro.paper import plot
from mt_repro.paper.compare import (ALPHA, NOT_COMPARABLE, REPRODUCED, CellComparison, notes,
                                    verdict_counts)
from mt_repro.paper.runs import RunResult

HEADER = ["table", "row", "cell", "metric", "ours mean", "ours std", "n", "paper mean", "paper std", "paper n",
          "difference", "t", "p", "verdict", "steps", "recipe steps", "not comparable because",
          "paper number checked", "context"]
TERMINAL_COLUMNS = ["table", "row", "cell", "ours mean", "ours std", "n", "paper mean", "paper std", "difference",
                    "p", "steps", "verdict"]
TABLE_COLUMNS = [h for h in HEADER if h not in ("context", "not comparable because")]   # Markdown, HTML
VERDICTS = (f"reproduced: Welch's t-test finds no significant difference from the paper's mean (p >= {ALPHA}); "
            f"worse / better: p < {ALPHA}, our error higher / lower; not enough runs: fewer than 2 runs; "
            "not comparable: the runs differ from the paper's recipe (steps, data, network, width, labels or "
            "settings; the reasons are listed), so no test is made. "
            "Our std is the sample standard deviation; the test uses the paper's mean, std and number of runs.")
PAPER = "Tarvainen & Valpola (2017)"
NOT_COMPARABLE_HEADING = "Not comparable with the paper (the runs differ from its recipe; no test is made)"


def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _p_value(p: float | None) -> str:
    return _number(p, 3) if p is None or math.isnan(p) or p >= 0.001 else f"{p:.1e}"


def _cell(c: CellComparison) -> str:
    k = c.paper.key
    extra = f" +{k.extra_unlabeled} extra" if k.extra_unlabeled else ""
    return f"{k.dataset} {k.n_labels} labels{extra}, {k.architecture}"


def _counts(values) -> str:
    """Step counts of a cell's runs: one, or each distinct one; empty where none is known."""
    known = sorted({v for v in values if v is not None})
    return ", ".join(f"{v:,}" for v in known)


def recipe_steps(run: RunResult) -> int | None:
    recipe = (run.provenance or {}).get("recipe") or {}
    return recipe.get("steps")


def rows(comparisons: list[CellComparison]) -> list[dict[str, str]]:
    return [{"table": str(c.paper.table), "row": c.paper.row, "cell": _cell(c), "metric": c.paper.metric,
             "ours mean": _number(c.mean), "ours std": _number(c.std), "n": str(c.n),
             "paper mean": _number(c.paper.mean), "paper std": _number(c.paper.std),
             "paper n": str(c.paper.n_runs or ""),
             # no difference is stated for runs of another experiment than the paper's number
             "difference": f"{c.difference:+.2f}" if c.comparable else "", "t": _number(c.t),
             "p": _p_value(c.p), "verdict": c.verdict,
             "steps": _counts(r.global_step for r in c.runs), "recipe steps": _counts(map(recipe_steps, c.runs)),
             "not comparable because": " | ".join(c.reasons), "paper number checked": c.paper.checked,
             "context": "; ".join(n.describe() for n in c.context)} for c in comparisons]


def _context_lines(comparisons: list[CellComparison]) -> list[str]:
    return [f"Table {c.paper.table}, {_cell(c)}: " + "; ".join(n.describe() for n in c.context)
            for c in comparisons if c.context]


def _not_comparable(comparisons: list[CellComparison]) -> list[tuple[str, tuple[str, ...]]]:
    """(cell, reasons) of each cell that is not comparable."""
    return [(f"Table {c.paper.table}, {c.paper.row}, {_cell(c)}", c.reasons) for c in comparisons if c.reasons]


def headline(comparisons: list[CellComparison]) -> str:
    """What the comparison shows, in a line: the page's title."""
    counts = verdict_counts(comparisons)
    cells = len(comparisons)
    if cells and counts.get(REPRODUCED) == cells:
        return f"{PAPER} reproduced: all {cells} cell(s) of our runs agree with the paper"
    if cells and counts.get(NOT_COMPARABLE) == cells:
        return (f"Runs not comparable with {PAPER}: they differ from the paper's recipe, so no cell is "
                "judged")
    told = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    return f"Our runs against {PAPER}: {cells} cell(s), {told}"


def summary_line(comparisons: list[CellComparison]) -> str:
    """The command's last line: how many cells were reproduced, and how many could not be judged."""
    counts = verdict_counts(comparisons)
    line = f"{counts.get(REPRODUCED, 0)} of {len(comparisons)} cell(s) reproduced"
    if counts.get(NOT_COMPARABLE):
        line += (f"; {counts[NOT_COMPARABLE]} not comparable with the paper (its runs differ from the "
                 "paper's recipe: see why above)")
    return line


def terminal_table(comparisons: list[CellComparison]) -> str:
    table = [TERMINAL_COLUMNS] + [[row[h] for h in TERMINAL_COLUMNS] for row in rows(comparisons)]
    widths = [max(len(r[i]) for r in table) for i in range(len(TERMINAL_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    differing = _not_comparable(comparisons)
    if differing:
        lines += ["", f"{NOT_COMPARABLE_HEADING}:"]
        for cell, reasons in differing:
            lines += [f"  {cell}:"] + [f"    {reason}" for reason in reasons]
    context = _context_lines(comparisons)
    if context:
        lines += ["", "Other results in the same columns of the paper (context, not judged):"]
        lines += [f"  {line}" for line in context]
    lines += [f"note: {note}" for note in notes(comparisons)]
    return "\n".join(lines)


def markdown(comparisons: list[CellComparison]) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    shown = TABLE_COLUMNS
    lines = [f"# {escape(headline(comparisons))}", "", f"Written by {escape(_writer())}.", ""]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(escape(row[h]) for h in shown) + " |" for row in rows(comparisons)]
    lines += ["", VERDICTS]
    differing = _not_comparable(comparisons)
    if differing:
        lines += ["", f"{NOT_COMPARABLE_HEADING}:", ""]
        for cell, reasons in differing:
            lines += [f"* {escape(cell)}:"] + [f"  * {escape(reason)}" for reason in reasons]
    lines += ["", "Runs:", "", "| " + " | ".join(RUN_COLUMNS) + " |", "|" + "---|" * len(RUN_COLUMNS)]
    lines += ["| " + " | ".join(escape(row[h]) for h in RUN_COLUMNS) + " |" for row in run_rows(comparisons)]
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


# --- the runs behind the cells ---------------------------------------------------------------------
RUN_COLUMNS = ["run", "cell", "verdict", "steps", "recipe steps", "data", "mt-repro", "torch"]


def _short_hash(digest: str | None) -> str:
    kind, _, hexdigest = (digest or "").partition(":")
    return f"{kind}:{hexdigest[:12]}" if hexdigest else ""


def _data(run: RunResult) -> str:
    if run.provenance is None:
        return "provenance unknown" if run.source == "mt-repro" else "the original code's run"
    data = run.provenance.get("data") or {}
    if data.get("path") is None:
        return "bundled"
    what = [str(data["path"])]
    if data.get("content_hash"):
        what.append(_short_hash(data["content_hash"]))
    if data.get("synthetic"):
        what.append("synthetic stand-in")
    return ", ".join(what)


def _code(run: RunResult) -> str:
    code = (run.provenance or {}).get("code")
    if not isinstance(code, dict):
        return "" if run.source == "mt-repro" else "original code"
    return _version(code)


def _version(code: dict) -> str:
    text = str(code.get("mt_repro") or "")
    if code.get("git_commit"):
        text += f" (git {str(code['git_commit'])[:10]}{', modified' if code.get('git_dirty') else ''})"
    return text


def run_rows(comparisons: list[CellComparison]) -> list[dict[str, str]]:
    """One row per run: its cell and verdict, steps, data and the versions that trained it."""
    return [{"run": str(run.path), "cell": f"Table {c.paper.table}, {_cell(c)}", "verdict": c.verdict,
             "steps": _counts([run.global_step]), "recipe steps": _counts([recipe_steps(run)]),
             "data": _data(run), "mt-repro": _code(run), "torch": str((run.provenance or {}).get("torch") or "")}
            for c in comparisons for run in c.runs]


def _writer() -> str:
    """What wrote the report: this mt-repro (and its commit) and torch."""
    return f"mt-repro compare {_version(code_version())}, torch {torch.__version__}"


def _html_table(columns: list[str], table_rows: list[dict[str, str]], verdict_class: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in columns)
    body = "".join(
        (f"<tr class='{row['verdict'].replace(' ', '-')}'>" if verdict_class else "<tr>")
        + "".join(f"<td>{html.escape(row[h])}</td>" for h in columns) + "</tr>" for row in table_rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(comparisons: list[CellComparison], plots: list[tuple[str, bytes]]) -> str:
    """The table, why cells are not comparable, the runs, the context, the notes and ``plots``
    ((caption, PNG bytes), embedded) as one page."""
    title = html.escape(headline(comparisons))
    context = "".join(f"<li>{html.escape(line)}</li>" for line in _context_lines(comparisons))
    note_items = "".join(f"<li>{html.escape(note)}</li>" for note in notes(comparisons))
    differing = "".join(
        f"<li>{html.escape(cell)}<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul></li>"
        for cell, reasons in _not_comparable(comparisons))
    figures = "".join(
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for caption, png in plots)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mt-repro: {title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}} .reproduced{{background:#e6f5e6}}
.worse{{background:#fbe3e3}} .better{{background:#e3ecfb}} .not-enough-runs{{background:#f3f3f3}}
.not-comparable{{background:#fdf3dc}} img{{max-width:100%}}</style>
</head><body>
<h1>{title}</h1>
<p>Written by <code>{html.escape(_writer())}</code>.</p>
<p>{html.escape(VERDICTS)}</p>
{_html_table(TABLE_COLUMNS, rows(comparisons))}
{f"<h2>{html.escape(NOT_COMPARABLE_HEADING)}</h2><ul>{differing}</ul>" if differing else ""}
<h2>Runs</h2>
{_html_table(RUN_COLUMNS, run_rows(comparisons))}
{f"<h2>Other results in the same columns of the paper (context, not judged)</h2><ul>{context}</ul>" if context else ""}
{f"<h2>Notes</h2><ul>{note_items}</ul>" if note_items else ""}
{f"<h2>Training curves</h2>{figures}" if figures else ""}
</body></html>
"""


# --- the curves -------------------------------------------------------------------------------------
EVALUATION_LOGS = ("validation.jsonl", "ema_validation.jsonl")


def figures(comparisons: list[CellComparison]) -> list[tuple[str, bytes]]:
    """(caption, PNG) of each cell's training curves (of its runs that have a training log); the
    caption says so when no run of the cell was evaluated more than once (its test error is a
    point, not a curve)."""
    drawn = []
    for c in comparisons:
        curves = [r.path for r in c.runs if (r.path / plot.TRAINING_LOG).is_file()]
        if not curves:
            continue
        title = f"Table {c.paper.table}, {c.paper.row}: {c.paper.key.describe()}"
        caption = title
        if not c.comparable:
            caption += f"; {NOT_COMPARABLE} with the paper"
        if max(len(read_rows(run / name)) for run in curves for name in EVALUATION_LOGS) <= 1:
            caption += "; one evaluation only: the test error is a point per run, not a curve"
        drawn.append((caption, plot.png_bytes(curves, title)))
    return drawn


# --- where the report goes --------------------------------------------------------------------------
def check_output(path: str | os.PathLike, flag: str, *, directory: bool = False) -> Path:
    """``path`` if the report can be written there (a directory for ``directory``, else a file),
    checked before any run is read, so that a long comparison does not end in a bad path: the
    directory that will hold it is made (with its parents) and a file is created and removed in
    it. ``BadInput`` naming ``flag`` and the path otherwise."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise BadInput(f"{flag} {path}: it is a file, not a directory")
    if not directory and path.is_dir():
        raise BadInput(f"{flag} {path}: it is a directory; give a file name (e.g. {path / 'index.html'})")
    holder = path if directory else path.parent
    ancestor = holder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInput(f"{flag} {path}: {ancestor} is not a directory, so {path} cannot be created")
    try:
        holder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=holder):
            pass
    except OSError as exc:
        raise BadInput(f"{flag} {path}: cannot write in {holder}: {exc.strerror or exc}") from None
    return path


def write_report_file(path: Path, text: str) -> None:
    """``text`` to ``path`` (atomically), its missing parent directories made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
