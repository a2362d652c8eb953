"""The paper's ResNet experiments (Table 4) as the original PyTorch runners defined them,
loaded from ``original_configs/<name>.toml``; each names the runner it transcribes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mt_repro.config.files import original_configs_dir, read_toml
from mt_repro.config.train import TrainConfig
from mt_repro.core.errors import BadInput


@dataclass(frozen=True)
class PaperConfig:
    """One experiment of the paper as the original runner script defined it."""

    name: str
    title: str
    source: str
    per_gpu: dict[str, Any]
    gpus: int
    label_file: str
    data_seeds: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)

    def settings(self, gpus: int | None = None) -> dict[str, Any]:
        """The run's settings before the method's and the user's: batch, labeled batch and lr
        scale with the GPU count, exactly as the original runner multiplied them by
        ``torch.cuda.device_count()``."""
        gpus = self.gpus if gpus is None else gpus
        if gpus <= 0:
            raise BadInput(f"--gpus must be positive, got {gpus}")
        scaled = {
            "batch_size": self.per_gpu["batch_size"] * gpus,
            "labeled_batch_size": self.per_gpu["labeled_batch_size"] * gpus,
            "lr": self.per_gpu["lr"] * gpus,
        }
        return {**self.train, **scaled}

    def label_file_for(self, data_seed: int) -> str:
        """The original's label file of ``data_seed``, relative to its ``data-local/labels``."""
        return self.label_file.format(data_seed=data_seed)


def paper_config_names() -> list[str]:
    return sorted(p.stem for p in original_configs_dir().glob("*.toml"))


def load_paper_config(name: str) -> PaperConfig:
    path = original_configs_dir() / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"no paper configuration {name!r}; known: {', '.join(paper_config_names())}")
    return read_paper_config(path)


def read_paper_config(path: Path) -> PaperConfig:
    """A paper configuration file, checked: its fields and the types of its settings."""
    data = read_toml(path, "config")
    required = {"name", "title", "source", "per_gpu", "gpus", "label_file", "data_seeds", "train"}
    missing = sorted(required - set(data))
    if missing:
        raise BadInput(f"config {path.name} lacks {', '.join(missing)}")
    TrainConfig.from_dict(data["train"], source=f"config {path.name}")  # type-check early
    return PaperConfig(name=data["name"], title=data["title"], source=data["source"],
                       per_gpu=dict(data["per_gpu"]), gpus=int(data["gpus"]),
                       label_file=data["label_file"], data_seeds=tuple(data["data_seeds"]),
                       train=dict(data["train"]))
