"""The statement-by-statement path of patch-legacy (legacy_patches._regions) against the
whole-file path it must match byte for byte: the rewritten text, every change with its line and
in its order, the compile check, and the --check / --diff output.

All inputs are built here; the snippets are written in the style of 2017-era PyTorch code.
"""
from __future__ import annotations

import random
import textwrap

import pytest

import legacy_patches
from legacy_patches import _regions
from legacy_patches import RULES, collect, parse, patch_module, prepare, select_rules
from mt_repro.legacy import patching

ALL_RULES = [r.id for r in RULES]
CONFIGS = {"default": dict(ids=None, cpu=False), "cpu": dict(ids=None, cpu=True),
           "all": dict(ids=ALL_RULES, cpu=False)}


def whole_file(source: str, rules):
    module = parse(source)
    return patch_module(source, module, rules, collect([module], rules))


def statements(source: str, rules):
    prepared = prepare(source)
    return legacy_patches.patch_prepared(prepared, rules, collect([prepared], rules))


def same(source: str, config: str = "default", *, fast: bool = True):
    """Both paths on ``source``; they must agree. ``fast``: the statement path must be the one
    that answered (not its fallback to the whole file)."""
    rules = select_rules(CONFIGS[config]["ids"], cpu=CONFIGS[config]["cpu"])
    ref, new = whole_file(source, rules), statements(source, rules)
    assert new.new_source == ref.new_source
    assert new.changes == ref.changes
    assert (new.compiles, new.compile_error) == (ref.compiles, ref.compile_error)
    if fast:
        assert new.engine == "statements"
    return new


def d(text: str) -> str:
    return textwrap.dedent(text)


# --- every rule, and the places where the statement path must be told about the file ------------
EVERY_RULE = d('''\
    """A generated legacy module."""
    import torch
    import torch.nn as nn
    from torch.autograd import Variable, Function
    import torchvision.transforms as transforms
    import pandas as pd


    class Double(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * 2

        def backward(self, grad):
            x, = self.saved_variables
            return grad * 2


    class TrainLog:
        INCREMENTAL_UPDATE_TIME = 300

        def __init__(self, path):
            self.path = path

        def save(self):
            frame = pd.DataFrame()
            frame.to_msgpack(self.path)


    def step(model, ema, x, y, meters, optimizer):
        x_var = Variable(x.cuda(async=True))
        ema_var = Variable(x, volatile=True)
        y_var = Variable(y.cuda(async=True))
        n = y_var.data.ne(-1).sum()
        out = model(x_var)
        ema_out = ema(ema_var)
        loss = nn.CrossEntropyLoss(size_average=False)(out, y_var) / n
        prec1, prec5 = accuracy(out.data, y_var.data, topk=(1, 5))
        meters.update('loss', loss.data[0], n)
        meters.update('top1', prec1[0], n)
        for p, q in zip(ema.parameters(), model.parameters()):
            p.data.mul_(0.99).add_(1 - 0.99, q.data)
        flat = out.view(-1)
        state = torch.load('ckpt.pth')
        n_gpu = torch.cuda.device_count()
        tf = transforms.Compose([transforms.Scale(32), transforms.RandomSizedCrop(24, 2)])
        return Double()(flat), ema_out, state, tf, n_gpu
    ''')


@pytest.mark.parametrize("config", CONFIGS)
def test_every_rule(config):
    result = same(EVERY_RULE, config)
    fired = {c.rule for c in result.changes}
    assert {"async-keyword", "data-index-item", "meter-index-item", "count-sum-item",
            "size-average-reduction", "scalar-first-overloads", "view-reshape",
            "torchvision-renamed-transforms", "legacy-autograd-function", "pandas-msgpack",
            "torch-load-weights-only", "volatile-no-grad"} <= fired
    if config == "all":
        assert {"cuda-to-device", "trainlog-flush-at-exit"} <= fired


VOLATILE_AT_MODULE_LEVEL = d('''\
    import torch
    from torch.autograd import Variable

    x_var = Variable(images, volatile=True)
    n = len(x_var)


    def helper(model):
        return model(x_var)


    class Holder:
        x_var = 3


    out = model(x_var)
    other = model2(x_var)
    x_var = None
    late = model(x_var)
    y_var = Variable(labels, volatile=True); z = 1
    pair = model(y_var)
    w_var = Variable(q, volatile=flag)
    if cond: h_var = Variable(q, volatile=True)
    for i in range(3):
        k_var = Variable(q, volatile=True)
        # a comment inside the block
        kout = model(k_var)

        kout2 = model(k_var, 2)
        print(k_var)
    ''')

