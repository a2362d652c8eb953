"""Apply rules to source text: tokenize-level protection of ``async=``, parse, transform rule by
rule, add the imports the edits need, check that the result compiles."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper

from ._base import ASYNC_PLACEHOLDER, Change, Rule, RuleContext


class LegacySyntaxError(Exception):
    """The file is not Python 3 (e.g. Python 2 ``print "x"``): it is reported, never touched."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


@dataclass
class PatchResult:
    source: str
    new_source: str
    changes: list[Change] = field(default_factory=list)
    compiles: bool = True          # does new_source compile under the running Python?
    compile_error: str = ""
    engine: str = "whole-file"     # or "statements": which path made it (same result either way)

    @classmethod
    def checked(cls, source: str, new_source: str, changes: list[Change], engine: str) -> "PatchResult":
        """The result, with whether ``new_source`` compiles under the running Python."""
        if new_source == source:  # e.g. only notes, or edits that cancel out: the very same text
            new_source = source
        result = cls(source, new_source, changes, engine=engine)
        try:
            compile(new_source, "<patched>", "exec")
        except SyntaxError as exc:
            result.compiles = False
            result.compile_error = f"line {exc.lineno}: {exc.msg}"
        except ValueError as exc:  # null bytes
            result.compiles = False
            result.compile_error = str(exc)
        return result

    @property
    def changed(self) -> bool:
        return self.new_source != self.source

    @property
    def edits(self) -> list[Change]:
        return [c for c in self.changes if not c.manual]

    @property
    def manual(self) -> list[Change]:
        return [c for c in self.changes if c.manual]


# --- `async=` --------------------------------------------------------------------------------
def protect_async_keywords(source: str) -> tuple[str, int]:
    """Rename ``async`` where it is a keyword argument (``f(x, async=True)``) to a placeholder
    that parsers for current Python accept. Works on tokens, so strings and comments are never
    touched. Returns the new text and how many were renamed. Text the tokenizer rejects is
    returned unchanged (the parser then reports it)."""
    if "async" not in source:
        return source, 0
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source, 0
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT}
    significant = [t for t in tokens if t.type not in skip]
    hits = []
    for i, tok in enumerate(significant):
        if tok.type != tokenize.NAME or tok.string != "async" or i == 0 or i + 1 >= len(significant):
            continue
        before, after = significant[i - 1], significant[i + 1]
        if before.type == tokenize.OP and before.string in "(," and after.type == tokenize.OP \
                and after.string == "=":
            hits.append(tok)
    if not hits:
        return source, 0
    lines = source.splitlines(keepends=True)
    for tok in reversed(hits):  # right to left keeps earlier columns valid
        row, col = tok.start
        line = lines[row - 1]
        lines[row - 1] = line[:col] + ASYNC_PLACEHOLDER + line[col + len("async"):]
    return "".join(lines), len(hits)


def nesting_problem(text: str, max_depth: int) -> str | None:
    """Why ``text`` is nested too deeply for libcst (whose parser crashes on deep brackets,
    slows down steeply on long operator chains and recurses through every level), or None.
    Python's own parser measures: it refuses deep brackets itself, and its tree is walked
    without recursion."""
    import ast
    import warnings

    try:
        with warnings.catch_warnings():  # invalid escapes and the like: not ours to report
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except SyntaxError as err:
        if "nested" in err.msg or "too complex" in err.msg:
            return f"nested too deeply to parse (line {err.lineno}: {err.msg})"
        # not Python 3: libcst still gets it (and reports it), unless its brackets are deep
        depth = deepest = 0
        for char in text:
            if char in "([{":
                depth += 1
                deepest = max(deepest, depth)
            elif char in ")]}":
                depth -= 1
        return None if deepest <= max_depth else \
            f"nested more than {max_depth} levels deep ({deepest} levels of brackets)"
    except (RecursionError, MemoryError):
        return "nested too deeply to parse (Python's parser ran out of stack)"
    stack = [(tree, 1, 1)]
    while stack:
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        if depth > max_depth:
            return f"nested more than {max_depth} levels deep (line {line})"
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))
    return None


