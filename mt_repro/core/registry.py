"""Entries of one kind by name (datasets, models, methods), each registered by its own module.

A ``Registry`` belongs to one package: the modules of that package register their entries when
imported, and the registry imports all of them before it answers, so what it lists is every
entry there is, found with nothing else changed when a module is added (as timm's model
registry). Two entries under one name are an error, not a silent replacement.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from mt_repro.core.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, package: str, kind: str):
        self.package = package  # dotted name of the package whose modules register entries
        self.kind = kind        # what an entry is, for error messages: "dataset", "method", ...
        self._entries: dict[str, T] = {}
        self._complete = False

    def add(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"two {self.kind}s registered as {name!r}")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        self._import_all()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._import_all()
        if name not in self._entries:
            raise BadInput(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def _import_all(self) -> None:
        if self._complete:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        self._complete = True
