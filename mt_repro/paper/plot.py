"""Training curves in the style of the paper's Fig. 3: classification cost (top) and
classification error (bottom) of the student (solid) and the teacher (dashed) against training
steps, log-scale y axes, one colour per run.

Columns read (any a run lacks are skipped; a run with none of them is an error):

* top, ``training.jsonl``: ``step``, ``class_loss`` / ``ema_class_loss``: the student's /
  teacher's classification cost on the minibatch's labeled images, smoothed by a running mean
  as the paper's figure is; runs of both recipes log it summed over the labeled images and
  divided by the whole minibatch, as both halves of the original computed it.
* bottom, ``validation.jsonl`` / ``ema_validation.jsonl``: ``step`` and ``error1/avg`` of each
  evaluation on the test set. A run evaluated fewer than twice has no curve there; its training
  minibatches' error (``error1`` / ``ema_error1`` of ``training.jsonl``, smoothed) is drawn
  instead, thinner, and the legend says so.

Values of 0 (a perfect minibatch) cannot sit on a log axis: they break the line. Rendered with
matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from mt_repro.core.errors import BadInput
from mt_repro.logs.runlog import read_rows

TRAINING_LOG = "training.jsonl"
COST = (("class_loss", "-"), ("ema_class_loss", "--"))                       # student, teacher
EVALUATION = (("validation.jsonl", "-"), ("ema_validation.jsonl", "--"))
TRAINING_ERROR = (("error1", "-"), ("ema_error1", "--"))
MAX_LEGEND_RUNS = 12
SMOOTHING_POINTS = 30   # the running mean covers 1/30 of a run's logged rows


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` points (shorter at the start)."""
    if window <= 1 or len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _column(rows: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(row["step"], row[name]) for row in rows
              if isinstance(row.get(name), (int, float)) and isinstance(row.get("step"), (int, float))]
    if not points:
        return np.zeros(0), np.zeros(0)
    steps, values = map(np.asarray, zip(*points))
    keep = np.isfinite(values)
    return steps[keep].astype(float), values[keep].astype(float)


def _log_safe(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, values, np.nan)


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


def _name(run: Path) -> str:
    return "/".join(run.parts[-2:])


def figure(run_dirs: list[str | os.PathLike], title: str | None = None):
    """The matplotlib Figure for these runs (directories, or directories holding them)."""
    import matplotlib  # deferred: a second of import time, for the plotting commands only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred, with matplotlib

    runs = find_plot_runs(run_dirs)
    fig, (cost_axis, error_axis) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn, from_training = 0, 0
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        rows = read_rows(run / TRAINING_LOG)
        for column, style in COST:
            steps, values = _column(rows, column)
            if np.any(values > 0):
                smoothed = smooth(values, max(1, len(values) // SMOOTHING_POINTS))
                cost_axis.plot(steps, _log_safe(smoothed), style, color=colour, linewidth=1.2)
                drawn += 1
        evaluations = [_column(read_rows(run / log), "error1/avg") + (style,) for log, style in EVALUATION]
        label = _name(run)
        if any(len(steps) >= 2 for steps, _, _ in evaluations):
            for steps, values, style in evaluations:
                if np.any(values > 0):
                    error_axis.plot(steps, _log_safe(values), style, color=colour, linewidth=1.2,
                                    marker="o" if style == "-" else "s", markersize=2.5)
                    drawn += 1
        else:   # no curve of test-set evaluations: the training minibatches' error instead
            label += " (error on training minibatches)"
            from_training += 1
            for column, style in TRAINING_ERROR:
                steps, values = _column(rows, column)
                if np.any(values > 0):
                    smoothed = smooth(values, max(1, len(values) // SMOOTHING_POINTS))
                    error_axis.plot(steps, _log_safe(smoothed), style, color=colour, linewidth=0.8)
                    drawn += 1
        if len(runs) <= MAX_LEGEND_RUNS:
            cost_axis.plot([], [], "-", color=colour, label=label)
    if not drawn:
        plt.close(fig)
        raise BadInput("the runs' logs hold no class_loss/ema_class_loss, evaluations or error1/ema_error1 "
                       "values to plot")
    error_source = ("training minibatches" if from_training == len(runs) else
                    "test set" if not from_training else "test set or training minibatches")
    for axis, name in ((cost_axis, "classification cost\n(training, labeled images)"),
                       (error_axis, f"classification error %\n({error_source})")):
        axis.set_yscale("log")
        axis.set_ylabel(name)
        axis.grid(True, which="both", alpha=0.3)
    if len(runs) <= MAX_LEGEND_RUNS:
        cost_axis.legend(fontsize=7)
    error_axis.set_xlabel("training step")
    subtitle = "student solid, teacher (EMA) dashed"
    cost_axis.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    fig.tight_layout()
    return fig


def write_plot(run_dirs: list[str | os.PathLike], out: str | os.PathLike, title: str | None = None) -> Path:
    import matplotlib.pyplot as plt  # deferred, as in figure()

    out = Path(out)
    fig = figure(run_dirs, title)
    try:
        fig.savefig(out, dpi=120, format="png")
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


def png_bytes(run_dirs: list[str | os.PathLike], title: str | None = None) -> bytes:
    import matplotlib.pyplot as plt  # deferred, as in figure()

    fig = figure(run_dirs, title)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()
