"""``mt-repro digits``: supervised-only vs. Mean Teacher on scikit-learn's 8 x 8 digits.

Both methods run through the same ``Trainer`` and ``MeanTeacher`` as the paper's runs, with the
settings of ``mt_repro/configs/digits.toml``. For each data seed: a class-balanced label file
is written (``mt_repro.data.digits``), then

* Mean Teacher trains on the labeled and the unlabeled training images; its result is the
  teacher's (the EMA model's) test error, as in the paper;
* supervised-only trains on the labeled images alone (``exclude_unlabeled``, no consistency
  cost), with as many labeled images per step and as many SGD steps as Mean Teacher: its epochs
  and its lr schedule (in epochs) are rescaled by the ratio of steps per epoch. Its result is
  the student's test error (the plain network). The EMA of its weights is reported too.

Test error is on the fixed 500 held-out images; mean and (sample, n - 1) standard deviation
over the data seeds.
"""
from __future__ import annotations

import math
import statistics
import time
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from mt_repro.config import TrainConfig
from mt_repro.data import digits
from mt_repro.data.labels import write_label_file
from mt_repro.errors import BadInput

CONFIG_NAME = "digits.toml"


def config_path() -> Path:
    return Path(str(resources.files("mt_repro.configs"))) / CONFIG_NAME


def load_demo_config(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path else config_path()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"demo config {path.name} cannot be read: {exc}") from None
    for table in ("demo", "mean_teacher", "supervised"):
        if not isinstance(data.get(table), dict):
            raise BadInput(f"demo config {path.name} lacks the table [{table}]")
    return data


@dataclass
class DemoRun:
    method: str            # "supervised" or "mean_teacher"
    data_seed: int
    test_error: float      # the reported model: student (supervised) / teacher (mean teacher)
    other_error: float     # the other model: EMA of the supervised weights / MT student
    steps: int
    seconds: float


@dataclass
class DemoResult:
    n_labels: int
    seeds: list[int]
    methods: list[str] = field(default_factory=lambda: ["mean_teacher"])
    runs: list[DemoRun] = field(default_factory=list)
    sampling: str = "two_stream"  # of the semi-supervised methods' minibatches

    def errors(self, method: str) -> list[float]:
        return [r.test_error for r in self.runs if r.method == method]

    def other_errors(self, method: str) -> list[float]:
        return [r.other_error for r in self.runs if r.method == method]

    def table(self) -> str:
        return render_table(self)


def configs_for(data: dict[str, Any], n_labels: int, label_file: Path, data_seed: int,
                epochs: int | None, out_dir: Path) -> tuple[TrainConfig, TrainConfig]:
    """(mean teacher, supervised) configs for one data seed; supervised matched in steps."""
    mt_values = dict(data["mean_teacher"])
    mt_values.update(labels=str(label_file), seed=data_seed, out_dir=str(out_dir / f"mean_teacher_{data_seed}"),
                     device=mt_values.get("device", "cpu"))
    mean_teacher = TrainConfig.from_dict(mt_values, source="digits config [mean_teacher]").validate()
    if epochs is not None:
        rampdown = mean_teacher.lr_rampdown_epochs
        if rampdown:
            rampdown = max(epochs, round(rampdown * epochs / mean_teacher.epochs))
        mean_teacher = mean_teacher.replace(epochs=epochs, lr_rampdown_epochs=rampdown)
    # One evaluation, after the last epoch: it goes into the run's logs and summary.json.
    mean_teacher = mean_teacher.replace(evaluation_epochs=mean_teacher.epochs).validate()
    mt_values = mean_teacher.to_dict()

    sup_values = {**mt_values, **data["supervised"]}
    supervised = TrainConfig.from_dict(sup_values, source="digits config [supervised]")
    n_train = len(digits.test_and_training_indices()[1])
    mt_steps = (n_train - n_labels) // (mean_teacher.batch_size - mean_teacher.labeled_batch_size)
    sup_steps = n_labels // supervised.batch_size
    if mt_steps <= 0 or sup_steps <= 0:
        raise BadInput(f"{n_labels} labels cannot fill the demo's batches "
                       f"(supervised batch {supervised.batch_size}, mean teacher "
                       f"{mean_teacher.batch_size} with {mean_teacher.labeled_batch_size} labeled)")
    ratio = mt_steps / sup_steps

    def scaled(value):
        return None if value is None else max(0, round(value * ratio))

    sup_epochs = max(1, round(mean_teacher.epochs * ratio))
    supervised = supervised.replace(
        epochs=sup_epochs, evaluation_epochs=sup_epochs, lr_rampup=scaled(mean_teacher.lr_rampup),
        lr_rampdown_epochs=None if mean_teacher.lr_rampdown_epochs is None
        else max(sup_epochs, scaled(mean_teacher.lr_rampdown_epochs)),
        out_dir=str(out_dir / f"supervised_{data_seed}")).validate()
    return mean_teacher, supervised


