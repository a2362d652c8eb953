#!/usr/bin/env bash
# The checks that need a GPU, in one go, from the repository's root on a machine with one CUDA GPU
# and PyTorch's stack installed (mt-repro itself need not be installed: it runs from this tree):
#
#   benchmarks/gpu_checks.sh [USB_CHECKOUT]
#
# 1. the suite's GPU tests: fast mode's losses and weights against faithful mode's on CUDA, and its
#    steps under CUDA's sync debug mode (tests/test_fast_mode.py);
# 2. `mt-repro bench` in fast mode: shake-shake 26 at batch 512 (the paper's 4 GPUs on one),
#    200 timed steps: steps/s and MFU, from which a full CIFAR-10 4000-label run's time follows;
# 3. with a checkout of USB (microsoft/Semi-supervised-learning): WRN-28-2 steps of FixMatch and
#    Mean Teacher against USB's own code on the GPU, USB's labeled batch of 64, in fast and in
#    faithful mode (benchmarks/bench_against_usb.py; libraries USB imports and does not use
#    here stand in where they are missing; a machine without a network needs the checkout
#    brought along: its source and configurations are about 7 MB);
# 4. `mt-repro bench` in fast mode with --compile (100 timed steps).
#
# Result files go to $RESULTS (default benchmarks/results). Estimated at 6 to 9 minutes on one
# H100 or H200 (not yet run).
set -uo pipefail   # no -e: every check runs, and the exit status says whether one failed
results=${RESULTS:-benchmarks/results}
usb=${1:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

echo "== GPU tests"
python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_fast_mode.py -k "cuda or gpu" || status=1

echo "== mt-repro bench: shake-shake 26, batch 512, fast mode"
python3 -m mt_repro.cli bench --mode fast --batch-size 512 --labeled-batch-size 124 --steps 200 \
    --warmup 20 --workers 12 --out "$results" || status=1

if [ -n "$usb" ]; then
    for mode in fast faithful; do
        echo "== WRN-28-2 against USB, $mode mode"
        python3 benchmarks/bench_against_usb.py --usb "$usb" --device cuda --mode "$mode" \
            --labeled-batch 64 --steps 40 --warmup 10 --repeats 3 \
            --out "$results/$(date +%F)-gpu-against-usb-$mode.txt" || status=1
    done
else
    echo "== no USB checkout given: the comparison with USB's own code is not run"
fi

echo "== mt-repro bench: the same with torch.compile (last: its compilation takes the longest; its own file)"
python3 -m mt_repro.cli bench --mode fast --compile --batch-size 512 --labeled-batch-size 124 --steps 100 \
    --warmup 10 --workers 12 --out "$results" || status=1
exit $status
