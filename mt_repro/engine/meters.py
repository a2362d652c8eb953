"""Running meters: last value, weighted average and sum, as the original logged them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Meter:
    val: float = 0.0
    sum: float = 0.0
    count: float = 0.0

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def update(self, value: float, n: float = 1) -> None:
        self.val = value
        self.sum += value * n
        self.count += n


class MeterSet:
    def __init__(self) -> None:
        self.meters: dict[str, Meter] = {}

    def __getitem__(self, name: str) -> Meter:
        return self.meters[name]

    def update(self, name: str, value, n=1) -> None:
        self.meters.setdefault(name, Meter()).update(float(value), float(n))

    def record(self) -> dict[str, float]:
        """The original's log columns: each value, ``<name>/avg`` and ``<name>/sum``."""
        row = {name: m.val for name, m in self.meters.items()}
        row.update({f"{name}/avg": m.avg for name, m in self.meters.items()})
        row.update({f"{name}/sum": m.sum for name, m in self.meters.items()})
        return row

    def state_dict(self) -> dict[str, list[float]]:
        """What a checkpoint taken inside an epoch keeps of the epoch's meters."""
        return {name: [m.val, m.sum, m.count] for name, m in self.meters.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.meters = {name: Meter(*map(float, values)) for name, values in state.items()}
