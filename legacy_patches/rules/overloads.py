"""The scalar-first overloads: ``x.add_(1 - a, y)`` → ``x.add_(y, alpha=1 - a)``,
``x.addcmul_(v, t1, t2)`` → ``x.addcmul_(t1, t2, value=v)``."""
from __future__ import annotations

import libcst as cst

from .._base import (Rule, RuleTransformer, code, dotted, kwarg, looks_scalar, method_name,
                     positional, with_comma)

ALPHA = {"add", "add_", "sub", "sub_"}          # (alpha, other) -> (other, alpha=alpha)
VALUE = {"addcmul", "addcmul_", "addcdiv", "addcdiv_"}  # (value, t1, t2) -> (t1, t2, value=value)
TORCH_FUNCS = {"torch.add", "torch.sub", "torch.addcmul", "torch.addcdiv"}


class ScalarFirst(Rule):
    id = "scalar-first-overloads"
    title = "x.add_(s, y) → x.add_(y, alpha=s); addcmul_/addcdiv_(v, a, b) → (a, b, value=v)"
    broke_in = "PyTorch 1.5 (deprecated overloads; alpha/value are keyword-only)"
    symptom = ("UserWarning: This overload of add_ is deprecated: add_(Number alpha, Tensor other)"
               "  (a TypeError on builds without the old overloads)")
    triggers = (".add", ".sub")
    region_keys = r"\b(?:add|sub|addcmul|addcdiv)_?\b"
    review = ("In-place methods (`add_`, `sub_`, `addcmul_`, `addcdiv_`) and the torch.* "
              "functions are rewritten whenever they get the old number of positional arguments. "
              "The out-of-place methods `.add(a, b)` / `.sub(a, b)` are only rewritten when the "
              "first argument is visibly a number (`1 - alpha`, `-lr`, `0.5`), because other "
              "libraries have `.add(key, value)` methods. `addmm`/`addmv`/`addr`/`baddbmm` with "
              "positional beta/alpha are not handled.")

    def transformer(self, ctx):
        return _Transformer(ctx)


def _moved(args: list[cst.Arg], scalar: cst.Arg, name: str) -> list[cst.Arg]:
    """Drop ``scalar`` from its place and append it as ``name=``; a trailing comma stays last."""
    trailing = args[-1].comma
    kept = [with_comma(a) for a in args if a is not scalar]
    return kept + [kwarg(name, scalar.value, comma=trailing)]


class _Transformer(RuleTransformer):
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        if any(a.keyword is not None or a.star for a in updated_node.args):
            return updated_node
        pos = positional(updated_node)
        full = dotted(original_node.func)
        name = method_name(original_node)
        if full in TORCH_FUNCS:
            short = full.split(".")[1]
            want = 3 if short in ("add", "sub") else 4
            if len(pos) != want:
                return updated_node
            scalar, kw = pos[1], ("alpha" if short in ("add", "sub") else "value")
        elif name in ALPHA and len(pos) == 2:
            if not name.endswith("_") and not looks_scalar(pos[0].value):
                return updated_node
            scalar, kw = pos[0], "alpha"
        elif name in VALUE and len(pos) == 3:
            scalar, kw = pos[0], "value"
        else:
            return updated_node
        args = _moved(list(updated_node.args), scalar, kw)
        new = updated_node.with_changes(args=args)
        self.ctx.edit(self.line(original_node), f"{code(original_node)} -> {code(new)}")
        return new
