"""The shape of one hostile-input case, shared by ``hostile_inputs.py`` and its per-reader modules."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MARKER = "EXECUTED"  # a hostile payload would create this file in the case's directory


class Exploit:
    """Unpickling this runs a shell command: what a malicious file would carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@dataclass(frozen=True)
class Case:
    file: str                 # which kind of file
    damage: str               # what is wrong with it
    command: str              # the command that reads it (for the table)
    expected: str             # words the one-line error must contain
    build: Callable[[Path, Path], list]  # (case directory, tiny tree) -> CLI argv
    exit_code: int = 2        # 2 bad input; 1 a run that started and failed
    # Memory bombs: the command runs in its own process, whose peak resident memory may exceed
    # that of a process that only imports the toolkit and fails at once by at most this much.
    extra_mib: int | None = None


