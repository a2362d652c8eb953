"""Python numbers that became 0-dim tensors in PyTorch 0.4.

* ``loss.data[0]`` → ``loss.item()``                      (rule ``data-index-item``)
* ``prec1[0]`` inside a meter ``update(...)`` → ``prec1[0].item()`` (rule ``meter-index-item``)
* ``t.ne(x).sum()`` used as a count → ``t.ne(x).sum().item()``    (rule ``count-sum-item``)
"""
from __future__ import annotations

import ast
import re

import libcst as cst

from .._base import (ProtectTargets, Rule, RuleTransformer, code, int_value, item_call,
                     method_name, positional)


def _single_index(node: cst.Subscript) -> cst.BaseExpression | None:
    if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
        return None
    return node.slice[0].slice.value


class _ProtectingTransformer(ProtectTargets, RuleTransformer):
    """Leaves alone: assignment/del targets, ``x[0][1]`` (the inner ``x[0]``), and anything
    already followed by ``.something``."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self._init_protect()

    def visit_Subscript(self, node: cst.Subscript):
        if self.in_target:
            self.protect(node)
        self.protect(node.value if isinstance(node.value, cst.Subscript) else None)

    def visit_Attribute(self, node: cst.Attribute):
        self.protect(node.value)


# --- .data[0] -----------------------------------------------------------------------------------
class DataIndexItem(Rule):
    id = "data-index-item"
    title = "x.data[0] → x.item()"
    broke_in = "PyTorch 0.4 (losses are 0-dim tensors; indexing one is an error since 0.5)"
    symptom = ("IndexError: invalid index of a 0-dim tensor. Use `tensor.item()` in Python or "
               "`tensor.item<T>()` in C++ to convert a 0-dim tensor to a number")
    triggers = (".data[",)
    # `data` then `[`, with closing brackets, line breaks or comments between: `(x.data)[0]`
    region_keys = r"\bdata(?:\s|\)|\\|#[^\n]*)*\["
    review = ("Applied to every `.data[0]` that is read (not assigned to, not indexed further). "
              "If one of them really meant 'the first row of a tensor', `.item()` fails loudly "
              "('a Tensor with N elements cannot be converted to Scalar'): write `x[0]` there.")

    def transformer(self, ctx):
        return _DataIndex(ctx)


class _DataIndex(_ProtectingTransformer):
    def leave_Subscript(self, original_node: cst.Subscript, updated_node: cst.Subscript):
        if self.is_protected(original_node):
            return updated_node
        index = _single_index(original_node)
        value = updated_node.value
        if index is None or int_value(index) != 0 or not isinstance(value, cst.Attribute) \
                or value.attr.value != "data" or not isinstance(index, cst.Integer):
            return updated_node
        self.ctx.edit(self.line(original_node), f"{code(original_node)} -> .item()")
        return item_call(value.value).with_changes(lpar=updated_node.lpar, rpar=updated_node.rpar)


# --- prec1[0] in meter updates -----------------------------------------------------------------
ACCURACY_CALL = re.compile(r"(?i)(accuracy|precision)")


def _accuracy_names(body: cst.CSTNode) -> set[str]:
    """Names bound in this scope (nested functions and classes excluded) from a call to a
    function whose name contains 'accuracy' or 'precision': ``prec1, prec5 = accuracy(...)``."""
    names: set[str] = set()

    class Collect(cst.CSTVisitor):
        def __init__(self, root):
            self.root = root

        def visit_FunctionDef(self, node):
            return node is self.root

        def visit_ClassDef(self, node):
            return False

        def visit_Assign(self, node: cst.Assign):
            call = node.value
            if not isinstance(call, cst.Call):
                return
            func = call.func
            callee = func.attr.value if isinstance(func, cst.Attribute) else \
                func.value if isinstance(func, cst.Name) else ""
            if not ACCURACY_CALL.search(callee):
                return
            for target in node.targets:
                t = target.target
                elements = t.elements if isinstance(t, (cst.Tuple, cst.List)) else [t]
                for el in elements:
                    el = el.value if isinstance(el, cst.Element) else el
                    if isinstance(el, cst.Name):
                        names.add(el.value)

    body.visit(Collect(body))
    return names


def _accuracy_names_ast(statements, where) -> set[str]:
    """What _accuracy_names finds, read from Python's syntax tree of the statements of one
    scope (``where.scope_statements()``: nested functions and classes already left out)."""
    names: set[str] = set()
    for stmt in statements:
        if not isinstance(stmt, ast.Assign) or not isinstance(stmt.value, ast.Call):
            continue
        func = stmt.value.func
        callee = func.attr if isinstance(func, ast.Attribute) else \
            func.id if isinstance(func, ast.Name) else ""
        if not ACCURACY_CALL.search(callee):
            continue
        where.exact(stmt)
        for target in stmt.targets:
            elements = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
            names.update(el.id for el in elements if isinstance(el, ast.Name))
    return names


class MeterIndexItem(Rule):
    id = "meter-index-item"
    title = "prec1[0] passed to a meter update → prec1[0].item()"
    broke_in = "PyTorch 0.4 (indexing a 1-element tensor gives a 0-dim tensor, not a float)"
    symptom = ("no error where it happens: tensors end up in the meters, and later "
               "`TypeError: can not serialize 'Tensor' object` when the log is saved, or "
               "tensors printed as `tensor(12.5000)`")
    triggers = ("update",)
    region_keys = r"\bupdate\b"

    def applies(self, text: str, project: dict) -> bool:
        return "update" in text and bool(ACCURACY_CALL.search(text))
    review = ("Heuristic, on purpose narrow: only `NAME[0]` where NAME was assigned in the same "
              "function from a call to a function named like `accuracy`/`precision` (as in "
              "`prec1, prec5 = accuracy(output, target, topk=(1, 5))`), and only inside the "
              "arguments of a `.update(...)` call. Other `x[0]` on tensors are not touched: look "
              "for meters fed with tensors by hand.")

    def transformer(self, ctx):
        return _MeterIndex(ctx)

    def prepare_region(self, transformer, where):
        # the names visit_Module / visit_FunctionDef would have pushed for the enclosing scope
        statements = where.scope_statements(ACCURACY_CALL)
        names = _accuracy_names_ast(statements, where)
        transformer.scopes.append(names)
        if where.simple and not any(re.search(rf"\b{re.escape(n)}\b", where.text) for n in names):
            return False    # no name to index in this statement: nothing to do


class _MeterIndex(_ProtectingTransformer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.scopes: list[set[str]] = []
        self.in_update = 0

    def visit_Module(self, node):
        self.scopes.append(_accuracy_names(node))

    def visit_FunctionDef(self, node):
        self.scopes.append(_accuracy_names(node))

    def leave_FunctionDef(self, original_node, updated_node):
        self.scopes.pop()
        return updated_node

    def visit_Call(self, node: cst.Call):
        if method_name(node) == "update":
            self.in_update += 1

    def leave_Call(self, original_node, updated_node):
        if method_name(original_node) == "update":
            self.in_update -= 1
        return updated_node

    def leave_Subscript(self, original_node: cst.Subscript, updated_node: cst.Subscript):
        if not self.in_update or self.is_protected(original_node):
            return updated_node
        index = _single_index(original_node)
        value = original_node.value
        if index is None or not isinstance(index, cst.Integer) or int_value(index) != 0 \
                or not isinstance(value, cst.Name) or value.value not in self.scopes[-1]:
            return updated_node
        self.ctx.edit(self.line(original_node), f"{code(original_node)} -> {code(original_node)}.item()")
        return item_call(updated_node)


# --- t.ne(x).sum() ---------------------------------------------------------------------------
COMPARISONS = {"ne", "eq", "gt", "ge", "lt", "le"}


class CountSumItem(Rule):
    id = "count-sum-item"
    title = "x.ne(y).sum() used as a number → x.ne(y).sum().item()"
    broke_in = "PyTorch 0.4 (Tensor.sum() returns a 0-dim tensor, no longer a Python number)"
    symptom = ("no error where it happens: the count stays a tensor, flows into meters, "
               "divisions (in float32 instead of Python's float64) and logs, and fails later with "
               "`TypeError: can not serialize 'Tensor' object`")
    triggers = (".sum()",)
    region_keys = r"\bsum(?:[\s)]|\\|#[^\n]*)*\((?:\s|\\|#[^\n]*)*\)"   # sum(), nothing inside
    review = ("Only `.sum()` with no arguments, called on the result of a comparison method "
              "(`ne`, `eq`, `gt`, `ge`, `lt`, `le`) and not followed by anything (`.float()`, "
              "`.item()`, `[...]`). `(a == b).sum()` is not touched.")

    def transformer(self, ctx):
        return _CountSum(ctx)


class _CountSum(_ProtectingTransformer):
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        if method_name(original_node) != "sum" or original_node.args or self.is_protected(original_node):
            return updated_node
        receiver = original_node.func.value
        if not (isinstance(receiver, cst.Call) and method_name(receiver) in COMPARISONS
                and positional(receiver)):
            return updated_node
        self.ctx.edit(self.line(original_node), f"{code(original_node)} -> .sum().item()")
        return item_call(updated_node)
