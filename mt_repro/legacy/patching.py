"""Patch old checkouts of the original Mean Teacher code (and its forks) so they run on today's
PyTorch, pandas and Python: the library behind ``mt-repro patch-legacy``.

    plan = plan_patches("old-checkout/", cpu=True)   # read, parse and rewrite in memory
    print(render_check(plan))                         # what would change, per file and rule
    print(render_diff(plan))                          # as a unified diff
    write_patches(plan)                               # backups (*.py.orig), then atomic writes

The rewrite rules live in the top-level package ``legacy_patches`` (patched code imports its
``legacy_patches.runtime``). Nothing here runs the code it patches.
"""
from __future__ import annotations

import difflib
import io
import os
import re
import stat
import sys
import tokenize
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import legacy_patches
from legacy_patches import LegacySyntaxError, PatchResult, Rule
from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import write_bytes_atomic
from mt_repro.core.limits import SOURCE_BYTES, SOURCE_NESTING, regular_file

BACKUP_SUFFIX = ".orig"
CONVNET_PORT = "mt-repro cifar10 --arch convnet13 (planned)"
SKIP_DIRS = {"__pycache__", "site-packages", "node_modules"}
TF_IMPORT = re.compile(r"^\s*(import\s+tensorflow\b|from\s+tensorflow\b)|\btf\.contrib\b", re.M)
TORCH_IMPORT = re.compile(r"^\s*(import|from)\s+(torch|torchvision)\b", re.M)


@dataclass
class FileReport:
    path: Path
    rel: str
    status: str                 # changed | unchanged | unparseable | unreadable | written | failed
    result: PatchResult | None = None
    message: str = ""
    encoding: str = "utf-8"
    source_compiles: bool = True

    @property
    def edits(self):
        return self.result.edits if self.result else []

    @property
    def manual(self):
        return self.result.manual if self.result else []


@dataclass
class Plan:
    root: Path
    rules: list[Rule]
    files: list[FileReport] = field(default_factory=list)
    tensorflow: list[tuple[str, int]] = field(default_factory=list)  # (file or dir/, n files)

    @property
    def changed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "changed"]

    @property
    def skipped(self) -> list[FileReport]:
        return [f for f in self.files if f.status in ("unparseable", "unreadable")]


# --- finding files -------------------------------------------------------------------------------
WHAT = "legacy source file"
LINK_NOTE = "a symbolic link, not followed (its target is patched only where it lies in the tree)"


