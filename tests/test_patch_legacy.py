"""`mt-repro patch-legacy` and the rules in `legacy_patches`.

Every snippet here is written for these tests in the style of 2017-era PyTorch code; none comes
from the original repository. The end-to-end test patches and runs a miniature legacy project
(below); `test_real_original_end_to_end` runs the original code itself and is skipped unless
MT_REPRO_ORIGINAL_CODE points at a checkout's pytorch/ directory (it trains a ShakeShake-26 on
CPU for two tiny epochs: 40-60 s on an idle 2-core machine, minutes on a busy one).
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from legacy_patches import LegacySyntaxError, patch_source, select_rules
from mt_repro.cli import main
from mt_repro.core.fileio import TEMPORARY_SUFFIX

REPO = Path(__file__).resolve().parents[1]


def patch(src: str, *rules: str, cpu: bool = False):
    src = textwrap.dedent(src)
    return patch_source(src, select_rules(list(rules) if rules else None, cpu=cpu))


def patched(src: str, *rules: str, cpu: bool = False) -> str:
    result = patch(src, *rules, cpu=cpu)
    compile(result.new_source, "x.py", "exec")          # the round trip compiles on 3.11+
    again = patch_source(result.new_source, select_rules(list(rules) if rules else None, cpu=cpu))
    assert again.new_source == result.new_source       # every rule is idempotent
    return result.new_source


def unchanged(src: str, *rules: str, cpu: bool = False) -> None:
    src = textwrap.dedent(src)
    assert patch(src, *rules, cpu=cpu).new_source == src


def d(src: str) -> str:
    return textwrap.dedent(src)


# --- async-keyword ------------------------------------------------------------------------------
def test_async_keyword_becomes_non_blocking():
    src = "batch = labels.cuda(async=True)  # to the GPU\nx = y.cuda(0, async = True)\n"
    assert patched(src, "async-keyword") == (
        "batch = labels.cuda(non_blocking=True)  # to the GPU\n"
        "x = y.cuda(0, non_blocking = True)\n")


def test_async_keyword_look_alikes_stay():
    unchanged("""\
        async_ = True
        run(async_=async_)
        text = "labels.cuda(async=True)"
        # labels.cuda(async=True) was the old spelling
        async def fetch():
            await go()
        """, "async-keyword")


def test_async_as_parameter_name_is_reported_not_fixed():
    result = patch("def load(path, async=False):\n    return path\n")
    assert not result.compiles
    assert "async" in result.new_source
    assert any("parameter name" in c.message for c in result.manual)


def test_unknown_callee_with_async_is_flagged():
    result = patch("job = submit(task, async=True)\n", "async-keyword")
    assert "non_blocking=True" in result.new_source
    assert result.manual


# --- data-index-item ----------------------------------------------------------------------------
def test_data_index_becomes_item():
    src = """\
        meter.update(loss.data[0], n)
        bad = np.isnan(loss.data[0]) or (a + b).data[0] > 1e5
        """
    assert patched(src, "data-index-item") == d("""\
        meter.update(loss.item(), n)
        bad = np.isnan(loss.item()) or (a + b).item() > 1e5
        """)


def test_data_index_look_alikes_stay():
    unchanged("""\
        msg = "use loss.data[0] for the value"
        # loss.data[0] is a python float in 0.3
        weights.data[0] = 1.0
        first = batch.data[0][1]
        second = loss.data[1]
        head = data[0]
        del cache.data[0]
        """, "data-index-item")


# --- meter-index-item ---------------------------------------------------------------------------
def test_meter_index_becomes_item():
    src = """\
        def step(out, y, meters, n):
            prec1, prec5 = accuracy(out.data, y, topk=(1, 5))
            meters.update('top1', prec1[0], n)
            meters.update('error1', 100. - prec1[0], n)
            top5.update(prec5[0], n)
        """
    assert patched(src, "meter-index-item") == d("""\
        def step(out, y, meters, n):
            prec1, prec5 = accuracy(out.data, y, topk=(1, 5))
            meters.update('top1', prec1[0].item(), n)
            meters.update('error1', 100. - prec1[0].item(), n)
            top5.update(prec5[0].item(), n)
        """)


def test_meter_index_look_alikes_stay():
    unchanged("""\
        def step(out, y, meters, batch, n):
            prec1, prec5 = accuracy(out.data, y, topk=(1, 5))
            first = prec1[0]
            meters.update('x', batch[0], n)
            meters.update('top1', prec1[0].item(), n)
            print("prec1[0]")

        def other(meters, prec1):
            meters.update('top1', prec1[0])
        """, "meter-index-item")


# --- count-sum-item -----------------------------------------------------------------------------
def test_count_sum_becomes_item():
    src = """\
        n_labeled = targets.data.ne(-1).sum()
        n = max(targets.ne(-1).sum(), 1e-8)
        """
    assert patched(src, "count-sum-item") == d("""\
        n_labeled = targets.data.ne(-1).sum().item()
        n = max(targets.ne(-1).sum().item(), 1e-8)
        """)


def test_count_sum_look_alikes_stay():
    unchanged("""\
        a = targets.ne(-1).sum().float()
        b = targets.sum()
        c = targets.ne(-1).sum(0)
        e = (pred == targets).sum()
        f = targets.ne(-1).sum().item()
        """, "count-sum-item")


# --- size-average-reduction ---------------------------------------------------------------------
def test_size_average_and_reduce_become_reduction():
    src = """\
        crit = nn.CrossEntropyLoss(size_average=False, ignore_index=-1).cuda()
        per_item = nn.MSELoss(reduce=False)
        mean = nn.L1Loss(size_average=True, reduce=True)
        total = F.mse_loss(a, b, size_average=False) / k
        kl = F.kl_div(
            logp,
            q,
            size_average=False,
        )
        """
    assert patched(src, "size-average-reduction") == d("""\
        crit = nn.CrossEntropyLoss(reduction='sum', ignore_index=-1).cuda()
        per_item = nn.MSELoss(reduction='none')
        mean = nn.L1Loss(reduction='mean')
        total = F.mse_loss(a, b, reduction='sum') / k
        kl = F.kl_div(
            logp,
            q,
            reduction='sum',
        )
        """)


def test_reduction_look_alikes_stay_and_variables_are_reported():
    unchanged("""\
        x.scatter_(0, idx, src, reduce='add')
        total = functools.reduce(operator.add, xs)
        merge(parts, reduce=False)
        text = "nn.MSELoss(size_average=False)"
        """, "size-average-reduction")
    result = patch("crit = nn.NLLLoss(size_average=flag)\n", "size-average-reduction")
    assert not result.changed and result.manual


def test_reduction_semantics_match_torch():
    import torch
    import torch.nn.functional as F

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    for old, new in (("size_average=False", "reduction='sum'"), ("reduce=False", "reduction='none'"),
                     ("size_average=True", "reduction='mean'")):
        out = patched(f"v = F.mse_loss(a, b, {old})\n", "size-average-reduction")
        assert new in out
        scope = {"F": F, "a": a, "b": b}
        exec(out, scope)
        with pytest.warns(UserWarning):
            expected = eval(f"F.mse_loss(a, b, {old})", {"F": F, "a": a, "b": b})
        assert torch.equal(scope["v"], expected)


# --- scalar-first-overloads ---------------------------------------------------------------------
def test_scalar_first_overloads():
    src = """\
        ema_p.data.mul_(alpha).add_(1 - alpha, p.data)
        p.data.add_(-lr, grad)
        v.addcmul_(1 - beta2, g, g)
        w.addcdiv_(-step, m, denom)
        y = torch.add(x, 2, z)
        h = x.add(0.5, z)
        """
    assert patched(src, "scalar-first-overloads") == d("""\
        ema_p.data.mul_(alpha).add_(p.data, alpha=1 - alpha)
        p.data.add_(grad, alpha=-lr)
        v.addcmul_(g, g, value=1 - beta2)
        w.addcdiv_(m, denom, value=-step)
        y = torch.add(x, z, alpha=2)
        h = x.add(z, alpha=0.5)
        """)


def test_scalar_first_look_alikes_stay():
    unchanged("""\
        x.add_(y)
        x.add_(y, alpha=2)
        registry.add(key, value)
        seen.add(1)
        v.addcmul_(g, g, value=0.1)
        """, "scalar-first-overloads")


def test_scalar_first_same_numbers():
    import torch

    torch.manual_seed(0)
    p, q, g = torch.randn(5), torch.randn(5), torch.randn(5)
    out = patched("a = p.clone().add_(0.3, q)\nb = p.clone().addcmul_(0.5, g, q)\n",
                  "scalar-first-overloads")
    scope = {"p": p, "q": q, "g": g}
    exec(out, scope)
    with pytest.warns(UserWarning, match="deprecated"):   # the old overloads, still there
        old_a, old_b = p.clone().add_(0.3, q), p.clone().addcmul_(0.5, g, q)
    assert torch.equal(scope["a"], old_a) and torch.equal(scope["b"], old_b)


# --- view-reshape -------------------------------------------------------------------------------
def test_view_minus_one_becomes_reshape():
    assert patched("flat = correct[:k].view(-1).float()\n", "view-reshape") == \
        "flat = correct[:k].reshape(-1).float()\n"


def test_view_look_alikes_stay():
    unchanged("""\
        a = x.view(-1, 3)
        b = x.view(x.size(0), -1)
        x.view(-1)[idx] = 0
        x.view(-1).fill_(0)
        c = x.view(torch.float16)
        d = "x.view(-1)"
        """, "view-reshape")


# --- pandas-msgpack -----------------------------------------------------------------------------
def test_msgpack_calls_go_through_the_runtime():
    src = """\
        import pandas as pd
        from pandas import DataFrame, read_msgpack

        def save(df, path):
            df.to_msgpack(path, compress='zlib')

        def load(path):
            return pd.read_msgpack(path), read_msgpack(path)
        """
    assert patched(src, "pandas-msgpack") == d("""\
        import pandas as pd
        from pandas import DataFrame
        from legacy_patches.runtime import (
            legacy_read_msgpack as read_msgpack,
            legacy_to_msgpack,
            legacy_read_msgpack,
        )

        def save(df, path):
            legacy_to_msgpack(df, path, compress='zlib')

        def load(path):
            return legacy_read_msgpack(path), read_msgpack(path)
        """)


def test_msgpack_look_alikes_stay():
    unchanged("""\
        note = "df.to_msgpack(path)"
        # pd.read_msgpack is gone
        """, "pandas-msgpack")


def test_runtime_msgpack_round_trip(tmp_path):
    import pandas as pd

    pytest.importorskip("mt_repro.logs.pandas_msgpack")
    from legacy_patches.runtime import legacy_read_msgpack, legacy_to_msgpack

    frame = pd.DataFrame.from_dict({0.5: {"loss": 1.25, "step": 1}, 1.0: {"loss": 0.75, "step": 2}},
                                   orient="index")
    path = tmp_path / "training.msgpack"
    legacy_to_msgpack(frame, str(path), compress="zlib")
    same = dict(check_column_type=False)     # pandas 3 labels columns with its str dtype
    pd.testing.assert_frame_equal(legacy_read_msgpack(path), frame, **same)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "training.csv", index_col=0), frame, **same)
    legacy_to_msgpack(frame, path, append=True)                       # the CSV keeps everything
    assert len(legacy_read_msgpack(path)) == 4 and len(pd.read_csv(tmp_path / "training.csv")) == 4
    assert isinstance(legacy_to_msgpack(frame), bytes)               # no path: the bytes
    with pytest.raises(TypeError, match="DataFrames"):
        legacy_to_msgpack(frame["loss"], path)


# --- torch-load-weights-only --------------------------------------------------------------------
def test_torch_load_gets_weights_only_false_and_a_comment():
    src = """\
        if resume:
            state = torch.load(path, map_location='cpu')
        """
    out = patched(src, "torch-load-weights-only")
    assert "torch.load(path, map_location='cpu', weights_only=False)" in out
    comment, code_line = out.splitlines()[1:3]
    assert comment.startswith("    # patch-legacy: weights_only=False") and "trust" in comment
    assert code_line.startswith("    state = ")


def test_torch_load_look_alikes_stay():
    unchanged("""\
        a = torch.load(path, weights_only=True)
        b = np.load(path)
        c = "torch.load(path)"
        """, "torch-load-weights-only")
    result = patch("s = torch.load(path, **options)\n", "torch-load-weights-only")
    assert not result.changed and result.manual


# --- legacy-autograd-function -------------------------------------------------------------------
LEGACY_FUNCTION = """\
    import torch
    from torch.autograd import Function


    class ClampGrad(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * 2

        def backward(self, grad_output):
            x, = self.saved_tensors
            return grad_output * (x > 0).float()


    class Mix(Function):
        @classmethod
        def forward(cls, ctx, a, b):
            return a + b

        @classmethod
        def backward(cls, ctx, grad):
            return grad, grad


    def run(x):
        return ClampGrad()(x) + Mix.apply(x, x)
    """


def test_legacy_autograd_function_becomes_static():
    out = patched(LEGACY_FUNCTION, "legacy-autograd-function")
    assert "    @staticmethod\n    def forward(ctx, x):\n        ctx.save_for_backward(x)" in out
    assert "    @staticmethod\n    def backward(ctx, grad_output):\n        x, = ctx.saved_tensors" in out
    assert "ClampGrad.apply(x)" in out
    assert out.count("@classmethod") == 2            # the classmethod style is left alone
    import torch

    scope: dict = {}
    exec(out, scope)
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    scope["run"](x).sum().backward()
    assert x.grad.tolist() == [2.0, 3.0]               # ClampGrad: 0 and 1; Mix: 2 and 2


def test_legacy_autograd_function_with_state_is_reported():
    src = """\
        class Scale(Function):
            def __init__(self, k):
                self.k = k

            def forward(self, x):
                return x * self.k
        """
    result = patch(src, "legacy-autograd-function")
    assert not result.changed and result.manual


def test_autograd_call_sites_in_other_files_are_rewritten(tmp_path):
    (tmp_path / "fns.py").write_text(d("""\
        from torch.autograd import Function

        class Flip(Function):
            def forward(self, x):
                return -x

            def backward(self, g):
                return -g
        """))
    (tmp_path / "model.py").write_text("from fns import Flip\n\ndef f(x):\n    return Flip()(x)\n")
    assert main(["patch-legacy", str(tmp_path), "--write"]) == 0
    assert "return Flip.apply(x)" in (tmp_path / "model.py").read_text()


# --- torchvision-renamed-transforms -------------------------------------------------------------
def test_renamed_transforms():
    src = """\
        import torchvision.transforms as T
        from torchvision import transforms
        from torchvision.transforms import Scale
        a = transforms.Scale(256)
        b = T.RandomSizedCrop(224, 2)
        c = Scale(32)
        e = torchvision.transforms.Scale(8)
        """
    assert patched(src, "torchvision-renamed-transforms") == d("""\
        import torchvision.transforms as T
        from torchvision import transforms
        from torchvision.transforms import Resize as Scale
        a = transforms.Resize(256)
        b = T.RandomResizedCrop(224, interpolation=2)
        c = Scale(32)
        e = torchvision.transforms.Resize(8)
        """)


def test_renamed_transforms_look_alikes_stay():
    unchanged("""\
        from mylib import layers
        s = layers.Scale(2)
        t = "transforms.Scale(256)"
        """, "torchvision-renamed-transforms")


# --- cuda-to-device -----------------------------------------------------------------------------
def test_cuda_to_device_only_with_cpu():
    src = """\
        import torch

        model = nn.DataParallel(model).cuda()
        y = target.cuda(non_blocking=True)
        n = torch.cuda.device_count()
        ok = torch.cuda.is_available()
        """
    unchanged(src)                                     # not a default rule
    assert patched(src, cpu=True) == d("""\
        import torch
        from legacy_patches.runtime import LEGACY_DEVICE, legacy_device_count

        model = nn.DataParallel(model).to(LEGACY_DEVICE)
        y = target.to(LEGACY_DEVICE, non_blocking=True)
        n = legacy_device_count()
        ok = torch.cuda.is_available()
        """)


def test_cuda_device_index_is_reported():
    result = patch("x = x.cuda(1)\n", "cuda-to-device")
    assert result.new_source.startswith("x = x.to(LEGACY_DEVICE)") or \
        "x = x.to(LEGACY_DEVICE)" in result.new_source
    assert result.manual


def test_runtime_device(monkeypatch):
    import importlib

    import legacy_patches.runtime as runtime

    monkeypatch.setenv("MT_REPRO_LEGACY_DEVICE", "cpu")
    runtime = importlib.reload(runtime)
    assert str(runtime.LEGACY_DEVICE) == "cpu"
    assert runtime.legacy_device_count() >= 1


# --- volatile-no-grad ---------------------------------------------------------------------------
def test_volatile_forward_goes_under_no_grad():
    src = """\
        import torch


        def train_step(model, ema_model, images, ema_images, labels):
            inputs = Variable(images)
            ema_inputs = torch.autograd.Variable(ema_images, volatile=True)
            n = len(labels)
            # teacher first
            ema_out = ema_model(ema_inputs)
            out = model(inputs)
            return out, ema_out


        def evaluate(model, images, labels):
            inputs = Variable(images, volatile=True)
            targets = Variable(labels.cuda(), volatile=True)
            logits, _ = model(inputs)
            return criterion(logits, targets)
        """
    out = patched(src, "volatile-no-grad")
    assert out == d("""\
        import torch


        def train_step(model, ema_model, images, ema_images, labels):
            inputs = Variable(images)
            ema_inputs = ema_images
            n = len(labels)
            # teacher first
            with torch.no_grad():
                ema_out = ema_model(ema_inputs)
            out = model(inputs)
            return out, ema_out


        def evaluate(model, images, labels):
            inputs = images
            targets = labels.cuda()
            with torch.no_grad():
                logits, _ = model(inputs)
            return criterion(logits, targets)
        """)


def test_volatile_without_torch_import_adds_it_and_runs():
    import torch

    out = patched("""\
        from torch.autograd import Variable

        def teacher(model, x):
            x_var = Variable(x, volatile=True)
            return model(x_var)
        """, "volatile-no-grad")
    assert out.splitlines()[0:2] == ["from torch.autograd import Variable", "import torch"]
    scope: dict = {}
    exec(out, scope)
    layer = torch.nn.Linear(3, 2)
    assert not scope["teacher"](layer, torch.randn(4, 3)).requires_grad


def test_volatile_look_alikes_and_manual_cases():
    unchanged("""\
        volatile = True
        msg = "Variable(x, volatile=True)"
        # Variable(x, volatile=True) was the old no-grad
        """, "volatile-no-grad")
    assert patched("v = Variable(x, volatile=False)\ny = model(v)\n", "volatile-no-grad") == \
        "v = x\ny = model(v)\n"
    result = patch("v = Variable(x, volatile=not training)\n", "volatile-no-grad")
    assert not result.changed and result.manual


# --- trainlog-flush-at-exit (opt-in) ------------------------------------------------------------
def test_trainlog_flush_is_opt_in():
    src = """\
        class Log:
            INCREMENTAL_UPDATE_TIME = 300

            def __init__(self, path):
                self.path = path

            def save(self):
                pass
        """
    unchanged(src)
    out = patched(src, "default", "trainlog-flush-at-exit")
    assert out.startswith("import atexit\n")
    assert "        self.path = path\n        atexit.register(self.save)\n" in out


# --- engine ---------------------------------------------------------------------------------------
def test_python2_is_reported_not_parsed():
    with pytest.raises(LegacySyntaxError):
        patch('print "hello"\n')


def test_formatting_and_comments_survive():
    src = "x = (loss.data[0]   # the loss\n     + 1)  # trailing\n\n\n# end\n"
    assert patched(src) == "x = (loss.item()   # the loss\n     + 1)  # trailing\n\n\n# end\n"


def test_rule_selection():
    assert [r.id for r in select_rules(["view-reshape", "async-keyword"])] == \
        ["async-keyword", "view-reshape"]
    assert "cuda-to-device" not in [r.id for r in select_rules(None)]
    assert "cuda-to-device" in [r.id for r in select_rules(None, cpu=True)]
    with pytest.raises(KeyError):
        select_rules(["no-such-rule"])
    for rule in select_rules(["default", "trainlog-flush-at-exit", "cuda-to-device"]):
        assert rule.id and rule.title and rule.broke_in and rule.symptom and rule.review


# --- CLI: check / diff / write ------------------------------------------------------------------
OLD_TRAIN = """\
import torch
from torch.autograd import Variable


def step(model, x, y, meter):
    y_var = Variable(y.cuda(async=True))
    loss = model(x, y_var)
    meter.update(loss.data[0])
"""


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text(OLD_TRAIN)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "ok.py").write_text("def f(x):\n    return x.item()\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.py").write_text("y = x.data[0]\n")
    return root


def test_check_diff_write_and_idempotence(tmp_path, capsys):
    root = _tree(tmp_path)
    assert main(["patch-legacy", str(root), "--check"]) == 1
    out, err = capsys.readouterr()
    assert "train.py: 2 edit(s) would be made" in out
    assert "async-keyword" in out and "data-index-item" in out
    assert "1 file(s) would change" in err and (root / "train.py").read_text() == OLD_TRAIN

    assert main(["patch-legacy", str(root), "--diff"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("--- a/train.py\n+++ b/train.py\n")
    assert "-    meter.update(loss.data[0])\n+    meter.update(loss.item())\n" in out
    assert (root / "train.py").read_text() == OLD_TRAIN

    assert main(["patch-legacy", str(root), "--write"]) == 0
    out, _ = capsys.readouterr()
    assert "patched 1 of 3 file(s) (2 edits)" in out
    new = (root / "train.py").read_text()
    assert "non_blocking=True" in new and "loss.item()" in new
    assert (root / "train.py.orig").read_text() == OLD_TRAIN
    assert (root / ".hidden" / "skip.py").read_text() == "y = x.data[0]\n"
    assert not list(root.rglob(f"*{TEMPORARY_SUFFIX}"))

    assert main(["patch-legacy", str(root), "--write"]) == 0       # second time: nothing
    assert "patched 0 of 3 file(s)" in capsys.readouterr().out
    assert (root / "train.py").read_text() == new
    assert main(["patch-legacy", str(root), "--check"]) == 0
    assert not list(root.rglob("*.orig.orig"))


def test_existing_backup_is_not_overwritten(tmp_path, capsys):
    root = _tree(tmp_path)
    (root / "train.py.orig").write_text("# my own backup\n")
    assert main(["patch-legacy", str(root / "train.py"), "--write"]) == 0
    assert "kept the existing backup" in capsys.readouterr().out
    assert (root / "train.py.orig").read_text() == "# my own backup\n"


def test_missing_path_and_unknown_rule(tmp_path, capsys):
    assert main(["patch-legacy", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["patch-legacy", str(tmp_path), "--rules", "bogus"]) == 2
    assert "unknown rule(s) bogus" in capsys.readouterr().err
    assert main(["patch-legacy"]) == 2


def test_list_rules(capsys):
    assert main(["patch-legacy", "--list-rules"]) == 0
    out = capsys.readouterr().out
    for rule_id in ("async-keyword", "volatile-no-grad", "cuda-to-device  [with --cpu]",
                    "trainlog-flush-at-exit  [opt-in]"):
        assert rule_id in out


def test_syntax_errors_are_reported_and_left_alone(tmp_path, capsys):
    root = _tree(tmp_path)
    py2 = 'print "epoch", epoch\nloss = x.data[0]\n'
    (root / "old2.py").write_text(py2)
    assert main(["patch-legacy", str(root), "--write"]) == 0
    out, _ = capsys.readouterr()
    assert "skipped old2.py: not Python 3 syntax at line 1" in out
    assert "1 file(s) skipped" in out
    assert (root / "old2.py").read_text() == py2 and not (root / "old2.py.orig").exists()
    assert "loss.item()" in (root / "train.py").read_text()
    # the same file given alone: nothing to do at all, so bad input
    assert main(["patch-legacy", str(root / "old2.py"), "--write"]) == 2
    assert "not Python 3 syntax" in capsys.readouterr().err


def test_read_only_file_is_not_touched(tmp_path, capsys):
    root = _tree(tmp_path)
    target = root / "train.py"
    target.chmod(stat.S_IRUSR | stat.S_IRGRP)
    try:
        assert main(["patch-legacy", str(root), "--write"]) == 2
        out, err = capsys.readouterr()
        assert "train.py: NOT patched: the file is read-only" in out
        assert err.startswith("mt-repro: error: 1 file(s) not patched: train.py: the file is read-only")
        assert target.read_text() == OLD_TRAIN and not (root / "train.py.orig").exists()
    finally:
        target.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_failed_write_leaves_old_file_whole(tmp_path, capsys, monkeypatch):
    root = _tree(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("train.py"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    assert main(["patch-legacy", str(root), "--write"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (root / "train.py").read_text() == OLD_TRAIN
    assert not [p for p in root.iterdir() if p.name.endswith(TEMPORARY_SUFFIX)]


def test_tensorflow_half_is_reported(tmp_path, capsys):
    root = tmp_path / "checkout"
    (root / "tensorflow" / "mean_teacher").mkdir(parents=True)
    (root / "tensorflow" / "mean_teacher" / "model.py").write_text(
        "import tensorflow as tf\nfrom tensorflow.contrib import slim\n")
    (root / "tensorflow" / "train.py").write_text("from mean_teacher.model import Model\n")
    (root / "pytorch").mkdir()
    (root / "pytorch" / "main.py").write_text(OLD_TRAIN)
    assert main(["patch-legacy", str(root), "--check"]) == 1
    out, _ = capsys.readouterr()
    assert "skipped tensorflow/ (2 files): TensorFlow 1 code (tf.contrib) cannot be patched" in out
    assert "mt-repro cifar10 --arch convnet13" in out
    assert "pytorch/main.py: 2 edit(s)" in out


# --- end to end: a miniature legacy project, patched and run ------------------------------------
MINI_UTIL = """\
import torch
from torch.autograd import Variable


class Meter(object):
    def __init__(self):
        self.reset()

    def reset(self):
        self.val = self.sum = self.count = 0
        self.avg = 0

    def update(self, value, n=1):
        self.val = value
        self.sum += value * n
        self.count += n
        self.avg = self.sum / self.count


def topk_accuracy(logits, labels, topk=(1,)):
    k_max = max(topk)
    n = max(labels.ne(-1).sum(), 1e-8)
    _, guess = logits.topk(k_max, 1, True, True)
    guess = guess.t()
    hits = guess.eq(labels.view(1, -1).expand_as(guess))
    out = []
    for k in topk:
        got = hits[:k].view(-1).float().sum(0, keepdim=True)
        out.append(got.mul_(100.0 / n))
    return out
"""

MINI_LOGS = """\
import time
from collections import defaultdict

from pandas import DataFrame


class StepLog:
    \"\"\"Keeps rows in memory; writes them at most every five minutes.\"\"\"
    INCREMENTAL_UPDATE_TIME = 300

    def __init__(self, path):
        self.path = path
        self.rows = defaultdict(dict)
        self.last_save = time.time() - self.INCREMENTAL_UPDATE_TIME

    def record(self, step, values):
        self.rows[step].update(values)
        if time.time() - self.last_save >= self.INCREMENTAL_UPDATE_TIME:
            self.last_save = time.time()
            self.save()

    def save(self):
        frame = DataFrame.from_dict(self.rows, orient='index')
        frame.to_msgpack(self.path, compress='zlib')
"""

MINI_MAIN = """\
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Variable, Function
import torchvision.transforms as transforms
from PIL import Image

from util import Meter, topk_accuracy
from logs import StepLog


class Halve(Function):
    def forward(self, x):
        return x * 1.0

    def backward(self, grad_output):
        return grad_output * 0.5


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = Halve()(h)
        return self.fc2(h)


def make_batches():
    shrink = transforms.Compose([transforms.Scale(2), transforms.ToTensor()])
    pixel = shrink(Image.new('RGB', (4, 4), (10, 20, 30)))
    torch.manual_seed(0)
    batches = []
    for _ in range(4):
        x = torch.randn(8, 12) + pixel.mean()
        y = torch.randint(0, 3, (8,))
        y[:2] = -1  # unlabeled
        batches.append((x, y))
    return batches


def update_teacher(student, teacher, alpha):
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.data.mul_(alpha).add_(1 - alpha, s.data)


def main(out_dir):
    student = nn.DataParallel(Net()).cuda()
    teacher = nn.DataParallel(Net()).cuda()
    for p in teacher.parameters():
        p.detach_()
    criterion = nn.CrossEntropyLoss(size_average=False, ignore_index=-1).cuda()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    log = StepLog(os.path.join(out_dir, 'train.msgpack'))
    top1 = Meter()
    step = 0
    for epoch in range(2):
        for x, y in make_batches():
            x_var = Variable(x)
            teacher_in = Variable(x, volatile=True)
            y_var = Variable(y.cuda(async=True))
            n_labeled = y_var.data.ne(-1).sum()
            teacher_out = teacher(teacher_in)
            out = student(x_var)
            loss = criterion(out, y_var) / n_labeled
            cons = F.mse_loss(F.softmax(out, dim=1), F.softmax(teacher_out, dim=1), size_average=False)
            total = loss + cons
            prec1, prec2 = topk_accuracy(out.data, y_var.data, topk=(1, 2))
            top1.update(prec1[0], n_labeled)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            step += 1
            update_teacher(student, teacher, 0.9)
            log.record(step, {'loss': total.data[0], 'top1': top1.val, 'n': n_labeled})
            print('step %d loss %.4f top1 %.1f' % (step, total.data[0], top1.avg))
    path = os.path.join(out_dir, 'last.ckpt')
    torch.save({'step': step, 'state_dict': student.state_dict(), 'meter': top1}, path)
    checkpoint = torch.load(path)
    print('reloaded step', checkpoint['step'])


if __name__ == '__main__':
    main(sys.argv[1])
"""


def _run(script_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MT_REPRO_LEGACY_DEVICE="cpu", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], cwd=script_dir, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_miniature_legacy_project_end_to_end(tmp_path, capsys):
    proj = tmp_path / "mini"
    proj.mkdir()
    (proj / "util.py").write_text(MINI_UTIL)
    (proj / "logs.py").write_text(MINI_LOGS)
    (proj / "main.py").write_text(MINI_MAIN)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    before = _run(proj, "main.py", str(out_dir))
    assert before.returncode != 0 and "SyntaxError" in before.stderr     # as users meet it

    args = ["patch-legacy", str(proj), "--cpu", "--rules", "default,cuda-to-device,trainlog-flush-at-exit"]
    assert main(args + ["--check"]) == 1
    report = capsys.readouterr().out
    for rule_id in ("async-keyword", "data-index-item", "meter-index-item", "count-sum-item",
                    "size-average-reduction", "scalar-first-overloads", "view-reshape",
                    "torchvision-renamed-transforms", "legacy-autograd-function", "pandas-msgpack",
                    "cuda-to-device", "trainlog-flush-at-exit", "torch-load-weights-only",
                    "volatile-no-grad"):
        assert rule_id in report, rule_id
    assert main(args + ["--write"]) == 0
    capsys.readouterr()
    assert main(args + ["--check"]) == 0                                   # idempotent

    after = _run(proj, "main.py", str(out_dir))
    assert after.returncode == 0, after.stderr[-3000:]
    assert "step 8 loss" in after.stdout and "reloaded step 8" in after.stdout
    assert "volatile" not in after.stderr and "deprecated" not in after.stderr, after.stderr
    assert (out_dir / "last.ckpt").is_file()
    log_file, csv_file = out_dir / "train.msgpack", out_dir / "train.csv"
    assert log_file.is_file() and csv_file.is_file()
    import pandas as pd

    table = pd.read_csv(csv_file, index_col=0)
    assert len(table) == 8 and set(table.columns) == {"loss", "top1", "n"}  # flushed at exit
    codec = pytest.importorskip("mt_repro.logs.pandas_msgpack")
    frame = codec.read_legacy_log(log_file)
    assert len(frame) == 8 and list(frame.index) == list(range(1, 9))
    assert frame["n"].tolist() == table["n"].tolist()


# --- end to end on the original code itself (opt-in: 40-60 s on an idle 2-core machine) -------
ORIGINAL = Path(os.environ.get("MT_REPRO_ORIGINAL_CODE", "/nonexistent"))


@pytest.mark.skipif(not (ORIGINAL / "main.py").is_file(),
                    reason="set MT_REPRO_ORIGINAL_CODE to a checkout's pytorch/ directory to run")
def test_real_original_end_to_end(tmp_path, capsys):
    import shutil

    from mt_repro.data.synthetic import write_image_tree, write_label_file

    code = tmp_path / "pytorch"
    shutil.copytree(ORIGINAL, code, ignore=shutil.ignore_patterns("data-local", "__pycache__"))
    assert main(["patch-legacy", str(code), "--write", "--cpu"]) == 0
    capsys.readouterr()
    work = tmp_path / "work"
    root = work / "data-local/images/cifar/cifar10/by-image"
    write_image_tree(root, 6, 2, 0)
    write_label_file(work / "labels.txt", root, 2)
    env_path = os.pathsep.join([str(code), str(REPO), os.environ.get("PYTHONPATH", "")])
    flags = ("--dataset cifar10 --arch cifar_shakeshake26 --train-subdir train+val --eval-subdir test "
             "--labels labels.txt --batch-size 8 --labeled-batch-size 2 --consistency 100 "
             "--logit-distance-cost 0.01 --epochs 2 --lr-rampdown-epochs 3 --workers 0 "
             "--print-freq 1").split()
    run = subprocess.run([sys.executable, str(code / "main.py"), *flags], cwd=work, capture_output=True,
                         text=True, timeout=900,
                         env=dict(os.environ, PYTHONPATH=env_path, MT_REPRO_LEGACY_DEVICE="cpu"))
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (work / "results" / "main").glob("*/0")
    assert (run_dir / "transient" / "checkpoint.2.ckpt").is_file()
    for name in ("training", "validation", "ema_validation"):
        assert (run_dir / f"{name}.msgpack").is_file() and (run_dir / f"{name}.csv").is_file()
    codec = pytest.importorskip("mt_repro.logs.pandas_msgpack")
    assert len(codec.read_legacy_log(run_dir / "training.msgpack")) >= 1


# --- many call sites, hostile trees ---------------------------------------------------------------
BLOCK_BEFORE = """\
def step_{i}(model, x, y, meter):
    target_var = Variable(y.cuda(async=True))
    out = model(x)
    meter.update(out.data[0], target_var.data.ne(-1).sum())
    flat = out.view(-1)
    return flat


"""
BLOCK_AFTER = """\
def step_{i}(model, x, y, meter):
    target_var = Variable(y.cuda(non_blocking=True))
    out = model(x)
    meter.update(out.item(), target_var.data.ne(-1).sum().item())
    flat = out.reshape(-1)
    return flat


"""
HEADER = "import torch\nfrom torch.autograd import Variable\n\n\n"


def test_many_call_sites_are_all_rewritten_with_their_own_lines(tmp_path, capsys):
    # every block's edits are found, written the same as in a file of one block, and reported
    # at their own lines (the line map of a long, repetitive file)
    n = 300
    (tmp_path / "big.py").write_text(HEADER + "".join(BLOCK_BEFORE.format(i=i) for i in range(n)))
    assert main(["patch-legacy", str(tmp_path / "big.py"), "--write"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "big.py").read_text() == HEADER + "".join(BLOCK_AFTER.format(i=i) for i in range(n))
    assert f"patched 1 of 1 file(s) ({4 * n} edits)" in out
    size = BLOCK_BEFORE.count("\n")
    lines = {rule: text for rule, _, text in (line.strip().partition("  ") for line in out.splitlines())}
    assert lines["data-index-item"].strip() == "line " + ", ".join(str(5 + 3 + size * i) for i in range(n))
    assert lines["view-reshape"].strip() == "line " + ", ".join(str(5 + 4 + size * i) for i in range(n))


def test_backup_path_that_is_a_directory_or_link_is_refused(tmp_path, capsys):
    root = _tree(tmp_path)
    (root / "train.py.orig").mkdir()
    (root / "train.py.orig" / "inside").write_text("mine\n")
    assert main(["patch-legacy", str(root), "--write"]) == 2
    out, err = capsys.readouterr()
    assert "train.py: NOT patched: train.py.orig exists and is a directory, not a backup file" in out
    assert len(err.strip().splitlines()) == 1 and "train.py.orig exists and is a directory" in err
    assert (root / "train.py").read_text() == OLD_TRAIN
    assert [p.name for p in (root / "train.py.orig").iterdir()] == ["inside"]

    (root / "train.py.orig" / "inside").unlink()
    (root / "train.py.orig").rmdir()
    elsewhere = tmp_path / "elsewhere.txt"
    (root / "train.py.orig").symlink_to(elsewhere)          # dangling: would be written through
    assert main(["patch-legacy", str(root), "--write"]) == 2
    assert "train.py.orig exists and is a symbolic link" in capsys.readouterr().err
    assert not elsewhere.exists() and (root / "train.py").read_text() == OLD_TRAIN


@pytest.fixture
def deadline():
    """Fail (not hang) if a test outlives 30 s: a FIFO read would block forever."""
    import signal

    def expire(signum, frame):
        raise TimeoutError("patch-legacy did not finish in 30 s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


def test_fifo_in_tree_is_refused_without_reading_it(tmp_path, capsys, deadline):
    root = _tree(tmp_path)
    os.mkfifo(root / "pkg" / "pipe.py")
    assert main(["patch-legacy", str(root), "--write"]) == 2
    _one_line(capsys, "pipe.py", "is a FIFO (named pipe), not a regular file: refused")
    assert (root / "train.py").read_text() == OLD_TRAIN                # nothing written
    assert main(["patch-legacy", str(root / "pkg" / "pipe.py")]) == 2
    _one_line(capsys, "pipe.py", "FIFO")


def test_link_to_dev_zero_is_refused(tmp_path, capsys, deadline):
    root = _tree(tmp_path)
    (root / "zero.py").symlink_to("/dev/zero")
    assert main(["patch-legacy", str(root), "--check"]) == 2
    _one_line(capsys, "zero.py", "is a character device, not a regular file: refused")
    assert main(["patch-legacy", str(root / "zero.py")]) == 2
    _one_line(capsys, "zero.py", "character device")


def test_links_to_files_are_reported_not_followed(tmp_path, capsys):
    root = _tree(tmp_path)
    outside = tmp_path / "outside.py"
    outside.write_text(OLD_TRAIN)
    (root / "out_link.py").symlink_to(outside)               # leaves the tree
    (root / "in_link.py").symlink_to(root / "train.py")      # its target is patched in place
    (root / "gone.py").symlink_to(tmp_path / "missing.py")
    assert main(["patch-legacy", str(root), "--write"]) == 0
    out = capsys.readouterr().out
    for name in ("out_link.py", "in_link.py", "gone.py"):
        assert f"skipped {name}: a symbolic link, not followed" in out
        assert (root / name).is_symlink()
    assert outside.read_text() == OLD_TRAIN and "loss.item()" in (root / "train.py").read_text()
    assert (root / "in_link.py").read_text() == (root / "train.py").read_text()
    assert main(["patch-legacy", str(root / "out_link.py"), "--write"]) == 2
    _one_line(capsys, "out_link.py: a symbolic link, not followed", "nothing done")
    assert outside.read_text() == OLD_TRAIN


def test_oversized_source_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    root = _tree(tmp_path)
    monkeypatch.setenv("MT_REPRO_LIMIT_SOURCE_BYTES", "100")
    assert main(["patch-legacy", str(root), "--check"]) == 2
    _one_line(capsys, "train.py", "more than the limit of 100 bytes", "MT_REPRO_LIMIT_SOURCE_BYTES")


@pytest.mark.parametrize("source", [
    "x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n",          # crashed the native parser
    "x = " + " + ".join(["1"] * 5_000) + "\n",                  # cubic time, then RecursionError
    "y = x" + ".a" * 3_000 + "\n",
    "x = " + "not " * 10_000 + "y\n",
    'print "deep", ' + "[" * 1_000 + "]" * 1_000 + "\n",       # not Python 3 either
], ids=["parentheses", "operator-chain", "attributes", "not-chain", "python2-brackets"])
def test_deep_nesting_is_one_line(tmp_path, capsys, source, deadline):
    path = tmp_path / "deep.py"
    path.write_text(source)
    assert main(["patch-legacy", str(path)]) == 2
    _one_line(capsys, "deep.py", "nested")
    root = _tree(tmp_path / "t")
    (root / "deep.py").write_text(source)
    assert main(["patch-legacy", str(root), "--write"]) == 0      # skipped, the others patched
    assert "skipped deep.py: " in capsys.readouterr().out
    assert (root / "deep.py").read_text() == source


def test_nesting_limit_can_be_raised(tmp_path, capsys, monkeypatch):
    path = tmp_path / "chain.py"
    path.write_text("x = " + " + ".join(["loss.data[0]"] * 60) + "\n")
    monkeypatch.setenv("MT_REPRO_LIMIT_SOURCE_NESTING", "40")
    assert main(["patch-legacy", str(path)]) == 2
    _one_line(capsys, "nested more than 40 levels deep", "MT_REPRO_LIMIT_SOURCE_NESTING")
    monkeypatch.delenv("MT_REPRO_LIMIT_SOURCE_NESTING")
    assert main(["patch-legacy", str(path)]) == 1
    assert "60 edit(s) would be made" in capsys.readouterr().out
