"""``compare --html``: one self-contained page, the comparison table and the runs' curves."""
from __future__ import annotations

import base64
import html
from datetime import date

from mt_repro.paper.compare import ALPHA, HEADER, CellComparison, rows


def html_report(comparisons: list[CellComparison], plot_png: bytes | None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr class='{}'>".format(row[12].replace(" ", "-")) +
                   "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows(comparisons))
    image = ("<h2>Training curves</h2><img alt='training curves' src='data:image/png;base64,"
             + base64.b64encode(plot_png).decode() + "'>") if plot_png else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mt-repro: reproduction report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}} .reproduced{{background:#e6f5e6}}
.worse{{background:#fbe3e3}} .better{{background:#e3ecfb}} .not-enough-runs{{background:#f3f3f3}}</style>
</head><body>
<h1>Reproduction of Tarvainen &amp; Valpola (2017): our runs against the paper</h1>
<p>Generated {date.today().isoformat()} by <code>mt-repro compare</code>. Verdicts: Welch's t-test of our
mean against the paper's mean ± std over its runs; "reproduced" when p &ge; {ALPHA} (no significant
difference), else "worse"/"better"; fewer than two runs: "not enough runs".</p>
<table><tr>{head}</tr>{body}</table>
{image}
</body></html>
"""
