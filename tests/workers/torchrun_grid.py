"""A grid of two small digits runs, each trained in two gloo processes by ``--launcher
torchrun`` (``mt_repro.engine.launch``), for tests/test_launch.py: ``torchrun_grid.py OUT``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the tests' helpers

from mt_repro.engine import launch  # noqa: E402
from test_launch import digits_grid  # noqa: E402


def main(out: str) -> int:
    counts = launch.launch(digits_grid(Path(out), 2, epochs=6), launcher="torchrun", devices=["cpu", "cpu"],
                           procs_per_run=2, say=print)
    print(f"started {counts.started}, resumed {counts.resumed}, skipped {counts.skipped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
