"""``mt-repro digits``: the methods against supervised-only on scikit-learn's 8 x 8 digits.

Every method runs through the same engine as the paper's runs, with the settings of
``mt_repro/configs/digits.toml`` changed by the ``[digits]`` table of its settings file
(``mt_repro.config.compose.digits_run``). For each data seed: a class-balanced label file is
written (``mt_repro.data.digits``), then

* supervised-only trains on the labeled images alone (``exclude_unlabeled``, no consistency
  cost), with as many labeled images per step and as many SGD steps as Mean Teacher: its epochs
  and its lr schedule (in epochs) are rescaled by the ratio of steps per epoch. Its result is
  the student's test error (the plain network). The EMA of its weights is reported too;
* every other method trains on the labeled and the unlabeled training images with Mean
  Teacher's budget of SGD steps; its result is the test error of the network its paper reports
  (the EMA teacher for Mean Teacher, ICT and MixMatch).

Test error is on the fixed 500 held-out images; mean and (sample, n - 1) standard deviation
over the data seeds.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import signal
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mt_repro.apps import evaluate
from mt_repro.config.compose import DemoConfig, digits_run, load_demo_config
from mt_repro.config.saved import read_saved
from mt_repro.config.train import MODES, SAMPLINGS, TrainConfig
from mt_repro.core.errors import BadInput, MtReproError, RunFailed
from mt_repro.core.fileio import write_text_atomic
from mt_repro.core.tables import aligned
from mt_repro.core.threads import choose_threads, parallel_runs
from mt_repro.data import digits
from mt_repro.data.corruptions import CORRUPTIONS, STANDARD
from mt_repro.data.registry import get_dataset
from mt_repro.data.labels import write_label_file
from mt_repro.engine import robustness, runs
from mt_repro.engine.robustness import CorruptionErrors
from mt_repro.engine.recipes import check_config
from mt_repro.engine.threads import network_parameters
from mt_repro.engine.probe import linear_probe_errors
from mt_repro.engine.trainer import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT, SUMMARY_FILE
from mt_repro.methods.registry import method_class, method_names, split_variant

log = logging.getLogger(__name__)
BASELINE = "supervised"
KEPT = "finished already, its result kept"
GRID_FILE = "demo.json"   # in --out: what the last command asked for, for `mt-repro resume OUT`


@dataclass
class DemoRun:
    method: str            # "supervised" or "mean_teacher"
    data_seed: int
    test_error: float      # the reported model: student (supervised) / teacher (mean teacher)
    other_error: float     # the other model: EMA of the supervised weights / MT student
    steps: int
    seconds: float
    pretrained: str | None = None   # the pre-training method whose encoder the run started from

    @property
    def row(self) -> str:
        """The table's row: the method, or "moco → mean_teacher" for one started from an encoder."""
        return self.method if self.pretrained is None else f"{self.pretrained} → {self.method}"


@dataclass
class Probe:
    """Linear-probe test error (%) of one data seed's encoders (``linear_probe``)."""
    data_seed: int
    random_encoder: float
    pretrained_encoder: float
    knn_error: float          # the pre-training run's own kNN monitor, at its end
    steps: int                # of the pre-training run


@dataclass
class DemoResult:
    n_labels: int
    seeds: list[int]
    methods: list[str] = field(default_factory=lambda: ["mean_teacher"])
    runs: list[DemoRun] = field(default_factory=list)
    sampling: str = "two_stream"  # of the semi-supervised methods' minibatches
    wall_seconds: float | None = None   # of the whole grid
    jobs: int = 1                       # runs at a time
    threads: int | None = None          # torch threads per run
    pretrain: str | None = None         # a pre-training method: its encoder starts a second run of each row
    probes: list[Probe] = field(default_factory=list)
    # with corruptions: each row's reported network under the common corruptions, seed by seed
    robustness: dict[str, list[CorruptionErrors]] = field(default_factory=dict)
    corruption_source: str | None = None

    def errors(self, row: str) -> list[float]:
        return [r.test_error for r in self.runs if r.row == row]

    def other_errors(self, row: str) -> list[float]:
        return [r.other_error for r in self.runs if r.row == row]

    @property
    def rows(self) -> list[str]:
        """Supervised, the methods, then (with a pre-training) each of them from its encoder."""
        scratch = [BASELINE, *self.methods]
        return scratch + ([f"{self.pretrain} → {m}" for m in scratch] if self.pretrain else [])

    def table(self) -> str:
        return render_table(self)


