"""``mt-repro evaluate``: student and teacher precision@1/@5 of a checkpoint (ours or the
original's, any PyTorch) on a dataset part, as the original's validation computed it."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from mt_repro.config.train import NORMALISATIONS
from mt_repro.core.errors import BadInput
from mt_repro.data.loaders import evaluation_loader
from mt_repro.data.normalisation import described, normalised
from mt_repro.data.registry import DatasetSpec, get_dataset
from mt_repro.engine.evaluation import evaluate_model
from mt_repro.engine.runs import read_run_config
from mt_repro.engine.trainer import CHECKPOINT_DIR, CONFIG_FILE, resolve_device
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
    normalisation: str = "dataset"

    def lines(self) -> list[str]:
        epoch = "" if self.epoch is None else f", epoch {self.epoch}"
        how = "" if self.normalisation == "dataset" else f", normalised with {described(self.normalisation)} as trained"
        out = [f"{self.source} ({self.arch}{epoch}) on {self.split}: {self.images} images{how}"]
        for name, result in (("student", self.student), ("teacher", self.teacher)):
            out.append(f"  {name}  prec@1 {result['top1/avg']:.3f}  prec@5 {result['top5/avg']:.3f}")
        return out


def evaluate_checkpoint(path: str | Path, data_dir: str | Path | None, *, dataset: str | None = None,
                        eval_subdir: str | None = None, arch: str | None = None,
                        batch_size: int = 256, workers: int = 4, device: str = "auto",
                        trust: bool = False, warn: Warn = stderr_warning, progress: bool = True) -> Evaluation:
    """Student and teacher precision@1/@5 on a part of ``dataset`` (default: its test part),
    each with its progress bar unless not ``progress``. ``dataset`` and ``data_dir`` default to
    the run's own when the checkpoint lies in a run directory (``RUN/checkpoints/``)."""
    spec, data_dir = dataset_of(path, dataset, data_dir)
    check_batches(batch_size, workers)
    loaded = load_networks(path, spec, arch, resolve_device(device), trust, warn)
    spec = normalised(spec, loaded.normalisation)   # the images as the networks were trained on them
    part = eval_subdir or spec.eval_part
    # twice the workers, as the original's evaluation loader
    loader = evaluation_loader(spec, data_dir, part, batch_size, 2 * workers, pin_memory=loaded.device.type == "cuda")
    with cannot_take_images(loaded.arch, spec.name):
        results = [evaluate_model(model, loader, loaded.device, progress=f"evaluating the {name}" if progress else None)
                   for name, model in loaded.networks.items()]
    return Evaluation(source=str(path), arch=loaded.arch, epoch=loaded.epoch, split=part_name(spec, data_dir, part),
                      images=len(loader.dataset), student=results[0], teacher=results[1],
                      normalisation=loaded.normalisation)


def part_name(spec: DatasetSpec, data_dir: str | Path | None, part: str) -> str:
    root = spec.root(data_dir)
    return f"{spec.name} {part}" if root is None else str(root / part)


@dataclass
class LoadedNetworks:
    arch: str
    epoch: int | None
    device: torch.device
    networks: dict[str, torch.nn.Module]   # student, teacher; in eval mode
    normalisation: str = "dataset"         # the statistics its images were normalised with in training


def load_networks(path: str | Path, spec: DatasetSpec, arch: str | None, device: torch.device,
                  trust: bool = False, warn: Warn = stderr_warning) -> LoadedNetworks:
    """Student and teacher of a checkpoint (ours or the original's, any PyTorch) on ``device``."""
    state = normalize(read_checkpoint(path, trust=trust, warn=warn)).state
    arch, _ = resolve_arch(state, arch, str(path))
    student, teacher = load_models(state, arch, spec.num_classes, device)
    return LoadedNetworks(arch, state.get("epoch"), device, {"student": student, "teacher": teacher},
                          trained_normalisation(state, path))


def trained_normalisation(state: dict, path: str | Path) -> str:
    """The normalisation a checkpoint's run trained with (``config.normalisation`` in the
    settings our checkpoints carry); the dataset's own for a checkpoint without them (the
    original's, or ours from before the setting)."""
    extras = state.get("mt_repro")
    settings = extras.get("config") if isinstance(extras, dict) else None
    value = settings.get("normalisation", "dataset") if isinstance(settings, dict) else "dataset"
    if value not in NORMALISATIONS:
        raise BadInput(f"checkpoint {path}: its settings' normalisation {value!r:.60} is not one of "
                       f"{', '.join(NORMALISATIONS)}")
    return value


def dataset_of(checkpoint: str | Path, dataset: str | None, data_dir: str | Path | None) -> tuple[DatasetSpec, str | Path | None]:
    """The dataset to evaluate on and its data: as given, else the run's when the checkpoint
    lies in ``RUN/checkpoints/`` (its config.json), else CIFAR-10 at its default place."""
    run_dir = Path(checkpoint).parent.parent
    if (dataset is None or data_dir is None) and Path(checkpoint).parent.name == CHECKPOINT_DIR \
            and (run_dir / CONFIG_FILE).is_file():
        config = read_run_config(run_dir)
        if dataset is None or dataset == config.dataset:
            dataset, data_dir = config.dataset, data_dir if data_dir is not None else config.data_dir
    spec = get_dataset(dataset or "cifar10")
    if spec.open_part is None:
        raise BadInput(f"mt-repro evaluate reads the datasets of the ResNet runs; {spec.name} is not one")
    return spec, data_dir


def check_batches(batch_size: int, workers: int) -> None:
    if batch_size <= 0 or workers < 0:
        raise BadInput("--batch-size must be positive and --workers >= 0")


@contextmanager
def cannot_take_images(arch: str, dataset: str):
    try:
        yield
    except RuntimeError as exc:  # e.g. a CIFAR-10 network given the digits' one-channel images
        first = " ".join(str(exc).split())[:160]
        raise BadInput(f"{arch} cannot take the images of {dataset} ({first})") from None