def _demo_setting(data: dict[str, Any], key: str) -> int:
    value = data["demo"].get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"demo config: [demo] {key} must be an integer, got {value!r}")
    return value


def method_config(mean_teacher: TrainConfig, method: str, out_dir: Path, data_seed: int,
                  sampling: str = "two_stream", n_labels: int | None = None) -> TrainConfig:
    """The demo's settings for ``method``: Mean Teacher's, changed by the ``[digits]`` table of
    the method's settings file. With ``sampling="uniform"`` (minibatches drawn from all
    training images) the epochs and every schedule in epochs are rescaled so that the run has
    Mean Teacher's number of SGD steps."""
    from mt_repro.config import coerce_setting
    from mt_repro.methods.registry import method_settings

    if method == "mean_teacher" and sampling == "two_stream":
        return mean_teacher
    hints = typing.get_type_hints(TrainConfig)
    changes = method_settings(method).get("digits", {})
    unknown = sorted(set(changes) - set(hints))
    if unknown:
        raise BadInput(f"configs/methods/{method}.toml [digits]: unknown setting(s) {', '.join(unknown)}")
    typed = {k: coerce_setting(hints, k, v, f"configs/methods/{method}.toml") for k, v in changes.items()}
    suffix = "" if sampling == "two_stream" else f"_{sampling}"
    config = mean_teacher.replace(method=method, out_dir=str(out_dir / f"{method}{suffix}_{data_seed}"), **typed)
    if sampling == "two_stream":
        return config.validate()
    if n_labels is None:
        raise ValueError("uniform sampling needs n_labels to match the steps")
    n_train = len(digits.test_and_training_indices()[1])
    steps = mean_teacher.epochs * ((n_train - n_labels) // (mean_teacher.batch_size - mean_teacher.labeled_batch_size))
    per_epoch = n_train // config.batch_size
    epochs = max(1, round(steps / per_epoch))
    ratio = epochs / config.epochs

    def scaled(value):
        return None if value is None else max(0, round(value * ratio))

    return config.replace(
        sampling=sampling, labeled_batch_size=None, epochs=epochs, evaluation_epochs=epochs,
        lr_rampup=scaled(config.lr_rampup), consistency_rampup=scaled(config.consistency_rampup),
        lr_rampdown_epochs=None if config.lr_rampdown_epochs is None
        else max(epochs, scaled(config.lr_rampdown_epochs))).validate()


def run_demo(n_labels: int | None = None, n_seeds: int | None = None, epochs: int | None = None,
             out_dir: str | Path = "results/digits", *, config: str | Path | None = None,
             methods: list[str] | None = None, sampling: str = "two_stream", mode: str = "faithful",
             progress: bool = True, echo: Callable[[str], None] = print) -> DemoResult:
    from mt_repro.engine.trainer import Trainer, seed_everything
    from mt_repro.methods.registry import method_class

    methods = methods or ["mean_teacher"]
    for method in methods:
        method_class(method)  # an unknown name fails here, before anything runs
    from mt_repro.config import SAMPLINGS

    if sampling not in SAMPLINGS:
        raise BadInput(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")

    data = load_demo_config(config)
    n_labels = _demo_setting(data, "labels") if n_labels is None else n_labels
    n_seeds = _demo_setting(data, "seeds") if n_seeds is None else n_seeds
    if n_seeds < 1:
        raise BadInput(f"--seeds must be at least 1, got {n_seeds}")
    if epochs is not None and epochs < 1:
        raise BadInput(f"--epochs must be at least 1, got {epochs}")
    out_dir = Path(out_dir)
    notes = _NotesOnce(echo)  # the runs' own lines stay quiet; a note (e.g. no bf16) shows once
    result = DemoResult(n_labels, list(range(n_seeds)), list(methods), sampling=sampling)
    for data_seed in result.seeds:
        entries = digits.label_file_entries(n_labels, data_seed)  # checks n_labels first
        label_file = out_dir / "labels" / f"{n_labels}_{data_seed}.txt"
        try:
            label_file.parent.mkdir(parents=True, exist_ok=True)
            write_label_file(label_file, entries)
        except OSError as exc:
            raise BadInput(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
        mean_teacher, supervised = configs_for(data, n_labels, label_file, data_seed, epochs, out_dir)
        runs = [("supervised", supervised)] + [(m, method_config(mean_teacher, m, out_dir, data_seed, sampling, n_labels))
                                               for m in methods]
        for method, cfg in runs:
            cfg = cfg.replace(mode=mode).validate()
            start = time.time()
            seed_everything(data_seed)
            trainer = Trainer(cfg, Path(cfg.out_dir), progress=progress, echo=notes.tell).build()
            if progress:
                echo(f"data seed {data_seed}: {method.replace('_', ' ')}, {trainer.run_epochs} epochs "
                     f"of {len(trainer.data.train_loader)} steps")
            summary = trainer.fit()
            student, teacher = summary["student_error1"], summary["teacher_error1"]
            # Each method is judged by the network its paper reports (Mean Teacher: the teacher).
            reported, other = (teacher, student) if reported_model(method) == "teacher" else (student, teacher)
            result.runs.append(DemoRun(method, data_seed, reported, other, trainer.method.global_step,
                                       time.time() - start))
    return result


class _NotesOnce:
    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.told: set[str] = set()

    def tell(self, line: str) -> None:
        if line.startswith("note:") and line not in self.told:
            self.told.add(line)
            self.echo(line)


def _mean_std(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def render_table(result: DemoResult) -> str:
    rows = [("supervised", result.errors("supervised"))]
    rows += [(m.replace("_", " "), result.errors(m)) for m in result.methods]
    header = ["test error %"] + [f"seed {s}" for s in result.seeds] + ["mean ± std"]
    body = [[name] + [f"{v:.2f}" for v in values] + [_mean_std(values)] for name, values in rows]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    sup = result.errors("supervised")
    seconds = sum(r.seconds for r in result.runs)
    steps = sorted({r.steps for r in result.runs})
    step_note = (f"{steps[0]} SGD steps per run for every method" if len(steps) == 1
                 else f"{'/'.join(map(str, steps))} SGD steps per run")
    others = ", ".join(f"{m.replace('_', ' ')} {_mean_std(result.other_errors(m))}" for m in result.methods)
    by_teacher = [m.replace("_", " ") for m in result.methods if reported_model(m) == "teacher"]
    reported = (f"{', '.join(by_teacher)} = the EMA teacher (as their papers report); " if by_teacher else "")
    notes = [
        f"{result.n_labels} labels, {len(digits.test_and_training_indices()[1]) - result.n_labels} "
        f"unlabeled, {digits.N_TEST} test images (sklearn 8x8 digits); {step_note}; {seconds:.0f} s in all",
        f"supervised = the network trained on the labeled images only; {reported}the others = their network. "
        "The other network of each run (the teacher, or the student where the teacher is reported): "
        f"supervised {_mean_std(result.other_errors('supervised'))}, {others}",
    ]
    if result.sampling != "two_stream":
        notes.append(f"semi-supervised minibatches: {result.sampling} sampling of all training images "
                     "(epochs rescaled to the same number of steps)")
    notes += [f"{m.replace('_', ' ')} - supervised: {paired_difference(result.errors(m), sup)}" for m in result.methods]
    return "\n".join(lines + [""] + notes)


def paired_difference(errors: list[float], supervised: list[float]) -> str:
    """The method's test error minus supervised-only's, seed by seed (both runs of a seed share
    its labels): the mean difference, its standard error over the seeds, and on how many seeds
    the method was better, equal and worse. Pairing takes out how hard each seed's labels
    are, which varies far more between seeds than the methods differ."""
    differences = [e - s for e, s in zip(errors, supervised, strict=True)]
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return f"{mean:+.2f} points"
    standard_error = statistics.stdev(differences) / math.sqrt(len(differences))
    # One image of the 500 is 0.2 points: a difference below a tenth of that is none.
    better, worse = sum(d < -0.01 for d in differences), sum(d > 0.01 for d in differences)
    return (f"{mean:+.2f} ± {standard_error:.2f} points (paired by seed, ± standard error); "
            f"better on {better} of {len(differences)} seeds, equal on {len(differences) - better - worse}, "
            f"worse on {worse}")


def reported_model(method: str) -> str:
    """"teacher" or "student": the network the method's paper reports."""
    from mt_repro.methods.registry import method_class

    return "student" if method == "supervised" else method_class(method).reported_model
