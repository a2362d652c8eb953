"""Where the shipped settings files are: the original's experiments (``original_configs/``,
installed as the package data ``mt_repro.original_configs``) and ours (``mt_repro/configs/``)."""
from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import NESTING, check_nesting, read_text


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
    """A settings file as a dict; one clear error for a missing, broken, oversized or too deeply
    nested one (a regular file within TEXT_FILE_BYTES, nested no deeper than NESTING: checked on
    the text first, since tomllib's parser recurses)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{what} {path.name} does not exist")
    text = read_text(path, what)
    NESTING.check_depth(toml_depth(text), f"{what} {path}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{what} {path.name} cannot be read: {exc}") from None
    except RecursionError:  # not reached after the depth check; kept as a last line
        raise BadInput(f"{what} {path} is nested too deeply: refused") from None
    check_nesting(data, f"{what} {path}")  # dotted keys nest tables without brackets
    return data


# Strings and comments, where brackets do not nest: multi-line strings first.
_TOML_SKIPPED = re.compile(r'"""[\s\S]*?(?:"""|$)|\'\'\'[\s\S]*?(?:\'\'\'|$)|"(?:[^"\\\n]|\\.)*"?'
                           r"|'[^'\n]*'?|#[^\n]*")
_BRACKET = re.compile(r"[\[\]{}]")


def toml_depth(text: str) -> int:
    """How deeply the arrays and inline tables of TOML ``text`` nest (a ``[table]`` header
    counts one, ``[[array]]`` two), brackets in strings and comments aside; a bound to check
    before parsing."""
    return _bracket_depth(_TOML_SKIPPED.sub("", text))


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest (brackets inside strings do not
    count), without parsing it: a bound to check before :func:`json.loads`, which recurses."""
    if text.count("[") + text.count("{") <= 1:
        return text.count("[") + text.count("{")
    return _bracket_depth(_JSON_STRING.sub("", text))


def _bracket_depth(text: str) -> int:
    """The deepest nesting of ``[]``/``{}`` in ``text`` (strings and comments already removed)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(text):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest
