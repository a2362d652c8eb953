#!/usr/bin/env python
"""Whole Mean Teacher training steps on the CPU: mt-repro's faithful mode against the original code.

A step is everything one iteration of the training loop does: load and augment the minibatch
(``--workers 0``, in the main process), teacher forward, student forward and backward, the SGD
step, the teacher's EMA update and the loop's own bookkeeping (meters, ``.item()`` calls, a log
record every ``--print-freq`` steps). Both sides run their real epoch loops on the same synthetic
by-image CIFAR-10 tree, with the same original ``main.py`` flags and the same seeds:

* ours: ``Trainer.train_one_epoch`` of a ``Trainer`` built from those flags;
* the original (with ``--legacy``): ``train()`` of the original ``main.py`` imported from the
  given checkout, with its module-level ``args`` parsed by its own command-line parser and its
  loaders, models and optimizer built through its own functions as its ``main()`` does.

Evaluation and checkpoints happen between epochs in both programs and are not timed. The loop
is timed through a thin wrapper around the training ``DataLoader``: it stamps the moment the
loop asks for each minibatch, so step ``i`` lasts from asking for minibatch ``i`` to asking for
minibatch ``i + 1`` (loading + computing). Each program first runs one untimed epoch of
``--warmup`` steps, and the first ``--warmup`` steps of each measured epoch are dropped.
Measurements alternate between the two programs in this one process (pairs in the order AB, BA,
AB, ...), each epoch starting from the same seed on both sides, so both programs compute the
same numbers (checked: the logged losses must agree) and machine noise hits both alike. A
reading of /proc/stat around each measured epoch tells how much CPU other processes took.

    python benchmarks/bench_faithful_vs_original.py --legacy CHECKOUT/pytorch

writes ``benchmarks/results/<date>-cpu-faithful-vs-original.txt`` (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision

from mt_repro.data.synthetic import write_image_tree, write_label_file
from mt_repro.core.rng import seed_everything
from mt_repro.core.types import Batch
from mt_repro.engine.trainer import Trainer
from mt_repro.legacy.main_flags import parse as parse_main_flags

from machine import CpuMeter, cpu_count, cpu_model, load_average, mt_repro_revision, wait_for_idle

HERE = Path(__file__).resolve().parent
# Where the original main.py looks for CIFAR-10, relative to its working directory.
DATA_SUBDIR = "data-local/images/cifar/cifar10/by-image"
N_CLASSES = 10
# Loss values logged by both programs at the same steps must agree to this (relative).
SAME_WORK_RTOL = 1e-4
# Above this many cores used by other processes during a measured epoch, the run is flagged.
BUSY_CORES = 0.15
IDLE_WAIT_S = 180


# --- timing --------------------------------------------------------------------------------
class StepClock:
    """Stands in for the training loader: yields its first ``steps`` minibatches and stamps
    when the loop asks for each one (``asked``) and when it has it (``got``)."""

    def __init__(self, loader, steps: int):
        self.loader = loader
        self.steps = steps
        self.asked: list[float] = []
        self.got: list[float] = []

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        self.asked, self.got = [], []
        batches = iter(self.loader)
        for _ in range(self.steps):
            self.asked.append(time.perf_counter())
            batch = next(batches)
            self.got.append(time.perf_counter())
            yield batch
        self.asked.append(time.perf_counter())  # the loop asked for one more: the last step ended

    def step_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.asked, self.asked[1:])]

    def load_seconds(self) -> list[float]:
        return [g - a for a, g in zip(self.asked, self.got)]


# --- the two programs ----------------------------------------------------------------------
class Ours:
    name = "mt-repro (faithful)"

    def __init__(self, flags: list[str], out_dir: Path):
        config, _ = parse_main_flags([*flags, "--device", "cpu"])
        self.trainer = Trainer(config, out_dir, progress=False).build()
        self.loader = self.trainer.data.train_loader
        self.losses: dict[float, float] = {}

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def run_epoch(self, epoch: int, clock: StepClock) -> None:
        """The engine's steps over the clock's minibatches; the schedule sees an epoch of the
        clock's length, as the original's ``train`` sees ``len(train_loader)``."""
        self.trainer.train_mode()
        for i, ((student_input, teacher_input), targets) in enumerate(clock):
            _, result = self.trainer.step(Batch(student_input, teacher_input, targets, {}), epoch, i, len(clock))
            if i % self.trainer.config.print_freq == 0:  # the original's log rows
                self.losses[epoch + i / len(clock)] = result.values["loss"]

    def logged_losses(self) -> dict[float, float]:
        return dict(self.losses)


class Original:
    name = "original main.py"

    def __init__(self, checkout: Path, flags: list[str], out_dir: Path):
        main_file = checkout / "main.py"
        if not main_file.is_file() or not (checkout / "mean_teacher").is_dir():
            sys.exit(f"--legacy {checkout}: expected the original's pytorch/ directory "
                     "(main.py and mean_teacher/)")
        sys.path.insert(0, str(checkout))
        spec = importlib.util.spec_from_file_location("original_mean_teacher_main", main_file)
        program = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(program)
        train_log_class = importlib.import_module("mean_teacher.run_context").TrainLog
        self.program = program

        # The original reads its settings from the module global ``args``.
        program.args = settings = program.cli.create_parser().parse_args(flags)
        dataset = dict(program.datasets.__dict__[settings.dataset]())
        num_classes = dataset.pop("num_classes")
        self.loader, _ = program.create_data_loaders(**dataset, args=settings)

        def network(ema: bool) -> torch.nn.Module:
            factory = program.architectures.__dict__[settings.arch]
            wrapped = torch.nn.DataParallel(factory(pretrained=settings.pretrained, num_classes=num_classes))
            if ema:
                for parameter in wrapped.parameters():
                    parameter.detach_()
            return wrapped

        self.student, self.teacher = network(False), network(True)
        self.optimizer = torch.optim.SGD(self.student.parameters(), settings.lr,
                                         momentum=settings.momentum, nesterov=settings.nesterov,
                                         weight_decay=settings.weight_decay)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log = train_log_class(str(out_dir), "training")

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def run_epoch(self, epoch: int, clock: StepClock) -> None:
        self.program.train(clock, self.student, self.teacher, self.optimizer, epoch, self.log)

    def logged_losses(self) -> dict[float, float]:
        return {step: float(values["loss"]) for step, values in self.log._log.items()}


# --- set-up ----------------------------------------------------------------------------------
def original_flags(args, labels: Path) -> list[str]:
    """Flags of the original main.py: the paper's CIFAR-10 settings (cifar10_4000) with the
    benchmark's batch sizes; ``--epochs``/``--lr-rampdown-epochs`` only bound the schedules."""
    return ["--dataset", "cifar10", "--arch", args.arch,
            "--train-subdir", "train+val", "--eval-subdir", "test", "--labels", str(labels),
            "--batch-size", str(args.batch_size), "--labeled-batch-size", str(args.labeled_batch_size),
            "--lr", "0.05", "--nesterov", "True", "--weight-decay", "2e-4",
            "--consistency", "100", "--consistency-type", "mse", "--consistency-rampup", "5",
            "--logit-distance-cost", "0.01", "--ema-decay", "0.97",
            "--epochs", "180", "--lr-rampdown-epochs", "210",
            "--workers", "0", "--print-freq", str(args.print_freq)]