# --- the fast front: Python's parser first ------------------------------------------------------
# `async` as a keyword argument or a parameter (`f(x, async=True)`, `def f(a, async=1)`): the
# keyword's place in protect_async_keywords' terms, when only spaces and line breaks lie around
_ASYNC_ARGUMENT = re.compile(r"(?<=[(,])(\s*)async(?=\s*=(?!=))")
_FSTRING = re.compile(r"(?<![\w'\"])(?:[rRbBuU]?[fF]|[fF][rR])['\"]")


def _python_tree(text: str):
    import warnings

    with warnings.catch_warnings():  # invalid escapes and the like: not ours to report
        warnings.simplefilter("ignore")
        return ast.parse(text)


def protected_tree(source: str) -> tuple[str, ast.Module] | None:
    """protect_async_keywords(source)[0] and Python's syntax tree of it, or None.

    The tokenizer is slow on long files; Python's own parser is not. Where every `async=`
    stands right after `(` or `,` (spaces and line breaks between), each is renamed by
    pattern and the tree then shows each renamed name as a keyword argument or a parameter,
    the rename is the one protect_async_keywords makes (a renamed name anywhere else, or a
    file with f-strings, whose insides the tokenizer never renames, takes the tokenizer)."""
    if ASYNC_PLACEHOLDER in source:
        return None
    text = _ASYNC_ARGUMENT.sub(lambda m: m.group(1) + ASYNC_PLACEHOLDER, source)
    if text != source and _FSTRING.search(source):
        return None
    try:
        tree = _python_tree(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if text != source and not _renames_are_arguments(text, tree):
        return None
    return text, tree


def _renames_are_arguments(text: str, tree: ast.Module) -> bool:
    wanted = set()
    line_no, line_start = 1, 0
    for match in re.finditer(rf"\n|{ASYNC_PLACEHOLDER}", text):
        if match.group() == "\n":
            line_no, line_start = line_no + 1, match.end()
        else:
            col = len(text[line_start:match.start()].encode("utf-8", "surrogatepass"))
            wanted.add((line_no, col))
    found = set()
    for top, lines in _statements_on(tree, {line for line, _ in wanted}):
        stack = [top]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.stmt) and not any(node.lineno <= n <= node.end_lineno
                                                      for n in lines):
                continue    # a statement that holds no renamed name
            if isinstance(node, (ast.keyword, ast.arg)) and node.arg == ASYNC_PLACEHOLDER:
                found.add((node.lineno, node.col_offset))
            stack.extend(ast.iter_child_nodes(node))
    return found == wanted


def _statements_on(tree: ast.Module, lines: set[int]):
    """The top-level statements that span any of ``lines``, each with those lines."""
    from bisect import bisect_right

    body = tree.body
    starts = [_first_line(s) for s in body]
    held: dict[int, list[int]] = {}
    for line in lines:
        i = bisect_right(starts, line) - 1
        if i >= 0 and body[i].end_lineno >= line:
            held.setdefault(i, []).append(line)
    for i, at in held.items():
        yield body[i], at


def _first_line(stmt) -> int:
    decorators = getattr(stmt, "decorator_list", None)
    return min([stmt.lineno] + [d.lineno for d in decorators]) if decorators else stmt.lineno


def shallow_enough(tree: ast.Module, text: str, max_depth: int) -> bool:
    """True when no node of ``tree`` lies deeper than ``max_depth`` (nesting_problem would say
    None); False when that is not certain. A node's subtree is at most 2 * (its length in
    bytes) + 8 deep, so subtrees short enough for their depth are not walked."""
    sizes = [0]
    for line in text.split("\n"):
        sizes.append(sizes[-1] + (len(line) if line.isascii() else
                                  len(line.encode("utf-8", "surrogatepass"))) + 1)
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return False
        start = getattr(node, "lineno", None)
        end = getattr(node, "end_lineno", None)
        if start is not None and end is not None and not getattr(node, "decorator_list", None):
            span = node.end_col_offset - node.col_offset if start == end else \
                sizes[end] - sizes[start - 1]
            if depth + 2 * span + 7 <= max_depth:
                continue
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return True


