"""``size_average=`` / ``reduce=`` → ``reduction=``."""
from __future__ import annotations

import re

import libcst as cst

from .._base import (Rule, RuleTransformer, bool_value, code, drop_args, keyword, kwarg,
                     last_name)

LOSS_NAME = re.compile(r"(?i)(loss|kl_div|cross_entropy|nll|embedding)")


def reduction_for(size_average, reduce) -> str:
    """The same mapping as PyTorch's own legacy conversion, for literal True/False/None."""
    if size_average is None:
        size_average = True
    if reduce is None:
        reduce = True
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


class Reduction(Rule):
    id = "size-average-reduction"
    title = "size_average=/reduce= → reduction="
    broke_in = "PyTorch 0.4.1 (deprecated; still warns, and the two flags are slated for removal)"
    symptom = ("UserWarning: size_average and reduce args will be deprecated, please use "
               "reduction='sum' instead.")
    triggers = ("size_average", "reduce")
    region_keys = r"\b(?:size_average|reduce)\b"
    review = ("Only literal True/False/None values are converted (reduce=False → 'none', else "
              "size_average=False → 'sum', else 'mean'). A call with a variable there, or one "
              "that already has reduction=, is reported. `reduce=` is only looked at on calls "
              "whose name looks like a loss (so `scatter_(..., reduce='add')` is left alone).")

    def transformer(self, ctx):
        return _Transformer(ctx)


class _Transformer(RuleTransformer):
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        sa = keyword(updated_node, "size_average")
        rd = keyword(updated_node, "reduce")
        if sa is None and rd is None:
            return updated_node
        if sa is None and not (LOSS_NAME.search(last_name(original_node.func) or "")
                               and bool_value(rd.value) in (True, False)):
            return updated_node
        line = self.line(original_node)
        values = [bool_value(a.value) if a is not None else None for a in (sa, rd)]
        if "other" in values or keyword(updated_node, "reduction") is not None:
            self.ctx.manual(line, f"{code(original_node)}: replace size_average/reduce by "
                                  "reduction='mean'|'sum'|'none' by hand")
            return updated_node
        reduction = reduction_for(*values)
        present = [a for a in updated_node.args if a is sa or a is rd]
        first = present[0]
        args = [kwarg("reduction", cst.SimpleString(f"'{reduction}'"), comma=a.comma)
                if a is first else a for a in updated_node.args]
        args = drop_args(args, present[1:])
        old = ", ".join(code(a.with_changes(comma=cst.MaybeSentinel.DEFAULT)) for a in present)
        self.ctx.edit(line, f"{old} -> reduction='{reduction}'")
        return updated_node.with_changes(args=args)
