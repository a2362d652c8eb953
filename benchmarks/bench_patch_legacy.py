#!/usr/bin/env python
"""How the time of ``mt-repro patch-legacy`` grows with the size of a legacy source file.

Generates, deterministically, two kinds of file at each size (default 100 KB, 250 KB, 500 KB
and 1 MB) and times ``plan_patches`` (read, parse, every default rule, the report) on each:
wall and CPU seconds, KB per second, and which path rewrote it (``statements``: statement by
statement; ``whole-file``: the whole-file fallback).

* dense: repeated 2017-style training steps (each with ``Variable(x, volatile=True)``,
  ``torch.autograd.Variable``, ``.cuda(async=True)``, ``loss.data[0]``, a count
  ``.ne(-1).sum()``, ``size_average=False``, a meter update of ``prec1[0]`` and ``.view(-1)``:
  eleven edits in seventeen lines, about 14 edits per KB, far denser than real code);
* real-density: the same steps with ordinary code between them (model classes, data
  handling, logging: no call site to rewrite, but the names the rules look for, as in real
  code), at REAL_EDITS_PER_KB, the density of the original Mean Teacher code's pytorch/ half
  with the default rules (39 edits in its 59.5 KB of .py files, measured with patch-legacy).

    python benchmarks/bench_patch_legacy.py [--sizes 100,250,500,1000] [--kinds dense,real-density]
                                            [--whole-file] [--out FILE]
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

# edits per KB of the original code's pytorch/ .py files (default rules): 39 / 59.505 KB
REAL_EDITS_PER_KB = 39 / 59.505

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
EDITS_PER_BLOCK = 11
# Ordinary code of the same era with nothing to rewrite (it still holds `.view(`, `update(`,
# `.data`, `.sum(`, `load`, `add`, `cuda`: the statement path parses those statements too).
PLAIN = '''class Block{i}(nn.Module):
    """A residual block with a squeeze-and-excitation gate."""

    def __init__(self, planes, stride=1, groups=1):
        super(Block{i}, self).__init__()
        self.conv_a = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1,
                                groups=groups, bias=False)
        self.bn_a = nn.BatchNorm2d(planes)
        self.conv_b = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(planes)
        self.gate = nn.Linear(planes, planes)
        self.stride = stride

    def forward(self, x):
        residual = x
        y = F.relu(self.bn_a(self.conv_a(x)), inplace=True)
        y = self.bn_b(self.conv_b(y))
        # squeeze: one number per channel, then a gate between 0 and 1
        w = F.adaptive_avg_pool2d(y, 1).view(y.size(0), -1)
        w = torch.sigmoid(self.gate(w)).view(y.size(0), y.size(1), 1, 1)
        if self.stride > 1:
            residual = F.avg_pool2d(residual, self.stride)
        return F.relu(residual + y * w)


def describe_{i}(model, meters, path, seen):
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    meters.update('params', total)
    for name, param in model.named_parameters():
        seen.add(name)
        if param.data.dim() > 1:
            norm = param.data.norm(2)
            meters.update(name + '/norm', float(norm))
    lines = ['{{}}: {{}} parameters ({{}} trainable)'.format(path, total, trainable)]
    for key in sorted(meters.values):
        lines.append('  {{:<24}} {{:.4f}}'.format(key, meters.values[key]))
    with open(os.path.join(path, 'model_{i}.txt'), 'w') as f:
        f.write('\\n'.join(lines) + '\\n')
    return total


'''


def legacy_source(n_bytes: int) -> tuple[str, int]:
    """At least ``n_bytes`` of dense legacy code, and how many blocks it holds."""
    parts, size, i = [HEADER], len(HEADER), 0
    while size < n_bytes:
        block = BLOCK.format(i=i)
        parts.append(block)
        size += len(block)
        i += 1
    return "".join(parts), i


def real_density_source(n_bytes: int) -> tuple[str, int]:
    """At least ``n_bytes`` of legacy code with REAL_EDITS_PER_KB edits per KB: each block
    followed by as much ordinary code as keeps the running density at that figure."""
    parts, size, i, j = [HEADER], len(HEADER), 0, 0
    while size < n_bytes:
        block = BLOCK.format(i=i)
        parts.append(block)
        size += len(block)
        i += 1
        while (i * EDITS_PER_BLOCK) / ((size + 1) / 1000) > REAL_EDITS_PER_KB and size < n_bytes:
            plain = PLAIN.format(i=j)
            parts.append(plain)
            size += len(plain)
            j += 1
    return "".join(parts), i


KINDS = {"dense": legacy_source, "real-density": real_density_source}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,250,500,1000", help="KB, comma-separated")
    parser.add_argument("--kinds", default="dense,real-density", help=", ".join(KINDS))
    parser.add_argument("--whole-file", action="store_true",
                        help="time the whole-file path instead (the one the statement path must match)")
    parser.add_argument("--out", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    from mt_repro.legacy import patching

    if args.whole_file:
        from legacy_patches import _regions

        _regions.patch = lambda prepared, rules, project: None   # every file: its fallback

    path_used = "the whole-file path (--whole-file)" if args.whole_file else "default path"
    lines = [f"patch-legacy on one generated legacy file, default rules (plan_patches + render_check), "
             f"{path_used}",
             f"date: {datetime.date.today().isoformat()}",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only; "
             f"python {platform.python_version()}",
             f"real density: {REAL_EDITS_PER_KB:.3f} edits per KB (the original code's pytorch/ .py files)",
             f"load average before: {_load()}",
             "", f"{'kind':<13} {'size KB':>8} {'blocks':>7} {'edits':>7} {'edits/KB':>9} {'wall s':>8} "
                 f"{'cpu s':>8} {'KB/s (wall)':>12} {'KB/s (cpu)':>11}  path"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in (k.strip() for k in args.kinds.split(",")):
            for kb in (int(s) for s in args.sizes.split(",")):
                text, blocks = KINDS[kind](kb * 1000)
                path = Path(tmp, f"legacy_{kind}_{kb}.py")
                path.write_text(text)
                wall, cpu = time.perf_counter(), time.process_time()
                plan = patching.plan_patches(path)
                patching.render_check(plan)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                edits = sum(len(f.edits) for f in plan.files)
                engines = ",".join(sorted({f.result.engine for f in plan.files if f.result}))
                kb_in = len(text) / 1000
                row = (f"{kind:<13} {kb_in:8.0f} {blocks:7d} {edits:7d} {edits / kb_in:9.2f} {wall:8.1f} "
                       f"{cpu:8.1f} {kb_in / wall:12.1f} {kb_in / cpu:11.1f}  {engines}")
                lines.append(row)
                print(row, flush=True)
    lines.append(f"load average after: {_load()}")
    print(lines[-1])
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
