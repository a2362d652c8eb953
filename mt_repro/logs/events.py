"""TensorBoard event files beside a run's ``.jsonl`` logs, which stay the record.

Every number of every logged row (but its epoch, the logs' index) becomes a scalar, tagged
``<log>/<column>`` (``training/loss``, ``validation/error1/avg``, ``ema_validation/error1/avg``),
at the row's global step. The event files go under ``<run>/tensorboard/``, so
``tensorboard --logdir results/`` shows every run. A resumed run writes its event files afresh,
from the rows its logs kept (up to its checkpoint) on: the event files hold what the logs hold,
never what an interrupted process logged after its last checkpoint. (TensorBoard's own
``purge_step`` left duplicate steps behind.)

Written when the ``tensorboard`` package is installed (``pip install tensorboard``), unless
``MT_REPRO_TENSORBOARD=0``. Without the package, the run says once that it writes no event files.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

EVENTS_DIR = "tensorboard"
SWITCH_ENV = "MT_REPRO_TENSORBOARD"
_told = False


def enabled() -> bool:
    """Event files are written: the package is there and the switch is not off."""
    global _told
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if importlib.util.find_spec("tensorboard") is None:
        if not _told:
            log.info(f"no TensorBoard event files: the tensorboard package is not installed "
                     f"(pip install tensorboard; {SWITCH_ENV}=0 silences this)")
            _told = True
        return False
    return True


class EventFiles:
    """One writer for a run's event files."""

    def __init__(self, run_dir: str | os.PathLike):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # only when enabled(): optional

        self.writer = EventFileWriter(str(Path(run_dir) / EVENTS_DIR))

    @classmethod
    def replaying(cls, run_dir: str | os.PathLike, logs: dict[str, Any]) -> "EventFiles":
        """A writer whose files replace the run's earlier event files, holding the rows of
        ``logs`` (name -> run log) to begin with."""
        directory = Path(run_dir) / EVENTS_DIR
        if logs and directory.is_dir() and not directory.is_symlink():
            for old in directory.glob("events.out.tfevents.*"):
                old.unlink()
        files = cls(run_dir)
        for name, run_log in logs.items():
            for row in run_log.rows():   # (without the logs' own index, as ``TeeLog`` records them)
                files.record(name, {k: v for k, v in row.items() if k != run_log.index})
        return files

    def record(self, log_name: str, row: dict[str, Any]) -> None:
        """The row's numbers as one event: one summary holding a scalar per column. (A scalar
        per event, as ``SummaryWriter.add_scalar`` writes them, cost the digits demo about 7 ms
        per training-log row of 50-odd columns, 0.8 ms of each 18-23 ms step at a row every 10
        steps; one event per row costs about 0.5 ms.)"""
        from tensorboard.compat.proto.event_pb2 import Event  # tensorboard is optional, as above
        from tensorboard.compat.proto.summary_pb2 import Summary  # (ditto)

        step = row.get("step")
        if not isinstance(step, int):
            return
        values = [Summary.Value(tag=f"{log_name}/{column}", simple_value=float(value))
                  for column, value in row.items()
                  if column != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value)]
        if values:
            self.writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TeeLog:
    """A run log that also hands each row to the run's other sinks: its event files, its W&B
    run (``sinks``: made when first asked for; each has ``record(log_name, row)``)."""

    def __init__(self, run_log, sinks: Callable[[], list], log_name: str):
        self.run_log, self.sinks, self.log_name = run_log, sinks, log_name

    def record(self, index_value: float, values: dict[str, Any]) -> None:
        sinks = self.sinks()   # (first: a resumed run's event files replay the rows logged before this one)
        self.run_log.record(index_value, values)
        for sink in sinks:
            sink.record(self.log_name, values)

    def __getattr__(self, name: str):   # rows(), truncate(), path: the run log's
        return getattr(self.run_log, name)