VOLATILE_BLOCKS = d('''\
    def evaluate(loader, model):
        x_var = Variable(x, volatile=True)
        for batch in loader:
            out = model(x_var)
        if x_var is not None: print(x_var)
        a = 1; b = model(x_var)
        out2 = model(x_var)
        out3 = model2(x_var, 2)
        return model3(x_var)


    def second(model):
        v = Variable(x, volatile=True)
        w = Variable(y, volatile=True)
        o1 = model(v)
        o2 = model(w)
        # between
        o3 = model(v, w)
        v = 2
        o4 = model(v)


    with torch.no_grad():
        a = Variable(x, volatile=True)
        b = model(a)

        def inside():
            c = Variable(x, volatile=True)
            return model(c)
    with open(f) as fh, no_grad():
        e = model(Variable(x, volatile=True))
    ''')

ACCURACY_NAMES = d('''\
    prec1, prec5 = accuracy(out.data, target, topk=(1, 5))
    top1.update(prec1[0], n)


    class Trainer:
        meters.update('top1', prec1[0], n)

        def step(self, out, target):
            meters.update('top1', prec1[0], n)
            p1, = self.accuracy(out, target)
            meters.update('p1', p1[0])

            def inner():
                meters.update('p1', p1[0])
                q1 = precision_at(out)
                meters.update('q1', q1[0])
            return inner


    def run():
        if True:
            a1, a5 = topk_accuracy(o.data[0], t)
        for _ in range(2):
            meter.update(a1[0], a5[0], prec1[0])
        lam = lambda: meter.update(a1[0])
    ''')

IMPORTS = d('''\
    import torchvision
    a = transforms.Scale(256)
    t1 = T.Scale(4)


    def f():
        import torchvision.transforms as T
        return T.RandomSizedCrop(224, Image.BILINEAR)


    t2 = T.Scale(8)
    from torchvision import transforms as tv
    b = tv.RandomSizedCrop(32, 3, scale=(0.1, 1.0))
    c = torchvision.transforms.Scale(8)
    from torchvision.transforms import Scale, RandomSizedCrop as RSC
    import pandas as pd
    from pandas import DataFrame, read_msgpack as rm


    def save(df, p):
        df.to_msgpack(p, compress='zlib')
        return pd.read_msgpack(p), rm(p)
    ''')

SHARED_LINES = d('''\
    import torch
    a = x.data[0]; b = y.view(-1)
    if c: d = e.data[0]
    else: d = f.ne(1).sum()
    while loss.data[0] > 1: loss = step()
    def g(): return w.data[0]
    class K: v = w.data[0]
    t = (1,
         u.data[0]); s = 2
    ''')

MULTI_LINE = d('''\
    import torch


    @register(loss.data[0])
    def train(loader, model, meters):
        for i, (x, y) in enumerate(loader):
            out = model(x)
            loss = criterion(out,
                             y,
                             size_average=False)  # summed
            meters.update('loss',
                          loss.data[0],
                          x.size(0))
            text = """
            loss.data[0] inside a string
            """
            correct = (out.max(1)[1]
                       .eq(y).sum())
            n = (y.data
                 .ne(-1)
                 .sum())
            state = torch.load(
                path)
            print(text, correct, n, out.view(
                -1))
    ''')

TORCH_LOAD_COMMENTS = d('''\
    import torch

    if resume:
        path = find()
        # a comment at the end of the block
    state = torch.load(path)
    # an unrelated weights_only note
    other = torch.load(path2)
    # patch-legacy: weights_only=False unpickles
    again = torch.load(p)
    if x: y = torch.load(p)
    ''')

NO_IMPORTS = d('''\
    #!/usr/bin/env python
    # a header comment

    def teacher(model, x):
        x_var = Variable(x, volatile=True)
        n = torch.cuda.device_count()
        return model(x_var).cuda()
    ''')

DOCSTRING_ONLY = '"""Doc."""\ndef f(x):\n    v = Variable(x, volatile=True)\n    return m(v)\n'

