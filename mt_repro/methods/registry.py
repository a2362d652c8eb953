"""The semi-supervised methods a run can use, by name.

A method is a class with the interface ``MeanTeacher`` defines (``mt_repro.methods.mean_teacher``):
built as ``cls(config, student, teacher)``; ``losses(student_input, teacher_input, targets,
epoch)`` returns the step's ``StepResult`` from the two augmented views of a minibatch (targets
-1 for unlabeled samples); ``after_optimizer_step()`` updates what the method keeps between
steps and counts ``global_step``. ``student`` is the network the optimizer trains, ``teacher``
the second model the trainer evaluates beside it (the EMA of the student for every method here).

Adding a method: one module under ``mt_repro/methods/`` whose class is decorated with
``@register("name")``, and its settings in ``mt_repro/configs/methods/<name>.toml``. Modules are
found by scanning the package, so nothing else changes.
"""
from __future__ import annotations

import importlib
import pkgutil
import tomllib
from importlib import resources
from typing import Any, Callable

from mt_repro.errors import BadInput

_METHODS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
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


def method_class(name: str) -> type:
    _load_all()
    if name not in _METHODS:
        raise BadInput(f"unknown method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def method_settings(name: str) -> dict[str, Any]:
    """``mt_repro/configs/methods/<name>.toml``: the method's own settings (``[options]``), the
    paper they come from (``source``) and overrides for the digits demo (``[digits]``)."""
    path = resources.files("mt_repro.configs").joinpath("methods", f"{name}.toml")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"method {name!r} has no settings file configs/methods/{name}.toml") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"settings of method {name!r} cannot be read: {exc}") from None
    return data


def create_method(config, student, teacher):
    cls = method_class(config.method)
    return cls(config, student, teacher)
