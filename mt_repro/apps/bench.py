"""``mt-repro bench``: how fast training steps and the data pipeline are, per mode, in one run.

Training steps: for each mode a ``Trainer`` is built for the paper's CIFAR-10 recipe
(``original_configs/cifar10_4000.toml``, with the benchmark's batch sizes) on a synthetic
CIFAR-10 in memory, and ``--steps`` whole steps are timed after ``--warmup`` untimed ones:
loading and augmenting the minibatch, teacher and student passes, backward, SGD step, EMA
update and the step's bookkeeping, exactly ``Trainer.train_step``. Evaluation and checkpoints
are not timed.

Data pipeline: augmented images per second on one core (``torch.set_num_threads(1)``, no
loader workers): faithful mode's per-image PIL transforms, fast mode's ``BatchAugment`` on the
CPU, the original code's transforms (``--legacy``: its ``mean_teacher.datasets.cifar10()``
imported from the checkout), and fast mode's on the GPU when there is one (not per core).
Each image is augmented twice (student and teacher views) and counts once; each figure is the
best of three passes. The pipelines are timed first, before any training step.

Model FLOPs utilisation: the FLOPs of one training step counted by ``torch.utils.flop_counter``
(convolutions and matrix products, forward and backward) times steps/s, divided by the
device's peak, *measured* here as the better throughput of a large dense matrix product and of
a large 3 x 3 convolution (channels-last) in the mode's precision (fp32 or bf16), so that the
figure needs no spec sheet. Both, because on CPUs the convolution library (oneDNN) can beat the
BLAS that matrix products use (145 against 202 GFLOP/s in float32 on a 2-core EPYC): a
matrix-product peak alone put a faithful CPU step above 100 %. Vendors' peak figures are higher,
and so MFU against them lower.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import PIL
import torchvision
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import mt_repro
from mt_repro.config.compose import resnet_run
from mt_repro.config.train import MODES
from mt_repro.core.errors import BadInput
from mt_repro.data import cifar10, synthetic
from mt_repro.data.batch_augment import epoch_generator
from mt_repro.data.labels import write_label_file
from mt_repro.data.registry import get_dataset
from mt_repro.engine import runs
from mt_repro.engine.trainer import resolve_device

log = logging.getLogger(__name__)


REPEATS = 3  # passes over the images per pipeline


@dataclass
class BenchSettings:
    arch: str = "cifar_shakeshake26"
    modes: tuple[str, ...] = ("faithful", "fast")
    batch_size: int = 128            # the paper's per-GPU batch (cifar10_4000.toml)
    labeled_batch_size: int = 31
    steps: int = 20
    warmup: int = 3
    device: str = "auto"
    workers: int | None = None       # faithful mode's loader workers (default: the config's)
    compile: bool = False            # fast mode with torch.compile
    compile_mode: str = "default"    # its mode (config.train.COMPILE_MODES)
    legacy: Path | None = None       # the original checkout's pytorch/ directory
    pipeline_images: int = 512


@dataclass
class ModeResult:
    mode: str
    seconds_per_step: float
    images_per_second: float
    flops_per_step: float
    precision: str
    peak_flops: float = float("nan")  # measured in the mode's precision settings
    mfu: float = float("nan")


@dataclass
class BenchReport:
    settings: BenchSettings
    device: str
    modes: list[ModeResult] = field(default_factory=list)
    pipeline: dict[str, float] = field(default_factory=dict)   # images/s (per core unless noted)
    notes: list[str] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _write_data(workdir: Path, settings: BenchSettings) -> tuple[Path, Path]:
    """A synthetic CIFAR-10 (python batches) with enough unlabeled images for the timed epoch,
    and a label file."""
    unlabeled_per_step = settings.batch_size - settings.labeled_batch_size
    n_train = unlabeled_per_step * (settings.steps + settings.warmup + 1) + 10 * settings.labeled_batch_size
    n_train += -n_train % 5
    data = synthetic.write_cifar_batches_dir(workdir / "cifar", n_train=n_train, n_test=20)
    labels = synthetic.balanced_labels(data, settings.labeled_batch_size)
    label_file = workdir / "labels.txt"
    write_label_file(label_file, labels)
    return data, label_file


def _config(settings: BenchSettings, mode: str, data: Path, label_file: Path):
    compiled = settings.compile and mode == "fast"
    values = dict(arch=settings.arch, mode=mode, compile=compiled,
                  compile_mode=settings.compile_mode if compiled else "default",
                  data_dir=str(data), device=settings.device, seed=0,
                  batch_size=settings.batch_size, labeled_batch_size=settings.labeled_batch_size,
                  checkpoint_epochs=0, evaluation_epochs=0)
    if settings.workers is not None:
        values["workers"] = settings.workers
    return resnet_run("cifar10_4000", label_file=label_file, gpus=1, run=values)


def time_mode(settings: BenchSettings, mode: str, data: Path, label_file: Path, workdir: Path) -> ModeResult:
    trainer = runs.start(_config(settings, mode, data, label_file), workdir / f"run_{mode}", progress=False)
    steps = trainer.data.steps_per_epoch
    if steps < settings.steps + settings.warmup + 1:
        raise BadInput(f"the benchmark's epoch has {steps} steps, fewer than warm-up + steps + 1")
    trainer.train_mode()
    batches = iter(trainer.data.epoch(0))

    def step(i: int) -> None:
        trainer.step(next(batches), 0, i, steps)

    with FlopCounterMode(display=False) as counter:  # the first step, untimed
        step(0)
    flops = float(counter.get_total_flops())
    for i in range(1, settings.warmup):
        step(i)
    _sync(trainer.device)
    start = time.perf_counter()
    for i in range(settings.warmup, settings.warmup + settings.steps):
        step(i)
    _sync(trainer.device)
    seconds = (time.perf_counter() - start) / settings.steps
    batches.close()  # let the loader's workers go
    # The peak under the precision settings the trainer chose (bf16, or float32 with TF32 on
    # CUDA in fast mode and without it in faithful mode).
    dtype = torch.float32 if trainer.speedups.autocast_dtype is None else trainer.speedups.autocast_dtype
    peak = measured_peak(trainer.device, dtype)
    return ModeResult(mode, seconds, settings.batch_size / seconds, flops, trainer.speedups.precision,
                      peak, flops / seconds / peak)


def pipeline_rates(settings: BenchSettings, device: torch.device, data: Path) -> dict[str, float]:
    """Augmented images/s of each pipeline on one core (and fast mode's on the GPU), the best of
    ``REPEATS`` passes (the least disturbed by other processes)."""
    spec = get_dataset("cifar10")
    images = cifar10.read_cifar10(data)["train+val"].images[:settings.pipeline_images]
    n = len(images)
    rates: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def per_image(transform) -> float:
            best = 0.0
            for _ in range(REPEATS):
                start = time.perf_counter()
                for pixels in images:
                    transform(Image.fromarray(pixels, "RGB"))
                best = max(best, n / (time.perf_counter() - start))
            return best

        rates["faithful (per-image PIL)"] = per_image(spec.train_transform())
        if settings.legacy is not None:
            rates["original code (per-image PIL)"] = per_image(legacy_cifar10_transform(settings.legacy))
        augment = spec.batch_augment()

        def batched(on: torch.device) -> float:
            stack = torch.from_numpy(images).to(on)
            generator = epoch_generator(0, 0)
            rounds = 3 if on.type == "cpu" else 50
            for _ in range(2):  # warm-up
                augment(stack, augment.draw(n, 3, 32, 32, generator))
            best = 0.0
            for _ in range(REPEATS):
                _sync(on)
                start = time.perf_counter()
                for _ in range(rounds):
                    for _view in range(2):
                        augment(stack, augment.draw(n, 3, 32, 32, generator))
                _sync(on)
                best = max(best, rounds * n / (time.perf_counter() - start))
            return best

        rates["fast (batched, CPU)"] = batched(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        rates["fast (batched, GPU; not per core)"] = batched(device)
    return rates


def legacy_cifar10_transform(checkout: Path):
    """The original code's CIFAR-10 training transform, imported from its checkout."""
    checkout = Path(checkout)
    if not (checkout / "mean_teacher" / "datasets.py").is_file():
        raise BadInput(f"--legacy {checkout}: expected the original code's pytorch/ directory "
                       "(with mean_teacher/datasets.py)")
    sys.path.insert(0, str(checkout))
    try:
        from mean_teacher import datasets as legacy_datasets  # the checkout's own module, found at run time
    except Exception as exc:  # whatever an old checkout raises on import
        raise BadInput(f"--legacy {checkout}: cannot import mean_teacher.datasets ({exc})") from None
    finally:
        sys.path.remove(str(checkout))
    return legacy_datasets.__dict__["cifar10"]()["train_transformation"]


def measured_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s the device reaches in ``dtype``: the better of a large square matrix product and a
    large 3 x 3 convolution. MFU is measured against this."""
    size = 4096 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    matmul = _throughput(lambda: a @ b, 2 * size**3, device)
    batch, channels, side = (256, 256, 32) if device.type == "cuda" else (32, 128, 32)
    x = torch.randn(batch, channels, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv = _throughput(lambda: torch.nn.functional.conv2d(x, w, padding=1),
                       2 * batch * side * side * channels * channels * 9, device)
    return max(matmul, conv)


def _throughput(operation, flops: int, device: torch.device) -> float:
    for _ in range(3):
        operation()
    _sync(device)
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0 or rounds < 5:
        operation()
        rounds += 1
        if device.type == "cuda" and rounds % 10 == 0:
            _sync(device)
    _sync(device)
    return flops * rounds / (time.perf_counter() - start)


def run_benchmark(settings: BenchSettings) -> BenchReport:
    device = resolve_device(settings.device)
    unknown = sorted(set(settings.modes) - set(MODES))
    if unknown or not settings.modes:
        raise BadInput(f"--mode takes {' and/or '.join(MODES)}, got {','.join(settings.modes) or 'nothing'}")
    if settings.steps < 1 or settings.warmup < 1:
        raise BadInput("--steps and --warmup must be at least 1")
    report = BenchReport(settings, describe_device(device))
    with tempfile.TemporaryDirectory(prefix="mt-repro-bench-") as tmp:
        workdir = Path(tmp)
        data, label_file = _write_data(workdir, settings)
        # The pipelines first, while no loader workers or GPU work from the step timings linger.
        log.info("timing the data pipelines...")
        report.pipeline = pipeline_rates(settings, device, data)
        for mode in settings.modes:
            log.info(f"timing {settings.steps} {mode} steps of {settings.arch} (batch {settings.batch_size}) "
                     f"on {device}...")
            with _notes_kept(report.notes):
                report.modes.append(time_mode(settings, mode, data, label_file, workdir))
    return report


class _Notes(logging.Handler):
    def __init__(self, notes: list[str]):
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


@contextlib.contextmanager
def _notes_kept(notes: list[str]):
    """The engine's warnings while a mode is timed (e.g. no bf16 here), for the result file."""
    handler = _Notes(notes)
    engine = logging.getLogger("mt_repro.engine")
    engine.addHandler(handler)
    try:
        yield
    finally:
        engine.removeHandler(handler)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"CPU {model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
            f"capability {torch.backends.cpu.get_cpu_capability()}")