def demo_configs(demo: DemoConfig, method: str, n_labels: int, label_file: Path, data_seed: int,
                 epochs: int | None, out_dir: Path, sampling: str = "two_stream",
                 mode: str = "faithful", pretrained: str | None = None) -> TrainConfig:
    """The settings of ``method``'s run for one data seed: the demo's, the method's ``[digits]``
    table, the seed's labels; ``epochs`` (default: the demo's) rescales the learning-rate
    ramp-down with it. Supervised-only, every method with ``sampling="uniform"`` (minibatches
    drawn from all training images) and a pre-training method get their epochs and every
    schedule in epochs rescaled so that they take Mean Teacher's number of SGD steps.
    ``pretrained``: the run starts from the encoder of that pre-training method's run of the
    seed (``init_from``), in a directory of its own."""
    reference = _mean_teacher_budget(demo, label_file, data_seed, epochs, out_dir)
    own_sampling = method == BASELINE or method_class(_name(method)).pretraining
    suffix = "" if sampling == "two_stream" or own_sampling else f"_{sampling}"
    overrides = {"epochs": reference.epochs, "lr_rampdown_epochs": reference.lr_rampdown_epochs,
                 # one evaluation, after the last epoch: in the run's logs and summary.json
                 "evaluation_epochs": reference.epochs, "mode": mode}
    if pretrained is not None:
        suffix += f"_from_{pretrained}"
        overrides["init_from"] = str(pretraining_checkpoint(out_dir, pretrained, data_seed))
    name, options = (method, None) if method == BASELINE else split_variant(method)
    config = digits_run(demo, name, label_file=label_file, data_seed=data_seed,
                        out_dir=out_dir / f"{_dir_name(method)}{suffix}_{data_seed}", overrides=overrides)
    if options is not None:   # a variant: its options over those of the method's [digits] table
        config = config.replace(method_options=",".join(filter(None, [config.method_options, options]))).validate()
    mt_steps = _steps_per_epoch(n_labels, reference)
    if method == BASELINE:
        sup_steps = n_labels // config.batch_size
        if mt_steps <= 0 or sup_steps <= 0:
            raise BadInput(f"{n_labels} labels cannot fill the demo's batches "
                           f"(supervised batch {config.batch_size}, mean teacher "
                           f"{reference.batch_size} with {reference.labeled_batch_size} labeled)")
        epochs_matched = max(1, round(reference.epochs * mt_steps / sup_steps))
        return _rescaled(config, epochs_matched, mt_steps / sup_steps, reference)
    if sampling == "uniform" or config.sampling == "uniform":  # the latter: a pre-training method
        per_epoch = len(digits.test_and_training_indices()[1]) // config.batch_size
        epochs_matched = max(1, round(reference.epochs * mt_steps / per_epoch))
        config = config.replace(sampling="uniform", labeled_batch_size=None)
        return _rescaled(config, epochs_matched, epochs_matched / config.epochs, config, consistency=True)
    return config


def pretraining_checkpoint(out_dir: Path, pretrain: str, data_seed: int) -> Path:
    """The last checkpoint of the seed's pre-training run: the encoder its other runs start from."""
    return out_dir / f"{pretrain}_{data_seed}" / CHECKPOINT_DIR / LAST_CHECKPOINT


def _mean_teacher_budget(demo: DemoConfig, label_file: Path, data_seed: int, epochs: int | None,
                         out_dir: Path) -> TrainConfig:
    """Mean Teacher's run: the budget of SGD steps every method of the demo gets."""
    config = digits_run(demo, "mean_teacher", label_file=label_file, data_seed=data_seed, out_dir=out_dir)
    if epochs is None:
        return config
    rampdown = config.lr_rampdown_epochs
    if rampdown:
        rampdown = max(epochs, round(rampdown * epochs / config.epochs))
    return config.replace(epochs=epochs, lr_rampdown_epochs=rampdown).validate()