CASES = {
    "volatile-at-module-level": VOLATILE_AT_MODULE_LEVEL,
    "volatile-blocks": VOLATILE_BLOCKS,
    "accuracy-names-by-scope": ACCURACY_NAMES,
    "imports-before-use": IMPORTS,
    "shared-lines": SHARED_LINES,
    "multi-line-statements": MULTI_LINE,
    "torch-load-comments": TORCH_LOAD_COMMENTS,
    "no-imports-header": NO_IMPORTS,
    "docstring-only": DOCSTRING_ONLY,
    "crlf": EVERY_RULE.replace("\n", "\r\n"),
    "crlf-volatile": VOLATILE_AT_MODULE_LEVEL.replace("\n", "\r\n"),
    "tabs": EVERY_RULE.replace("    ", "\t"),
    "tabs-volatile": VOLATILE_BLOCKS.replace("    ", "\t"),
    "two-space": EVERY_RULE.replace("    ", "  "),
    "no-final-newline": "import torch\nx = y.data[0]\nz = Variable(q, volatile=True)\nout = model(z)",
    "no-final-newline-import": "def f(x):\n    v = Variable(x, volatile=True)\n    return model(v)",
    # the first indented line is a match's case: libcst's default indent is that of the case
    "match-first": "match v:\n  case 1:\n      pass\nx = Variable(a, volatile=True)\ny = net(x)\n",
    "async-parameter": "import torch\ndef load(path, async=False):\n    return path.cuda(async=True)\n",
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", CASES)
def test_context_sensitive_cases(name, config):
    same(CASES[name], config)


def test_module_level_hit_reaches_past_a_def():
    # the forward pass two statements after a function that mentions the name is wrapped,
    # and the function is reported, as in the whole file
    result = same(VOLATILE_AT_MODULE_LEVEL)
    assert "with torch.no_grad():\n    out = model(x_var)\n    other = model2(x_var)\n" in result.new_source
    assert any("used inside a compound statement" in c.message for c in result.manual)


def test_accuracy_names_follow_the_scopes():
    new = same(ACCURACY_NAMES).new_source
    assert "    meters.update('top1', prec1[0].item(), n)" in new        # class body: module names
    assert "            meters.update('p1', p1[0])\n" in new               # inner(): p1 is not its own
    assert "meters.update('q1', q1[0].item())" in new


def test_odd_files_take_the_whole_file_and_agree():
    # a lone carriage return, a removed import, a rule told to look at the whole file
    same("import torch\nx = a.data[0]\ry = b.view(-1)\n", fast=False)
    same("import torch\nx = 1; \\\n  y = z.data[0]\n", fast=False)
    # a weights_only comment that may close the block above it or open the next statement
    same("if resume:\n    path = find()\n    # weights_only here\nstate = torch.load(path)\n",
         fast=False)
    result = same("import pandas as pd\n# the reader\nfrom pandas import read_msgpack\n", fast=False)
    assert result.engine == "whole-file"


# --- generated files ----------------------------------------------------------------------------------
SNIPPETS = [
    "x{i} = Variable(batch{i}.cuda(async=True))",
    "v{i} = Variable(inputs{i}, volatile=True)",
    "o{i} = net(v{i})",
    "loss{i} = crit(o{i}, y{i}) / y{i}.data.ne(-1).sum()",
    "meter.update('loss', loss{i}.data[0], n)",
    "p{i}, q{i} = accuracy(o{i}.data, y{i}, topk=(1, 5))",
    "meter.update('top1', p{i}[0], n)",
    "w{i}.data.mul_(a).add_(1 - a, u{i}.data)",
    "f{i} = o{i}.view(-1)",
    "c{i} = F.mse_loss(o{i}, t{i}, size_average=False)",
    "s{i} = torch.load(path{i})",
    "g{i} = torch.cuda.device_count()",
    "m{i} = model.cuda()",
    "print('loss %.3f' % loss{i}.data[0]); k{i} = 1",
    "# a comment about loss{i}.data[0]",
    "",
    "r{i} = (x{i}.data[0] +\n    y{i}.data[0])",
    "if n > {i}: z{i} = Variable(a, volatile=True)",
    "for j in range({i}):\n    e{i} = Variable(j, volatile=True)\n    h{i} = net(e{i})",
    "with torch.no_grad():\n    b{i} = Variable(a, volatile=True)\n    net(b{i})",
    "try:\n    l{i} = torch.load(p)\nexcept IOError:\n    l{i} = None",
    "tr{i} = transforms.Scale({i})",
    "df.to_msgpack('log{i}.msgpack')",
]


def generated(seed: int, n: int = 40) -> str:
    rng = random.Random(seed)
    out = ["import torch", "from torch.autograd import Variable", ""]
    for block in range(n // 8):
        out.append(f"def step_{block}(net, crit, meter, a, n):")
        body = []
        for i in range(8):
            snippet = rng.choice(SNIPPETS).format(i=block * 8 + i)
            body += [("    " + line) if line else "" for line in snippet.split("\n")]
        out += body + ["    return meter", "", ""]
    for i in range(n % 8 + 4):
        out.append(rng.choice(SNIPPETS).format(i=1000 + i))
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("seed", range(8))
def test_generated_files(seed):
    source = generated(seed, n=32)
    if seed % 2:
        source = source.replace("\n", "\r\n")
    for config in CONFIGS:
        same(source, config)


def test_benchmark_style_file():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from bench_patch_legacy import legacy_source
    finally:
        sys.path.pop(0)
    source, _ = legacy_source(4_000)
    for config in CONFIGS:
        same(source, config)


# --- the CLI: --check and --diff ---------------------------------------------------------------------------
def _tree(root):
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text(EVERY_RULE)
    (root / "pkg" / "fns.py").write_text(d('''\
        from torch.autograd import Function

        class Flip(Function):
            def forward(self, x):
                return -x

            def backward(self, g):
                return -g
        '''))
    (root / "pkg" / "use.py").write_text("from fns import Flip\n\ndef f(x):\n    return Flip()(x)\n")
    (root / "pkg" / "crlf.py").write_bytes(VOLATILE_BLOCKS.replace("\n", "\r\n").encode())
    (root / "odd.py").write_text("x = a.data[0]\ry = 1\n")
    return root


@pytest.mark.parametrize("config", CONFIGS)
def test_check_and_diff_are_the_same(tmp_path, monkeypatch, config):
    root = _tree(tmp_path / "proj")
    ids, cpu = CONFIGS[config]["ids"], CONFIGS[config]["cpu"]
    fast = patching.plan_patches(root, rules=ids, cpu=cpu)
    assert {f.rel: f.result.engine for f in fast.files if f.result} == {
        "main.py": "statements", "odd.py": "whole-file", "pkg/crlf.py": "statements",
        "pkg/fns.py": "statements", "pkg/use.py": "statements"}
    monkeypatch.setattr(_regions, "patch", lambda prepared, rules, project: None)
    ref = patching.plan_patches(root, rules=ids, cpu=cpu)
    assert patching.render_check(fast) == patching.render_check(ref)
    assert patching.render_diff(fast) == patching.render_diff(ref)
    assert patching.render_notes(fast) == patching.render_notes(ref)
    assert "Flip.apply(x)" in patching.render_diff(fast)      # the project-wide pass, per file


def test_line_map_shortcut_agrees_with_the_alignment():
    # _regions.line_map answers "every line is its own" without aligning the texts only where
    # the alignment is certain to say the same
    from legacy_patches._engine import _line_map

    rng = random.Random(7)
    answered = 0
    for _ in range(400):
        n = rng.randint(1, 60)
        alphabet = [f"l{k}" for k in range(rng.randint(1, 10))]
        old = [rng.choice(alphabet) for _ in range(n)]
        new = list(old)
        for _ in range(rng.randint(1, 5)):
            new[rng.randrange(n)] = rng.choice(alphabet + [f"n{rng.randint(0, 4)}"])
        if rng.random() < 0.2:
            new.insert(rng.randrange(n + 1), "inserted")
        a, b = "\n".join(old) + "\n", "\n".join(new) + "\n"
        fast = _regions.line_map(a, b, a.splitlines(), set(a.splitlines()))
        ref = _line_map(a, b)
        assert [fast(i) for i in range(n + 3)] == [ref(i) for i in range(n + 3)]
        answered += fast is _regions._same_line
    assert answered > 20
