#!/usr/bin/env python
"""How the time of ``mt-repro patch-legacy`` grows with the size of a legacy source file.

Generates, deterministically, one file of repeated 2017-style training steps (each with
``Variable(x, volatile=True)``, ``torch.autograd.Variable``, ``.cuda(async=True)``,
``loss.data[0]``, a count ``.ne(-1).sum()``, ``size_average=False``, a meter update of
``prec1[0]`` and ``.view(-1)``: twelve call sites to rewrite in seventeen lines, far denser than
real code) at 100 KB, 250 KB, 500 KB and 1 MB, and times ``plan_patches`` (read, parse, every
default rule, the report) on each: wall and CPU seconds, and KB per second. Linear growth shows
as a steady KB/s.

    python benchmarks/bench_patch_legacy.py [--sizes 100,250,500,1000] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HEADER = '''"""A legacy training script (generated for the benchmark)."""
import os
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Variable


'''
BLOCK = '''def step_{i}(model, ema_model, criterion, x, y, meter, top1, log):
    input_var = Variable(x)
    ema_input_var = torch.autograd.Variable(x, volatile=True)
    target_var = Variable(y.cuda(async=True))
    n_labeled = target_var.data.ne(-1).sum()
    ema_out = ema_model(ema_input_var)
    out = model(input_var)
    loss = criterion(out, target_var) / n_labeled
    cons = F.mse_loss(out, ema_out, size_average=False)
    meter.update('loss', loss.data[0], n_labeled)
    meter.update('cons', cons.data[0])
    prec1, prec5 = accuracy(out.data, target_var.data, topk=(1, 5))
    top1.update(prec1[0], n_labeled)
    flat = out.view(-1)
    log.record({i}, {{'loss': loss.data[0], 'flat': flat}})
    print('step {i} loss %.4f' % (loss.data[0],))
    return loss


'''


def legacy_source(n_bytes: int) -> tuple[str, int]:
    """At least ``n_bytes`` of legacy code, and how many blocks it holds."""
    parts, size, i = [HEADER], len(HEADER), 0
    while size < n_bytes:
        block = BLOCK.format(i=i)
        parts.append(block)
        size += len(block)
        i += 1
    return "".join(parts), i


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,250,500,1000", help="KB, comma-separated")
    parser.add_argument("--out", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    from mt_repro.legacy import patching

    lines = ["patch-legacy on one generated legacy file, default rules (plan_patches + render_check)",
             f"date: {datetime.date.today().isoformat()}",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only; "
             f"python {platform.python_version()}",
             f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
             "", f"{'size KB':>8} {'blocks':>7} {'edits':>7} {'wall s':>8} {'cpu s':>8} {'KB/s (wall)':>12} {'KB/s (cpu)':>11}"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for kb in (int(s) for s in args.sizes.split(",")):
            text, blocks = legacy_source(kb * 1000)
            path = Path(tmp, f"legacy_{kb}.py")
            path.write_text(text)
            wall, cpu = time.perf_counter(), time.process_time()
            plan = patching.plan_patches(path)
            patching.render_check(plan)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            edits = sum(len(f.edits) for f in plan.files)
            kb_in = len(text) / 1000
            row = f"{kb_in:8.0f} {blocks:7d} {edits:7d} {wall:8.1f} {cpu:8.1f} {kb_in / wall:12.1f} {kb_in / cpu:11.1f}"
            lines.append(row)
            print(row, flush=True)
    lines.append(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(lines[-1])
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
