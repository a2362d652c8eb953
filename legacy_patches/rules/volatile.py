"""``Variable(x, volatile=True)`` → ``x``, with the forward pass that consumes it moved into a
``with torch.no_grad():`` block."""
from __future__ import annotations

import ast

import libcst as cst

from .._base import (Rule, RuleTransformer, bool_value, code, dotted, drop_args, keyword,
                     positional)

VARIABLE = {"Variable", "autograd.Variable", "torch.autograd.Variable"}
# calls that take a tensor first but are not a forward pass: never wrapped
NOT_A_FORWARD = {"len", "print", "isinstance", "type", "id", "str", "repr", "int", "float",
                 "bool", "list", "tuple", "dict", "set", "sorted", "enumerate", "zip", "range",
                 "iter", "next", "hasattr", "getattr", "setattr", "max", "min", "sum", "abs"}
NO_GRAD = "torch.no_grad()"


class Volatile(Rule):
    id = "volatile-no-grad"
    title = "Variable(x, volatile=True) → x, its forward pass under torch.no_grad()"
    broke_in = "PyTorch 0.4 (volatile has no effect; autograd records the graph again)"
    symptom = ("UserWarning: volatile was removed and now has no effect. Use `with torch.no_grad():` "
               "instead.  (then: more memory, and gradients flowing where none did)")
    triggers = ("volatile",)
    region_keys = r"\bvolatile\b"
    # A hit rewrites the statements after it in its block: the engine gives each block that
    # holds a hit to rewrite_block (see the transformer), once the block's statements are done.
    region_blocks = True
    review = ("The rule wraps, in the same block, each later statement that passes the variable "
              "as the FIRST argument of a call (`out = model(input_var)`), until the name is "
              "reassigned. A variable used only in other ways (labels, `len(x)`, a second "
              "argument) is just unwrapped and reported: that is right for targets, but if it "
              "feeds a forward pass somewhere else (another block, another function), put that "
              "under `torch.no_grad()` by hand. `volatile=<expression>` is reported, not "
              "rewritten.")

    def transformer(self, ctx):
        return _Transformer(ctx)

    def prepare_region(self, transformer, where):
        # visit_With of the `with torch.no_grad():` blocks around the statement
        for node in where.enclosing():
            if isinstance(node, (ast.With, ast.AsyncWith)) and any(
                    isinstance(i.context_expr, ast.Call) and _dotted_ast(i.context_expr.func)
                    in NO_GRAD_CALLS for i in node.items):
                where.exact(node)
                transformer.no_grad_depth += 1


NO_GRAD_CALLS = ("torch.no_grad", "no_grad")