def _steps_per_epoch(n_labels: int, config: TrainConfig) -> int:
    """Two-stream minibatches: an epoch is one pass over the unlabeled images."""
    n_train = len(digits.test_and_training_indices()[1])
    return (n_train - n_labels) // (config.batch_size - config.labeled_batch_size)


def _rescaled(config: TrainConfig, epochs: int, ratio: float, schedule: TrainConfig,
              consistency: bool = False) -> TrainConfig:
    """``config`` for ``epochs`` epochs, ``schedule``'s ramps (in epochs) scaled by ``ratio``."""
    def scaled(value):
        return None if value is None else max(0, round(value * ratio))

    changes = dict(epochs=epochs, evaluation_epochs=epochs, lr_rampup=scaled(schedule.lr_rampup),
                   lr_rampdown_epochs=None if schedule.lr_rampdown_epochs is None
                   else max(epochs, scaled(schedule.lr_rampdown_epochs)))
    if consistency:
        changes["consistency_rampup"] = scaled(schedule.consistency_rampup)
    return config.replace(**changes).validate()


def run_demo(n_labels: int | None = None, n_seeds: int | None = None, epochs: int | None = None,
             out_dir: str | Path = "results/digits", *, config: str | Path | None = None,
             methods: list[str] | None = None, sampling: str = "two_stream", mode: str = "faithful",
             progress: bool = True, overwrite: bool = False, jobs: int | None = 1,
             threads: int | None = None, pretrain: str | None = None, corruptions: bool = False) -> DemoResult:
    """The demo's grid: every method and supervised-only on each data seed. ``jobs`` runs at
    once, each in its own process (None: as many as the cores hold at the chosen thread count;
    ``mt-repro digits`` does that); ``threads``: torch threads per run (None: chosen from the
    network's size, ``mt_repro.core.threads``). A run's result depends on its thread count (sums
    in another order), never on ``jobs``: each run seeds itself. ``pretrain``: a pre-training
    method (``moco``) trained on each seed first (all training images, no labels, Mean
    Teacher's number of steps); then every row is trained a second time from its encoder, and
    the encoder's linear probe is compared with a random encoder's. ``corruptions``: each
    row's reported network is then evaluated under the 18 common corruptions that need no
    photographs (generated once, seed 0, for every run), against supervised-only of its seed."""
    methods = [m for m in (methods or ["mean_teacher"]) if m != BASELINE]
    for method in methods:
        if method_class(split_variant(method)[0]).pretraining:  # an unknown name or option fails here, before anything runs
            raise BadInput(f"{method} is a pre-training method (it learns no classes): give it as "
                           f"--pretrain {method}, and the methods to train from its encoder as --method")
    if pretrain is not None and not method_class(pretrain).pretraining:
        raise BadInput(f"--pretrain {pretrain}: not a pre-training method; those are: "
                       f"{', '.join(pretraining_methods()) or 'none'}")
    if sampling not in SAMPLINGS:
        raise BadInput(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    demo = load_demo_config(config)
    n_labels = demo.labels if n_labels is None else n_labels
    n_seeds = demo.seeds if n_seeds is None else n_seeds
    if n_seeds < 1:
        raise BadInput(f"--seeds must be at least 1, got {n_seeds}")
    if epochs is not None and epochs < 1:
        raise BadInput(f"--epochs must be at least 1, got {epochs}")
    out_dir = Path(out_dir)
    plan = [_seed_plan(demo, data_seed, n_labels, [BASELINE, *methods], epochs, out_dir, sampling, mode, pretrain)
            for data_seed in range(n_seeds)]
    for seed_plan in plan:  # every run's settings checked before the first one starts
        for task in seed_plan.tasks:
            check_config(task.config)
            if not overwrite:
                _refuse_other_settings(task.config, task.method)
    # the pre-training runs and those from scratch first; then the runs from the encoders
    phases = [[task for seed_plan in plan for task in seed_plan.tasks if task.phase == phase] for phase in (0, 1)]
    choice = choose_threads(network_parameters(phases[0][0].config), given=threads)
    jobs = parallel_runs(len(phases[0]), given_jobs=jobs, threads_per_run=choice.threads)
    _say(progress, choice.describe() + (f"; {jobs} runs at a time, each in its own process (--jobs N to choose)"
                                        if jobs > 1 else ""))
    _record_grid(out_dir, dict(n_labels=n_labels, n_seeds=n_seeds, epochs=epochs, methods=methods,
                               sampling=sampling, mode=mode, config=None if config is None else os.path.abspath(config),
                               pretrain=pretrain, corruptions=corruptions))
    for seed_plan in plan:
        _write_labels(seed_plan, out_dir)
    result = DemoResult(n_labels, list(range(n_seeds)), list(methods), sampling=sampling, pretrain=pretrain)
    start = time.time()
    outcomes: list[_Outcome] = []
    try:
        for tasks in phases:
            outcomes += _train_all(tasks, jobs, choice.threads, overwrite=overwrite, progress=progress)
    except KeyboardInterrupt as exc:  # named by the grid: `mt-repro resume OUT` continues all of it
        raise runs.RunInterrupted(out_dir) from exc
    tasks = phases[0] + phases[1]
    result.runs = [_demo_run(task, outcome) for task, outcome in zip(tasks, outcomes)
                   if not method_class(_name(task.method)).pretraining]
    if pretrain is not None:
        pretrained = {task.data_seed: outcome.summary for task, outcome in zip(tasks, outcomes)
                      if task.method == pretrain}
        result.probes = [_probe(seed_plan, pretrain, out_dir, pretrained[seed_plan.data_seed]) for seed_plan in plan]
    if corruptions:
        _say(progress, "evaluating every run under the common corruptions")
        result.robustness, result.corruption_source = _corruption_errors(
            [task for task in tasks if not method_class(_name(task.method)).pretraining], progress)
    result.wall_seconds, result.jobs, result.threads = time.time() - start, jobs, choice.threads
    return result


def _corruption_errors(tasks: list["_Task"], progress: bool) -> tuple[dict[str, list[CorruptionErrors]], str]:
    """Each run's reported network (from its last checkpoint) under the corruptions, by row."""
    spec = get_dataset("digits")
    device = torch.device("cpu")
    networks = {}
    for task in tasks:
        checkpoint = Path(task.config.out_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
        loaded = evaluate.load_networks(checkpoint, spec, None, device)
        networks[f"{task.data_seed}/{_row(task)}"] = loaded.networks[reported_model(task.method)]
    measured = robustness.measure(networks, spec, None, None, published=None, seed=0, frost_dir=None,
                                  batch_size=digits.N_TEST, device=device,
                                  progress=(lambda what: _say(progress, f"corrupting: {what}")))
    by_row: dict[str, list[CorruptionErrors]] = {}
    for task in sorted(tasks, key=lambda t: t.data_seed):
        by_row.setdefault(_row(task), []).append(measured.errors[f"{task.data_seed}/{_row(task)}"])
    return by_row, measured.source


def _row(task: "_Task") -> str:
    return task.method if task.pretrained is None else f"{task.pretrained} → {task.method}"


def pretraining_methods() -> list[str]:
    return [name for name in method_names() if method_class(name).pretraining]


def _train_all(tasks: list["_Task"], jobs: int, threads: int, *, overwrite: bool, progress: bool) -> list["_Outcome"]:
    if not tasks:
        return []
    if jobs == 1:
        torch.set_num_threads(threads)
        quiet = _OnceAndWarningsOnly()
        outcomes = []
        for task in tasks:
            with _quiet(quiet):
                outcomes.append(_train(task, overwrite=overwrite, progress=progress))
        return outcomes
    return _train_in_processes(tasks, jobs, threads, overwrite=overwrite, progress=progress)


def _probe(plan: "_SeedPlan", pretrain: str, out_dir: Path, summary: dict) -> Probe:
    """Linear-probe test error of the seed's pre-trained encoder and of a random one (the
    network as the seed's runs initialise it), on the seed's labeled images; ``summary``: the
    pre-training run's."""
    scratch = next(task.config for task in plan.tasks if task.method == BASELINE and task.phase == 0)
    errors = linear_probe_errors(scratch, pretraining_checkpoint(out_dir, pretrain, plan.data_seed))
    return Probe(plan.data_seed, errors[0], errors[1], summary["student_error1"], summary["global_step"])


@dataclass
class _SeedPlan:
    data_seed: int
    label_file: Path
    label_entries: list
    tasks: list["_Task"]   # supervised first


@dataclass(frozen=True)
class _Task:
    """One run of the grid, as a worker process receives it (settings are plain data)."""
    method: str
    data_seed: int
    config: TrainConfig
    pretrained: str | None = None  # the run starts from this pre-training method's encoder
    phase: int = 0                 # 1: after the pre-training runs (it reads their checkpoints)


@dataclass(frozen=True)
class _Outcome:
    summary: dict
    seconds: float


def _seed_plan(demo: DemoConfig, data_seed: int, n_labels: int, methods: list[str], epochs: int | None,
               out_dir: Path, sampling: str, mode: str, pretrain: str | None = None) -> _SeedPlan:
    entries = digits.label_file_entries(n_labels, data_seed)  # checks n_labels first
    label_file = out_dir / "labels" / f"{n_labels}_{data_seed}.txt"

    def configs(method: str, pretrained: str | None = None) -> TrainConfig:
        return demo_configs(demo, method, n_labels, label_file, data_seed, epochs, out_dir, sampling, mode, pretrained)

    tasks = [_Task(m, data_seed, configs(m)) for m in methods]
    if pretrain is not None:
        tasks.insert(0, _Task(pretrain, data_seed, configs(pretrain)))
        tasks += [_Task(m, data_seed, configs(m, pretrain), pretrain, phase=1) for m in methods]
    return _SeedPlan(data_seed, label_file, entries, tasks)


def _write_labels(plan: _SeedPlan, out_dir: Path) -> None:
    try:
        plan.label_file.parent.mkdir(parents=True, exist_ok=True)
        write_label_file(plan.label_file, plan.label_entries)
    except OSError as exc:
        raise BadInput(f"cannot write to {out_dir}: {exc.strerror or exc}") from None


def _demo_run(task: _Task, outcome: _Outcome) -> DemoRun:
    summary = outcome.summary
    student, teacher = summary["student_error1"], summary["teacher_error1"]
    # Each method is judged by the network its paper reports (Mean Teacher: the teacher).
    reported, other = (teacher, student) if reported_model(task.method) == "teacher" else (student, teacher)
    return DemoRun(task.method, task.data_seed, reported, other, summary["global_step"], outcome.seconds,
                   task.pretrained)


def _task_name(task: _Task) -> str:
    return _row(task).replace("_", " ")


def _train(task: _Task, *, overwrite: bool, progress: bool) -> _Outcome:
    start = time.time()
    summary = _run(task.config, Path(task.config.out_dir), _task_name(task), task.data_seed,
                   overwrite=overwrite, progress=progress)
    return _Outcome(dict(summary), time.time() - start)


def _train_in_processes(tasks: list[_Task], jobs: int, threads: int, *, overwrite: bool,
                        progress: bool) -> list[_Outcome]:
    """The runs in ``jobs`` worker processes (spawned: a forked torch may hang in its thread
    pool), one progress line per run as it ends; the outcomes in the order of ``tasks``. Runs
    that finished before are read here (no process is started for them). The workers ignore
    Ctrl-C: this process takes it and stops them; each interrupted run continues from its last
    checkpoint when the grid is resumed."""
    outcomes: dict[int, _Outcome] = {}
    to_train = []
    quiet = _OnceAndWarningsOnly()
    for index, task in enumerate(tasks):   # the workers are silent: what each run finds is said here
        state = _kept_state(Path(task.config.out_dir), overwrite)
        if state is not None:
            _say(progress, f"data seed {task.data_seed}: {_task_name(task)}: {state}")
        if state == KEPT:
            with _quiet(quiet):
                outcomes[index] = _train(task, overwrite=overwrite, progress=False)
        else:
            to_train.append(index)
    if not to_train:
        return [outcomes[i] for i in range(len(tasks))]
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(min(jobs, len(to_train)), initializer=_start_worker, initargs=(threads,))
    try:
        work = [(index, tasks[index], overwrite) for index in to_train]
        for done, (index, outcome) in enumerate(pool.imap_unordered(_train_in_worker, work), start=1):
            if isinstance(outcome, _Failure):
                raise outcome.error()   # the pool's other runs are stopped below
            outcomes[index] = outcome
            task = tasks[index]
            run = _demo_run(task, outcome)
            measure = "kNN error" if method_class(_name(task.method)).evaluation == "knn" else "test error"
            _say(progress, f"data seed {task.data_seed}: {_task_name(task)}: "
                           f"{run.test_error:.2f} % {measure}, {run.steps} steps, {run.seconds:.0f} s "
                           f"({done} of {len(to_train)} runs done)")
        pool.close()   # all done: the workers exit on their own, releasing what they hold
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return [outcomes[i] for i in range(len(tasks))]


@dataclass(frozen=True)
class _Failure:
    """A run's one-line error, carried back from its worker as text (an error class with its
    own constructor arguments would not survive the trip)."""
    failed_run: bool      # RunFailed (exit 1), else BadInput (exit 2)
    message: str

    def error(self) -> Exception:
        return RunFailed(self.message) if self.failed_run else BadInput(self.message)


def _start_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    logging.getLogger("mt_repro").setLevel(logging.WARNING)


def _train_in_worker(work: tuple[int, _Task, bool]) -> tuple[int, _Outcome | _Failure]:
    index, task, overwrite = work
    try:
        return index, _train(task, overwrite=overwrite, progress=False)
    except MtReproError as exc:
        return index, _Failure(isinstance(exc, RunFailed), f"{task.config.out_dir}: {exc}")


def _record_grid(out_dir: Path, choices: dict) -> None:
    """``OUT/demo.json``: the grid this command runs, for ``resume_demo`` (``mt-repro resume OUT``)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / GRID_FILE, json.dumps({"command": "digits", **choices}, indent=2) + "\n")
    except OSError as exc:
        raise BadInput(f"cannot write to {out_dir}: {exc.strerror or exc}") from None


def is_demo_dir(directory: str | Path) -> bool:
    """Whether ``directory`` is the ``--out`` of a digits demo (it holds the grid's record)."""
    return (Path(directory) / GRID_FILE).is_file()


def resume_demo(out_dir: str | Path, *, progress: bool = True, jobs: int | None = 1,
                threads: int | None = None) -> DemoResult:
    """Continue the grid last run into ``out_dir`` with its own choices: finished runs' results
    kept, an interrupted one resumed, the others started."""
    path = Path(out_dir) / GRID_FILE
    if not path.is_file():
        raise BadInput(f"{out_dir} holds no digits demo ({GRID_FILE}): run `mt-repro digits --out {out_dir}` "
                       "with the options it was started with (its finished runs are kept)")
    choices = read_saved(path)
    types = {"n_labels": int, "n_seeds": int, "epochs": (int, type(None)), "methods": list, "sampling": str,
             "mode": str, "config": (str, type(None)), "corruptions": (bool, type(None))}
    if (not isinstance(choices, dict) or choices.get("command") != "digits"
            or any(not isinstance(choices.get(k), t) or (isinstance(choices.get(k), bool) and k != "corruptions")
                   for k, t in types.items())
            or not all(isinstance(m, str) for m in choices["methods"]) or choices["mode"] not in MODES
            or not isinstance(choices.get("pretrain"), (str, type(None)))):
        raise BadInput(f"{path} is not the record of a digits demo: run `mt-repro digits --out {out_dir}` "
                       "with the options it was started with (its finished runs are kept)")
    return run_demo(choices["n_labels"], choices["n_seeds"], choices["epochs"], out_dir, config=choices["config"],
                    methods=choices["methods"], sampling=choices["sampling"], mode=choices["mode"],
                    progress=progress, jobs=jobs, threads=threads, pretrain=choices.get("pretrain"),
                    corruptions=bool(choices.get("corruptions")))


def _run(config, run_dir: Path, method: str, data_seed: int, *, overwrite: bool, progress: bool) -> dict:
    """One run of the demo's grid, as ``table`` treats its runs: a run directory that holds this
    very run finished gives its summary (nothing is trained again, nothing is added to its
    logs), one that holds it interrupted is resumed, an empty one starts it (a directory that
    holds a run with other settings was refused before, unless ``overwrite``)."""
    what = f"data seed {data_seed}: {method}"
    state = _kept_state(run_dir, overwrite)
    if state is not None:
        _say(progress, f"{what}: {state}")
        # at this --out's paths (it may have moved): the label file is used if its content is the run's
        moved = {"labels": config.labels, "out_dir": str(run_dir)}
        if config.init_from is not None:  # the pre-trained encoder moved with --out
            moved["init_from"] = config.init_from
        return runs.resume(run_dir, overrides=moved, progress=progress)
    trainer = runs.start(config, run_dir, overwrite=overwrite, progress=progress)
    _say(progress, f"{what}, {trainer.run_epochs} epochs of {trainer.data.steps_per_epoch} steps")
    return trainer.fit()


def _kept_state(run_dir: Path, overwrite: bool) -> str | None:
    """What becomes of a run directory that holds the run already (None: it holds none, or
    ``overwrite`` starts it afresh)."""
    if overwrite or not (run_dir / CONFIG_FILE).is_file():
        return None
    return KEPT if (run_dir / SUMMARY_FILE).is_file() else "resuming it"


def _refuse_other_settings(config, method: str) -> None:
    """``BadInput`` if the run's directory holds a run with other settings (where the files
    are aside: --out may have moved)."""
    run_dir = Path(config.out_dir)
    if (run_dir / CONFIG_FILE).is_file() and (
            runs.without_locations(runs.read_run_config(run_dir)) != runs.without_locations(config)):
        raise BadInput(f"{run_dir} holds a run of {method} with other settings than this command's: "
                       "start it afresh with --overwrite (its files are removed), or choose another --out")


def _say(progress: bool, message: str) -> None:
    if progress:
        log.info(message)


class _OnceAndWarningsOnly(logging.Filter):
    """The demo's runs speak only to warn, and each warning once (e.g. no bf16 on this device)."""

    def __init__(self) -> None:
        super().__init__()
        self.told: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno < logging.WARNING or message in self.told:
            return False
        self.told.add(message)
        return True


@contextmanager
def _quiet(runs_filter: logging.Filter):
    loggers = [logging.getLogger(runs.__name__), logging.getLogger(runs.Trainer.__module__)]
    for logger in loggers:
        logger.addFilter(runs_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(runs_filter)


def _mean_std(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def render_table(result: DemoResult) -> str:
    rows = [(row.replace("_", " "), result.errors(row)) for row in result.rows]
    header = ["test error %"] + [f"seed {s}" for s in result.seeds] + ["mean ± std"]
    body = [[name] + [f"{v:.2f}" for v in values] + [_mean_std(values)] for name, values in rows]
    if result.probes:
        body.append(["linear probe, random encoder"] + [f"{p.random_encoder:.2f}" for p in result.probes]
                    + [_mean_std([p.random_encoder for p in result.probes])])
        body.append([f"linear probe, {result.pretrain} encoder"] + [f"{p.pretrained_encoder:.2f}" for p in result.probes]
                    + [_mean_std([p.pretrained_encoder for p in result.probes])])
    lines = aligned([header] + body, rule=True)
    sup = result.errors(BASELINE)
    seconds = sum(r.seconds for r in result.runs)
    steps = sorted({r.steps for r in result.runs})
    step_note = (f"{steps[0]} SGD steps per run for every method" if len(steps) == 1
                 else f"{'/'.join(map(str, steps))} SGD steps per run")
    others = ", ".join(f"{row.replace('_', ' ')} {_mean_std(result.other_errors(row))}" for row in result.rows[1:])
    by_teacher = [m.replace("_", " ") for m in result.methods if reported_model(m) == "teacher"]
    reported = (f"{', '.join(by_teacher)} = the EMA teacher (as their papers report); " if by_teacher else "")
    notes = [
        f"{result.n_labels} labels, {len(digits.test_and_training_indices()[1]) - result.n_labels} "
        f"unlabeled, {digits.N_TEST} test images (sklearn 8x8 digits); {step_note}; {_timing(result, seconds)}",
        f"supervised = the network trained on the labeled images only; {reported}the others = their network. "
        "The other network of each run (the teacher, or the student where the teacher is reported): "
        f"supervised {_mean_std(result.other_errors(BASELINE))}, {others}",
    ]
    if result.sampling != "two_stream":
        notes.append(f"semi-supervised minibatches: {result.sampling} sampling of all training images "
                     "(epochs rescaled to the same number of steps)")
    if result.pretrain:
        knn = [p.knn_error for p in result.probes]
        pretrain_steps = "/".join(map(str, sorted({p.steps for p in result.probes})))
        notes.append(f"{result.pretrain} → X = X trained from the seed's {result.pretrain} encoder (pre-trained on "
                     f"every training image, no labels, {pretrain_steps} steps; its kNN "
                     f"monitor at the end: {_mean_std(knn)} % error), heads initialised afresh; linear probe = "
                     "logistic regression on the frozen encoder's features of the labeled images, tested on the "
                     "test images (random encoder: the network as the seed initialises it)")
    notes += [f"{m.replace('_', ' ')} - supervised: {paired_difference(result.errors(m), sup)}" for m in result.methods]
    if result.pretrain:
        notes += [f"{result.pretrain} → {m.replace('_', ' ')} - {m.replace('_', ' ')}: "
                  f"{paired_difference(result.errors(f'{result.pretrain} → {m}'), result.errors(m))}"
                  for m in [BASELINE, *result.methods]]
        notes.append(f"linear probe, {result.pretrain} - random encoder: "
                     f"{paired_difference([p.pretrained_encoder for p in result.probes], [p.random_encoder for p in result.probes])}")
    return "\n".join(lines + [""] + notes + robustness_table(result))


def robustness_table(result: DemoResult) -> list[str]:
    """Clean error, mean corruption error, mCE and relative mCE against supervised-only (seed
    by seed, then mean ± std over the seeds) of each row, when the demo measured them."""
    if not result.robustness:
        return []
    header = ["under corruptions", "clean error %", "mean corruption error %", "mCE %", "relative mCE %"]
    base = result.robustness.get(BASELINE)
    body = []
    for row in result.rows:
        per_seed = result.robustness.get(row)
        if not per_seed:
            continue
        cells = [row.replace("_", " "), _mean_std([e.clean for e in per_seed]),
                 _mean_std([e.mean_corruption_error for e in per_seed])]
        for measure in (robustness.mce, robustness.relative_mce):
            values = [measure(e, b) for e, b in zip(per_seed, base)]
            cells.append(_mean_std(values) if all(not math.isnan(v) for v in values) else "undefined")
        body.append(cells)
    lines = aligned([header] + body, rule=True)
    names = [n for n in CORRUPTIONS if n in base[0].errors]
    standard = sum(n in STANDARD for n in names)
    return ["", *lines, "",
            f"the network each row reports, on the {digits.N_TEST} test images under {len(names)} common corruptions "
            f"(Hendrycks & Dietterich 2019; {result.corruption_source}; {standard} standard ones in the means, "
            "frost left out: it needs the benchmark's photographs) at severities 1-5; mCE and relative mCE "
            "against supervised-only of the same seed (100 % = as robust as it), then mean ± std over the seeds"]


def _timing(result: DemoResult, seconds: float) -> str:
    if result.wall_seconds is None or result.jobs == 1:
        return f"{seconds:.0f} s in all"
    return (f"{seconds:.0f} s of training, {result.wall_seconds:.0f} s wall time "
            f"({result.jobs} runs at a time, {result.threads} torch thread{'s' if result.threads != 1 else ''} each)")


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
    return method_class(_name(method)).reported_model


def _name(method: str) -> str:
    """The method of a row: "self_training" for "self_training[noise=randaugment]"."""
    return method.partition("[")[0].strip()


def _dir_name(method: str) -> str:
    """A row's run directory name: "self_training-noise-randaugment" for the variant."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", method).strip("-")