def _python_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The ``*.py`` regular files under ``root`` and the ``*.py`` symbolic links to regular
    files (reported, never followed: a link may lead out of the tree, and patching its target
    through it would rewrite a file elsewhere). Directory links are not descended into. A FIFO,
    device or socket named ``*.py``, or a link to one, is refused with one line: reading it
    would block or never end."""
    found, links = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                             and not (Path(dirpath, d) / "pyvenv.cfg").exists())
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("."):
                continue
            path = Path(dirpath, name)
            if path.is_symlink() and not path.exists():
                links.append(path)  # dangling: nothing to read, nothing to patch
                continue
            regular_file(path, WHAT)
            (links if path.is_symlink() else found).append(path)
    return found, links


def _read(path: Path) -> tuple[str, str]:
    """The text of a regular source file no larger than the source-file limit, and its encoding;
    a FIFO, a device (or a link to one) or an oversized file is refused with one line."""
    info = regular_file(path, WHAT)
    SOURCE_BYTES.check(info.st_size, f"{WHAT} {path}")
    with open(path, "rb") as f:
        data = f.read(SOURCE_BYTES.value + 1)
    SOURCE_BYTES.check(len(data), f"{WHAT} {path}")
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    if encoding == "utf-8-sig":
        encoding = "utf-8"
    return data.decode(encoding), encoding


_TOO_DEEP = "nested too deeply to be rewritten (the rewriter ran out of stack or memory)"


def _uses(pattern: re.Pattern, text: str) -> bool:
    return bool(pattern.search(text))


def plan_patches(path: str | os.PathLike, *, rules: Sequence[str] | None = None,
                 cpu: bool = False) -> Plan:
    """Read and rewrite (in memory) PATH, a .py file or a directory tree.

    Directories are searched for ``*.py`` (hidden directories, ``__pycache__``, virtual
    environments and backups are skipped). A tree whose Python files use TensorFlow and none
    uses torch (the original's ``tensorflow/`` half) is skipped as a whole and reported.
    """
    root = Path(path)
    if not root.exists():
        raise BadInput(f"{root}: no such file or directory")
    try:
        selected = legacy_patches.select_rules(rules, cpu=cpu)
    except KeyError as exc:
        known = ", ".join(r.id for r in legacy_patches.RULES)
        raise BadInput(f"unknown rule(s) {exc.args[0]}; known: default, {known}") from None
    plan = Plan(root, selected)
    single = not root.is_dir()
    if single:
        regular_file(root, WHAT)  # a FIFO or a device given as PATH: refused before it is read
    paths, links = ([], [root]) if single and root.is_symlink() else \
        ([root], []) if single else _python_files(root)
    base = root.parent if single else root
    for p in links:
        plan.files.append(FileReport(p, p.relative_to(base).as_posix(), "unreadable", message=LINK_NOTE))

    texts: dict[Path, tuple[str, str]] = {}
    for p in paths:
        rel = p.relative_to(base).as_posix()
        try:
            texts[p] = _read(p)
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            plan.files.append(FileReport(p, rel, "unreadable", message=_oserror(exc)))

    tf_files = {p for p, (text, _) in texts.items() if _uses(TF_IMPORT, text)}
    torch_files = {p for p, (text, _) in texts.items() if _uses(TORCH_IMPORT, text)}
    skip: set[Path] = set()
    if not single:
        trees = [root] + sorted(d for d in root.iterdir() if d.is_dir())
        for tree in trees:
            inside = {p for p in texts if tree in p.parents}
            if inside & tf_files and not inside & torch_files and not inside & skip:
                skip |= inside
                rel = "." if tree == root else tree.relative_to(root).as_posix()
                plan.tensorflow.append((rel + "/", len(inside)))
    for p in sorted(tf_files - torch_files - skip):  # a torch file merely mentioning tf is patched
        skip.add(p)
        plan.tensorflow.append((p.relative_to(base).as_posix(), 1))

    with legacy_patches.gc_paused():   # many small objects, no cycles: see gc_paused
        _patch_files(plan, [p for p in paths if p in texts and p not in skip], texts, base, path)
    plan.files.sort(key=lambda f: f.rel)
    return plan


def _patch_files(plan: Plan, paths: list[Path], texts: dict, base: Path, path) -> None:
    """Parse, collect over all, rewrite each: the reports go into ``plan.files``."""
    modules = {}
    for p in paths:
        text, encoding = texts[p]
        rel = p.relative_to(base).as_posix()
        try:
            modules[p] = legacy_patches.prepare(text, max_depth=SOURCE_NESTING.value)
        except LegacySyntaxError as exc:
            message = str(exc)
            if exc.line is None and "nested more than" in message:
                message += f" (the limit is {SOURCE_NESTING.variable}={SOURCE_NESTING.value})"
            plan.files.append(FileReport(p, rel, "unparseable", message=message, encoding=encoding))
        except (RecursionError, MemoryError):
            plan.files.append(FileReport(p, rel, "unparseable", message=_TOO_DEEP, encoding=encoding))
    try:
        project = legacy_patches.collect(modules.values(), plan.rules)
    except (RecursionError, MemoryError):
        raise BadInput(f"{path}: {_TOO_DEEP}") from None
    for p in list(modules):
        module = modules.pop(p)     # its syntax trees go as soon as it is done
        text, encoding = texts[p]
        try:
            result = legacy_patches.patch_prepared(module, plan.rules, project)
        except LegacySyntaxError as exc:   # libcst refused a file Python's parser took
            plan.files.append(FileReport(p, p.relative_to(base).as_posix(), "unparseable",
                                         message=str(exc), encoding=encoding))
            continue
        except (RecursionError, MemoryError):
            plan.files.append(FileReport(p, p.relative_to(base).as_posix(), "unparseable",
                                         message=_TOO_DEEP, encoding=encoding))
            continue
        report = FileReport(p, p.relative_to(base).as_posix(),
                            "changed" if result.changed else "unchanged", result, encoding=encoding)
        try:
            compile(text, str(p), "exec")
        except (SyntaxError, ValueError):
            report.source_compiles = False
        plan.files.append(report)


# --- reporting -----------------------------------------------------------------------------------
def _lines(numbers: Iterable[int]) -> str:
    numbers = sorted(set(n for n in numbers if n))
    return ", ".join(map(str, numbers)) if numbers else "-"


def _file_block(report: FileReport, verb: str) -> list[str]:
    out = [f"{report.rel}: {len(report.edits)} edit(s) {verb}"]
    by_rule: dict[str, list[int]] = defaultdict(list)
    for change in report.edits:
        by_rule[change.rule].append(change.line)
    width = max((len(r) for r in by_rule), default=0)
    for rule in (r.id for r in legacy_patches.RULES):
        if rule in by_rule:
            out.append(f"  {rule:<{width}}  line {_lines(by_rule[rule])}")
    out += _manual_lines(report)
    return out


def _manual_lines(report: FileReport) -> list[str]:
    out = [f"  check by hand, line {c.line or '?'} [{c.rule}]: {c.message}" for c in report.manual]
    if report.result is not None and not report.result.compiles:
        out.append(f"  still not valid Python {_pyver()}: {report.result.compile_error}")
    return out


def _pyver() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _skipped_lines(plan: Plan) -> list[str]:
    out = [f"skipped {f.rel}: {f.message} (left untouched)" for f in plan.skipped]
    for rel, n in plan.tensorflow:
        what = f"{rel} ({n} files)" if rel.endswith("/") else rel
        out.append(f"skipped {what}: TensorFlow 1 code (tf.contrib) cannot be patched to run "
                   f"today; use mt-repro's port instead: {CONVNET_PORT}")
    return out


def summary(plan: Plan, verb: str) -> str:
    n_edits = sum(len(f.edits) for f in plan.changed)
    n_manual = sum(len(f.manual) for f in plan.files)
    parsed = [f for f in plan.files if f.result is not None]
    text = f"{verb} {len(plan.changed)} of {len(parsed)} file(s) ({n_edits} edits)"
    if n_manual:
        text += f"; {n_manual} place(s) to check by hand"
    if plan.skipped or plan.tensorflow:
        text += f"; {len(plan.skipped) + sum(n for _, n in plan.tensorflow)} file(s) skipped"
    return text


def render_check(plan: Plan) -> str:
    lines: list[str] = []
    for report in plan.files:
        if report.status == "changed":
            lines += _file_block(report, "would be made")
        elif report.manual or (report.result and not report.result.compiles):
            lines += [f"{report.rel}: no edits"] + _manual_lines(report)
    lines += _skipped_lines(plan)
    lines.append(summary(plan, "would change"))
    return "\n".join(lines)


def render_diff(plan: Plan) -> str:
    chunks = []
    for report in plan.changed:
        chunks += difflib.unified_diff(
            report.result.source.splitlines(keepends=True),
            report.result.new_source.splitlines(keepends=True),
            f"a/{report.rel}", f"b/{report.rel}")
        if chunks and not chunks[-1].endswith("\n"):
            chunks[-1] += "\n\\ No newline at end of file\n"
    return "".join(chunks)


def render_notes(plan: Plan) -> str:
    """What --diff prints beside the diff: places to check by hand, skipped files, a summary."""
    lines: list[str] = []
    for report in plan.files:
        notes = _manual_lines(report)
        if notes:
            lines += [f"{report.rel}:"] + notes
    lines += _skipped_lines(plan)
    lines.append(summary(plan, "would change"))
    return "\n".join(lines)


# --- writing -------------------------------------------------------------------------------------
def _oserror(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _read_only(path: Path) -> bool:
    """No write permission, or no write bit at all (root may write anyway: we do not)."""
    return not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def _backup_kind(backup: Path) -> str:
    """"" if nothing is at ``backup``, "file" for a regular file (kept as it is), else what is
    there (a directory, a link, a FIFO...): never written into, over or through."""
    try:
        mode = os.lstat(backup).st_mode
    except FileNotFoundError:
        return ""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a device"


def write_patches(plan: Plan) -> list[FileReport]:
    """Write every changed file of ``plan``: first ``file.py.orig`` (kept if it already exists),
    then the new text, atomically. A file that cannot be written keeps its old content and gets
    status "failed". Returns the reports of the files that were meant to change."""
    touched = []
    for report in plan.changed:
        touched.append(report)
        if report.source_compiles and not report.result.compiles:
            # a rule produced invalid code from valid code: never write that
            report.status, report.message = "failed", \
                f"the patched text does not compile ({report.result.compile_error}); not written"
            continue
        path = report.path
        if _read_only(path):
            report.status, report.message = "failed", "the file is read-only; not written"
            continue
        try:
            original = path.read_bytes()
            if original.decode(report.encoding) != report.result.source:
                report.status, report.message = "failed", "changed on disk since it was read; not written"
                continue
            backup = backup_path(path)
            report.message = f"backup {backup.name}"
            kind = _backup_kind(backup)
            if kind == "file":
                report.message = f"kept the existing backup {backup.name}"
            elif kind:
                report.status, report.message = "failed", \
                    f"{backup.name} exists and is {kind}, not a backup file; move it away; not written"
                continue
            else:
                write_bytes_atomic(backup, original, mode_from=path)
            write_bytes_atomic(path, report.result.new_source.encode(report.encoding), mode_from=path)
            report.status = "written"
        except OSError as exc:
            report.status, report.message = "failed", f"{_oserror(exc)}; not written"
    return touched


def render_write(plan: Plan, touched: Sequence[FileReport]) -> str:
    lines: list[str] = []
    for report in plan.files:
        if report.status == "written":
            lines += _file_block(report, f"made ({report.message})")
        elif report.status == "failed":
            lines.append(f"{report.rel}: NOT patched: {report.message}")
        elif report.manual or (report.result and not report.result.compiles):
            lines += [f"{report.rel}: no edits"] + _manual_lines(report)
    lines += _skipped_lines(plan)
    written = [f for f in touched if f.status == "written"]
    n_edits = sum(len(f.edits) for f in written)
    parsed = [f for f in plan.files if f.result is not None]
    text = f"patched {len(written)} of {len(parsed)} file(s) ({n_edits} edits)"
    n_manual = sum(len(f.manual) for f in plan.files)
    if n_manual:
        text += f"; {n_manual} place(s) to check by hand"
    skipped = len(plan.skipped) + sum(n for _, n in plan.tensorflow)
    if skipped:
        text += f"; {skipped} file(s) skipped"
    lines.append(text)
    return "\n".join(lines)


def render_rules() -> str:
    lines = []
    for rule in legacy_patches.RULES:
        when = "default" if rule.default else ("with --cpu" if rule.cpu_only else "opt-in")
        lines.append(f"{rule.id}  [{when}]")
        lines.append(f"    {rule.title}")
        lines.append(f"    broke in: {rule.broke_in}")
    return "\n".join(lines)
