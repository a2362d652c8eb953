"""``t.view(-1)`` → ``t.reshape(-1)``."""
from __future__ import annotations

import libcst as cst

from .._base import ProtectTargets, Rule, RuleTransformer, code, int_value, method_name


class ViewReshape(Rule):
    id = "view-reshape"
    title = "x.view(-1) → x.reshape(-1)"
    broke_in = ("PyTorch 1.x (element-wise results keep the memory layout of non-contiguous "
                "inputs, so `pred.t().eq(...)` is no longer contiguous)")
    symptom = ("RuntimeError: view size is not compatible with input tensor's size and stride (at "
               "least one dimension spans across two contiguous subspaces). Use .reshape(...) "
               "instead.")
    triggers = (".view",)
    # `view(` then a minus before anything else (spaces, brackets, comments and line breaks
    # aside, as in `(x.view)( (-1) )`): -1 is the only argument rewritten
    region_keys = r"\bview(?:[\s)]|\\|#[^\n]*)*\((?:[\s(]|\\|#[^\n]*)*-"
    review = ("Only the flattening `.view(-1)` is rewritten. reshape returns the same view "
              "whenever view would have worked, and copies only where view fails, so working "
              "code keeps working. Left alone on purpose: `.view(-1)` whose result is written "
              "to (`x.view(-1)[i] = v`, `x.view(-1).fill_(0)`: a copy would drop the write), and "
              "every other shape (`.view(n, -1)`, `.view(-1, 3)`): those usually follow a "
              "contiguous op; if one fails, the error message itself names the fix.")

    def transformer(self, ctx):
        return _Transformer(ctx)


class _Transformer(ProtectTargets, RuleTransformer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self._init_protect()

    def visit_Subscript(self, node):
        if self.in_target:
            self.protect(node.value)

    def visit_Attribute(self, node: cst.Attribute):
        attr = node.attr.value
        if attr.endswith("_") and not attr.startswith("_"):  # in-place method on the result
            self.protect(node.value)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        if method_name(original_node) != "view" or len(original_node.args) != 1 \
                or self.is_protected(original_node):
            return updated_node
        arg = original_node.args[0]
        if arg.keyword is not None or arg.star or int_value(arg.value) != -1:
            return updated_node
        self.ctx.edit(self.line(original_node), f"{code(original_node)} -> .reshape(-1)")
        return updated_node.with_changes(func=updated_node.func.with_changes(attr=cst.Name("reshape")))
