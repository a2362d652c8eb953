"""``torch.load(path)`` → ``torch.load(path, weights_only=False)`` with a warning comment."""
from __future__ import annotations

import libcst as cst

from .._base import Rule, RuleTransformer, append_arg, code, dotted, keyword, kwarg

COMMENT = ("# patch-legacy: weights_only=False unpickles arbitrary Python objects; "
           "only load checkpoints you trust")


class TorchLoadWeightsOnly(Rule):
    id = "torch-load-weights-only"
    title = "torch.load(f) → torch.load(f, weights_only=False), with a warning comment"
    broke_in = "PyTorch 2.6 (torch.load defaults to weights_only=True)"
    symptom = ("_pickle.UnpicklingError: Weights only load failed. ... WeightsUnpickler error: "
               "Unsupported global: ...")
    triggers = ("torch.load",)
    # torch.load, spaces, brackets, comments and line breaks aside: `(torch) . load`
    region_keys = r"\btorch(?:[\s)]|\\|#[^\n]*)*\.(?:\s|\\|#[^\n]*)*load\b"
    review = ("weights_only=False runs the pickle: use it only on files you made or trust. If a "
              "checkpoint holds only tensors and plain containers, deleting the argument is "
              "safer. Calls with **kwargs are reported, not changed.")

    def transformer(self, ctx):
        return _Transformer(ctx)

    def prepare_region(self, transformer, where):
        # an existing weights_only comment stops the new one; where the lines before the
        # statement might belong to the block before it, only the whole file tells
        if not where.leading_known and "weights_only" in where.text_before:
            where.refuse("comment lines before a torch.load may belong to the block above")


class _Transformer(RuleTransformer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.pending = 0
        self.stmt_depth = 0

    def visit_SimpleStatementLine(self, node):
        self.stmt_depth += 1

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        if dotted(original_node.func) != "torch.load" or keyword(updated_node, "weights_only"):
            return updated_node
        if any(a.star == "**" for a in updated_node.args):
            self.ctx.manual(self.line(original_node), f"{code(original_node)}: pass "
                            "weights_only=False for full checkpoints (trusted files only)")
            return updated_node
        new = updated_node.with_changes(
            args=append_arg(updated_node.args, kwarg("weights_only", cst.Name("False"))))
        self.ctx.edit(self.line(original_node), f"{code(original_node)} -> weights_only=False")
        if self.stmt_depth:
            self.pending += 1
        return new

    def leave_SimpleStatementLine(self, original_node, updated_node):
        self.stmt_depth -= 1
        if not self.pending:
            return updated_node
        self.pending = 0
        if any(line.comment and "weights_only" in line.comment.value
               for line in updated_node.leading_lines):
            return updated_node
        comment = cst.EmptyLine(indent=True, comment=cst.Comment(COMMENT))
        return updated_node.with_changes(leading_lines=[*updated_node.leading_lines, comment])
