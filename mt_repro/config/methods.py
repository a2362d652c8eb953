"""The methods' settings files, ``mt_repro/configs/methods/<name>.toml``: data beside the code
of each method (``mt_repro/methods/<name>.py``).

* ``source``: the paper its hyperparameters come from;
* ``[options]``: the method's own hyperparameters, fields of its ``Options`` dataclass (a run
  changes them with ``method_options = "name=value,..."``);
* ``[resnet]``, ``[convnet]``, ``[digits]``: changes to the run's settings when the method
  trains with the paper's ResNet recipe (``TrainConfig`` names), its ConvNet recipe
  (``ConvNetConfig`` names) or in the digits demo (``TrainConfig`` names); each table is
  optional, and what it says comes from the method's paper (or, for the demo, from
  measurements written beside it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mt_repro.config.files import our_configs_dir, read_toml
from mt_repro.core.errors import BadInput

METHODS_DIR = "methods"
RUN_TABLES = ("resnet", "convnet", "digits")


@dataclass(frozen=True)
class MethodSettings:
    name: str
    source: str
    options: dict[str, Any]
    tables: dict[str, dict[str, Any]]

    def table(self, name: str) -> dict[str, Any]:
        """The changes to a run's settings for ``name`` (one of ``RUN_TABLES``), possibly none."""
        return dict(self.tables.get(name, {}))


def settings_names() -> list[str]:
    """Every method that has a settings file."""
    return sorted(p.stem for p in (our_configs_dir() / METHODS_DIR).glob("*.toml"))


def method_settings(name: str) -> MethodSettings:
    path = our_configs_dir() / METHODS_DIR / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"unknown method {name!r} (no settings file configs/methods/{name}.toml); "
                       f"known: {', '.join(settings_names())}")
    data = read_toml(path, f"settings of method {name!r},")
    unknown = sorted(set(data) - {"source", "options", *RUN_TABLES})
    if unknown or not isinstance(data.get("source"), str):
        raise BadInput(f"configs/methods/{name}.toml needs a source and only the tables options, "
                       f"{', '.join(RUN_TABLES)} (found {', '.join(unknown) or 'no source'})")
    tables = {key: dict(data[key]) for key in RUN_TABLES if key in data}
    return MethodSettings(name, data["source"], dict(data.get("options", {})), tables)
