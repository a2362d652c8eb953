#!/usr/bin/env python
"""FixMatch and Mean Teacher training steps on WRN-28-2: mt-repro against USB's own code.

USB (microsoft/Semi-supervised-learning, the ``semilearn`` package) is imported from a checkout
given with ``--usb``; nothing of it is part of mt-repro. Both programs take the same step, in
this one process, on the same minibatches of random 32x32 images (the same labeled batch and
``uratio``), from the same initial weights:

* USB: its algorithm's ``train_step`` (FixMatch with ``use_cat`` as its configuration files set
  it; Mean Teacher), then the two hooks of its loop that train, ``ParamUpdateHook`` (backward,
  SGD, the cosine scheduler's step) and ``EMAHook`` (the EMA model's update). Its other hooks are
  bookkeeping between steps (the timer hook needs CUDA events) and are not run; neither are the
  data loaders (the minibatches are made beforehand, as for mt-repro).
* mt-repro: ``Trainer.step`` (schedule, the method's losses, backward, SGD, the teacher's
  update) of a ``Trainer`` built for the same cell of the ``usb`` protocol, on the same tensors,
  in faithful mode or, with ``--mode fast``, in fast mode (bf16 autocast where the device has
  it, channels-last; its losses read after the timed steps, as fast mode reads them once per log
  row). USB runs as its configuration files set it (float32, no ``amp``).

Steps are timed as a block after the warm-up steps, the device synchronised at both ends
(``--device cuda``: on a GPU, where both programs' minibatches are moved beforehand).

USB's published Mean Teacher compares the teacher's output with itself, so it skips the backward
pass of the consistency term; ``--usb-mean-teacher fixed`` (and ``both``, the default) also times
it with that one name corrected at import (``outs_x_ulb_s`` for ``outs_x_ulb_w``), which is
the work a correct Mean Teacher of its design does. mt-repro's ``mean_teacher`` is the paper's
(its consistency covers the labeled images too, so its teacher passes them as well);
``mean_teacher_usb`` is USB's step so corrected, and is timed against that one. Measurements
alternate between the programs (AB, BA, ...) so machine noise hits both alike; for FixMatch and
``mean_teacher_usb``, whose two implementations compute the same numbers, the per-step losses
are compared.

    python benchmarks/bench_against_usb.py --usb USB_CHECKOUT

must run in a Python environment where both mt-repro and USB's requirements import (USB needs
among others ``timm<0.9``, ``transformers``, ``scikit-learn``, ``wandb``, ``torchaudio``); it writes
``benchmarks/results/<date>-<cpu|gpu>-against-usb[-fast].txt`` (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from mt_repro.apps.protocol import write_protocol_labels
from mt_repro.config.protocol import protocol_config
from mt_repro.core.types import NO_LABEL, Batch
from mt_repro.data import synthetic
from mt_repro.engine.trainer import Trainer

from machine import CpuMeter, cpu_count, cpu_model, load_average, mt_repro_revision, wait_for_idle

HERE = Path(__file__).resolve().parent
BUSY_CORES = 0.15
IDLE_WAIT_S = 600
SAME_WORK_RTOL = 1e-4
BF16_RTOL = 3e-2     # tests/test_fast_mode.py's tolerance for bf16 autocast
USB_NAMES = {"fixmatch": "fixmatch", "mean_teacher": "meanteacher", "mean_teacher_usb": "meanteacher"}
URATIO = {"fixmatch": 7, "mean_teacher": 1, "mean_teacher_usb": 1}   # the protocol's
# The one name of USB's Mean Teacher that makes its consistency compare the teacher with itself
# (semilearn/algorithms/meanteacher/meanteacher.py; USB issues #102 and #226).
USB_MT_BUG = "logits_x_ulb_s = outs_x_ulb_w['logits']"
USB_MT_FIX = "logits_x_ulb_s = outs_x_ulb_s['logits']"
USB_MT_FIXED = "USB (its consistency input corrected)"
# The methods whose step here computes what the USB program named computes: their per-step
# losses are compared.
SAME_COMPUTATION = {"fixmatch": "USB", "mean_teacher_usb": USB_MT_FIXED}


@dataclass
class Minibatch:
    x_lb: torch.Tensor
    y_lb: torch.Tensor
    x_ulb_w: torch.Tensor
    x_ulb_s: torch.Tensor


def minibatches(n: int, labeled: int, uratio: int, seed: int) -> list[Minibatch]:
    generator = torch.Generator().manual_seed(seed)

    def images(count: int) -> torch.Tensor:
        return torch.randn(count, 3, 32, 32, generator=generator)

    return [Minibatch(images(labeled), torch.randint(0, 10, (labeled,), generator=generator),
                      images(labeled * uratio), images(labeled * uratio)) for _ in range(n)]


# --- USB ---------------------------------------------------------------------------------------
# Libraries that USB's package imports as it loads and that its vision training step never calls
# (its text and audio networks, its metrics, experiment trackers, progress bar). Where one is not
# installed (a GPU machine with PyTorch's stack and no package index), an empty module stands in
# for it; FixMatch's per-step losses, compared with ours, would show it if one were used.
USB_IMPORTS_UNUSED_HERE = ("transformers", "timm", "sklearn", "torchaudio", "skimage", "scipy",
                           "wandb", "aim", "progress", "ruamel")


class _StandIn(type):
    """Any name looked up in a stand-in module: a class (a base class, a decorator, a value)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn(name, (), {})

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:   # used as a decorator
            return args[0]
        return _StandIn("result", (), {})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn(name, (), {})


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        return None


