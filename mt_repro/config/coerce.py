"""Settings from text, TOML and JSON, checked against the type of the dataclass field they set.

One coercion serves every typed settings class (``TrainConfig``, ``ConvNetConfig``, a method's
``Options``) and every place settings arrive from: config files, ``--set key=value``, a run's
``config.json``, a method's ``method_options``.
"""
from __future__ import annotations

import difflib
import typing
from typing import Any, Iterable

from mt_repro.core.errors import BadInput


def shown(name: Any) -> str:
    """A setting name as an error message shows it: plain if it is a plain word, else quoted."""
    return name if isinstance(name, str) and name.isidentifier() else repr(name)


def coerce_setting(hints: dict[str, Any], name: str, value: Any, source: str) -> Any:
    """Check ``value`` against the type of the dataclass field ``name`` (``hints``: its type
    hints); accept strings as from ``--set key=value``."""
    hint = hints[name]
    options = typing.get_args(hint) or (hint,)
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if type(None) in options:
            return None
        raise BadInput(f"{source}: {name} cannot be empty")
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(option, value)
        except (TypeError, ValueError):
            continue
    expected = " or ".join(o.__name__ for o in options)
    raise BadInput(f"{source}: {name}={value!r} is not a valid {expected}")


def _convert(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("yes", "true", "t", "y", "1", "no", "false", "f", "n", "0"):
            return value.lower() in ("yes", "true", "t", "y", "1")
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(kind)


def typed_values(hints: dict[str, Any], values: dict[str, Any], source: str) -> dict[str, Any]:
    """Every entry of ``values`` coerced to its field's type; unknown names are an error."""
    unknown = sorted(set(values) - set(hints), key=str)
    if unknown:
        raise BadInput(f"{source}: unknown setting(s) {', '.join(map(shown, unknown))}")
    return {k: coerce_setting(hints, k, v, source) for k, v in values.items()}


def split_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["lr=0.1", "method_options=alpha=0.5,students=3"]`` -> ``{"lr": "0.1", "method_options":
    "alpha=0.5,students=3"}``: each item one ``--set`` pair, split at its first ``=`` (so a value
    may hold commas and ``=``), not yet checked."""
    if isinstance(pairs, str):   # a programming error: its characters would be taken as pairs
        raise TypeError(f"overrides: a sequence of 'key=value' strings, one per --set, not the string {pairs!r}")
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise BadInput(f"--set expects key=value, got {pair!r}")
        overrides[key] = value.strip()
    return overrides


def parse_overrides(pairs: Iterable[str], hints: dict[str, Any]) -> dict[str, Any]:
    """``["lr=0.1", "nesterov=false"]`` -> checked values, for ``--set`` (of the settings class
    whose type ``hints`` are given)."""
    overrides: dict[str, Any] = {}
    for key, value in split_overrides(pairs).items():
        if key not in hints:
            raise BadInput(f"--set: unknown setting {key!r}{_did_you_mean(key, hints)}; known: {', '.join(sorted(hints))}")
        overrides[key] = coerce_setting(hints, key, value, "--set")
    return overrides


# The original pytorch/main.py's other spellings of two flags (--learning-rate, --wd).
_ALIASES = {"learning_rate": "lr", "wd": "weight_decay"}


def _did_you_mean(key: str, names: Iterable[str]) -> str:
    """`` (did you mean 'lr'?)`` for the original's alias of a known name, else the closest
    known name (difflib's ratio), or nothing."""
    names = list(names)
    close = [_ALIASES[key]] if _ALIASES.get(key) in names else difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """``"alpha=0.5, students=3"`` -> ``{"alpha": "0.5", "students": "3"}`` (``method_options``)."""
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{what} expects name=value[,name=value], got {item.strip()!r}")
        pairs[key.strip()] = value.strip()
    return pairs