def write_dataset(workdir: Path, args, steps_per_epoch: int) -> tuple[Path, int, int]:
    """A tree whose two-stream epoch has (at least) ``steps_per_epoch`` minibatches."""
    unlabeled_per_batch = args.batch_size - args.labeled_batch_size
    labeled_per_class = math.ceil(args.labeled_batch_size / N_CLASSES)
    unlabeled_per_class = math.ceil(unlabeled_per_batch * steps_per_epoch / N_CLASSES)
    root = write_image_tree(workdir / DATA_SUBDIR, train_per_class=labeled_per_class + unlabeled_per_class,
                            test_per_class=1, seed=args.seed)
    labels = write_label_file(workdir / "labels.txt", root, per_class=labeled_per_class)
    return labels, N_CLASSES * labeled_per_class, N_CLASSES * unlabeled_per_class


# --- reporting -------------------------------------------------------------------------------
def summarise(per_repeat: list[dict[str, float]], batch_size: int) -> dict[str, float]:
    step = statistics.median(r["step"] for r in per_repeat)
    return {"step": step, "min": min(r["step"] for r in per_repeat), "max": max(r["step"] for r in per_repeat),
            "load": statistics.median(r["load"] for r in per_repeat),
            "steps_per_s": 1.0 / step, "images_per_s": batch_size / step}


