"""The registries of datasets, architectures and methods: complete, strict about names."""
from pathlib import Path
import sys
import types

import pytest

from mt_repro.core.errors import BadInput
from mt_repro.core.registry import Registry
from mt_repro.data.registry import dataset_names
from mt_repro.methods.registry import method_names
from mt_repro.models import list_models


@pytest.fixture
def package(monkeypatch, tmp_path):
    """An importable package ``fake_entries`` of two modules, each registering one entry."""
    root = tmp_path / "fake_entries"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "book.py").write_text("from registry_under_test import REGISTRY\nREGISTRY.add('book', 'a book')\n")
    (root / "lamp.py").write_text("from registry_under_test import REGISTRY\nREGISTRY.add('lamp', 'a lamp')\n")
    registry = Registry("fake_entries", "thing")
    module = types.ModuleType("registry_under_test")
    module.REGISTRY = registry
    monkeypatch.setitem(sys.modules, "registry_under_test", module)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield registry
    for name in ("fake_entries", "fake_entries.book", "fake_entries.lamp"):
        sys.modules.pop(name, None)


def test_a_registry_imports_its_whole_package_before_it_answers(package):
    assert package.names() == ["book", "lamp"]
    assert package.get("lamp") == "a lamp"


def test_an_unknown_name_is_bad_input_naming_the_known_ones(package):
    with pytest.raises(BadInput, match=r"^unknown thing 'chair'; known: book, lamp$"):
        package.get("chair")


def test_two_entries_under_one_name_are_refused(package):
    package.add("book", package.get("book"))  # the same entry again: harmless
    with pytest.raises(ValueError, match="two things registered as 'book'"):
        package.add("book", "another book")


@pytest.mark.parametrize("names, expected", [
    (dataset_names, {"cifar10", "digits", "imagenet", "svhn"}),
    (list_models, {"cifar_shakeshake26", "resnext152", "convnet13", "digits_convnet"}),
    (method_names, {"mean_teacher", "pi_model", "supervised", "temporal_ensembling", "vat"}),
])
def test_the_registries_hold_the_modules_entries(names, expected):
    assert expected <= set(names())


# --- the README's table of methods ----------------------------------------------------------------
METHODS_TABLE_START = "<!-- methods table: generated from the method registry (tests/test_registries.py) -->"
METHODS_TABLE_END = "<!-- end of methods table -->"


def render_methods_table() -> str:
    from mt_repro.config.methods import method_settings
    from mt_repro.methods.registry import method_class, method_names

    rows = ["| `--method` | kind | network reported | source (its settings file's) |", "|---|---|---|---|"]
    for name in method_names():
        cls = method_class(name)
        kind = "pre-training (no labels; kNN evaluation)" if cls.pretraining else "semi-supervised"
        if name == "supervised":
            kind = "baseline (labeled images only)"
        rows.append(f"| `{name}` | {kind} | {cls.reported_model} | {method_settings(name).source} |")
    return "\n".join(rows)


def test_the_readme_lists_every_registered_method_with_its_paper():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start, end = text.index(METHODS_TABLE_START) + len(METHODS_TABLE_START), text.index(METHODS_TABLE_END)
    assert text[start:end].strip() == render_methods_table(), \
        "README's methods table is stale; replace it with test_registries.render_methods_table()"
