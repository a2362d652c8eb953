"""The semi-supervised methods a run can use, by name.

A method is a class with the interface of ``mt_repro.methods.interface.Method`` (``MeanTeacher``
is the reference), registered with ``@register("name")``, in one module of this package; its
settings file ``mt_repro/configs/methods/<name>.toml`` (``mt_repro.config.methods``) names its
source paper, its ``[options]`` (fields of its ``Options`` dataclass, changed by a run's
``method_options = "name=value,..."``) and its changes to the runs of each recipe. Modules are
found by scanning this package, so adding a method changes nothing else.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable

from mt_repro.config.coerce import coerce_setting, parse_pairs
from mt_repro.config.methods import method_settings
from mt_repro.core.errors import BadInput
from mt_repro.core.registry import Registry
from mt_repro.methods.interface import check_method_class

_METHODS: Registry[type] = Registry("mt_repro.methods", "method")


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        check_method_class(cls)
        cls.method_name = name
        return _METHODS.add(name, cls)
    return add


def method_names() -> list[str]:
    return _METHODS.names()


def method_class(name: str) -> type:
    return _METHODS.get(name)


def method_options(name: str, overrides: str | None = None) -> Any:
    """The method's ``Options``: its settings file's ``[options]``, changed by ``overrides``
    (the run's ``method_options``); every name and type checked. ``None`` for a method
    without options of its own."""
    options_class = getattr(method_class(name), "Options", None)
    changes = parse_pairs(overrides, "method_options")
    if options_class is None or not dataclasses.is_dataclass(options_class):
        if changes:
            raise BadInput(f"method {name} has no options (got method_options {overrides!r})")
        return None
    hints = typing.get_type_hints(options_class)
    source = f"configs/methods/{name}.toml [options]"
    values = method_settings(name).options
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


def check_config(config) -> None:
    """The run's method exists, its options parse, and it accepts the run's configuration."""
    cls = method_class(config.method)
    method_options(config.method, config.method_options)
    cls.check_config(config)


def create_method(config, student, teacher, build_network=None):
    return method_class(config.method)(config, student, teacher, build_network=build_network)


# --- variants: a method with some of its options changed, "self_training[noise=randaugment]" ------
def split_variant(spec: str) -> tuple[str, str | None]:
    """``"name[key=value,...]"`` -> (name, "key=value,...") (a run's ``method_options``);
    ``"name"`` -> (name, None). The name is checked to be a method, the options to be its own."""
    text = spec.strip()
    name, bracket, rest = text.partition("[")
    name = name.strip()
    if not bracket:
        method_class(name)
        return name, None
    if not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1]:
        raise BadInput(f"method {spec!r}: a variant is written NAME[option=value,...], e.g. "
                       "self_training[noise=randaugment]")
    options = rest[:-1].strip()
    method_class(name)
    if not options:
        raise BadInput(f"method {spec!r}: the brackets name no option (drop them for the method's own settings)")
    method_options(name, options)   # every option checked now, not when its run starts
    return name, options


def split_method_list(text: str) -> list[str]:
    """``"mean_teacher,self_training[noise=randaugment,swa=true]"`` -> the two specs: commas
    inside brackets belong to the variant."""
    specs, depth, current = [], 0, []
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            specs.append("".join(current))
            current = []
        else:
            current.append(char)
    specs.append("".join(current))
    return [spec.strip() for spec in specs if spec.strip()]