def render(report: BenchReport) -> str:
    faithful = next((r for r in report.modes if r.mode == "faithful"), None)
    lines = [f"{'mode':<10} {'precision':<14} {'s/step':>8} {'steps/s':>8} {'images/s':>9} "
             f"{'vs faithful':>11} {'GFLOP/step':>10} {'peak TFLOP/s':>12} {'MFU':>6}"]
    for r in report.modes:
        ratio = f"{faithful.seconds_per_step / r.seconds_per_step:.2f}x" if faithful else "-"
        lines.append(f"{r.mode:<10} {r.precision:<14} {r.seconds_per_step:>8.3f} {1 / r.seconds_per_step:>8.3f} "
                     f"{r.images_per_second:>9.1f} {ratio:>11} {r.flops_per_step / 1e9:>10.1f} "
                     f"{r.peak_flops / 1e12:>12.2f} {100 * r.mfu:>5.1f}%")
    lines += ["", "data pipeline (CIFAR-10 training augmentation, two views per image):"]
    reference = report.pipeline.get("original code (per-image PIL)") or report.pipeline.get("faithful (per-image PIL)")
    base = "original code" if "original code (per-image PIL)" in report.pipeline else "faithful"
    for name, rate in report.pipeline.items():
        lines.append(f"  {name:<36} {rate:>10.0f} images/s  ({rate / reference:.1f}x {base})")
    lines += ["", "peak: the better of a measured dense matrix product and 3x3 convolution in the mode's "
              "precision (float32: TF32 off in faithful mode, on in fast mode, on CUDA); FLOPs: "
              "torch.utils.flop_counter, one step"]
    lines += [f"note: {n.removeprefix('note: ')}" for n in dict.fromkeys(report.notes)]
    return "\n".join(lines)