@dataclass
class Prepared:
    """One file made ready for patching: its text (`async=` renamed) and Python's syntax tree
    of it. libcst parses only the statements the rules need (legacy_patches._regions); the
    whole file is parsed by libcst only where that path cannot promise the same result."""

    source: str
    text: str
    tree: ast.Module | None
    max_depth: int = 200
    module: cst.Module | None = None
    cache: dict = field(default_factory=dict)   # the statement engine's view of the file

    def whole_module(self) -> cst.Module:
        if self.module is None:
            self.module = parse(self.source, self.max_depth)
        return self.module


def prepare(source: str, max_depth: int = 200) -> Prepared:
    """Like parse(), and raises what it raises, but parses the file with Python's parser;
    libcst parses only what is needed, when it is needed."""
    from ._regions import gc_paused

    with gc_paused():
        return _prepare(source, max_depth)


def _prepare(source: str, max_depth: int) -> Prepared:
    front = protected_tree(source)
    if front is None:
        text, _ = protect_async_keywords(source)
        try:
            front = text, _python_tree(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            front = None
    if front is not None:
        text, tree = front
        if not shallow_enough(tree, text, max_depth):
            problem = nesting_problem(text, max_depth)
            if problem:
                raise LegacySyntaxError(problem)
        return Prepared(source, text, tree, max_depth)
    module = parse(source, max_depth)   # not Python 3 for Python's parser: libcst decides
    return Prepared(source, module.code, None, max_depth, module)


def parse(source: str, max_depth: int = 200) -> cst.Module:
    text, _ = protect_async_keywords(source)
    problem = nesting_problem(text, max_depth)
    if problem:
        raise LegacySyntaxError(problem)
    try:
        return cst.parse_module(text)
    except Exception as exc:  # ParserSyntaxError, and a few others from the native parser
        problem = exc
    # Python's own compiler gives the clearest message ("Missing parentheses in call to 'print'")
    try:
        compile(text, "<legacy>", "exec", dont_inherit=True)
    except SyntaxError as err:
        raise LegacySyntaxError(f"not Python 3 syntax at line {err.lineno}: {err.msg}",
                                err.lineno) from None
    except ValueError as err:  # null bytes
        raise LegacySyntaxError(f"cannot parse: {err}") from None
    first = str(problem).strip().splitlines()[-1] if str(problem).strip() else type(problem).__name__
    raise LegacySyntaxError(f"cannot parse with libcst {_libcst_version()}: {first}")


def _libcst_version() -> str:
    try:
        from importlib.metadata import version

        return version("libcst")
    except Exception:  # pragma: no cover
        return "?"


def unparse(module: cst.Module) -> str:
    return module.code.replace(ASYNC_PLACEHOLDER, "async")


# --- imports ---------------------------------------------------------------------------------
def _import_stmts(module: cst.Module):
    for index, stmt in enumerate(module.body):
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, (cst.Import, cst.ImportFrom)):
                    yield index, stmt, small


def _module_name(node) -> str:
    from ._base import dotted
    return dotted(node) or ""


def _binds_module(module: cst.Module, name: str) -> bool:
    """Does a top-level ``import name`` / ``import name.sub`` bind ``name``?"""
    for _, _, imp in _import_stmts(module):
        if isinstance(imp, cst.Import):
            for alias in imp.names:
                full = _module_name(alias.name)
                if alias.asname is None and full.split(".")[0] == name:
                    return True
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name) \
                        and alias.asname.name.value == name and full == name:
                    return True
    return False


