"""Figures for a slide: training curves in the style of the paper's Fig. 3, and the digits demo's
result table.

``figure(run_dirs)``: the test error of the student (solid) and the teacher (dashed) against
training steps, one colour per method (runs of one method and cell are its seeds: their mean,
with a band of ± one standard deviation over them where there are two or more), and below it
the training classification cost on the labeled images. Columns read (any a run lacks are
skipped; a run with none of them is an error):

* ``validation.jsonl`` / ``ema_validation.jsonl``: ``step`` and ``error1/avg`` of each evaluation
  on the evaluation set (the test set of the paper's runs). A single evaluation (the digits demo
  evaluates once, at the end) is a point with the seeds' spread as an error bar.
* ``training.jsonl``: ``step``, ``class_loss`` / ``ema_class_loss``: the classification cost on
  the minibatch's labeled images, smoothed by a running mean as the paper's figure is. Only
  when no method has a curve of evaluations, a third panel shows the training minibatches'
  error (``error1`` / ``ema_error1``, smoothed), as a stand-in that says what it is.

Which runs are seeds of one method: ``config.json`` and ``summary.json`` name the run's
``method`` (default ``mean_teacher``, as ``mt_repro.paper.runs`` reads summaries without it),
dataset, network, labels and sampling; runs alike in all of these are one group, and the legend
names a group by its method, adding only what differs between the groups.

Axes follow the data: a logarithmic axis (as the paper's) only when all values are positive and
span a factor of 10 or more, else linear from 0, so an error of 0 % never drops out of a curve;
tick labels are plain numbers. ``result_figure(rows)`` draws a table of test errors per method
and seed: one dot per seed, the mean ± std as a bar. Files are PNG, PDF or SVG by ``--out``'s
extension. Rendered with matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import io
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mt_repro.config.saved import read_saved
from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import write_bytes_atomic
from mt_repro.logs.runlog import read_rows

TRAINING_LOG = "training.jsonl"
NETWORKS = ("student", "teacher")
EVALUATION_LOGS = {"student": "validation.jsonl", "teacher": "ema_validation.jsonl"}
COST_COLUMNS = {"student": "class_loss", "teacher": "ema_class_loss"}
TRAINING_ERROR_COLUMNS = {"student": "error1", "teacher": "ema_error1"}
STYLES = {"student": "-", "teacher": "--"}
MARKERS = {"student": "o", "teacher": "s"}
NETWORK_LABELS = {"student": "student", "teacher": "teacher (EMA)"}
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
DPI = 120
SMOOTHING_POINTS = 30   # the running mean covers 1/30 of a run's logged rows
LOG_AXIS_SPAN = 10.0    # a log axis only for values spanning this factor or more
# What makes runs seeds of one experiment, from config.json / summary.json, as the legend words it.
IDENTITY = {"method": lambda v: str(v).replace("_", " "), "dataset": str, "arch": str,
            "n_labeled": lambda v: f"{v} labels", "extra_unlabeled": lambda v: f"+{v} extra",
            "sampling": lambda v: f"{v} sampling"}
DEFAULT_METHOD = "mean_teacher"
FIRST_METHODS = ("supervised", "mean_teacher")   # the order of the demo's and the paper's tables
LEGEND_OUTSIDE = 6      # more methods than this: the legend goes right of the panels

Curve = tuple[np.ndarray, np.ndarray]   # steps, values


# --- the output file -----------------------------------------------------------------------------
def figure_format(out: str | os.PathLike) -> str:
    """The file format ``out``'s extension names, or ``BadInput``: checked before any work."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise BadInput(f"--out {out}: the extension picks the format; use .png, .pdf or .svg "
                       f"(not {suffix or 'none'})")
    return FORMATS[suffix]


def _save(fig, out: Path | None, file_format: str = "png", dpi: int = DPI, description: str | None = None) -> bytes:
    """The figure as bytes, written to ``out`` (atomically: a killed command leaves no half file)."""
    import matplotlib.pyplot as plt  # deferred: a second of import time, for the plotting commands only

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=file_format, dpi=dpi, metadata=_metadata(file_format, description))
    finally:
        plt.close(fig)
    data = buffer.getvalue()
    if out is not None:
        try:
            write_bytes_atomic(out, data)
        except OSError as exc:
            raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None
    return data


