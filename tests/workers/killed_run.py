"""``mt-repro`` that kills itself with SIGKILL at a chosen point, for tests/test_kill_resume.py:

    python killed_run.py POINT:N mt-repro-arguments...

The N-th time the process passes POINT it dies, as a machine that loses power would:

* ``step``: inside a training step, after the backward pass, before the optimizer's update;
* ``evaluate``: inside an evaluation;
* ``log-row``: while a log row is written (half of it is on disk);
* ``before-rename``: a file fully written to its temporary name, not yet renamed over the target.

The points are wrapped around the library's functions here, in this process only: the library
itself carries no test hooks.
"""
import json
import os
import signal
import sys

import torch

from mt_repro.cli import main
from mt_repro.core import fileio
from mt_repro.engine import trainer
from mt_repro.logs.runlog import RunLog


def die_on(target: str, count: int):
    passes = {"n": 0}

    def passing() -> None:
        passes["n"] += 1
        if passes["n"] == count:
            os.kill(os.getpid(), signal.SIGKILL)

    if target == "step":
        original_step = torch.optim.SGD.step

        def step(self, *args, **kwargs):
            passing()
            return original_step(self, *args, **kwargs)

        torch.optim.SGD.step = step
    elif target == "evaluate":
        original_evaluate = trainer.evaluate_model

        def evaluate(*args, **kwargs):
            passing()
            return original_evaluate(*args, **kwargs)

        trainer.evaluate_model = evaluate
    elif target == "log-row":
        original_record = RunLog.record

        def record(self, index_value, values):
            if passes["n"] + 1 == count:
                line = json.dumps({self.index: index_value, **values}, default=float)
                with open(self.path, "a") as f:
                    f.write(line[: len(line) // 2])
                    f.flush()
                    os.fsync(f.fileno())
            passing()
            return original_record(self, index_value, values)

        RunLog.record = record
    elif target == "before-rename":
        original_replace = fileio.os.replace

        def replace(source, destination):
            passing()
            return original_replace(source, destination)

        fileio.os.replace = replace
    else:
        raise SystemExit(f"unknown crash point {target!r}")


if __name__ == "__main__":
    point, *argv = sys.argv[1:]
    target, _, count = point.partition(":")
    die_on(target, int(count or 1))
    sys.exit(main(argv))