def _insert_index(module: cst.Module) -> int:
    """After the first run of top-level imports; else after the docstring."""
    body = module.body
    index = 0
    if body and isinstance(body[0], cst.SimpleStatementLine) and isinstance(body[0].body[0], cst.Expr) \
            and isinstance(body[0].body[0].value, (cst.SimpleString, cst.ConcatenatedString)):
        index = 1
    last_import = None
    for i in range(index, len(body)):
        stmt = body[i]
        if isinstance(stmt, cst.SimpleStatementLine) and all(
                isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
            last_import = i
        elif last_import is not None:
            break
    return index if last_import is None else last_import + 1


def add_imports(module: cst.Module, wanted: Sequence[tuple]) -> cst.Module:
    """Add ``import m`` / ``from m import n [as a]`` unless the module already has them."""
    new_stmts = new_import_statements(module, wanted)
    if not new_stmts:
        return module
    body = list(module.body)
    at = _insert_index(module)
    if at == 0 and body:
        # no imports and no docstring: put them first, keeping the file's header comments on top
        first = body[0]
        new_stmts[0] = new_stmts[0].with_changes(leading_lines=first.leading_lines)
        body[0] = first.with_changes(leading_lines=[cst.EmptyLine()])
    elif at < len(body) and at > 0 and not _is_import_line(body[at - 1]):
        new_stmts[0] = new_stmts[0].with_changes(leading_lines=[cst.EmptyLine()])
    body[at:at] = new_stmts
    return module.with_changes(body=body)


def new_import_statements(module: cst.Module, wanted: Sequence[tuple]) -> list:
    """The import statements add_imports would add (only the module's top-level import
    statements are read)."""
    plain: list[str] = []
    from_groups: dict[str, list[tuple[str, str | None]]] = {}
    for mod, name, asname in wanted:
        if name is None:
            if not _binds_module(module, mod) and mod not in plain:
                plain.append(mod)
            continue
        present = False
        for _, _, imp in _import_stmts(module):
            if isinstance(imp, cst.ImportFrom) and _module_name(imp.module) == mod \
                    and not isinstance(imp.names, cst.ImportStar):
                for alias in imp.names:
                    alias_as = alias.asname.name.value if alias.asname else None
                    if _module_name(alias.name) == name and alias_as == asname:
                        present = True
        if not present and (name, asname) not in from_groups.setdefault(mod, []):
            from_groups[mod].append((name, asname))
    new_stmts = [cst.parse_statement(f"import {m}\n") for m in plain]
    for mod, names in from_groups.items():
        if not names:
            continue
        spelled = [n if a is None else f"{n} as {a}" for n, a in names]
        line = f"from {mod} import {', '.join(spelled)}\n"
        if len(line) > 88:
            line = f"from {mod} import (\n" + "".join(f"    {n},\n" for n in spelled) + ")\n"
        new_stmts.append(cst.parse_statement(line))
    return new_stmts


def _is_import_line(stmt) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body)


# --- driver ----------------------------------------------------------------------------------
def collect(modules: Iterable[cst.Module | Prepared], rules: Sequence[Rule]) -> dict:
    """The project-wide first pass (see Rule.collect)."""
    from . import _regions

    project: dict = {}
    for module in modules:
        if isinstance(module, Prepared):
            _regions.collect(module, rules, project)
            continue
        for rule in rules:
            rule.collect(module, project)
    return project


def _line_map(original: str, current: str, original_lines: list[str] | None = None):
    """Map line numbers in ``current`` (the text a rule saw) back to ``original``, so reports
    name the lines of the file as it is on disk even after earlier rules added lines.
    ``original_lines``: ``original.splitlines()``, if the caller has it already."""
    if original == current:
        return lambda line: line
    a = original.splitlines() if original_lines is None else original_lines
    b = current.splitlines()
    table: dict[int, int] = {}
    for i1, i2, j1, j2 in _aligned(a, b):
        for k in range(j1, j2):
            table[k + 1] = (i1 + min(k - j1, max(i2 - i1 - 1, 0))) + 1
    return lambda line: table.get(line, line)


