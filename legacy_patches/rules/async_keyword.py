"""``t.cuda(async=True)`` → ``t.cuda(non_blocking=True)``."""
from __future__ import annotations

import libcst as cst

from .._base import ASYNC_PLACEHOLDER, Rule, RuleTransformer, method_name

# calls whose `async` argument PyTorch 0.4 renamed to `non_blocking`
KNOWN = {"cuda", "to", "copy_", "cpu", "type", "pin_memory"}


class AsyncKeyword(Rule):
    id = "async-keyword"
    title = "async=True → non_blocking=True"
    broke_in = "Python 3.7 (async is a reserved word); PyTorch 0.4 renamed the argument"
    symptom = "SyntaxError: invalid syntax  (pointing at `async=True`)"
    triggers = (ASYNC_PLACEHOLDER,)
    region_keys = rf"\b{ASYNC_PLACEHOLDER}\b"
    review = ("`async` used as a parameter or variable name (not as a call's keyword argument) is "
              "reported and left alone: rename it by hand.")

    def transformer(self, ctx):
        return _Transformer(ctx)


class _Transformer(RuleTransformer):
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        args = list(updated_node.args)
        touched = False
        for i, arg in enumerate(args):
            if arg.keyword is not None and arg.keyword.value == ASYNC_PLACEHOLDER:
                args[i] = arg.with_changes(keyword=cst.Name("non_blocking"))
                touched = True
        if not touched:
            return updated_node
        name = method_name(original_node) or ""
        line = self.line(original_node)
        self.ctx.edit(line, f"{name or 'call'}(async=...) -> non_blocking=")
        if name not in KNOWN:
            self.ctx.manual(line, f"`{name or 'this call'}` is not a PyTorch call known to take "
                                  "non_blocking=: check its signature")
        return updated_node.with_changes(args=args)

    def visit_Param(self, node: cst.Param):
        if node.name.value == ASYNC_PLACEHOLDER:
            self.ctx.manual(self.line(node), "`async` is a parameter name here (a reserved word "
                                             "since Python 3.7): rename it by hand")
