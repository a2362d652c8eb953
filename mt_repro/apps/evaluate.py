"""``mt-repro evaluate``: student and teacher precision@1/@5 of a checkpoint (ours or the
original's, any PyTorch) on a dataset part, as the original's validation computed it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mt_repro.core.errors import BadInput
from mt_repro.data.loaders import evaluation_loader
from mt_repro.data.registry import get_dataset
from mt_repro.engine.evaluation import evaluate_model
from mt_repro.engine.trainer import resolve_device
from mt_repro.legacy.normalize import normalize
from mt_repro.legacy.port import load_models, resolve_arch
from mt_repro.legacy.reading import Warn, read_checkpoint, stderr_warning


@dataclass
class Evaluation:
    source: str
    arch: str
    epoch: int | None
    split: str
    images: int
    student: dict[str, float]
    teacher: dict[str, float]

    def lines(self) -> list[str]:
        epoch = "" if self.epoch is None else f", epoch {self.epoch}"
        out = [f"{self.source} ({self.arch}{epoch}) on {self.split}: {self.images} images"]
        for name, result in (("student", self.student), ("teacher", self.teacher)):
            out.append(f"  {name}  prec@1 {result['top1/avg']:.3f}  prec@5 {result['top5/avg']:.3f}")
        return out


def evaluate_checkpoint(path: str | Path, data_dir: str | Path, *, dataset: str = "cifar10",
                        eval_subdir: str | None = None, arch: str | None = None,
                        batch_size: int = 256, workers: int = 4, device: str = "auto",
                        trust: bool = False, warn: Warn = stderr_warning, progress: bool = True) -> Evaluation:
    """Student and teacher precision@1/@5 on a part of ``dataset`` (default: its test part),
    each with its progress bar unless not ``progress``."""
    spec = get_dataset(dataset)
    if spec.open_part is None:
        raise BadInput(f"mt-repro evaluate reads the datasets of the ResNet runs; {dataset} is not one")
    if batch_size <= 0 or workers < 0:
        raise BadInput("--batch-size must be positive and --workers >= 0")
    state = normalize(read_checkpoint(path, trust=trust, warn=warn)).state
    arch, _ = resolve_arch(state, arch, str(path))
    run_device = resolve_device(device)
    student, teacher = load_models(state, arch, spec.num_classes, run_device)
    part = eval_subdir or spec.eval_part
    # twice the workers, as the original's evaluation loader
    loader = evaluation_loader(spec, data_dir, part, batch_size, 2 * workers, pin_memory=run_device.type == "cuda")
    try:
        results = [evaluate_model(model, loader, run_device, progress=f"evaluating the {name}" if progress else None)
                   for name, model in (("student", student), ("teacher", teacher))]
    except RuntimeError as exc:  # e.g. a CIFAR-10 network given the digits' one-channel images
        first = " ".join(str(exc).split())[:160]
        raise BadInput(f"{arch} cannot take the images of {dataset} ({first})") from None
    return Evaluation(source=str(path), arch=arch, epoch=state.get("epoch"), split=str(Path(data_dir) / part),
                      images=len(loader.dataset), student=results[0], teacher=results[1])