def _aligned(a: Sequence[str], b: Sequence[str]):
    """Blocks ``(i1, i2, j1, j2)`` that pair ``a[i1:i2]`` with ``b[j1:j2]``, covering ``b``, in
    time close to linear: common ends are matched first, then the lines that occur once on
    each side (in order) anchor the rest, and only the small gaps between anchors go to
    difflib (whose matcher is quadratic on the many repeated lines of a long file)."""
    import difflib
    from bisect import bisect_left

    blocks = []
    stack = [(0, len(a), 0, len(b))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        if (ahi - alo) * (bhi - blo) > 40_000:
            while alo < ahi and blo < bhi and a[alo] == b[blo]:
                blocks.append((alo, alo + 1, blo, blo + 1))
                alo, blo = alo + 1, blo + 1
            while alo < ahi and blo < bhi and a[ahi - 1] == b[bhi - 1]:
                blocks.append((ahi - 1, ahi, bhi - 1, bhi))
                ahi, bhi = ahi - 1, bhi - 1
        if blo == bhi:
            continue
        if alo == ahi or (ahi - alo) * (bhi - blo) <= 40_000:
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
                    None, a[alo:ahi], b[blo:bhi], autojunk=False).get_opcodes():
                blocks.append((alo + i1, alo + i2, blo + j1, blo + j2))
            continue
        count_a: dict[str, int] = {}
        for i in range(alo, ahi):
            count_a[a[i]] = count_a.get(a[i], 0) + 1
        count_b: dict[str, int] = {}
        for j in range(blo, bhi):
            count_b[b[j]] = count_b.get(b[j], 0) + 1
        where_a = {a[i]: i for i in range(alo, ahi) if count_a[a[i]] == 1}
        pairs = [(where_a[b[j]], j) for j in range(blo, bhi)
                 if count_b[b[j]] == 1 and b[j] in where_a]
        # the longest run of anchors in the same order on both sides (patience sorting)
        tails: list[int] = []
        tail_at: list[int] = []
        back: list[int] = []
        for n, (i, _) in enumerate(pairs):
            at = bisect_left(tails, i)
            if at == len(tails):
                tails.append(i)
                tail_at.append(n)
            else:
                tails[at], tail_at[at] = i, n
            back.append(tail_at[at - 1] if at else -1)
        chain = []
        n = tail_at[-1] if tail_at else -1
        while n >= 0:
            chain.append(pairs[n])
            n = back[n]
        if not chain:  # nothing to anchor on: pair the two ranges as one block
            blocks.append((alo, ahi, blo, bhi))
            continue
        chain.reverse()
        prev_i, prev_j = alo, blo
        for i, j in chain:
            stack.append((prev_i, i, prev_j, j))
            blocks.append((i, i + 1, j, j + 1))
            prev_i, prev_j = i + 1, j + 1
        stack.append((prev_i, ahi, prev_j, bhi))
    return blocks


def patch_module(source: str, module: cst.Module, rules: Sequence[Rule],
                 project: dict | None = None) -> PatchResult:
    project = {} if project is None else project
    changes: list[Change] = []
    imports: list[tuple] = []
    parsed_text = before = module.code
    for rule in rules:
        if not rule.applies(before, project):
            continue
        ctx = RuleContext(rule.id, project)
        # the tree is ours (parsed here, or built by the previous rule): no defensive copy
        module = MetadataWrapper(module, unsafe_skip_copy=True).visit(rule.transformer(ctx))
        if ctx.changes:
            line_of = _line_map(parsed_text, before)
            changes += [c if not c.line else replace(c, line=line_of(c.line)) for c in ctx.changes]
        if ctx.changes:
            before = module.code
        imports += [i for i in ctx.imports if i not in imports]
    module = add_imports(module, imports)
    return PatchResult.checked(source, unparse(module), changes, engine="whole-file")


def patch_prepared(prepared: Prepared, rules: Sequence[Rule],
                   project: dict | None = None) -> PatchResult:
    """patch_module's result, statement by statement where that is certain to give the same
    (legacy_patches._regions), else the whole-file way."""
    from . import _regions

    project = {} if project is None else project
    if prepared.tree is not None:
        result = _regions.patch(prepared, rules, project)
        if result is not None:
            return result
    return patch_module(prepared.source, prepared.whole_module(), rules, project)


def patch_source(source: str, rules: Sequence[Rule] | None = None, *, cpu: bool = False,
                 project: dict | None = None) -> PatchResult:
    """Patch one file's text. ``rules`` defaults to the default set (plus the CPU rules with
    ``cpu=True``). Raises LegacySyntaxError for text that is not Python 3."""
    from . import select_rules

    rules = select_rules(None, cpu=cpu) if rules is None else list(rules)
    prepared = prepare(source)
    if project is None:
        project = collect([prepared], rules)
    return patch_prepared(prepared, rules, project)