def _dotted_ast(node) -> str | None:
    """dotted() for Python's syntax tree."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted_ast(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _is_variable_call(node) -> bool:
    return isinstance(node, cst.Call) and dotted(node.func) in VARIABLE


def _small(stmt) -> cst.BaseSmallStatement | None:
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        return stmt.body[0]
    return None


def _assigned_names(small) -> set[str]:
    names: set[str] = set()
    targets = []
    if isinstance(small, cst.Assign):
        targets = [t.target for t in small.targets]
    elif isinstance(small, (cst.AugAssign, cst.AnnAssign)):
        targets = [small.target]
    while targets:
        t = targets.pop()
        if isinstance(t, cst.Name):
            names.add(t.value)
        elif isinstance(t, (cst.Tuple, cst.List)):
            targets += [e.value for e in t.elements]
        elif isinstance(t, cst.StarredElement):
            targets.append(t.value)
    return names


def _forward_of(small, name: str) -> bool:
    """Is this statement ``[targets =] f(name, ...)`` / ``return f(name, ...)`` with f not a
    builtin?"""
    if isinstance(small, (cst.Assign, cst.Expr, cst.Return, cst.AnnAssign)):
        value = small.value
    else:
        return False
    if not isinstance(value, cst.Call) or dotted(value.func) in NOT_A_FORWARD:
        return False
    first = positional(value)
    return bool(first) and value.args[0] is first[0] and isinstance(first[0].value, cst.Name) \
        and first[0].value.value == name


class _Transformer(RuleTransformer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.stmt_stack: list[cst.SimpleStatementLine] = []
        # original statement -> ("assign", name) | ("wrap", None) for volatile=True hits
        self.hits: dict[int, tuple] = {}
        self.updated_of: dict[int, tuple] = {}   # id(updated stmt) -> (original, hit)
        self._keep: list = []
        self.no_grad_depth = 0
        self.stmt_line: dict[int, int] = {}

    # statements ------------------------------------------------------------------------------
    def visit_SimpleStatementLine(self, node):
        self.stmt_stack.append(node)

    def leave_SimpleStatementLine(self, original_node, updated_node):
        self.stmt_stack.pop()
        self.stmt_line[id(updated_node)] = self.line(original_node)
        self._keep.append(updated_node)
        hit = self.hits.pop(id(original_node), None)
        if hit is not None:
            self.updated_of[id(updated_node)] = (original_node, hit)
            self._keep += [original_node, updated_node]
        return updated_node

    def visit_With(self, node: cst.With):
        if any(dotted(i.item.func) in NO_GRAD_CALLS for i in node.items
               if isinstance(i.item, cst.Call)):
            self.no_grad_depth += 1

    def leave_With(self, original_node, updated_node):
        if any(dotted(i.item.func) in NO_GRAD_CALLS for i in original_node.items
               if isinstance(i.item, cst.Call)):
            self.no_grad_depth -= 1
        return updated_node

    # the Variable(...) calls -----------------------------------------------------------------
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call):
        if not _is_variable_call(original_node):
            return updated_node
        vol = keyword(updated_node, "volatile")
        if vol is None:
            return updated_node
        line = self.line(original_node)
        flag = bool_value(vol.value)
        if flag == "other":
            self.ctx.manual(line, f"volatile={code(vol.value)}: not a literal; drop it and use "
                                  "torch.no_grad() where it was true, by hand")
            return updated_node
        args = drop_args(updated_node.args, [vol])
        rest = [a for a in args if a.keyword is not None or a.star]
        if len(args) == 1 and not rest:
            new = args[0].value.with_changes(
                lpar=list(updated_node.lpar) + list(args[0].value.lpar),
                rpar=list(args[0].value.rpar) + list(updated_node.rpar))
            self.ctx.edit(line, f"{code(original_node)} -> {code(args[0].value)}")
        else:
            new = updated_node.with_changes(args=args)
            self.ctx.edit(line, f"volatile= dropped from {code(original_node)}")
        if flag is True and not self.stmt_stack and not self.no_grad_depth:
            self.ctx.manual(line, "volatile=True dropped inside a compound statement's header: "
                                  "run that forward pass under torch.no_grad() by hand")
        elif flag is True and not self.no_grad_depth:
            stmt = self.stmt_stack[-1]
            small = _small(stmt)
            if isinstance(small, cst.Assign) and small.value is original_node \
                    and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
                self.hits[id(stmt)] = ("assign", small.targets[0].target.value, line)
            else:
                self.hits[id(stmt)] = ("wrap", None, line)
        return new

    # for the statement-by-statement engine -------------------------------------------------
    def block_entry(self, stmt) -> tuple | None:
        """The hit (kind, name, line) of a statement this transformer returned, if it is one
        that its block must act on."""
        entry = self.updated_of.get(id(stmt))
        return None if entry is None else entry[1]

    def rewrite_block(self, body: list, hits: dict, lines: dict) -> list:
        """What leave_IndentedBlock does to a block, for a block put together by the engine:
        ``hits`` maps id(statement) to its hit, ``lines`` id(statement) to its line."""
        self.updated_of.update((key, (None, hit)) for key, hit in hits.items())
        self.stmt_line.update(lines)
        self._keep += body
        return self._rewrite_body(body)

    # blocks: find the forward passes and wrap them ------------------------------------------
    def leave_IndentedBlock(self, original_node, updated_node):
        return updated_node.with_changes(body=self._rewrite_body(updated_node.body))

    def leave_Module(self, original_node, updated_node):
        return updated_node.with_changes(body=self._rewrite_body(updated_node.body))

    def _rewrite_body(self, body):
        body = list(body)
        wrap: set[int] = set()
        for i, stmt in enumerate(body):
            entry = self.updated_of.get(id(stmt))
            if entry is None:
                continue
            _, (kind, name, line) = entry
            if kind == "wrap":
                wrap.add(i)
                continue
            found = False
            for j in range(i + 1, len(body)):
                small = _small(body[j])
                if small is None:
                    if _mentions(body[j], name):
                        self.ctx.manual(self.stmt_line.get(id(body[j]), line),
                                        f"`{name}` (was volatile) is used inside a compound "
                                        "statement: if that is a forward pass, wrap it in "
                                        "torch.no_grad() by hand")
                    continue
                if _forward_of(small, name):
                    wrap.add(j)
                    found = True
                if name in _assigned_names(small):
                    break
            if not found:
                self.ctx.manual(line, f"`{name}` was volatile; no forward pass takes it as first "
                                      "argument in this block (fine for labels; otherwise wrap "
                                      "its use in torch.no_grad() by hand)")
        if not wrap:
            return body
        self.ctx.need_import("torch")
        out, i = [], 0
        while i < len(body):
            if i not in wrap:
                out.append(body[i])
                i += 1
                continue
            j = i
            while j + 1 < len(body) and j + 1 in wrap:
                j += 1
            group = [body[k] for k in range(i, j + 1)]
            lead = group[0].leading_lines
            group[0] = group[0].with_changes(leading_lines=[])
            block = cst.With(items=[cst.WithItem(item=cst.parse_expression(NO_GRAD))],
                             body=cst.IndentedBlock(body=group), leading_lines=lead)
            self.ctx.edit(self.stmt_line.get(id(body[i]), 0),
                          f"wrapped {len(group)} statement(s) in `with {NO_GRAD}:`: "
                          f"{code(_small(group[0]) or group[0])}")
            out.append(block)
            i = j + 1
        return out


def _mentions(node: cst.CSTNode, name: str) -> bool:
    found = []

    class Find(cst.CSTVisitor):
        def visit_Name(self, n):
            if n.value == name:
                found.append(n)

    node.visit(Find())
    return bool(found)