def stand_in_for_missing(names=USB_IMPORTS_UNUSED_HERE) -> list[str]:
    """Install stand-ins for those of ``names`` that are not installed; return them."""
    missing = sorted(name for name in names if importlib.util.find_spec(name) is None)
    if missing:
        sys.meta_path.insert(0, _StandIns(set(missing)))
    return missing


def import_usb(checkout: Path):
    sys.path.insert(0, str(checkout))
    importlib.import_module("semilearn")   # USB's package: registers its algorithms and networks
    from semilearn.algorithms import name2alg
    from semilearn.core.utils import get_net_builder
    from semilearn.lighting.config import get_config
    return types.SimpleNamespace(algorithms=name2alg, net_builder=get_net_builder, config=get_config)


def usb_mean_teacher_fixed(checkout: Path):
    """USB's ``MeanTeacher`` with its consistency's input named right, loaded from its own file."""
    path = checkout / "semilearn" / "algorithms" / "meanteacher" / "meanteacher.py"
    source = path.read_text()
    if source.count(USB_MT_BUG) != 1:
        raise SystemExit(f"bench_against_usb: {path} does not hold the line {USB_MT_BUG!r} once; "
                         "this checkout's Mean Teacher is not the one this benchmark corrects")
    spec = importlib.util.spec_from_loader("semilearn.algorithms.meanteacher.meanteacher_corrected", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "semilearn.algorithms.meanteacher"
    exec(compile(source.replace(USB_MT_BUG, USB_MT_FIX), str(path), "exec"), module.__dict__)
    return module.MeanTeacher


def usb_settings(checkout: Path, method: str, labeled: int, uratio: int, save_dir: Path,
                 device: torch.device) -> dict:
    """The cell's USB configuration file (CIFAR-10, 40 labels, seed 0), with the benchmark's
    minibatch and device."""
    name = USB_NAMES[method]
    path = checkout / "config" / "classic_cv" / name / f"{name}_cifar10_40_0.yaml"
    import yaml   # PyYAML: the file is plain YAML (USB reads it with ruamel.yaml, which may stand in here)
    settings = dict(yaml.safe_load(path.read_text()))
    gpu = device.index or 0 if device.type == "cuda" else None
    settings.update(batch_size=labeled, uratio=uratio, gpu=gpu, save_dir=str(save_dir), resume=False,
                    use_tensorboard=False, num_workers=0, multiprocessing_distributed=False, distributed=False)
    return settings


class USBProgram:
    def __init__(self, usb, algorithm_class, settings: dict, label: str, work: str, device: torch.device):
        class WithoutData(algorithm_class):
            def set_dataset(self):   # the benchmark feeds the minibatches itself
                return None

        self.name, self.work = label, work
        self.algorithm = WithoutData(usb.config(settings), usb.net_builder(settings["net"], False))
        # where USB's train.py puts them (send_model_cuda), before its EMA and optimizer are made
        self.algorithm.model.to(device).train()
        self.algorithm.ema_model.to(device)

    def start(self, weights: dict) -> None:
        """From ``weights`` at step 0 with a new optimizer and scheduler (USB's own
        ``set_optimizer``), as at the start of a run."""
        algorithm = self.algorithm
        algorithm.model.load_state_dict(weights)
        algorithm.ema_model.load_state_dict(weights)
        algorithm.optimizer, algorithm.scheduler = algorithm.set_optimizer()
        algorithm.it = 0
        algorithm.call_hook("before_run", "EMAHook")

    def step(self, batch: Minibatch) -> float:
        algorithm = self.algorithm
        algorithm.out_dict, algorithm.log_dict = algorithm.train_step(
            x_lb=batch.x_lb, y_lb=batch.y_lb, x_ulb_w=batch.x_ulb_w, x_ulb_s=batch.x_ulb_s)
        algorithm.call_hook("after_train_step", "ParamUpdateHook")
        algorithm.call_hook("after_train_step", "EMAHook")
        algorithm.it += 1
        return algorithm.log_dict["train/total_loss"]


# --- mt-repro ----------------------------------------------------------------------------------
class OursProgram:
    def __init__(self, method: str, labeled: int, uratio: int, workdir: Path, mode: str, device: torch.device):
        self.name = f"mt-repro ({mode})"
        self.precision = None   # set once the trainer is built: "float32" or "bf16 autocast"
        data = workdir / "cifar-10-python.tar.gz"
        if not data.exists():
            synthetic.write_cifar_tarball(data, n_train=200, n_test=20)
        config = protocol_config("usb", "cifar10", method, 40, 0, device=str(device), data_dir=str(data),
                                 overrides=(f"labeled_batch_size={labeled}", f"batch_size={labeled * (1 + uratio)}",
                                            f"mode={mode}", "workers=0"))
        out = workdir / f"ours-{method}"
        out.mkdir()
        labels = write_protocol_labels(config, out / "protocol_labels.txt")
        self.method = method
        self.work = {"fixmatch": "student: L + 2U images forward and backward, one pass; no teacher pass",
                     "mean_teacher": "student: L + U forward and backward; teacher: L + U forward "
                                     "(the paper's consistency covers the labeled images too)",
                     "mean_teacher_usb": "student: L + U forward and backward (two passes); teacher: U forward "
                                         "(USB's step, its consistency input corrected)"}[method]
        self.trainer = Trainer(config.replace(labels=str(labels)).validate(), out, progress=False).build()
        self.trainer.train_mode()
        self.precision = self.trainer.speedups.precision

    def start(self, weights: dict) -> None:
        """From ``weights`` at step 0 with the optimizer's state cleared, as at the start of a run."""
        method = self.trainer.method
        method.student.load_state_dict(weights)
        method.teacher.load_state_dict(weights)
        self.trainer.optimizer.state.clear()
        self.trainer.state.global_step = 0

    def batch(self, batch: Minibatch) -> Batch:
        """The same images as USB's step gets: the labeled images first, then the unlabeled ones
        (the student's weak view for FixMatch, its strong one for Mean Teacher, as USB's; Mean
        Teacher's teacher sees the labeled images as the student does, where the paper's
        consistency covers them)."""
        unlabeled = torch.full((len(batch.x_ulb_w),), NO_LABEL, dtype=batch.y_lb.dtype)
        targets = torch.cat([batch.y_lb, unlabeled])
        weak, strong = torch.cat([batch.x_lb, batch.x_ulb_w]), torch.cat([batch.x_lb, batch.x_ulb_s])
        if self.method == "fixmatch":
            return Batch(weak, weak, targets, {"strong_input": strong})
        return Batch(strong, weak, targets, {})

    def step(self, batch: Batch) -> torch.Tensor | float:
        """The step's loss: on the device in fast mode (read after the timed steps), else read."""
        step = self.trainer.state.global_step
        _, result = self.trainer.step(batch, 0, step, self.trainer.config.training_length)
        return result.logged["loss"] if self.trainer.deferred_readout else result.values["loss"]


# --- measuring ---------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(program, batches, warmup: int, device: torch.device) -> tuple[float, list[float], float | None]:
    """(mean seconds per step of the steps after ``warmup``, timed together, every step's loss,
    cores others used)."""
    cpu = CpuMeter()
    losses = [program.step(batch) for batch in batches[:warmup]]
    synchronize(device)
    start = time.perf_counter()
    losses += [program.step(batch) for batch in batches[warmup:]]
    synchronize(device)
    seconds = (time.perf_counter() - start) / max(len(batches) - warmup, 1)
    return seconds, [float(loss) for loss in losses], cpu.others()


def measure(method: str, programs: list, args, workdir: Path) -> dict:
    uratio = args.uratio if args.uratio is not None else URATIO[method]
    # every program starts each repeat from mt-repro's initial weights (USB's module has the same layout)
    weights = {k: v.clone() for k, v in programs[0].trainer.method.student.state_dict().items()}
    raw = [Minibatch(*(t.to(args.device) for t in (b.x_lb, b.y_lb, b.x_ulb_w, b.x_ulb_s)))
           for b in minibatches(args.warmup + args.steps, args.labeled_batch, uratio, args.seed)]
    per_repeat = {p.name: [] for p in programs}
    losses = {}
    retries, repeat = args.retry_busy, 0
    while repeat < args.repeats:
        order = programs if repeat % 2 == 0 else programs[::-1]
        measured = {}
        for program in order:
            program.start(weights)
            batches = [program.batch(b) for b in raw] if isinstance(program, OursProgram) else raw
            step_s, step_losses, others = timed_steps(program, batches, args.warmup, args.device)
            measured[program.name] = {"step": step_s, "others": others}
            losses[program.name] = step_losses
            print(f"{method} repeat {repeat + 1}/{args.repeats}  {program.name:<46} {step_s:.3f} s/step"
                  f"{'' if others is None else f'; other processes used {others:.2f} cores'}", flush=True)
        if retries and any((r["others"] or 0.0) > BUSY_CORES for r in measured.values()):
            retries -= 1
            print("other processes were busy: this repeat again", flush=True)
            wait_for_idle(IDLE_WAIT_S)
            continue
        for name, row in measured.items():
            per_repeat[name].append(row)
        repeat += 1
    return {"uratio": uratio, "per_repeat": per_repeat, "losses": losses, "ours": programs[0].name,
            "precision": programs[0].precision,
            "work": {p.name: p.work for p in programs}}


def summary_lines(method: str, result: dict, labeled: int) -> list[str]:
    images = labeled * (1 + result["uratio"])
    rows = {name: statistics.median(r["step"] for r in rows) for name, rows in result["per_repeat"].items()}
    ours_name = result["ours"]
    ours = rows.pop(ours_name)
    lines = [f"{method}: {labeled} labeled + {labeled * result['uratio']} unlabeled images per step "
             f"(uratio {result['uratio']})",
             f"  {'program':<46} {'s/step (median)':>15} {'steps/s':>8} {'images/s':>9} {'ours/theirs steps/s':>20}",
             f"  {ours_name:<46} {ours:>15.3f} {1 / ours:>8.3f} {images / ours:>9.1f} {'':>20}"]
    for name, seconds in rows.items():
        lines.append(f"  {name:<46} {seconds:>15.3f} {1 / seconds:>8.3f} {images / seconds:>9.1f} "
                     f"{seconds / ours:>20.3f}")
    lines.append(f"  what each step passes through the networks (L labeled, U = {result['uratio']}·L unlabeled):")
    lines += [f"    {name}: {work}" for name, work in result["work"].items()]
    if method in SAME_COMPUTATION:
        ours_l, theirs_l = result["losses"][ours_name], result["losses"][SAME_COMPUTATION[method]]
        worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_l, theirs_l))
        if "fast" in ours_name:   # the same computation within fast mode's tolerance
            # bf16 autocast rounds; in float32 (no bf16 on the device) channels-last kernels add
            # in another order, and training amplifies the difference step by step
            how = "bf16 rounding" if result["precision"] == "bf16 autocast" else "float32 summed in another order"
            verdict = f"within {how}" if worst <= BF16_RTOL else "DIFFERENT computation"
        else:
            verdict = "same computation" if worst <= SAME_WORK_RTOL else "DIFFERENT computation"
        lines.append(f"  per-step losses of the last repeat, ours against USB's: max relative difference "
                     f"{worst:.2e} over {len(ours_l)} steps ({verdict})")
    return lines


