"""Patch a file statement by statement: the fast path behind patch_prepared.

The whole-file path (``_engine.patch_module``) parses the file with libcst, and every rule
walks the whole tree; on a long file that is most of the time, although most statements hold
nothing any rule looks for. Here Python's parser (fast) finds the statements; each rule's
``region_keys`` pattern says which of them it could touch; only those are parsed by libcst, each
in a synthetic block of its own indentation, and each rule walks only those, in the same order
and seeing the same text as it would in the whole file. What a rule would have learnt from the
rest of the file (the names an enclosing function binds, the imports above, an enclosing
``with torch.no_grad():``) it is told by ``Rule.prepare_region`` from Python's tree. Lines come
from where each statement lies, not from PositionProvider.

The result must be the whole-file path's, byte for byte: the text, the changes (lines and
order), the compile check. Wherever that is not certain (odd line breaks, a statement sharing a
line with a compound header that is itself not alone on its lines, a rule without
``region_keys``, a removal, ...), ``patch`` returns None and the caller takes the whole-file
path. tests/test_patch_legacy_regions.py checks the two against each other.
"""
from __future__ import annotations

import ast
import gc
import re
from bisect import bisect_right
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import libcst as cst
from libcst._nodes.internal import CodegenState
from libcst.metadata import MetadataWrapper, PositionProvider

from ._base import ASYNC_PLACEHOLDER, INERT, Rule, RuleContext

NEWLINE = re.compile(r"\r\n?|\n")
DEFAULT_INDENT = "    "   # libcst's own, for a file without an indented block


class Fallback(Exception):
    """This file, or this statement, needs the whole-file path to be sure of the result."""


# --- Python's statements, grouped as libcst groups them ------------------------------------------
@dataclass(eq=False)
class Unit:
    """One statement as libcst sees it: a compound statement, or the simple statements of one
    line (``a = 1; b = 2``)."""

    nodes: list
    first: int                  # first line (decorators included)
    last: int
    block: "Block"
    index: int
    compound: bool
    separable: bool = True      # starts and ends its own lines, so it parses on its own
    ends: bool = True
    blocks: list = field(default_factory=list)
    region: "Region | None" = None

    @property
    def node(self):
        return self.nodes[0]


@dataclass(eq=False)
class Block:
    owner: Unit | None          # None: the module
    units: list = field(default_factory=list)
    depth: int = 0
    _firsts: list | None = None

    def unit_at(self, line: int) -> Unit | None:
        if self._firsts is None:
            self._firsts = [u.first for u in self.units]
        i = bisect_right(self._firsts, line) - 1
        if i >= 0 and self.units[i].last >= line:
            return self.units[i]
        return None

    @property
    def last(self) -> int:
        return self.units[-1].last


COMPOUND = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor,
            ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match) + \
    ((ast.TryStar,) if hasattr(ast, "TryStar") else ())
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(eq=False)
class Region:
    """A statement (or, after volatile-no-grad wrapped some, a run of them) that libcst
    parses: its lines in the original text, its current text and tree."""

    units: list
    start: int                  # first line of its text: its leading comment lines, if known
    last: int
    indent: str
    leading_known: bool         # the lines before the statement are its leading_lines
    orig: str
    text: str
    eof_open: bool              # the file ends inside it, without a line break
    tree: cst.CSTNode | None = None
    changed: bool = False
    keys: set = field(default_factory=set)     # rule ids whose pattern matches its original text
    nlines: int = 0
    base: int = 0               # first line, in the text the current rule sees
    stage_text: str = ""
    stage_nlines: int = 0


