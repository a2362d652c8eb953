"""torchvision transforms renamed in torchvision 0.2 and removed in 0.12."""
from __future__ import annotations

import ast

import libcst as cst

from .._base import Rule, RuleTransformer, code, dotted, keyword, kwarg, positional, with_comma

RENAMED = {"Scale": "Resize", "RandomSizedCrop": "RandomResizedCrop"}
MODULE = "torchvision.transforms"


class RenamedTransforms(Rule):
    id = "torchvision-renamed-transforms"
    title = "transforms.Scale → Resize, transforms.RandomSizedCrop → RandomResizedCrop"
    broke_in = "torchvision 0.12 (removed; deprecated since 0.2)"
    symptom = "AttributeError: module 'torchvision.transforms' has no attribute 'Scale'"
    triggers = tuple(RENAMED)
    region_keys = r"\b(?:Scale|RandomSizedCrop)\b"
    review = ("RandomSizedCrop(size, interpolation) took interpolation second; RandomResizedCrop's "
              "second parameter is `scale`, so a second positional argument is turned into "
              "interpolation=. Interpolation given as a PIL constant (Image.BILINEAR) should "
              "become transforms.InterpolationMode.BILINEAR: reported, not changed.")

    def transformer(self, ctx):
        return _Transformer(ctx)

    def prepare_region(self, transformer, where):
        # the names the imports before this statement bound (visit_Import / visit_ImportFrom)
        for node in where.imports_before():
            if isinstance(node, ast.Import):
                bound = [a.asname for a in node.names if a.name == MODULE and a.asname is not None]
            else:  # relative dots are ignored, as dotted() ignores them
                bound = [a.asname or "transforms" for a in node.names
                         if node.module == "torchvision" and a.name == "transforms"]
            if bound:
                where.exact(node)
                transformer.modules.update(bound)


class _Transformer(RuleTransformer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.modules = {MODULE}   # dotted names bound to torchvision.transforms

    def visit_Import(self, node: cst.Import):
        for alias in node.names:
            if dotted(alias.name) == MODULE and alias.asname is not None:
                self.modules.add(alias.asname.name.value)

    def visit_ImportFrom(self, node: cst.ImportFrom):
        if dotted(node.module) == "torchvision" and not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                if dotted(alias.name) == "transforms":
                    self.modules.add(alias.asname.name.value if alias.asname else "transforms")

    def leave_ImportFrom(self, original_node, updated_node):
        if dotted(original_node.module) != MODULE or isinstance(original_node.names, cst.ImportStar):
            return updated_node
        names = []
        for alias in updated_node.names:
            old = dotted(alias.name)
            if old in RENAMED:
                asname = alias.asname or cst.AsName(name=cst.Name(old))
                alias = alias.with_changes(name=cst.Name(RENAMED[old]), asname=asname)
                self.ctx.edit(self.line(original_node), f"import {old} -> {RENAMED[old]} as "
                                                        f"{asname.name.value}")
            names.append(alias)
        return updated_node.with_changes(names=names)

    def leave_Attribute(self, original_node: cst.Attribute, updated_node: cst.Attribute):
        old = original_node.attr.value
        if old in RENAMED and dotted(original_node.value) in self.modules:
            self.ctx.edit(self.line(original_node), f"{code(original_node)} -> {RENAMED[old]}")
            return updated_node.with_changes(attr=cst.Name(RENAMED[old]))
        return updated_node

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        func = original_node.func
        if not (isinstance(func, cst.Attribute) and func.attr.value in RENAMED
                and dotted(func.value) in self.modules):
            return updated_node
        interp = keyword(updated_node, "interpolation")
        pos = positional(updated_node)
        if func.attr.value == "RandomSizedCrop" and len(pos) >= 2:
            args = list(updated_node.args)
            at = args.index(pos[1])
            args[at] = kwarg("interpolation", pos[1].value, comma=pos[1].comma)
            if at > 0:
                args[at - 1] = with_comma(args[at - 1])
            interp = args[at]
            updated_node = updated_node.with_changes(args=args)
            self.ctx.edit(self.line(original_node), "second argument -> interpolation=")
        if interp is not None and "Image" in code(interp.value):
            self.ctx.manual(self.line(original_node), f"{code(interp.value)}: pass a "
                            "transforms.InterpolationMode instead of a PIL constant")
        return updated_node
