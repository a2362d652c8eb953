"""Where the shipped settings files are: the original's experiments (``original_configs/``,
installed as the package data ``mt_repro.original_configs``) and ours (``mt_repro/configs/``)."""
from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mt_repro.core.errors import BadInput


def original_configs_dir() -> Path:
    """Installed: package data ``mt_repro/original_configs``; in a source checkout that is
    imported directly (not installed), the top-level ``original_configs/`` beside the package."""
    try:
        return Path(str(resources.files("mt_repro.original_configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "original_configs"


def our_configs_dir() -> Path:
    return Path(str(resources.files("mt_repro.configs")))


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A settings file as a dict; one clear error for a missing or broken one."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{what} {path.name} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{what} {path.name} cannot be read: {exc}") from None