def table(results: dict[str, dict[str, float]]) -> str:
    header = (f"{'program':<22} {'s/step (median)':>15} {'min..max over repeats':>22} "
              f"{'of which loading':>16} {'steps/s':>8} {'images/s':>9}")
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        lines.append(f"{name:<22} {r['step']:>15.3f} {r['min']:>10.3f}..{r['max']:<10.3f} "
                     f"{r['load']:>16.3f} {r['steps_per_s']:>8.3f} {r['images_per_s']:>9.2f}")
    return "\n".join(lines)


@contextlib.contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def main(argv: list[str] | None = None) -> int:
    today = datetime.date.today().isoformat()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legacy", type=Path, metavar="PATH",
                        help="the pytorch/ directory of a checkout of the original code made runnable "
                             "on current PyTorch; without it only mt-repro is timed")
    parser.add_argument("--arch", default="cifar_shakeshake26")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--labeled-batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat (default 10)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps: one epoch of them per program before the first repeat, "
                             "and the first ones of each measured epoch (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="measured epochs per program (default 3)")
    parser.add_argument("--print-freq", type=int, default=10,
                        help="the original's --print-freq: one log record every N steps (default 10)")
    parser.add_argument("--retry-busy", type=int, default=0, metavar="N",
                        help="measure a repeat again (both programs, after waiting for the machine to be "
                             f"idle) when other processes took over {BUSY_CORES} cores; at most N times")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"result file (default benchmarks/results/{today}-cpu-faithful-vs-original.txt; "
                             "...-cpu-faithful.txt without --legacy)")
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    if min(args.steps, args.repeats) < 1 or args.warmup < 0 or not 0 < args.labeled_batch_size < args.batch_size:
        parser.error("need --steps, --repeats >= 1, --warmup >= 0 and 0 < --labeled-batch-size < --batch-size")
    if args.repeats >= 180:
        parser.error("--repeats must stay below the 180 epochs of the schedule")
    suffix = "faithful-vs-original" if args.legacy else "faithful"
    out = args.out or HERE / "results" / f"{today}-cpu-{suffix}.txt"
    legacy = args.legacy.resolve() if args.legacy else None
    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # the original pins; no GPU here

    load_at_start = load_average()
    started = time.time()
    steps_per_epoch = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp, working_directory(Path(tmp)):
        workdir = Path(tmp)
        labels, n_labeled, n_unlabeled = write_dataset(workdir, args, steps_per_epoch)
        flags = original_flags(args, labels)

        programs = []
        seed_everything(args.seed)
        programs.append(Ours(flags, workdir / "ours"))
        if legacy is not None:
            seed_everything(args.seed)  # same initial weights on both sides
            programs.append(Original(legacy, flags, workdir / "original"))
        for program in programs:
            if program.steps_per_epoch() < steps_per_epoch:
                sys.exit(f"{program.name}: only {program.steps_per_epoch()} steps per epoch")

        # One untimed epoch of --warmup steps per program first: the first steps in a process pay
        # for allocator growth and kernel set-up, which must not fall on whoever goes first.
        for program in programs:
            if args.warmup:
                seed_everything(args.seed)
                program.run_epoch(0, StepClock(program.loader, args.warmup))

        per_repeat = {p.name: [] for p in programs}
        retries_left, discarded, repeat = args.retry_busy, 0, 0
        while repeat < args.repeats:
            order = programs if repeat % 2 == 0 else programs[::-1]
            measured = {}
            for program in order:
                seed_everything(args.seed + 1 + repeat)
                clock = StepClock(program.loader, steps_per_epoch)
                cpu = CpuMeter()
                program.run_epoch(repeat, clock)
                others = cpu.others()
                timed = slice(args.warmup, None)
                steps, loads = clock.step_seconds()[timed], clock.load_seconds()[timed]
                measured[program.name] = {"step": statistics.fmean(steps), "load": statistics.fmean(loads),
                                          "others": others}
                print(f"repeat {repeat + 1}/{args.repeats}  {program.name:<22} "
                      f"{statistics.fmean(steps):.3f} s/step ({statistics.fmean(loads):.3f} loading)"
                      f"{'' if others is None else f'; other processes used {others:.2f} cores'}", flush=True)
            if retries_left and any((r["others"] or 0.0) > BUSY_CORES for r in measured.values()):
                # Both programs again (both trained one more epoch alike), once the machine is idle.
                retries_left, discarded = retries_left - 1, discarded + 1
                print(f"other processes were busy: repeat {repeat + 1} again", flush=True)
                wait_for_idle(IDLE_WAIT_S)
                continue
            for name, row in measured.items():
                per_repeat[name].append(row)
            repeat += 1
        same_work = None
        if len(programs) == 2:
            ours_log, theirs_log = (p.logged_losses() for p in programs)
            common = sorted(set(ours_log) & set(theirs_log))
            if common:
                same_work = (len(common), max(abs(ours_log[k] - theirs_log[k]) / max(abs(theirs_log[k]), 1e-12)
                                              for k in common))
    wall = time.time() - started

    results = {name: summarise(rows, args.batch_size) for name, rows in per_repeat.items()}
    report = [table(results)]
    if len(results) == 2:
        ours, theirs = results.values()
        report.append(f"\nratio ours/original steps/s: {ours['steps_per_s'] / theirs['steps_per_s']:.3f}"
                      "  (> 1: mt-repro is faster)")
    busiest = max((r["others"] for rows in per_repeat.values() for r in rows if r["others"] is not None),
                  default=None)
    if busiest is not None:
        verdict = "quiet" if busiest <= BUSY_CORES else "BUSY: rerun on an idle machine"
        report.append(f"other processes used at most {busiest:.2f} cores during a measured epoch ({verdict})")
    if same_work is not None:
        count, worst = same_work
        verdict = "same computation" if worst <= SAME_WORK_RTOL else "DIFFERENT computation: timings not comparable"
        report.append(f"logged losses compared at {count} steps: max relative difference {worst:.2e} ({verdict})")
    text = "\n".join(report)
    print("\n" + text)

    if args.no_save:
        return 0
    command = "python benchmarks/bench_faithful_vs_original.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    def cell(r):
        return f"{r['step']:.3f}" + ("" if r["others"] is None else f" ({r['others']:.2f})")

    per_run = "\n".join(f"  {name}: " + ", ".join(cell(r) for r in rows) for name, rows in per_repeat.items())
    header = [
        "Mean Teacher training steps on CPU: mt-repro faithful mode"
        + (" vs the original code" if legacy is not None else ""),
        f"date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"command: {command}",
        f"machine: {cpu_model()}, {cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        f"load average (1/5/15 min) before: {load_at_start}; after: {load_average()}",
        f"code: {mt_repro_revision()}",
        f"versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, numpy {np.__version__}, pillow {PIL.__version__}",
        f"settings: arch {args.arch}, batch {args.batch_size} ({args.labeled_batch_size} labeled), "
        f"workers 0, steps timed per repeat {args.steps} after {args.warmup} warm-up steps "
        f"(plus one untimed epoch of {args.warmup} steps per program first), "
        f"repeats {args.repeats}{' (interleaved AB, BA, ...)' if legacy is not None else ''}, "
        f"print-freq {args.print_freq}, seed {args.seed}",
        f"repeats measured again because other processes were busy: {discarded} (--retry-busy {args.retry_busy})",
        f"data: synthetic by-image CIFAR-10 tree, {n_labeled} labeled + {n_unlabeled} unlabeled 32x32 PNGs",
        f"original main.py flags: {shlex.join(flags).replace(str(labels), 'labels.txt')}",
        "images/s counts minibatch images (each is augmented twice: student and teacher views)",
        f"wall time of the benchmark: {wall:.0f} s",
        "",
        "mean s/step of each repeat, in order (cores used by other processes meanwhile):",
        per_run,
        "",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + text + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