class Doc:
    """The file: its lines, Python's statements, the regions parsed so far."""

    def __init__(self, text: str, tree: ast.Module):
        if text.count("\r") != text.count("\r\n") or "\x0c" in text:
            raise Fallback("line breaks libcst and Python count differently")
        self.text = text
        self.lines = text.split("\n")
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line) + 1)
        match = NEWLINE.search(text)
        self.newline = match.group() if match else "\n"
        self.imports: list[tuple[int, ast.stmt, Unit]] = []
        self.module = Block(None)
        self._first_indent: str | None = None
        self._fill(self.module, tree.body)
        if self._indent_unsure:
            raise Fallback("the first indented block may follow a backslash")
        self.indent = self._first_indent if self._first_indent is not None else DEFAULT_INDENT
        self.regions: list[Region] = []
        self.parsed: dict = {}          # (start, last) -> tree parsed from the original text
        self.stage = 0

    # lines -----------------------------------------------------------------------------------
    def line(self, n: int) -> str:
        return self.lines[n - 1]

    def span(self, first: int, last: int) -> str:
        """Lines first..last, with their line breaks."""
        end = self.starts[last] if last < len(self.lines) else len(self.text)
        return self.text[self.starts[first - 1]:min(end, len(self.text))]

    def line_of_offset(self, offset: int) -> int:
        return bisect_right(self.starts, offset)

    @staticmethod
    def is_comment_or_blank(line: str) -> bool:
        stripped = line.strip(" \t\r")
        return not stripped or stripped.startswith("#")

    # statements ------------------------------------------------------------------------------
    def _fill(self, block: Block, stmts: list) -> None:
        i = 0
        while i < len(stmts):
            stmt = stmts[i]
            if isinstance(stmt, COMPOUND):
                unit = Unit([stmt], _first_line(stmt), stmt.end_lineno, block, len(block.units),
                            True)
                i += 1
            else:
                group = [stmt]
                i += 1
                while i < len(stmts) and not isinstance(stmts[i], COMPOUND) \
                        and stmts[i].lineno == group[-1].end_lineno:
                    group.append(stmts[i])
                    i += 1
                unit = Unit(group, stmt.lineno, group[-1].end_lineno, block, len(block.units),
                            False)
                for node in group:
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        self.imports.append((node.lineno, node, unit))
            block.units.append(unit)
            unit.separable = self._starts_line(unit)
            unit.ends = self._ends_line(unit)
            if unit.compound:
                for body in self._bodies(stmt):
                    child = Block(unit, depth=block.depth + 1)
                    self._fill(child, body)
                    if child.units:
                        unit.blocks.append(child)
                        self._note_indent(child)
        for k, unit in enumerate(block.units):
            if not unit.ends:   # something after it on its last line (a backslash, ...)
                unit.separable = False
                if k + 1 < len(block.units):
                    block.units[k + 1].separable = False

    def _note_indent(self, block: Block) -> None:
        """libcst's default indent: the first INDENT token's, the indentation of the first
        statement in the file that starts an indented block (or of a match's first case)."""
        first = block.units[0]
        self._indent_at(first.first, self._starts_line(first))
        if isinstance(block.owner.node, ast.Match) and block is block.owner.blocks[0]:
            case = block.owner.node.cases[0].pattern.lineno
            self._indent_at(case, self.line(case).lstrip(" \t").startswith("case"))

    def _indent_at(self, n: int, starts: bool) -> None:
        line = self.line(n)
        indent = line[:len(line) - len(line.lstrip(" \t"))]
        above = self.line(n - 1).rstrip("\r") if n > 1 else ""
        # a backslash above may join it to its header (no INDENT), or close a comment: unsure
        joined = above.endswith("\\")
        if (starts or joined) and n < self._first_line_seen:
            self._first_indent, self._first_line_seen = indent, n
            self._indent_unsure = joined

    _first_line_seen = 1 << 60
    _indent_unsure = False

    def _bodies(self, stmt) -> Iterator[list]:
        if isinstance(stmt, ast.If):
            yield stmt.body
            orelse = stmt.orelse
            while len(orelse) == 1 and isinstance(orelse[0], ast.If) and \
                    self.line(orelse[0].lineno).lstrip().startswith("elif"):
                yield orelse[0].body           # an elif's block belongs to the same statement
                orelse = orelse[0].orelse
            if orelse:
                yield orelse
        elif isinstance(stmt, (ast.Try,) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())):
            yield stmt.body
            for handler in stmt.handlers:
                yield handler.body
            if stmt.orelse:
                yield stmt.orelse
            if stmt.finalbody:
                yield stmt.finalbody
        elif isinstance(stmt, ast.Match):
            for case in stmt.cases:
                yield case.body
        else:
            yield stmt.body
            if getattr(stmt, "orelse", None):
                yield stmt.orelse

    def _starts_line(self, unit: Unit) -> bool:
        if unit.first > 1 and self.line(unit.first - 1).rstrip("\r").endswith("\\"):
            return False    # a backslash may make it the rest of the line above
        line = self.line(unit.first)
        indent = len(line) - len(line.lstrip(" \t"))
        node = unit.node
        if getattr(node, "decorator_list", None):
            first = min(node.decorator_list, key=lambda d: (d.lineno, d.col_offset))
            return line[indent:indent + 1] == "@" and first.lineno == unit.first
        return node.col_offset == indent and node.lineno == unit.first

    def _ends_line(self, unit: Unit) -> bool:
        node = unit.nodes[-1]
        line = self.line(node.end_lineno)
        if line.isascii():
            rest = line[node.end_col_offset:]
        else:
            rest = line.encode("utf-8", "surrogatepass")[node.end_col_offset:].decode(
                "utf-8", "surrogatepass")
        rest = rest.strip(" \t\r")
        if rest.startswith(";"):
            rest = rest[1:].strip(" \t\r")
        return not rest or rest.startswith("#")

    def path(self, line: int) -> list[Unit]:
        """The statements that hold ``line``, outermost first."""
        out = []
        block = self.module
        while True:
            unit = block.unit_at(line)
            if unit is None:
                return out
            out.append(unit)
            for child in unit.blocks:
                if child.units[0].first <= line <= child.last:
                    block = child
                    break
            else:
                return out

    # which statements the rules need --------------------------------------------------------
    def needed(self, pattern: re.Pattern, unit_kind: str) -> list[Unit]:
        """The statements a rule with this pattern must see whole."""
        out, seen = [], set()
        for match in pattern.finditer(self.text):
            line = self.line_of_offset(match.start())
            if line in seen:
                continue
            seen.add(line)
            if self.line(line).lstrip(" \t").startswith("#"):
                continue    # a comment, or a string's inside: no node a rule reads
            path = self.path(line)
            if not path:
                continue    # between statements: a comment or a blank line
            if unit_kind == "class":
                classes = [i for i, u in enumerate(path) if isinstance(u.node, ast.ClassDef)]
                if not classes:
                    continue
                path = path[:classes[-1] + 1]
            separable = [u for u in path if u.separable]
            if not separable:
                raise Fallback(f"line {line} is not a statement of its own")
            out.append(separable[-1])
        return out

    def partition(self, needs: dict[str, list[Unit]]) -> None:
        """Regions: the outermost of the statements any rule needs."""
        wanted: dict[int, Unit] = {}
        for units in needs.values():
            for unit in units:
                wanted[id(unit)] = unit
        chosen = []
        for unit in wanted.values():
            outer = unit.block.owner
            covered = False
            while outer is not None:
                if id(outer) in wanted:
                    covered = True
                    break
                outer = outer.block.owner
            if not covered:
                chosen.append(unit)
        chosen.sort(key=lambda u: u.first)
        self.regions = [self.make_region(u) for u in chosen]
        for rule_id, units in needs.items():
            for unit in units:
                unit.region.keys.add(rule_id)

    def make_region(self, unit: Unit) -> Region:
        region = Region([unit], *_bounds(self, unit))
        region.nlines = region.orig.count("\n")
        self._attach(region)
        return region

    def _attach(self, region: Region) -> None:
        for unit in region.units:
            unit.region = region
            stack = list(unit.blocks)
            while stack:
                block = stack.pop()
                for inner in block.units:
                    inner.region = region
                    stack.extend(inner.blocks)

    def _text_start(self, unit: Unit) -> tuple[int, bool]:
        """Where the statement's text starts: with the comment lines before it when they are
        its leading_lines for libcst (after a simple statement, or first in a block); without
        them when they may belong to the block before it (after a compound statement) or to
        the module's header (the first statement of the file)."""
        block = unit.block
        if unit.index:
            before = block.units[unit.index - 1]
            if before.compound:
                return unit.first, False
            start = before.last + 1
        elif block.owner is None:
            return unit.first, True
        else:
            start = unit.first
            while start - 1 > block.owner.first and self.is_comment_or_blank(self.line(start - 1)):
                start -= 1
        for n in range(start, unit.first):
            if not self.is_comment_or_blank(self.line(n)):
                return unit.first, False
        return start, True

    def text_before(self, region: Region) -> str:
        """The lines between the statement before this region and the region."""
        unit = region.units[0]
        if not unit.index:
            return ""
        return self.span(unit.block.units[unit.index - 1].last + 1, region.start - 1) \
            if region.start > unit.block.units[unit.index - 1].last + 1 else ""

    # parsing and printing -----------------------------------------------------------------------
    def _ends_with_newline(self, own: str) -> bool:
        if not own.endswith("\n"):
            return "\n" not in own    # the file's last line, without a line break
        return own.endswith(self.newline) and (self.newline == "\r\n" or not own.endswith("\r\n"))

    def _synthetic(self, indent: str, compound: bool) -> str:
        # first line break, and (for a compound statement) first indented block, as the file's:
        # so libcst leaves implicit (None) what it leaves implicit in the file. A statement
        # comes second, so the comment lines above it are its leading_lines, not a header.
        nl = self.newline
        head = f"if 1:{nl}{self.indent}pass{nl}" if compound else f"pass{nl}"
        return head + (f"if 1:{nl}" if indent else "")

    def parse_text(self, text: str, indent: str, unit_count: int, compound: bool):
        own = text[len(indent):]
        if not compound and text.startswith(indent) and own[:1] not in ("", " ", "\t") \
                and own.find("\n") in (-1, len(own) - 1) and self._ends_with_newline(own):
            # one line, no comment lines before it: nothing in it depends on where it stands
            # but its line break, which is the file's
            try:
                stmt = cst.parse_statement(own)
            except Exception as exc:
                raise Fallback(f"libcst cannot parse a statement alone: {exc}") from None
            if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != unit_count \
                    or stmt.leading_lines:
                raise Fallback("the statement parsed differently alone")
            return stmt
        try:
            module = cst.parse_module(self._synthetic(indent, compound) + text)
        except Exception as exc:
            raise Fallback(f"libcst cannot parse a statement alone: {exc}") from None
        if len(module.body) != 2 or module.footer:
            raise Fallback("the statement did not parse as one statement")
        stmt = module.body[1]
        if indent:
            block = stmt.body
            if not isinstance(block, cst.IndentedBlock) or len(block.body) != 1 or block.footer:
                raise Fallback("the statement did not parse as one statement")
            stmt = block.body[0]
        if compound == isinstance(stmt, cst.SimpleStatementLine) or \
                (not compound and len(stmt.body) != unit_count):
            raise Fallback("the statement parsed differently alone")
        return stmt

    def tree_of(self, region: Region):
        if region.tree is None:
            key = (region.start, region.last)
            tree = self.parsed.get(key)
            if tree is None:
                unit = region.units[0]
                tree = self.parse_text(region.orig, region.indent, len(unit.nodes), unit.compound)
                self.parsed[key] = tree
            region.tree = tree
        return region.tree

    def code(self, node, indent: str, eof_open: bool) -> str:
        state = _State(default_indent=self.indent, default_newline=self.newline)
        if indent:
            state.increase_indent(indent)
        node._codegen(state)
        if eof_open:
            state.pop_trailing_newline()
        return "".join(state.tokens)

    # the text, stage by stage ---------------------------------------------------------------------
    def begin_stage(self) -> None:
        delta = 0
        self._deltas = []
        for region in self.regions:
            region.base = region.start + delta
            region.stage_text, region.stage_nlines = region.text, region.nlines
            delta += region.nlines - region.orig.count("\n")
            self._deltas.append((region.last, delta))
        self._delta_lasts = [last for last, _ in self._deltas]

    def stage_line(self, line: int) -> int:
        """Where an original line outside every region lies in the text this stage sees."""
        i = bisect_right(self._delta_lasts, line) - 1
        return line + (self._deltas[i][1] if i >= 0 else 0)

    def joined(self, inserts: dict[int, str] | None = None) -> str:
        """The current text; ``inserts`` puts text after an original line (outside regions)."""
        events = [(at + 1, 0, text) for at, text in (inserts or {}).items()]
        events += [(r.start, 1, r) for r in self.regions]
        events.sort(key=lambda e: (e[0], e[1]))
        parts, line = [], 1
        for at, kind, what in events:
            if at > line:
                parts.append(self.span(line, at - 1))
                line = at
            if kind == 0:
                parts.append(what)
            else:
                parts.append(what.text)
                line = what.last + 1
        if line <= len(self.lines):
            parts.append(self.span(line, len(self.lines)))
        return "".join(parts)

    def region_index(self, region: Region) -> int:
        lo = bisect_right(self.regions, region.start, key=_start) - 1
        if self.regions[lo] is not region:
            raise Fallback("region bookkeeping")
        return lo

    def add_region(self, region: Region) -> None:
        at = bisect_right(self.regions, region.start, key=_start)
        self.regions.insert(at, region)
        self._attach(region)

    def set_tree(self, region: Region, tree) -> None:
        region.tree = tree
        region.text = self.code(tree, region.indent, region.eof_open)
        region.nlines = region.text.count("\n")
        region.changed = True

    # lines of nodes ----------------------------------------------------------------------------
    def line_function(self, region: Region):
        tree = region.tree
        lead = len(tree.leading_lines)
        own = region.stage_nlines - lead
        if own <= (0 if region.eof_open else 1):
            line = region.base + lead
            return lambda node: line

        positions = {}

        def line_of(node):
            if not positions:
                wrapper = MetadataWrapper(cst.Module(body=[tree]), unsafe_skip_copy=True)
                positions.update(wrapper.resolve(PositionProvider))
            where = positions.get(node)
            return 0 if where is None else region.base - 1 + where.start.line

        return line_of

    def statement_line(self, region: Region) -> int:
        return region.base + len(region.tree.leading_lines)

    # Python's view of the current text ----------------------------------------------------------
    def current_ast(self, region: Region) -> list:
        """Python's statements for the region as the current rule sees it."""
        key = ("ast", id(region), region.stage_text)
        cached = self.parsed.get(key)
        if cached is None:
            text = region.stage_text
            source = f"if 1:{self.newline}{text}" if region.indent else text
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                raise Fallback("a rewritten statement does not parse") from None
            cached = tree.body[0].body if region.indent else tree.body
            self.parsed[key] = cached
        return cached


