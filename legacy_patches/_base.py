"""What every rule shares: the rule description, the per-file context a rule reports into, and
small helpers for reading and building libcst nodes.

A rule never sees text: it gets a parsed module and returns a transformed one, so it cannot fire
inside a string or a comment, and everything it does not touch (comments, blank lines, quotes,
line breaks inside calls) is written back byte for byte.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Sequence

import libcst as cst
from libcst.metadata import PositionProvider

# `async` is a reserved word since Python 3.7, so no parser for current Python accepts
# `t.cuda(async=True)`. The engine renames such keyword arguments to this identifier with the
# standard tokenizer before parsing (see _engine.protect_async_keywords); the `async-keyword`
# rule turns it into `non_blocking`, and anything left over is turned back into `async`.
ASYNC_PLACEHOLDER = "__mt_repro_legacy_async__"


@dataclass(frozen=True)
class Change:
    """One edit (``manual=False``) or one place to look at by hand (``manual=True``)."""

    rule: str
    line: int
    message: str
    manual: bool = False


@dataclass
class RuleContext:
    """Collects what a rule did in one file, and the imports its edits need."""

    rule: str
    project: dict = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    imports: list[tuple] = field(default_factory=list)

    def edit(self, line: int, message: str) -> None:
        self.changes.append(Change(self.rule, line, message))

    def manual(self, line: int, message: str) -> None:
        self.changes.append(Change(self.rule, line, message, manual=True))

    def need_import(self, module: str, name: str | None = None, asname: str | None = None) -> None:
        """``import module`` (name None) or ``from module import name [as asname]``."""
        key = (module, name, asname)
        if key not in self.imports:
            self.imports.append(key)


class Rule:
    """A rewrite rule. Subclasses set the class attributes and implement :meth:`transformer`.

    ``broke_in`` names the release that broke the legacy code; ``symptom`` is the message users
    see (and search for); ``review`` says what a person should still check after the rewrite.
    ``default`` rules run unless ``--rules`` says otherwise; ``cpu_only`` rules run by default
    only with ``--cpu``.
    """

    id: ClassVar[str]
    title: ClassVar[str]
    broke_in: ClassVar[str]
    symptom: ClassVar[str]
    review: ClassVar[str] = ""
    default: ClassVar[bool] = True
    cpu_only: ClassVar[bool] = False
    # The rule is skipped for a file whose text contains none of these (saves a tree walk).
    triggers: ClassVar[tuple[str, ...]] = ()

    # --- statement by statement (legacy_patches._regions) ------------------------------------
    # A regular expression that matches, in the text of every statement this rule can change
    # or report on, a name the rule looks for: statements without a match are left as text and
    # never parsed by libcst. None: the rule must see the whole file (files it runs on then
    # take the whole-file path).
    region_keys: ClassVar[str | None] = None
    # What the transformer must see around a match: "statement" (the smallest statement that
    # holds it) or "class" (the innermost class around it).
    region_unit: ClassVar[str] = "statement"
    # The same as region_keys, for collect() (None: collect needs the whole file).
    collect_keys: ClassVar[str | None] = None

    def region_pattern(self, project: dict) -> str | None:
        return self.region_keys

    def prepare_region(self, transformer: "RuleTransformer", where) -> bool | None:
        """Tell a transformer that is about to see one statement what the rest of the file
        would have told it had it walked the whole file (``where`` is a
        ``legacy_patches._regions.Where``). Rules whose transformers keep no such state need
        nothing here. False: the transformer would find nothing to do in this statement."""

    def applies(self, text: str, project: dict) -> bool:
        return not self.triggers or any(t in text for t in self.triggers)

    def collect(self, module: cst.Module, project: dict) -> None:
        """Optional first pass over every file of a project (e.g. names defined in one file and
        used in another). Runs before any file is rewritten."""

    def transformer(self, ctx: RuleContext) -> cst.CSTTransformer:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.id}>"


# Whitespace and punctuation: no rule has a hook for them or reads them as nodes of their own.
INERT = frozenset(getattr(cst, name) for name in (
    "SimpleWhitespace", "ParenthesizedWhitespace", "TrailingWhitespace", "EmptyLine", "Newline",
    "Comment", "Comma", "Dot", "Colon", "Semicolon", "AssignEqual", "ImportStar", "LeftParen",
    "RightParen", "LeftSquareBracket", "RightSquareBracket", "LeftCurlyBrace", "RightCurlyBrace",
    "Add", "AddAssign", "And", "BitAnd", "BitAndAssign", "BitInvert", "BitOr", "BitOrAssign",
    "BitXor", "BitXorAssign", "Divide", "DivideAssign", "Equal", "FloorDivide",
    "FloorDivideAssign", "GreaterThan", "GreaterThanEqual", "In", "Is", "IsNot", "LeftShift",
    "LeftShiftAssign", "LessThan", "LessThanEqual", "MatrixMultiply", "MatrixMultiplyAssign",
    "Minus", "Modulo", "ModuloAssign", "Multiply", "MultiplyAssign", "Not", "NotEqual", "NotIn",
    "Or", "Plus", "Power", "PowerAssign", "RightShift", "RightShiftAssign", "Subtract",
    "SubtractAssign"))


class RuleTransformer(cst.CSTTransformer):
    """Base transformer with line numbers and the context at hand."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    # Set by the statement-by-statement engine, which knows the lines without PositionProvider.
    line_of = None

    def __init__(self, ctx: RuleContext):
        super().__init__()
        self.ctx = ctx

    def line(self, node: cst.CSTNode) -> int:
        if self.line_of is not None:
            return self.line_of(node)
        try:
            return self.get_metadata(PositionProvider, node).start.line
        except KeyError:  # a node built by this transformer
            return 0


