"""``df.to_msgpack(path, ...)`` / ``pd.read_msgpack(path)`` → the runtime shim."""
from __future__ import annotations

import libcst as cst

from .._base import Rule, RuleTransformer, code, dotted, method_name, with_comma

RUNTIME = "legacy_patches.runtime"
READERS = {"pd.read_msgpack", "pandas.read_msgpack"}


class PandasMsgpack(Rule):
    id = "pandas-msgpack"
    title = "DataFrame.to_msgpack / pd.read_msgpack → legacy_patches.runtime"
    broke_in = "pandas 1.0 (msgpack support removed; deprecated in 0.25)"
    symptom = ("AttributeError: 'DataFrame' object has no attribute 'to_msgpack'  /  "
               "AttributeError: module 'pandas' has no attribute 'read_msgpack'")
    triggers = ("msgpack",)
    region_keys = r"\b(?:to_msgpack|read_msgpack)\b"
    review = ("The shim writes the same pandas <= 0.25 msgpack format (files stay readable by "
              "old tools and by mt-repro), plus a .csv beside each file for today's tools. "
              "Series.to_msgpack and to_msgpack() without a path are not supported by the shim "
              "and fail with a clear message.")

    def transformer(self, ctx):
        return _Transformer(ctx)


class _Transformer(RuleTransformer):
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        line = self.line(original_node)
        if method_name(original_node) == "to_msgpack" and dotted(original_node.func) not in READERS:
            receiver = updated_node.func.value
            args = [cst.Arg(value=receiver)]
            if updated_node.args:
                args = [with_comma(args[0])] + list(updated_node.args)
            self.ctx.need_import(RUNTIME, "legacy_to_msgpack")
            self.ctx.edit(line, f"{code(original_node)} -> legacy_to_msgpack(...)")
            return updated_node.with_changes(func=cst.Name("legacy_to_msgpack"), args=args)
        if dotted(original_node.func) in READERS:
            self.ctx.need_import(RUNTIME, "legacy_read_msgpack")
            self.ctx.edit(line, f"{code(original_node.func)} -> legacy_read_msgpack")
            return updated_node.with_changes(func=cst.Name("legacy_read_msgpack"))
        return updated_node

    def leave_ImportFrom(self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom):
        if dotted(original_node.module) != "pandas" or isinstance(original_node.names, cst.ImportStar) \
                or original_node.relative:
            return updated_node
        names = list(updated_node.names)
        hits = [a for a in names if dotted(a.name) == "read_msgpack"]
        if not hits:
            return updated_node
        for alias in hits:
            asname = alias.asname.name.value if alias.asname else "read_msgpack"
            self.ctx.need_import(RUNTIME, "legacy_read_msgpack", asname)
        self.ctx.edit(self.line(original_node), "from pandas import read_msgpack -> "
                                                "from legacy_patches.runtime import ...")
        kept = [a for a in names if a not in hits]
        if not kept:
            return cst.RemoveFromParent()
        kept[-1] = kept[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return updated_node.with_changes(names=kept)