def _metadata(file_format: str, description: str | None) -> dict:
    """No creation date in PDF/SVG (the same runs give the same file); ``description``, the
    numbers drawn, in the file's own description field."""
    fields = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[file_format]
    if description is not None:
        fields["Subject" if file_format == "pdf" else "Description"] = description
    return fields


def _pyplot():
    import matplotlib  # deferred, as in _save

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred, with matplotlib

    return plt


# --- reading runs --------------------------------------------------------------------------------
def find_plot_runs(paths: list[str | os.PathLike]) -> list[Path]:
    """The run directories (holding ``training.jsonl``) in ``paths`` or below them."""
    runs: dict[Path, None] = {}
    for given in map(Path, paths):
        if not given.is_dir():
            raise BadInput(f"{given} is not a directory" if given.exists() else f"{given} does not exist")
        found = [given] if (given / TRAINING_LOG).is_file() else sorted(p.parent for p in given.rglob(TRAINING_LOG))
        if not found:
            raise BadInput(f"{given} has no {TRAINING_LOG} in it or below it: not a run directory of mt-repro")
        for run in found:
            runs.setdefault(run, None)
    return list(runs)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` points (shorter at the start)."""
    if window <= 1 or len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _column(rows: list[dict], name: str) -> Curve:
    """``name`` against ``step``, one value per step in step order: where a resumed run logged a
    step twice, the later row (the run that went on) is kept."""
    by_step: dict[float, float] = {}
    for row in rows:
        step, value = row.get("step"), row.get(name)
        if (isinstance(step, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(step) and math.isfinite(value)):
            by_step[float(step)] = float(value)
    steps = np.array(sorted(by_step), dtype=float)
    return steps, np.array([by_step[s] for s in steps], dtype=float)


def _smoothed(curve: Curve) -> Curve:
    steps, values = curve
    return steps, smooth(values, max(1, len(values) // SMOOTHING_POINTS))


@dataclass
class RunCurves:
    path: Path
    identity: dict[str, object]        # IDENTITY's fields the run's files give
    eval_subdir: str | None
    test_error: dict[str, Curve]       # network -> its evaluations
    cost: dict[str, Curve]             # network -> smoothed training cost
    training_error: dict[str, Curve]   # network -> smoothed training minibatch error


def _saved_values(run: Path) -> dict:
    """config.json over summary.json (a run's settings name its method; summaries of old runs
    may not); a file that cannot be read names nothing (the curves still plot)."""
    values: dict = {}
    for name in ("summary.json", "config.json"):
        if (run / name).is_file():
            try:
                saved = read_saved(run / name)
            except BadInput:
                continue
            if isinstance(saved, dict):
                values.update({k: v for k, v in saved.items() if isinstance(v, (str, int, float))
                               and not isinstance(v, bool)})
    return values


def read_run_curves(run: Path) -> RunCurves:
    saved = _saved_values(run)
    identity = {k: saved[k] for k in IDENTITY if k in saved}
    if identity:
        identity.setdefault("method", DEFAULT_METHOD)
    rows = read_rows(run / TRAINING_LOG)
    return RunCurves(
        path=run, identity=identity, eval_subdir=saved.get("eval_subdir"),
        test_error={n: _column(read_rows(run / log), "error1/avg") for n, log in EVALUATION_LOGS.items()},
        cost={n: _smoothed(_column(rows, c)) for n, c in COST_COLUMNS.items()},
        training_error={n: _smoothed(_column(rows, c)) for n, c in TRAINING_ERROR_COLUMNS.items()})


# --- seeds of one method -------------------------------------------------------------------------
@dataclass
class Group:
    label: str
    method: str | None
    runs: list[RunCurves]


def _method_order(method: str | None, label: str) -> tuple:
    return (FIRST_METHODS.index(method) if method in FIRST_METHODS else len(FIRST_METHODS), label)


def group_runs(runs: list[RunCurves]) -> list[Group]:
    """Runs alike in every identity field that all of them record are one group; a run that
    records none is a group of its own, named by its directory."""
    shared = [k for k in IDENTITY if all(k in r.identity for r in runs)]
    groups: dict[tuple, list[RunCurves]] = {}
    for run in runs:
        key = tuple(run.identity[k] for k in shared) if shared else ("/".join(run.path.parts[-2:]),)
        groups.setdefault(key, []).append(run)
    varying = [i for i, k in enumerate(shared) if len({key[i] for key in groups}) > 1]
    result = []
    for key, members in groups.items():
        if not shared:
            result.append(Group(key[0], None, members))
            continue
        words = [IDENTITY["method"](key[shared.index("method")])]
        words += [IDENTITY[shared[i]](key[i]) for i in varying if shared[i] != "method"]
        result.append(Group(", ".join(words), str(key[shared.index("method")]), members))
    return sorted(result, key=lambda g: _method_order(g.method, g.label))


def method_colours(count: int) -> list:
    """``count`` colours, one per method, in the order of ``group_runs`` / the demo's table."""
    plt = _pyplot()
    palette = plt.get_cmap("tab10" if count <= 10 else "tab20").colors
    return [palette[i % len(palette)] for i in range(count)]


@dataclass
class Band:
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray          # NaN where fewer than two runs reach a step
    runs: int


def aggregate(curves: list[Curve]) -> Band | None:
    """The runs' mean and sample standard deviation at every step any of them logged; each run
    is interpolated between its own steps and counts only within them."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return None
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    on_grid = np.full((len(curves), len(grid)), np.nan)
    for row, (steps, values) in enumerate(curves):
        inside = (grid >= steps[0]) & (grid <= steps[-1])
        on_grid[row, inside] = np.interp(grid[inside], steps, values)
    counts = np.sum(np.isfinite(on_grid), axis=0)
    filled = np.where(np.isfinite(on_grid), on_grid, 0.0)
    mean = filled.sum(axis=0) / counts
    deviations = np.where(np.isfinite(on_grid), (on_grid - mean) ** 2, 0.0).sum(axis=0)
    std = np.where(counts >= 2, np.sqrt(deviations / np.maximum(counts - 1, 1)), np.nan)
    return Band(grid, mean, std, len(curves))


# --- the curves figure ---------------------------------------------------------------------------
@dataclass
class Panel:
    name: str          # "test", "cost", "training error"
    ylabel: str
    bands: list[tuple[int, str, Band]]   # (group index, network, band)


def _panel(name: str, ylabel: str, groups: list[Group], field: str) -> Panel:
    bands = []
    for index, group in enumerate(groups):
        for network in NETWORKS:
            band = aggregate([getattr(run, field)[network] for run in group.runs])
            if band is not None:
                bands.append((index, network, band))
    return Panel(name, ylabel, bands)


def _evaluation_label(runs: list[RunCurves]) -> str:
    subdirs = {r.eval_subdir for r in runs if r.eval_subdir}
    return "validation error %" if subdirs and all("val" in s for s in subdirs) else "test error %"


def panels(groups: list[Group]) -> list[Panel]:
    """The panels there is data for: evaluations first (the result), then the training cost;
    the training minibatches' error only where no method has a curve of evaluations."""
    runs = [run for group in groups for run in group.runs]
    test = _panel("test", _evaluation_label(runs), groups, "test_error")
    chosen = [p for p in (test, _panel("cost", "training cost\n(labeled images, smoothed)", groups, "cost"))
              if p.bands]
    if not any(len(band.steps) >= 2 for _, _, band in test.bands):
        minibatch = _panel("training error", "error % on training\nminibatches (smoothed)", groups,
                           "training_error")
        if minibatch.bands:
            chosen.append(minibatch)
    return chosen


def _plain(value: float, _position=None) -> str:
    """A tick label as a plain number: 0.6, 20, 1,500 (not 6×10⁻¹)."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.6g}"


def _use_log_scale(values: np.ndarray) -> bool:
    values = values[np.isfinite(values)]
    return bool(len(values)) and bool(np.all(values > 0)) and values.max() / values.min() >= LOG_AXIS_SPAN


def _set_y_scale(axis, panel: Panel) -> bool:
    from matplotlib import ticker  # deferred, with matplotlib

    log = _use_log_scale(np.concatenate([band.mean for _, _, band in panel.bands]))
    if log:
        axis.set_yscale("log")
        axis.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_minor_formatter(ticker.NullFormatter())
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    return log


def _draw_panel(axis, panel: Panel, colours: list, x_span: float) -> None:
    log = _set_y_scale(axis, panel)
    singles = [(i, n) for i, n, band in panel.bands if len(band.steps) == 1]
    for index, network, band in panel.bands:
        colour = colours[index]
        if len(band.steps) == 1:   # one evaluation: a point, its seeds' spread as an error bar
            # side by side, not on top of each other: every method's single point is at its last step
            offset = (singles.index((index, network)) - (len(singles) - 1) / 2) * 0.012 * x_span
            std = band.std if np.all(np.isfinite(band.std)) else None
            axis.errorbar(band.steps + offset, band.mean, yerr=std, fmt=MARKERS[network], color=colour,
                          markerfacecolor=colour if network == "student" else "white", markersize=5,
                          capsize=3, elinewidth=1.2, linestyle="none")
            continue
        axis.plot(band.steps, band.mean, STYLES[network], color=colour, linewidth=1.5)
        has_spread = np.isfinite(band.std)
        if has_spread.any():
            lower = band.mean - band.std
            if log:   # a band reaching 0 or below would vanish on the log axis: clip it there
                lower = np.maximum(lower, band.mean / LOG_AXIS_SPAN)
            axis.fill_between(band.steps, lower, band.mean + band.std, where=has_spread, color=colour,
                              alpha=0.18, linewidth=0)
    if not log:   # linear from 0: how far from no error at all reads off the axis
        highest = max(float(np.nanmax(band.mean + np.nan_to_num(band.std))) for _, _, band in panel.bands)
        axis.set_ylim(0, max(axis.get_ylim()[1], highest * 1.06))   # a lone point's marker not cut at the top
    axis.set_ylabel(panel.ylabel)
    axis.grid(True, which="major", alpha=0.3)


def _legend(axis, groups: list[Group], colours: list, any_band: bool, outside: bool) -> None:
    from matplotlib.lines import Line2D  # deferred, with matplotlib
    from matplotlib.patches import Patch  # deferred, with matplotlib

    handles = [Line2D([], [], color=colours[i], linewidth=2.5,
                      label=f"{g.label} ({len(g.runs)} run{'s' if len(g.runs) != 1 else ''})")
               for i, g in enumerate(groups)]
    handles += [Line2D([], [], color="black", linestyle=STYLES[n], marker=MARKERS[n], markersize=4,
                       markerfacecolor="black" if n == "student" else "white", label=NETWORK_LABELS[n])
                for n in NETWORKS]
    if any_band:
        handles.append(Patch(color="grey", alpha=0.3, label="± std over runs"))
    placement = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if outside else {"loc": "best"}
    axis.legend(handles=handles, fontsize=8, framealpha=0.9, **placement)


def figure(run_dirs: list[str | os.PathLike], title: str | None = None):
    """The matplotlib Figure for these runs (directories, or directories holding them)."""
    from matplotlib.ticker import FuncFormatter  # deferred, with matplotlib

    plt = _pyplot()
    groups = group_runs([read_run_curves(run) for run in find_plot_runs(run_dirs)])
    chosen = panels(groups)
    if not chosen:
        raise BadInput("the runs' logs hold no evaluations (error1/avg), class_loss/ema_class_loss or "
                       "error1/ema_error1 values to plot")
    colours = method_colours(len(groups))
    outside = len(groups) > LEGEND_OUTSIDE
    ratios = [2.0 if p.name == "test" else 1.0 for p in chosen]
    fig, axes = plt.subplots(len(chosen), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios},
                             figsize=(10.5 if outside else 8, 1.4 + 2.0 * sum(ratios)))
    steps = np.concatenate([band.steps for p in chosen for _, _, band in p.bands])
    x_span = float(steps.max() - steps.min()) or max(1.0, float(steps.max()))
    for axis, panel in zip(axes[:, 0], chosen):
        _draw_panel(axis, panel, colours, x_span)
    any_band = any(np.isfinite(band.std).any() for p in chosen for _, _, band in p.bands)
    _legend(axes[0, 0], groups, colours, any_band, outside)
    bottom = axes[-1, 0]
    bottom.set_xlabel("training step")
    bottom.xaxis.set_major_formatter(FuncFormatter(_plain))
    if len(np.unique(steps)) == 1:   # one step only: some room either side of it
        bottom.set_xlim(steps[0] - x_span, steps[0] + x_span)
    subtitle = "student solid, teacher (EMA) dashed; mean over each method's runs"
    axes[0, 0].set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    fig.tight_layout()
    return fig


def write_plot(run_dirs: list[str | os.PathLike], out: str | os.PathLike, title: str | None = None) -> Path:
    out = Path(out)
    file_format = figure_format(out)   # before reading any run
    _save(figure(run_dirs, title), out, file_format)
    return out


def png_bytes(run_dirs: list[str | os.PathLike], title: str | None = None) -> bytes:
    return _save(figure(run_dirs, title), None, "png", dpi=100)


# --- the digits demo's result table --------------------------------------------------------------
def result_figure(rows: list[tuple[str, list[float]]], title: str | None = None,
                  xlabel: str = "test error %"):
    """``rows``: (method, its test error on each data seed), in the table's order, top to bottom.
    Each seed one dot, the mean a black tick with ± one sample standard deviation as a bar; the
    first row's mean (the baseline) as a dotted line through all rows."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter  # deferred, with matplotlib

    rows = [(name, list(values)) for name, values in rows if values]
    if not rows:
        raise BadInput("no results to draw")
    # each method in the colour the curves of its runs have (group_runs' order)
    order = sorted(range(len(rows)), key=lambda i: _method_order(rows[i][0], rows[i][0].replace("_", " ")))
    palette = method_colours(len(rows))
    colours = [palette[order.index(i)] for i in range(len(rows))]
    fig, axis = plt.subplots(figsize=(7.5, 1.3 + 0.42 * len(rows)))
    top = max(max(values) for _, values in rows)
    for y, ((name, values), colour) in enumerate(zip(rows, colours)):
        spread = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else np.zeros(1)
        axis.scatter(values, y + spread, s=22, color=colour, alpha=0.8, edgecolors="none", zorder=3)
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else None
        if std is not None:
            axis.hlines(y, mean - std, mean + std, color="black", linewidth=1.6, zorder=4)
        axis.plot([mean], [y], marker="|", markersize=16, markeredgewidth=2.2, color="black", zorder=5)
        text = f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"
        axis.annotate(text, (1.0, y), xycoords=("axes fraction", "data"), xytext=(6, 0),
                      textcoords="offset points", va="center", fontsize=8)
    axis.axvline(statistics.fmean(rows[0][1]), color="grey", linestyle=":", linewidth=1, zorder=1)
    axis.set_yticks(range(len(rows)), [name.replace("_", " ") for name, _ in rows])
    axis.set_ylim(len(rows) - 0.5, -0.5)   # the table's first row on top
    axis.set_xlim(0, top * 1.08 if top > 0 else 1)
    axis.xaxis.set_major_formatter(FuncFormatter(_plain))
    axis.set_xlabel(xlabel)
    axis.grid(True, axis="x", alpha=0.3)
    seeds = max(len(values) for _, values in rows)
    subtitle = (f"dots: each of {seeds} data seed{'s' if seeds != 1 else ''}; black: mean"
                + (" ± std (n − 1)" if seeds > 1 else "") + f"; dotted: {rows[0][0].replace('_', ' ')}'s mean")
    axis.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    fig.tight_layout()
    return fig


def write_result_figure(rows: list[tuple[str, list[float]]], out: str | os.PathLike,
                        title: str | None = None) -> Path:
    """The figure of ``result_figure``; its file's description holds the numbers drawn (JSON)."""
    out = Path(out)
    # to the table's 2 decimals: errors read back from float32 summaries are 2.5999999...
    numbers = json.dumps({"title": title, "test_error": {name: [round(v, 2) for v in values] for name, values in rows}})
    _save(result_figure(rows, title), out, figure_format(out), description=numbers)
    return out


# --- evaluate --corruptions ----------------------------------------------------------------------
def severity_figure(curves: list[tuple[str, list[float]]], title: str | None = None):
    """``curves``: (label, error % at severity 0 = clean, 1, ..., 5), one line each; a label
    that starts with "baseline" is drawn dashed."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter  # deferred, with matplotlib

    if not curves:
        raise BadInput("no results to draw")
    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    colours = method_colours(len(curves))
    for (label, values), colour in zip(curves, colours):
        axis.plot(range(len(values)), values, marker="o", color=colour, label=label,
                  linestyle="--" if label.startswith("baseline") else "-")
    axis.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    axis.set_xlabel("severity")
    axis.set_ylabel("test error % (mean over the standard corruptions)")
    axis.yaxis.set_major_formatter(FuncFormatter(_plain))
    axis.set_ylim(0, max(max(v) for _, v in curves) * 1.08 or 1)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_severity_figure(curves: list[tuple[str, list[float]]], out: str | os.PathLike,
                          title: str | None = None) -> Path:
    """The figure of ``severity_figure``; its file's description holds the numbers drawn (JSON)."""
    out = Path(out)
    numbers = json.dumps({"title": title, "error_by_severity": {label: [round(v, 2) for v in values]
                                                                for label, values in curves}})
    _save(severity_figure(curves, title), out, figure_format(out), description=numbers)
    return out