# --- reading nodes -----------------------------------------------------------------------------
def dotted(node: cst.BaseExpression | None) -> str | None:
    """``a.b.c`` for a chain of names and attributes, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted(node.value)
        return None if head is None else f"{head}.{node.attr.value}"
    return None


def method_name(call: cst.Call) -> str | None:
    """``m`` for ``<anything>.m(...)``."""
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def last_name(func: cst.BaseExpression) -> str | None:
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


def positional(call: cst.Call) -> list[cst.Arg]:
    return [a for a in call.args if a.keyword is None and not a.star]


def keyword(call: cst.Call, name: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg
    return None


def has_star(call: cst.Call) -> bool:
    return any(a.star for a in call.args)


def int_value(node: cst.BaseExpression) -> int | None:
    """The value of an integer literal, including a negated one (``-1``), else None."""
    if isinstance(node, cst.Integer):
        try:
            return int(node.value, 0)
        except ValueError:
            return None
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        inner = int_value(node.expression)
        return None if inner is None else -inner
    return None


def bool_value(node: cst.BaseExpression) -> bool | None | str:
    """True/False/None for those literals, the string "other" for anything else."""
    if isinstance(node, cst.Name) and node.value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[node.value]
    return "other"


def looks_scalar(node: cst.BaseExpression) -> bool:
    """A number literal, or arithmetic with a number literal in it (``1 - alpha``, ``-lr``)."""
    if isinstance(node, (cst.Integer, cst.Float)):
        return True
    if isinstance(node, cst.UnaryOperation):
        return looks_scalar(node.expression)
    if isinstance(node, cst.BinaryOperation):
        return looks_scalar(node.left) or looks_scalar(node.right)
    return False


def code(node: cst.CSTNode) -> str:
    """Source text of a node, on one line, for messages."""
    text = _EMPTY_MODULE.code_for_node(node)
    text = re.sub(r"\s*\n\s*", " ", text).strip()
    return text if len(text) <= 70 else text[:67] + "..."


_EMPTY_MODULE = cst.Module(body=[])


# --- building nodes ----------------------------------------------------------------------------
NO_SPACE = cst.SimpleWhitespace("")
ONE_SPACE = cst.SimpleWhitespace(" ")


def kwarg(name: str, value: cst.BaseExpression, comma=cst.MaybeSentinel.DEFAULT) -> cst.Arg:
    return cst.Arg(value=value, keyword=cst.Name(name),
                   equal=cst.AssignEqual(whitespace_before=NO_SPACE, whitespace_after=NO_SPACE),
                   comma=comma)


def with_comma(arg: cst.Arg) -> cst.Arg:
    if isinstance(arg.comma, cst.MaybeSentinel):
        return arg.with_changes(comma=cst.Comma(whitespace_after=ONE_SPACE))
    return arg


def append_arg(args: Sequence[cst.Arg], new: cst.Arg) -> list[cst.Arg]:
    """``args`` plus ``new`` at the end, commas fixed, a trailing comma kept trailing."""
    args = list(args)
    if not args:
        return [new]
    last = args[-1]
    if isinstance(last.comma, cst.Comma):  # f(a,) or a multi-line call: keep that style
        return args + [new.with_changes(comma=cst.MaybeSentinel.DEFAULT)]
    return args[:-1] + [with_comma(last), new]


def drop_args(args: Sequence[cst.Arg], drop: Iterable[cst.Arg]) -> list[cst.Arg]:
    """``args`` without ``drop``; the last survivor takes over the comma of the old last arg."""
    drop_ids = {id(a) for a in drop}
    kept = [a for a in args if id(a) not in drop_ids]
    if kept and args and id(args[-1]) in drop_ids:
        kept[-1] = kept[-1].with_changes(comma=args[-1].comma)
    return kept


def item_call(value: cst.BaseExpression) -> cst.Call:
    """``value.item()``."""
    return cst.Call(func=cst.Attribute(value=value, attr=cst.Name("item")))


class ProtectTargets:
    """Mixin: remembers the subscripts and calls that are written to or chained from, which
    rewrites such as ``[0]`` → ``.item()`` must leave alone."""

    def _init_protect(self) -> None:
        self.protected: set[int] = set()
        self.in_target = 0
        self._keep: list[cst.CSTNode] = []  # keep protected nodes alive so ids stay unique

    def protect(self, node: cst.CSTNode | None) -> None:
        if node is not None:
            self.protected.add(id(node))
            self._keep.append(node)

    def is_protected(self, node: cst.CSTNode) -> bool:
        return id(node) in self.protected

    # assignment targets are never rewritten
    def visit_AssignTarget(self, node) -> None:
        self.in_target += 1

    def leave_AssignTarget(self, original_node, updated_node):
        self.in_target -= 1
        return updated_node

    def visit_AugAssign(self, node) -> None:
        self.protect(node.target)

    def visit_AnnAssign(self, node) -> None:
        self.protect(node.target)

    def visit_Del(self, node) -> None:
        self.in_target += 1

    def leave_Del(self, original_node, updated_node):
        self.in_target -= 1
        return updated_node

    def visit_For(self, node) -> None:
        self.protect(node.target)
