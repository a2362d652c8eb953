"""Legacy ``autograd.Function`` (instance methods ``forward(self, ...)``, called as
``Fn()(x)``) → new style (``@staticmethod forward(ctx, ...)``, called as ``Fn.apply(x)``)."""
from __future__ import annotations

import re

import libcst as cst

from .._base import Rule, RuleTransformer, code, dotted

FUNCTION_BASES = {"Function", "autograd.Function", "torch.autograd.Function"}
METHODS = ("forward", "backward")
PROJECT_KEY = "legacy-autograd-functions"


def _legacy_methods(cls: cst.ClassDef) -> list[cst.FunctionDef]:
    """forward/backward defined as plain instance methods (first parameter ``self``)."""
    out = []
    for stmt in cls.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value in METHODS and not stmt.decorators:
            params = stmt.params.params
            if params and params[0].name.value == "self":
                out.append(stmt)
    return out


def _is_function_class(cls: cst.ClassDef) -> bool:
    return any(dotted(base.value) in FUNCTION_BASES for base in cls.bases)


def _has_init(cls: cst.ClassDef) -> bool:
    return any(isinstance(s, cst.FunctionDef) and s.name.value == "__init__" for s in cls.body.body)


class LegacyAutogradFunction(Rule):
    id = "legacy-autograd-function"
    title = "legacy autograd.Function → @staticmethod forward/backward(ctx, ...) and Fn.apply(...)"
    broke_in = "PyTorch 1.5 (an error; a warning in 1.2-1.4)"
    symptom = ("RuntimeError: Legacy autograd function with non-static forward method is "
               "deprecated. Please use new-style autograd function with static forward method.")
    review = ("A Function with an __init__ (state passed to the constructor, `Fn(alpha)(x)`) "
              "is reported, not rewritten: move that state into forward's arguments by hand. "
              "Call sites `Fn()(x)` are rewritten in every file patched in the same run; an "
              "instance kept in a variable (`f = Fn(); f(x)`) is reported. classmethod-style "
              "Functions (`@classmethod def forward(cls, ctx, ...)`, like the original's Shake) "
              "already work and are left alone.")

    collect_keys = r"\bFunction\b"

    def region_pattern(self, project: dict) -> str:
        names = sorted(project.get(PROJECT_KEY, ()))
        return r"\b(?:" + "|".join(["Function", *map(re.escape, names)]) + r")\b"

    def applies(self, text: str, project: dict) -> bool:
        return "Function" in text or any(n in text for n in project.get(PROJECT_KEY, ()))

    def collect(self, module: cst.Module, project: dict) -> None:
        names = project.setdefault(PROJECT_KEY, set())

        class Find(cst.CSTVisitor):
            def visit_ClassDef(self, node: cst.ClassDef):
                if _is_function_class(node) and _legacy_methods(node) and not _has_init(node):
                    names.add(node.name.value)

        module.visit(Find())

    def transformer(self, ctx):
        ctx.project.setdefault(PROJECT_KEY, set())
        return _Transformer(ctx)


class _SelfToCtx(cst.CSTTransformer):
    def leave_Name(self, original_node, updated_node):
        return updated_node.with_changes(value="ctx") if updated_node.value == "self" else updated_node

    def leave_Attribute(self, original_node, updated_node):
        if updated_node.attr.value == "saved_variables" and dotted(updated_node.value) == "ctx":
            return updated_node.with_changes(attr=cst.Name("saved_tensors"))
        return updated_node


class _Transformer(RuleTransformer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.names: set[str] = ctx.project[PROJECT_KEY]
        self.called: set[int] = set()
        self._keep: list = []

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef):
        if not _is_function_class(original_node):
            return updated_node
        legacy = {m.name.value for m in _legacy_methods(original_node)}
        if not legacy:
            return updated_node
        if _has_init(original_node):
            self.ctx.manual(self.line(original_node),
                            f"class {original_node.name.value}: legacy autograd.Function with "
                            "__init__ state; convert to static forward(ctx, ...) by hand")
            return updated_node
        body = []
        for stmt in updated_node.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value in legacy and not stmt.decorators:
                params = stmt.params.params
                stmt = stmt.with_changes(
                    decorators=[cst.Decorator(decorator=cst.Name("staticmethod"))],
                    params=stmt.params.with_changes(
                        params=[params[0].with_changes(name=cst.Name("ctx")), *params[1:]]),
                    body=stmt.body.visit(_SelfToCtx()))
            body.append(stmt)
        self.ctx.edit(self.line(original_node),
                      f"class {original_node.name.value}: {', '.join(sorted(legacy))} -> "
                      "@staticmethod with ctx")
        return updated_node.with_changes(body=updated_node.body.with_changes(body=body))

    def _is_ctor(self, node) -> bool:
        return isinstance(node, cst.Call) and not node.args \
            and (dotted(node.func) or "").split(".")[-1] in self.names

    def visit_Call(self, node: cst.Call):
        if self._is_ctor(node.func):
            self.called.add(id(node.func))
            self._keep.append(node.func)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        if self._is_ctor(original_node.func):
            self.ctx.edit(self.line(original_node),
                          f"{code(original_node.func)}(...) -> {code(original_node.func.func)}.apply(...)")
            return updated_node.with_changes(
                func=cst.Attribute(value=updated_node.func.func, attr=cst.Name("apply")))
        if self._is_ctor(original_node) and id(original_node) not in self.called:
            self.ctx.manual(self.line(original_node),
                            f"{code(original_node)}: instances of a new-style Function cannot be "
                            f"called; use {code(original_node.func)}.apply(...)")
        return updated_node