def command_line(settings: BenchSettings) -> str:
    """The ``mt-repro bench`` command that runs ``settings`` again, for the result file; the
    original checkout's location is a placeholder (no machine paths in shared results)."""
    s = settings
    parts = ["mt-repro bench", f"--arch {s.arch}", f"--mode {','.join(s.modes)}",
             f"--batch-size {s.batch_size}", f"--labeled-batch-size {s.labeled_batch_size}",
             f"--steps {s.steps}", f"--warmup {s.warmup}", f"--device {s.device}"]
    if s.workers is not None:
        parts.append(f"--workers {s.workers}")
    if s.compile:
        parts.append("--compile")
        if s.compile_mode != "default":
            parts.append(f"--compile-mode {s.compile_mode}")
    if s.legacy is not None:
        parts.append("--legacy ORIGINAL_CHECKOUT/pytorch")
    return " ".join(parts)


def header(report: BenchReport) -> str:
    s = report.settings
    revision = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = Path(mt_repro.__file__).resolve().parents[1]
        revision = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, timeout=10).stdout.strip() or revision
    return "\n".join([
        f"mt-repro bench, {datetime.date.today().isoformat()}",
        f"command: {command_line(s)}",
        f"device: {report.device}",
        f"code: mt-repro {getattr(mt_repro, '__version__', '?')} ({revision})",
        f"versions: python {platform.python_version()}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, numpy {np.__version__}, pillow {PIL.__version__}",
        f"settings: arch {s.arch}, batch {s.batch_size} ({s.labeled_batch_size} labeled), {s.steps} timed "
        f"steps after {s.warmup} warm-up steps, the cifar10_4000 recipe otherwise, synthetic CIFAR-10 "
        f"in memory; compile {s.compile}{f' ({s.compile_mode})' if s.compile else ''}; "
        f"pipeline over {s.pipeline_images} images",
        "",
    ])


def save(report: BenchReport, directory: Path) -> Path:
    kind = "gpu" if report.device and "CPU" not in report.device.split()[0] else "cpu"
    s = report.settings
    # a compiled run beside the plain one of the same day keeps its own file
    compiled = "" if not s.compile else "-compile" + ("" if s.compile_mode == "default" else f"-{s.compile_mode}")
    path = (Path(directory) /
            f"{datetime.date.today().isoformat()}-{kind}-bench-{s.arch}-batch{s.batch_size}{compiled}.txt")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header(report) + render(report) + "\n")
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
