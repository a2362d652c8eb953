#!/usr/bin/env bash
# The long fuzzing run: every property test of a file reader, with SCALE times the cases CI
# runs (CI: about 18,400 cases in all). Prints hypothesis' statistics; the run is seeded
# (derandomize), so the same SCALE gives the same cases on every machine.
#   benchmarks/fuzz/run_fuzz.sh [SCALE]        (default 10: 184,000 cases)
set -euo pipefail
cd "$(dirname "$0")/../.."
scale="${1:-10}"
MT_REPRO_FUZZ_SCALE="$scale" python -m pytest -q -p no:cacheprovider --hypothesis-show-statistics \
    tests/test_fuzz_readers.py \
    tests/test_fuzz_structures.py \
    tests/test_legacy_checkpoints.py::test_damaged_bytes_fail_only_with_bad_input \
    tests/test_pandas_msgpack.py::test_random_bytes \
    tests/test_pandas_msgpack.py::test_mutated_files \
    tests/test_pandas_msgpack.py::test_structurally_mutated_files
