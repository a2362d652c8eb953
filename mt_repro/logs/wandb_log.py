"""Weights & Biases: each run's logged rows sent to a W&B run too (``--wandb``).

Opt-in: ``--wandb`` on the training commands (or ``MT_REPRO_WANDB=1``), and the ``wandb``
package installed. ``WANDB_MODE=offline`` writes the W&B run under the run directory without a
network, for ``wandb sync`` later; ``WANDB_PROJECT`` names the project (default ``mt-repro``).
The run's settings are the W&B config; each row's numbers are logged as ``<log>/<column>`` at
the row's global step, as in the TensorBoard files. The W&B run's id is kept in
``<run>/wandb_id.txt``, so that a resumed run continues the same W&B run. W&B keeps what an
interrupted process logged after its last checkpoint and ignores steps it already has, so
the ``.jsonl`` logs stay the record.
"""
from __future__ import annotations

import importlib.util
import math
import os
import secrets
import string
from pathlib import Path
from typing import Any

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import read_text

SWITCH_ENV = "MT_REPRO_WANDB"
ID_FILE = "wandb_id.txt"


def enabled() -> bool:
    """``--wandb`` was given; refused with a line if the package is missing."""
    if os.environ.get(SWITCH_ENV, "0").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    if importlib.util.find_spec("wandb") is None:
        raise BadInput("--wandb needs the wandb package: pip install wandb")
    return True


class WandbRun:
    """The W&B run of one run directory."""

    def __init__(self, run_dir: str | os.PathLike, settings: dict[str, Any]):
        import wandb  # only with --wandb: an optional dependency

        run_dir = Path(run_dir)
        id_file = run_dir / ID_FILE
        # (an id of W&B's form from the OS's randomness: the run's seeded generators are not touched)
        run_id = read_text(id_file, "W&B run id").strip() if id_file.exists() or id_file.is_symlink() else \
            "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mt-repro"), name=run_dir.name, id=run_id,
                              resume="allow", dir=str(run_dir), config=settings)
        self.last_step = -1

    def record(self, log_name: str, row: dict[str, Any]) -> None:
        step = row.get("step")
        if not isinstance(step, int) or step < self.last_step:   # (W&B refuses steps that go back)
            return
        values = {f"{log_name}/{column}": value for column, value in row.items()
                  if column != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value)}
        self.run.log(values, step=step)
        self.last_step = step

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.run.finish()
