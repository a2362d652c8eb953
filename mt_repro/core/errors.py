"""Errors a user can act on, each with the exit code the CLI returns for it.

Exit codes: 0 ok, 1 a run that failed (diverged, crashed), 2 bad input (files, flags, configs).

Messages often quote what a file held (a name, a line); ``printable`` is how every printer of
errors and warnings shows them, so that a crafted file cannot send terminal escape sequences.
"""
from __future__ import annotations

import unicodedata

# Characters that reorder or hide text in a terminal: the bidirectional embeddings, overrides,
# isolates and marks.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ESCAPED_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")  # C0, DEL, C1; lone surrogates; line/paragraph separators


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape: C0 and C1
    controls and DEL as ``\\x1b``, bidirectional controls, lone surrogates and line separators as
    ``\\u202e``. Letters of any script, and everything else, are kept."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escaped(c) for c in text)


def one_line(text: str) -> str:
    """``text`` as one printable line: its line breaks become spaces, then ``printable``."""
    return printable(" ".join(text.split("\n")))


def _escaped(char: str) -> str:
    if char not in BIDI_CONTROLS and unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class MtReproError(Exception):
    """Base class: the message is printed as one line, ``mt-repro: error: <message>``."""

    exit_code = 1


class BadInput(MtReproError):
    """Missing, corrupt or inconsistent input given by the user: exit code 2."""

    exit_code = 2


class RunFailed(MtReproError):
    """A run that started correctly and then failed (e.g. the loss diverged): exit code 1."""

    exit_code = 1


class NonFiniteLoss(RunFailed):
    """A training step whose loss is not finite, or above the original's explosion guard."""

    def __init__(self, loss: float, values: dict[str, float]):
        parts = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k.endswith("loss") and v is not None)
        super().__init__(f"loss is {loss}" + (f" ({parts})" if parts else ""))
        self.loss = loss