def _start(region: Region) -> int:
    return region.start


class _NoPosition:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_POSITION = _NoPosition()


class _State(CodegenState):
    """CodegenState without its per-node context manager (it records nothing anyway)."""

    def record_syntactic_position(self, node, *, start_node=None, end_node=None):
        return _NO_POSITION


def _first_line(stmt) -> int:
    decorators = getattr(stmt, "decorator_list", None)
    return min([stmt.lineno] + [d.lineno for d in decorators]) if decorators else stmt.lineno


def _walk_scope(stmts) -> Iterator[ast.stmt]:
    """Simple statements of a scope, through compound statements, not into functions or
    classes."""
    stack = list(reversed(stmts))
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(stmt, COMPOUND):
            inner = []
            for name in ("body", "orelse", "finalbody"):
                inner += getattr(stmt, name, None) or []
            for handler in getattr(stmt, "handlers", None) or []:
                inner += handler.body
            for case in getattr(stmt, "cases", None) or []:
                inner += case.body
            stack.extend(reversed(inner))
            continue
        yield stmt


class Where:
    """What a rule may ask about the file around the statement it is about to see."""

    def __init__(self, doc: Doc, region: Region):
        self.doc = doc
        self.region = region
        self.leading_known = region.leading_known
        # one line of simple statements (no function, class or block inside)
        self.simple = len(region.units) == 1 and not region.units[0].compound

    @property
    def text(self) -> str:
        """The statement's text as the rule sees it."""
        return self.region.stage_text

    @property
    def text_before(self) -> str:
        return self.doc.text_before(self.region)

    def refuse(self, why: str) -> None:
        raise Fallback(why)

    def enclosing(self) -> list:
        """Python's nodes of the compound statements around the statement, outermost first."""
        out = []
        owner = self.region.units[0].block.owner
        while owner is not None:
            out.append(owner.node)
            owner = owner.block.owner
        return out[::-1]

    def scope_statements(self, relevant: re.Pattern) -> list:
        """The simple statements of the enclosing function (or of the module), as the rule
        sees them, nested functions and classes left out; of the statements rules already
        rewrote, only those whose text ``relevant`` matches."""
        owner = self.region.units[0].block.owner
        while owner is not None and not isinstance(owner.node, SCOPES):
            owner = owner.block.owner
        key = ("scope", id(owner), self.doc.stage, relevant.pattern)
        cached = self.doc.parsed.get(key)
        if cached is None:
            blocks = owner.blocks if owner is not None else [self.doc.module]
            cached = list(self._scope(blocks, relevant))
            self.doc.parsed[key] = cached
        return cached

    def _scope(self, blocks, relevant: re.Pattern) -> Iterator[ast.stmt]:
        done = set()
        stack = [u for b in reversed(blocks) for u in reversed(b.units)]
        while stack:
            unit = stack.pop()
            region = unit.region
            if region is not None and region.changed and region.stage_text != region.orig:
                if id(region) not in done:
                    done.add(id(region))
                    if not relevant.search(region.stage_text):
                        continue
                    for stmt in _walk_scope(self.doc.current_ast(region)):
                        self.doc.parsed[("text", id(stmt))] = region.stage_text
                        yield stmt
                continue
            if unit.compound:
                if not isinstance(unit.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    stack.extend(u for b in reversed(unit.blocks) for u in reversed(b.units))
                continue
            yield from unit.nodes

    def imports_before(self) -> list:
        """Import statements before the statement, in file order, as the rule sees them."""
        out, done = [], set()
        for line, node, unit in self.doc.imports:
            if line >= self.region.start:
                break
            region = unit.region
            if region is not None and region.changed and region.stage_text != region.orig:
                if id(region) not in done:
                    done.add(id(region))
                    module = ast.Module(body=self.doc.current_ast(region), type_ignores=[])
                    for stmt in ast.walk(module):
                        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                            self.doc.parsed[("text", id(stmt))] = region.stage_text
                            out.append(stmt)
                continue
            out.append(node)
        return out

    def exact(self, node) -> None:
        """The rule relies on names in ``node``: Python's parser normalises non-ASCII names
        (NFKC), libcst keeps them as written, so only ASCII lines are certain."""
        text = self.doc.parsed.get(("text", id(node)))
        if text is None:
            text = self.doc.span(_first_line(node), node.end_lineno)
        if not text.isascii():
            raise Fallback("non-ASCII names in a statement a rule reads")


# --- the driver ----------------------------------------------------------------------------------
def _doc_for(prepared) -> Doc:
    doc = prepared.cache.get("doc")
    if doc is None:
        doc = Doc(prepared.text, prepared.tree)
        prepared.cache["doc"] = doc
    return doc


def collect(prepared, rules: Sequence[Rule], project: dict) -> None:
    """Rule.collect for one file, on the statements each rule's collect_keys name."""
    with gc_paused():
        _collect(prepared, rules, project)


def _collect(prepared, rules: Sequence[Rule], project: dict) -> None:
    try:
        doc = _doc_for(prepared)
        plans = []
        for rule in rules:
            if type(rule).collect is Rule.collect:
                continue
            if rule.collect_keys is None:
                raise Fallback("collect needs the whole file")
            units = doc.needed(re.compile(rule.collect_keys), "statement")
            plans.append((rule, units))
    except Fallback:
        plans = None
    if plans is None:
        _collect_whole(prepared, rules, project)
        return
    try:   # every statement parsed first: a rule must not collect twice
        modules = [(rule, cst.Module(body=[doc.tree_of(Region([unit], *_bounds(doc, unit)))
                                           for unit in _outermost(units)]))
                   for rule, units in plans]
    except Fallback:
        _collect_whole(prepared, rules, project)
        return
    for rule, module in modules:
        rule.collect(module, project)


def _collect_whole(prepared, rules, project) -> None:
    from ._engine import LegacySyntaxError

    try:
        module = prepared.whole_module()
    except LegacySyntaxError as exc:
        prepared.cache["error"] = exc   # the whole-file path would never have collected it
        return
    for rule in rules:
        rule.collect(module, project)


def _outermost(units: list[Unit]) -> list[Unit]:
    ids = {id(u) for u in units}
    out = []
    for unit in units:
        owner = unit.block.owner
        while owner is not None and id(owner) not in ids:
            owner = owner.block.owner
        if owner is None and unit not in out:
            out.append(unit)
    return sorted(out, key=lambda u: u.first)


def _bounds(doc: Doc, unit: Unit):
    start, known = doc._text_start(unit)
    line = doc.line(unit.first)
    indent = line[:len(line) - len(line.lstrip(" \t"))]
    orig = doc.span(start, unit.last)
    return (start, unit.last, indent, known, orig, orig,
            unit.last == len(doc.lines) and not orig.endswith("\n"))


def patch(prepared, rules: Sequence[Rule], project: dict):
    """patch_module's result for ``prepared``, or None where only the whole file can tell."""
    if "error" in prepared.cache:
        raise prepared.cache["error"]
    try:
        with gc_paused():
            return _patch(prepared, list(rules), project)
    except Fallback as exc:
        prepared.cache["fallback"] = str(exc)   # why, for whoever debugs a slow file
        return None
    finally:
        prepared.cache.pop("doc", None)    # its regions hold this run's trees


@contextmanager
def gc_paused():
    """No cyclic garbage collection inside: libcst and Python's parser make many small objects
    and no cycles, and the collector's passes over them took a fifth of the time on a 1 MB
    file while freeing nothing (reference counting frees the trees)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _patch(prepared, rules: list[Rule], project: dict):
    from ._engine import PatchResult

    doc = _doc_for(prepared)
    patterns, needs = {}, {}
    for rule in rules:
        pattern = rule.region_pattern(project)
        if pattern is None:
            raise Fallback(f"{rule.id} needs the whole file")
        patterns[rule.id] = re.compile(pattern)
        if rule.applies(doc.text, project):   # else only if an earlier rule's edits make it so
            needs[rule.id] = doc.needed(patterns[rule.id], rule.region_unit)
    doc.partition(needs)

    parsed_text = current = doc.text
    original_lines = parsed_text.splitlines()
    original_set = set(original_lines)
    changes, imports = [], []
    doc.stage = 0
    for rule in rules:
        doc.stage += 1
        if not rule.applies(current, project):
            continue
        if rule.id not in needs:
            raise Fallback(f"{rule.id} applies only after the edits of the rules before it")
        ctx = RuleContext(rule.id, project)
        doc.begin_stage()
        _run_stage(doc, rule, ctx, patterns[rule.id])
        if ctx.changes:
            line_of = line_map(parsed_text, current, original_lines, original_set)
            changes += [c if not c.line else replace(c, line=line_of(c.line)) for c in ctx.changes]
            current = doc.joined()
        imports += [i for i in ctx.imports if i not in imports]
    new_text = _with_imports(doc, imports) if imports else current
    return PatchResult.checked(prepared.source, new_text.replace(ASYNC_PLACEHOLDER, "async"), changes,
                               engine="statements")


def line_map(original: str, current: str, original_lines: list[str], original_set: set[str]):
    """_engine._line_map(original, current), without aligning the two texts where the answer
    is known: same number of lines, and no changed line's old text left in the new text nor
    its new text found in the old one. Then every line is only equal to lines at its own place
    or at others' that are equal there too, and the alignment (common ends, lines unique on
    both sides, difflib's longest matches with the earliest of equal candidates) pairs each
    line with itself."""
    from ._engine import _line_map

    if original != current:
        lines = current.splitlines()
        if len(lines) == len(original_lines):
            changed = [i for i, (old, new) in enumerate(zip(original_lines, lines)) if old != new]
            now = set(lines)
            if all(lines[i] not in original_set and original_lines[i] not in now for i in changed):
                return _same_line
        return _line_map(original, current, original_lines)
    return _same_line


def _same_line(line: int) -> int:
    return line


def _run_stage(doc: Doc, rule: Rule, ctx: RuleContext, pattern: re.Pattern) -> None:
    blocks = getattr(rule, "region_blocks", False)
    visit = [r for r in doc.regions
             if (rule.id in r.keys if not r.changed else pattern.search(r.text) is not None)]
    pending: dict[int, list] = {}
    for region in visit:
        if blocks:
            _flush(doc, rule, ctx, pending, before=region.start)
        transformer = rule.transformer(ctx)
        if rule.prepare_region(transformer, Where(doc, region)) is False:
            continue
        tree = doc.tree_of(region)
        transformer.line_of = doc.line_function(region)
        _streamline(transformer)
        count = len(ctx.changes)
        new = tree.visit(transformer)
        if not isinstance(new, cst.CSTNode) or \
                (isinstance(new, cst.SimpleStatementLine) and not new.body):
            raise Fallback("a statement was removed")   # its comments and its block go too
        if len(ctx.changes) == count:
            continue
        doc.set_tree(region, new)
        if blocks and len(region.units) == 1 and not region.units[0].compound:
            hit = transformer.block_entry(new)
            if hit is not None:
                block = region.units[0].block
                pending.setdefault(id(block), [block, {}])[1][id(new)] = hit
    if blocks:
        _flush(doc, rule, ctx, pending, before=None)


def _streamline(transformer) -> None:
    """The same walk with less bookkeeping: whitespace and punctuation are kept as they are
    instead of being rebuilt (same text, a third fewer nodes), hooks are looked up once per
    node type, and the per-attribute hooks (no rule has one) are not looked up at all."""
    cls = type(transformer)
    hooks = _HOOKS.get(cls)
    if hooks is None:
        # atoms (a name, a number, a string: nothing but brackets inside) the class has no
        # hook for are kept as they are too
        kept = INERT | {kind for kind in ATOMS if _own_hook(cls, f"visit_{kind.__name__}") is None
                        and _own_hook(cls, f"leave_{kind.__name__}") is None}
        hooks = _HOOKS[cls] = ({}, {}, kept)
    visits, leaves, kept = hooks

    def on_visit(node):
        kind = type(node)
        if kind in kept:
            return False
        hook = visits.get(kind, _UNSET)
        if hook is _UNSET:
            hook = visits[kind] = _own_hook(cls, f"visit_{kind.__name__}")
        return hook is None or hook(transformer, node) is not False

    def on_leave(original, updated):
        kind = type(original)
        if kind in kept:
            return updated
        hook = leaves.get(kind, _UNSET)
        if hook is _UNSET:
            hook = leaves[kind] = _own_hook(cls, f"leave_{kind.__name__}")
        return updated if hook is None else hook(transformer, original, updated)

    transformer.on_visit = on_visit
    transformer.on_leave = on_leave
    transformer.on_visit_attribute = _no_hook
    transformer.on_leave_attribute = _no_hook


def _own_hook(cls, name: str):
    """The class's hook, or None where it is libcst's do-nothing default."""
    hook = getattr(cls, name, None)
    return None if hook is None or hook is getattr(cst.CSTTransformer, name, None) else hook


def _no_hook(node, attribute):
    return None


_HOOKS: dict = {}
ATOMS = (cst.Name, cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.Ellipsis)
_UNSET = object()


# What a statement without the hit's names is to the block rewrite: nothing it could wrap, stop
# at or report (a `pass`, as cheap to look at as a statement gets)
STAND_IN = cst.SimpleStatementLine(body=[cst.Pass()])


def _flush(doc: Doc, rule: Rule, ctx: RuleContext, pending: dict, before: int | None) -> None:
    """Rewrite the blocks holding hits that end before line ``before`` (all, if None: the
    module's last), innermost and earliest first, as leave_IndentedBlock would."""
    ready = [(block, hits) for block, hits in pending.values()
             if before is None or (block.owner is not None and block.last < before)]
    ready.sort(key=lambda bh: (bh[0].owner is None, bh[0].last, -bh[0].depth))
    for block, hits in ready:
        del pending[id(block)]
        _rewrite_block(doc, rule, ctx, block, hits)


def _rewrite_block(doc: Doc, rule: Rule, ctx: RuleContext, block: Block, hits: dict) -> None:
    names = {hit[1] for hit in hits.values() if hit[0] == "assign"}
    body, lines = [], {}
    for unit in block.units:
        region = unit.region
        if region is not None and region.units[0] is not unit and unit in region.units:
            raise Fallback("a block rewritten twice")
        if region is not None and region.units == [unit]:
            node = doc.tree_of(region)
        elif region is None and not unit.compound and \
                any(n in doc.span(unit.first, unit.last) for n in names):
            if not unit.separable:
                raise Fallback("a statement that does not stand alone")
            region = doc.make_region(unit)
            doc.add_region(region)
            region.base = doc.stage_line(region.start)
            region.stage_text, region.stage_nlines = region.text, region.nlines
            node = doc.tree_of(region)
        elif unit.compound and any(n in doc.span(unit.first, unit.last) for n in names):
            node = _read_only(doc, unit, names)
        else:
            node = STAND_IN
        if region is not None and isinstance(node, cst.SimpleStatementLine):
            lines[id(node)] = doc.statement_line(region)
        body.append(node)
    transformer = rule.transformer(ctx)
    out = transformer.rewrite_block(body, hits, lines)
    i = 0
    for node in out:
        if i < len(body) and node is body[i]:
            i += 1
            continue
        if not isinstance(node, cst.With):
            raise Fallback("a block rewritten in an unexpected way")
        count = len(node.body.body)
        _merge(doc, block.units[i:i + count], node)
        i += count
    if i != len(body):
        raise Fallback("a block rewritten in an unexpected way")


def _read_only(doc: Doc, unit: Unit, names: set[str]):
    """A compound statement, parsed from its original text, for reading names only: certain
    when no statement inside that a rule already changed holds one of the names."""
    for region in doc.regions:
        if region.changed and unit.first <= region.start and region.last <= unit.last and \
                any(n in region.orig or n in region.text for n in names):
            raise Fallback("a changed statement inside a block the rule reads")
    start, _ = doc._text_start(unit)
    line = doc.line(unit.first)
    indent = line[:len(line) - len(line.lstrip(" \t"))]
    return doc.parse_text(doc.span(start, unit.last), indent, 1, True)


def _merge(doc: Doc, units: list[Unit], with_node: cst.With) -> None:
    regions = [u.region for u in units]
    if any(r is None or r.units != [u] for r, u in zip(regions, units)):
        raise Fallback("wrapped statements that are not regions")
    for a, b in zip(regions, regions[1:]):
        if b.start != a.last + 1 or not b.leading_known:
            raise Fallback("wrapped statements with lines between them")
    first, last = regions[0], regions[-1]
    at = doc.region_index(first)
    merged = Region(units, first.start, last.last, first.indent, first.leading_known,
                    "".join(r.orig for r in regions), "", last.eof_open, changed=True)
    doc.regions[at:at + len(regions)] = [merged]
    doc._attach(merged)
    doc.set_tree(merged, with_node)


# --- imports -------------------------------------------------------------------------------------
def _with_imports(doc: Doc, wanted: list) -> str:
    """add_imports, on the statements at the top level that it reads."""
    from ._engine import new_import_statements

    top = []    # (kind, region or unit): the module's statements as they are now
    for unit in doc.module.units:
        region = unit.region
        if region is not None:
            if not top or top[-1][1] is not region:
                top.append(("region", region))
        else:
            top.append(("unit", unit))

    def tree(item):
        kind, obj = item
        if kind == "region":
            return doc.tree_of(obj)
        region = doc.parsed.get(("top", id(obj)))
        if region is None:
            region = Region([obj], *_bounds(doc, obj))
            doc.parsed[("top", id(obj))] = region
        return doc.tree_of(region)

    def imports_in(item) -> tuple[int, int]:
        """(import statements, statements) on a top-level line; (0, 0) for a compound one."""
        kind, obj = item
        if kind == "region" and obj.changed:
            t = obj.tree
            if not isinstance(t, cst.SimpleStatementLine):
                return 0, 0
            return sum(isinstance(s, (cst.Import, cst.ImportFrom)) for s in t.body), len(t.body)
        unit = obj.units[0] if kind == "region" else obj
        if unit.compound:
            return 0, 0
        return sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in unit.nodes), len(unit.nodes)

    def is_import_line(item) -> bool:
        found, count = imports_in(item)
        return count > 0 and found == count

    def has_import(item) -> bool:
        return imports_in(item)[0] > 0

    lookup = cst.Module(body=[tree(item) for item in top if has_import(item)])
    new_stmts = new_import_statements(lookup, wanted)
    if not new_stmts:
        return doc.joined()
    index = 0
    if top:
        kind, obj = top[0]
        unit = obj.units[0] if kind == "region" else obj
        maybe_doc = (kind == "region" and obj.changed) or \
            (not unit.compound and isinstance(unit.nodes[0], ast.Expr))
        first = tree(top[0]) if maybe_doc else None
        if isinstance(first, cst.SimpleStatementLine) and isinstance(first.body[0], cst.Expr) \
                and isinstance(first.body[0].value, (cst.SimpleString, cst.ConcatenatedString)):
            index = 1
    last_import = None
    for i in range(index, len(top)):
        if is_import_line(top[i]):
            last_import = i
        elif last_import is not None:
            break
    at = index if last_import is None else last_import + 1

    def last_line(item) -> int:
        return item[1].last

    def code(stmts, eof_open=False) -> str:
        return cst.Module(body=stmts, default_indent=doc.indent, default_newline=doc.newline,
                          has_trailing_newline=not eof_open).code

    if at == 0:
        # the first statement's leading_lines go on the new imports; libcst gave the comment
        # lines above the first statement to the module's header, so there are only those a
        # rule added to a region
        kind, obj = top[0]
        if kind == "region":
            first = tree(top[0])
            new_stmts[0] = new_stmts[0].with_changes(leading_lines=first.leading_lines)
            text = code([*new_stmts, first.with_changes(leading_lines=[cst.EmptyLine()])],
                        obj.eof_open)
            saved = obj.text
            obj.text = text
            out = doc.joined()
            obj.text = saved
            return out
        text = code(new_stmts) + doc.newline
        return doc.joined({obj.first - 1: text})
    if at < len(top) and not is_import_line(top[at - 1]):
        new_stmts[0] = new_stmts[0].with_changes(leading_lines=[cst.EmptyLine()])
    after = top[at - 1]
    kind, obj = after
    eof = (obj.eof_open if kind == "region" else
           obj.last == len(doc.lines) and not doc.text.endswith("\n"))
    if eof:
        raise Fallback("imports after a last line without a line break")
    return doc.joined({last_line(after): code(new_stmts)})
