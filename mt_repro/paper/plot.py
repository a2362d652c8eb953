"""Training curves in the style of the paper's Fig. 3: classification cost (top) and
classification error (bottom) of the student (solid) and the teacher (dashed) against training
steps, log-scale, one colour per run.

Reads a run's ``training.jsonl`` (per-step ``class_loss``/``ema_class_loss`` and
``error1``/``ema_error1`` on the labeled part of each minibatch, smoothed with a running mean as
the paper's figure is) and ``validation.jsonl``/``ema_validation.jsonl`` (``error1/avg`` of each
evaluation, drawn as markers). Columns a run lacks are skipped.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from mt_repro.errors import BadInput

SERIES = {  # panel -> ((training-log column, evaluation log, label), ...) for student, teacher
    "classification cost": (("class_loss", None, "student"), ("ema_class_loss", None, "teacher")),
    "classification error %": (("error1", "validation.jsonl", "student"),
                               ("ema_error1", "ema_validation.jsonl", "teacher")),
}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` points (shorter at the start)."""
    if window <= 1 or len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (cumulative[1:] - cumulative[starts]) / (np.arange(1, len(values) + 1) - starts)


def _column(rows: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(row["step"], row[name]) for row in rows if row.get(name) is not None and "step" in row]
    if not points:
        return np.zeros(0), np.zeros(0)
    steps, values = map(np.asarray, zip(*points))
    return steps.astype(float), values.astype(float)


def figure(run_dirs: list[str | os.PathLike]):
    """The matplotlib Figure for these run directories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mt_repro.logs.runlog import read_rows

    runs = [Path(d) for d in run_dirs]
    for run in runs:
        if not (run / "training.jsonl").is_file():
            raise BadInput(f"{run} has no training.jsonl: not a run directory of mt-repro")
    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for index, run in enumerate(runs):
        rows = read_rows(run / "training.jsonl")
        colour = colours[index % len(colours)]
        for axis, (panel, series) in zip(axes, SERIES.items()):
            for (column, evaluation_log, who), style in zip(series, ("-", "--")):
                steps, values = _column(rows, column)
                smoothed = smooth(values, max(1, len(values) // 50))
                positive = smoothed > 0  # a log axis cannot show a perfect minibatch
                if positive.any():
                    axis.plot(steps[positive], smoothed[positive], style, color=colour,
                              label=f"{run.name} {who}", linewidth=1.2)
                    drawn += 1
                if evaluation_log and (run / evaluation_log).is_file():
                    eval_steps, eval_values = _column(read_rows(run / evaluation_log), "error1/avg")
                    keep = eval_values > 0
                    axis.plot(eval_steps[keep], eval_values[keep], "o" if who == "student" else "s",
                              color=colour, markersize=4, fillstyle="none",
                              label=f"{run.name} {who}, evaluation")
            axis.set_yscale("log")
            axis.set_ylabel(panel)
            axis.grid(True, which="both", alpha=0.3)
    if not drawn:
        raise BadInput("the runs' training logs hold no class_loss/error1 values to plot")
    axes[-1].set_xlabel("training step")
    for axis in axes:
        axis.legend(fontsize=7, ncol=2)
    axes[0].set_title("student (solid) and teacher (dashed); evaluations as markers")
    fig.tight_layout()
    return fig


def write_plot(run_dirs: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    out = Path(out)
    fig = figure(run_dirs)
    try:
        fig.savefig(out, dpi=120)
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out


def png_bytes(run_dirs: list[str | os.PathLike]) -> bytes:
    import matplotlib.pyplot as plt

    fig = figure(run_dirs)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