def usb_revision(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--usb", type=Path, required=True, metavar="PATH", help="a checkout of USB")
    parser.add_argument("--methods", default="fixmatch,mean_teacher,mean_teacher_usb")
    parser.add_argument("--usb-mean-teacher", choices=("published", "fixed", "both"), default="both")
    parser.add_argument("--labeled-batch", type=int, default=8, help="labeled images per step (USB: 64)")
    parser.add_argument("--uratio", type=int, default=None, help="default: the protocol's (7 FixMatch, 1 MT)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retry-busy", type=int, default=0, metavar="N")
    parser.add_argument("--mode", choices=("faithful", "fast"), default="faithful", help="mt-repro's mode")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in USB_NAMES for m in methods):
        parser.error(f"--methods takes {', '.join(USB_NAMES)}")

    torch.set_num_threads(args.threads)
    stood_in = stand_in_for_missing()
    usb = import_usb(args.usb.resolve())
    load_at_start, started = load_average(), time.time()
    report, precision = [], None
    with tempfile.TemporaryDirectory(prefix="mt-repro-bench-usb-") as tmp:
        workdir = Path(tmp)
        for method in methods:
            uratio = args.uratio if args.uratio is not None else URATIO[method]
            settings = usb_settings(args.usb, method, args.labeled_batch, uratio, workdir / "usb", args.device)
            programs = [OursProgram(method, args.labeled_batch, uratio, workdir, args.mode, args.device)]

            def usb_fixed_mean_teacher() -> USBProgram:
                return USBProgram(usb, usb_mean_teacher_fixed(args.usb), settings, USB_MT_FIXED,
                                  "L + U forward and backward (two passes); EMA weights: U forward", args.device)

            if method == "mean_teacher_usb":
                programs.append(usb_fixed_mean_teacher())
            elif method == "fixmatch":
                programs.append(USBProgram(usb, usb.algorithms["fixmatch"], settings, "USB",
                                           "L + 2U images forward and backward, one pass (use_cat)", args.device))
            else:
                if args.usb_mean_teacher in ("published", "both"):
                    programs.append(USBProgram(usb, usb.algorithms["meanteacher"], settings,
                                               "USB (as published: no consistency gradient)",
                                               "L forward and backward, U forward twice (student, EMA weights); "
                                               "the student's U pass gets no backward", args.device))
                if args.usb_mean_teacher in ("fixed", "both"):
                    programs.append(usb_fixed_mean_teacher())
            result = measure(method, programs, args, workdir)
            precision = result["precision"]
            report += summary_lines(method, result, args.labeled_batch) + [""]
            busiest = max((r["others"] for rows in result["per_repeat"].values() for r in rows
                           if r["others"] is not None), default=None)
            if busiest is not None:
                report.append(f"  other processes used at most {busiest:.2f} cores during a measured repeat "
                              f"({'quiet' if busiest <= BUSY_CORES else 'BUSY: rerun on an idle machine'})")
                report.append("")
    text = "\n".join(report)
    print("\n" + text)
    if args.no_save:
        return 0
    where = "gpu" if args.device.type == "cuda" else "cpu"
    command = "python benchmarks/bench_against_usb.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    command = command.replace(str(args.usb), "USB_CHECKOUT")
    header = [
        f"FixMatch and Mean Teacher training steps on WRN-28-2, {where.upper()}: mt-repro ({args.mode}) against USB",
        f"date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"command: {command}",
        *([f"device: {torch.cuda.get_device_name(args.device)}"] if args.device.type == "cuda" else []),
        f"machine: {cpu_model()}, {cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        f"load average (1/5/15 min) before: {load_at_start}; after: {load_average()}",
        f"code: {mt_repro_revision()}; USB (microsoft/Semi-supervised-learning) commit {usb_revision(args.usb)}",
        f"versions: python {platform.python_version()}, torch {torch.__version__}"
        + (f"; not installed, stood in for USB's imports: {', '.join(stood_in)}" if stood_in else ""),
        f"settings: steps timed per repeat {args.steps} after {args.warmup} warm-up steps, repeats "
        f"{args.repeats} (interleaved AB, BA, ...), seed {args.seed}; the same random 32x32 minibatches "
        "and initial weights for every program; data loading not timed"
        + (f"; mt-repro's fast mode computes in {precision} here" if args.mode == "fast" else ""),
        f"wall time of the benchmark: {time.time() - started:.0f} s",
        "",
        "",
    ]
    suffix = "-fast" if args.mode == "fast" else ""
    out = args.out or HERE / "results" / f"{datetime.date.today():%Y-%m-%d}-{where}-against-usb{suffix}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + text + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
