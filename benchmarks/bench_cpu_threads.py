#!/usr/bin/env python
"""The digits demo on a small CPU: training steps per mode, and the demo's wall time when the
machine is idle and when other processes keep its cores busy, before and after the thread
choice (``mt_repro.core.threads``).

Two measurements, in one run, written to one dated result file:

1. Steps per second of the digits ConvNet (Mean Teacher, the demo's settings, 1 torch thread),
   faithful against fast mode: a ``Trainer`` per mode trains one untimed epoch, then timed
   epochs alternate between the modes (AB, BA, ...); each figure is the best epoch. A step is
   ``Trainer.train_one_epoch``'s work: minibatch, teacher and student passes, backward, SGD,
   EMA, meters.

2. ``mt-repro digits --labels 100`` as a new user runs it, in a fresh process, wall time:

   * *before*: ``--threads C --jobs 1``, C the cores this process may use: torch's default
     thread count, one run after another, as the command ran before it chose its threads;
   * *after*: the command's defaults (1 thread per run for this 66k-parameter network, as many
     runs at once as there are cores);

   each once on an idle machine and once with ``--busy N`` processes spinning on the CPU beside
   it (started and stopped by this script; default 2), and the tables compared: a run's numbers
   depend on its thread count, never on the load or on how many runs go at once.

   python benchmarks/bench_cpu_threads.py [--busy 2] [--skip-wall] [--out FILE]

Run it on a machine where nothing else runs: "idle" means idle.
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def spin() -> None:   # one busy process: pure Python arithmetic, no I/O
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def steps_per_second(repeats: int) -> dict[str, float]:
    import torch

    from mt_repro.apps import digits_demo
    from mt_repro.config.compose import load_demo_config
    from mt_repro.data import digits
    from mt_repro.data.labels import write_label_file
    from mt_repro.engine import runs

    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp())
    label_file = scratch / "labels.txt"
    write_label_file(label_file, digits.label_file_entries(100, 0))
    trainers = {}
    for mode in ("faithful", "fast"):
        config = digits_demo.demo_configs(load_demo_config(), "mean_teacher", 100, label_file, 0,
                                          1 + repeats, scratch / mode, mode=mode)
        trainers[mode] = runs.start(config, scratch / mode, progress=False)
        trainers[mode].train_one_epoch(0)   # untimed
    best = {mode: 0.0 for mode in trainers}
    for epoch in range(1, 1 + repeats):
        order = ("faithful", "fast") if epoch % 2 else ("fast", "faithful")
        for mode in order:
            trainer = trainers[mode]
            start = time.perf_counter()
            trainer.train_one_epoch(epoch)
            best[mode] = max(best[mode], trainer.data.steps_per_epoch / (time.perf_counter() - start))
    best["precision"] = trainers["fast"].speedups.precision
    best["steps_per_epoch"] = trainers["fast"].data.steps_per_epoch
    return best


def demo(arguments: list[str], out: Path) -> tuple[float, str]:
    command = [sys.executable, "-m", "mt_repro.cli", "digits", "--labels", "100", "--no-progress",
               "--out", str(out), *arguments]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    table = done.stdout[done.stdout.index("test error %"):]
    return seconds, table


def table_numbers(table: str) -> list[str]:
    return [line for line in table.splitlines() if re.match(r"(supervised|mean teacher) ", line)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the loaded runs")
    parser.add_argument("--skip-wall", action="store_true", help="only the steps per second")
    parser.add_argument("--repeats", type=int, default=8, help="timed epochs per mode (part 1)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    import mt_repro
    from mt_repro.core.threads import available_cores

    cores = available_cores()
    lines = [f"benchmarks/bench_cpu_threads.py, {datetime.date.today()}",
             f"command: python benchmarks/bench_cpu_threads.py --busy {args.busy} --repeats {args.repeats}"
             + (" --skip-wall" if args.skip_wall else ""),
             f"machine: {platform.processor() or platform.machine()}, {cores} cores this process may use, "
             f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
             f"versions: mt-repro {mt_repro.__version__}, python {platform.python_version()}, torch {torch.__version__}",
             ""]
    rates = steps_per_second(args.repeats)
    lines += [f"1. digits ConvNet, Mean Teacher, demo settings, 1 torch thread: steps/s (best of {args.repeats} "
              f"epochs of {rates['steps_per_epoch']} steps)",
              f"   faithful  {rates['faithful']:6.1f}",
              f"   fast      {rates['fast']:6.1f}   ({rates['precision']})   {rates['fast'] / rates['faithful']:.2f}x faithful",
              ""]
    print("\n".join(lines), flush=True)
    if not args.skip_wall:
        variants = {"before (--threads %d --jobs 1)" % cores: ["--threads", str(cores), "--jobs", "1"],
                    "after (the defaults)": []}
        results = {}
        lines.append("2. the runs, in the order they ran:")
        with tempfile.TemporaryDirectory() as scratch:
            for loaded in (False, True):
                busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy if loaded else 0)]
                for process in busy:
                    process.start()
                try:
                    for name, extra in variants.items():
                        seconds, table = demo(extra, Path(scratch) / f"{len(results)}")
                        results[(name, loaded)] = (seconds, table)
                        load = os.getloadavg()[0]
                        condition = f"{args.busy} busy processes" if loaded else "idle"
                        lines.append(f"   measured: {name}, {condition}: {seconds:.0f} s "
                                     f"(1-minute load average after it: {load:.2f})")
                        print(lines[-1], flush=True)
                finally:
                    for process in busy:
                        process.terminate()
        lines += ["", f"   mt-repro digits --labels 100, wall time (s), idle and with {args.busy} busy processes",
                  f"   {'':34s} {'idle':>7s} {'loaded':>7s} {'loaded/idle':>11s}"]
        for name in variants:
            idle, loaded = results[(name, False)][0], results[(name, True)][0]
            lines.append(f"   {name:34s} {idle:7.0f} {loaded:7.0f} {loaded / idle:10.2f}x")
        before_idle = results[(next(iter(variants)), False)][0]
        after_idle = results[("after (the defaults)", False)][0]
        lines.append(f"   after / before, idle: {after_idle / before_idle:.2f}x the time")
        for name in variants:
            same = table_numbers(results[(name, False)][1]) == table_numbers(results[(name, True)][1])
            lines.append(f"   {name}: the same table idle and loaded: {'yes' if same else 'NO'}")
        for name in variants:
            lines += ["", f"   table, {name}, idle:"] + ["     " + line for line in results[(name, False)][1].splitlines()]
    text = "\n".join(lines) + "\n"
    out = args.out or Path(__file__).parent / "results" / f"{datetime.date.today()}-cpu-threads-digits.txt"
    out.write_text(text)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
