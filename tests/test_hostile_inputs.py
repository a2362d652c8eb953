"""Every corrupted or hostile input file gives one clear line and exit 2, and runs nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostile_inputs
from conftest import assert_one_line_error

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("case", hostile_inputs.CASES, ids=lambda c: f"{c.file}: {c.damage}")
def test_hostile_input_is_refused_in_one_line(case, cli, tiny_tree, tmp_path, baseline_peak_mib):
    argv = case.build(tmp_path, tiny_tree)
    if case.extra_mib is None:
        assert_one_line_error(cli(*argv), case.expected, code=case.exit_code)
    else:
        result, peak_mib = run_measured(argv, cwd=tmp_path)
        assert_one_line_error(result, case.expected, code=case.exit_code)
        assert peak_mib - baseline_peak_mib < case.extra_mib, \
            f"peak resident memory {peak_mib:.0f} MiB, {baseline_peak_mib:.0f} MiB for a command that fails at once"
    assert not (tmp_path / hostile_inputs.MARKER).exists(), "a payload was executed"


# The command's own peak, as the kernel accounts it for the process (RUSAGE_SELF), written
# even when the command raises.
_ENTRY = """import resource, sys
from mt_repro.cli import main
try:
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.exit(code)
"""


def run_measured(argv: list, cwd: Path) -> tuple[tuple[int, str, str], float]:
    """``mt-repro ARGV`` in its own process: ((exit code, stdout, stderr), peak resident MiB)."""
    peak_file = cwd / ".peak-kib"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _ENTRY, peak_file, *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    peak_kib = int(peak_file.read_text())
    peak_file.unlink()
    return (done.returncode, done.stdout, done.stderr), peak_kib / 1024


@pytest.fixture(scope="module")
def baseline_peak_mib(tmp_path_factory) -> float:
    """The peak of a process that imports the toolkit and fails at once (torch alone is several
    hundred MiB), against which the memory bombs are measured."""
    directory = tmp_path_factory.mktemp("baseline")
    (result, peak) = run_measured(["inspect", directory / "missing.ckpt"], cwd=directory)
    assert result[0] == 2, result
    return peak


def test_readme_table_lists_exactly_these_cases():
    text = README.read_text()
    start = text.index(hostile_inputs.TABLE_START) + len(hostile_inputs.TABLE_START)
    end = text.index(hostile_inputs.TABLE_END)
    assert text[start:end].strip() == hostile_inputs.render_table(), \
        "README's table is stale; replace it with hostile_inputs.render_table()"
