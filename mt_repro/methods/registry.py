"""The semi-supervised methods a run can use, by name.

A method is a class with the interface of ``mt_repro.methods.interface.Method`` (``MeanTeacher``
is the reference), registered with ``@register("name")``; its settings live in
``mt_repro/configs/methods/<name>.toml``:

* ``source``: the paper its hyperparameters come from;
* ``[options]``: the method's own hyperparameters, fields of its ``Options`` dataclass
  (a run changes them with the ``method_options`` setting, ``"name=value,name=value"``);
* ``[train]``: run settings its paper fixes (e.g. ``consistency``, the weight of its extra
  cost), applied by ``--method NAME`` on the paper's commands;
* ``[digits]``: changes to the digits demo's settings for this method.

Adding a method: one module under ``mt_repro/methods/`` and its settings file. Modules are
found by scanning this package and settings files by scanning ``configs/methods/``, so nothing
else changes.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import tomllib
import typing
from importlib import resources
from typing import Any, Callable

from mt_repro.errors import BadInput

_METHODS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        from mt_repro.methods.interface import check_method_class

        check_method_class(cls)
        cls.method_name = name
        _METHODS[name] = cls
        return cls
    return add


def _load_all() -> None:
    import mt_repro.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"mt_repro.methods.{module.name}")


def method_names() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def settings_names() -> list[str]:
    """The methods that have a settings file (``configs/methods/*.toml``)."""
    folder = resources.files("mt_repro.configs").joinpath("methods")
    return sorted(entry.name[:-len(".toml")] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def method_class(name: str) -> type:
    _load_all()
    if name not in _METHODS:
        raise BadInput(f"unknown method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def method_settings(name: str) -> dict[str, Any]:
    """``mt_repro/configs/methods/<name>.toml`` as a dict (see the module's docstring)."""
    path = resources.files("mt_repro.configs").joinpath("methods", f"{name}.toml")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"method {name!r} has no settings file configs/methods/{name}.toml") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"settings of method {name!r} cannot be read: {exc}") from None
    return data


def parse_method_options(text: str | None) -> dict[str, str]:
    """``"alpha=0.5, students=3"`` -> ``{"alpha": "0.5", "students": "3"}``."""
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"method_options expects name=value[,name=value], got {item.strip()!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def method_options(name: str, overrides: str | None = None) -> Any:
    """The method's ``Options``: its settings file's ``[options]``, changed by ``overrides``
    (the run's ``method_options``); every name and type checked. ``None`` for a method
    without options of its own."""
    from mt_repro.config import coerce_setting

    options_class = getattr(method_class(name), "Options", None)
    changes = parse_method_options(overrides)
    if options_class is None or not dataclasses.is_dataclass(options_class):
        if changes:
            raise BadInput(f"method {name} has no options (got method_options {overrides!r})")
        return None
    hints = typing.get_type_hints(options_class)
    source = f"configs/methods/{name}.toml [options]"
    values = dict(method_settings(name).get("options", {}))
    for where, table in ((source, values), ("method_options", changes)):
        unknown = sorted(set(table) - set(hints))
        if unknown:
            raise BadInput(f"{where}: unknown option(s) {', '.join(unknown)} of method {name}; "
                           f"known: {', '.join(sorted(hints)) or 'none'}")
    typed = {k: coerce_setting(hints, k, v, source) for k, v in values.items()}
    typed.update({k: coerce_setting(hints, k, v, "method_options") for k, v in changes.items()})
    options = options_class(**typed)
    check = getattr(options, "check", None)
    if check is not None:
        check()
    return options


def paper_run_settings(name: str) -> dict[str, Any]:
    """The ``[train]`` table of the method's settings file: run settings its paper fixes."""
    return dict(method_settings(name).get("train", {}))


def create_method(config, student, teacher):
    cls = method_class(config.method)
    return cls(config, student, teacher)
