"""The layering of the packages is a contract, checked here on every import statement of the
source (module level and inside functions), so a wrong import fails the suite instead of
waiting for a review. The layers, top to bottom (README, "Layout"):

    mt_repro.cli
    mt_repro.apps | mt_repro.paper
    mt_repro.legacy
    mt_repro.engine
    mt_repro.methods | mt_repro.models | mt_repro.data | mt_repro.logs
    mt_repro.config
    mt_repro.core

A module may import from its own package and from the layers below its own; packages side by
side in one layer are independent of each other. The import graph has no cycles, and an import
inside a function says why on its line (outside ``cli.py``, whose docstring says why its
commands import when they run: start-up time).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mt_repro

PACKAGE = Path(mt_repro.__file__).parent
# The README lies beside the tests, not beside an installed package.
README = Path(__file__).resolve().parents[1] / "README.md"
LAYERS = [
    ("mt_repro.cli",),
    ("mt_repro.apps", "mt_repro.paper"),
    ("mt_repro.legacy",),   # the original's files brought into the engine's formats
    ("mt_repro.engine",),
    ("mt_repro.methods", "mt_repro.models", "mt_repro.data", "mt_repro.logs"),
    ("mt_repro.config",),
    ("mt_repro.core",),
]
ROOT = "mt_repro"   # the package itself holds only __version__: importable from anywhere


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str | None:
    """The layered package a module belongs to (``mt_repro.engine.trainer`` -> ``mt_repro.engine``)."""
    for layer in LAYERS:
        for package in layer:
            if module == package or module.startswith(package + "."):
                return package
    return None


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def imports(path: Path):
    """(imported module, line, inside a function) of every import of mt_repro in ``path``;
    ``from package import module`` counts as importing the module when it is one."""
    tree = ast.parse(path.read_text())
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names
                      if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py").is_file()
                      or (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).is_dir()]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in nested


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer():
    packages = {module_name(p).split(".")[1] for p in SOURCES if module_name(p) != ROOT}
    layered = {package.split(".")[1] for layer in LAYERS for package in layer}
    assert packages - {"configs", "original_configs"} <= layered, packages - layered


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_go_down_the_layers(path):
    own = package_of(module_name(path))
    if own is None:
        return
    for name, line, _ in imports(path):
        target = package_of(name)
        if not name.startswith("mt_repro") or name == ROOT or target in (None, own):
            continue
        assert layer_of(target) > layer_of(own), (
            f"{module_name(path)}:{line} imports {name}: {target} is "
            f"{'in the same layer as' if layer_of(target) == layer_of(own) else 'above'} {own}")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_inside_functions_say_why(path):
    if module_name(path) == "mt_repro.cli":
        return
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    assert "#" in lines[node.lineno - 1], (
                        f"{module_name(path)}:{node.lineno}: an import inside a function needs a comment "
                        f"saying why it is not at the top: {lines[node.lineno - 1].strip()}")


def test_the_import_graph_has_no_cycles():
    graph: dict[str, set[str]] = {}
    known = {module_name(p) for p in SOURCES}
    for path in SOURCES:
        graph[module_name(path)] = {name for name, _, _ in imports(path) if name in known and name != module_name(path)}
    # a package's __init__ importing its own modules is how Python packages work, not a cycle
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(target) is None:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_layers_are_the_readmes():
    readme = README.read_text()
    for layer in LAYERS:
        assert " | ".join(layer) in readme, layer
