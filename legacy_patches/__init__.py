"""Mechanical, reviewable rewrites that make code written for PyTorch 0.3 / pandas 0.2x /
Python <= 3.6 (the original Mean Teacher code and its forks) run on today's stack.

Each rule (``legacy_patches.rules``) has an ``id``, says what broke and in which release, and
rewrites the libcst syntax tree, so comments and formatting survive and nothing inside strings or
comments is ever touched. Patched code imports ``legacy_patches.runtime`` where it needs a shim.

    >>> from legacy_patches import patch_source
    >>> patch_source("loss_value = loss.data[0]\\n").new_source
    'loss_value = loss.item()\\n'
"""
from __future__ import annotations

from typing import Iterable

from ._base import Change, Rule, RuleContext
from ._engine import (LegacySyntaxError, PatchResult, Prepared, collect, parse, patch_module,
                      patch_prepared, patch_source, prepare)
from ._regions import gc_paused
from .rules import ALL as RULES

__all__ = ["RULES", "Change", "LegacySyntaxError", "PatchResult", "Prepared", "Rule", "RuleContext",
           "collect", "gc_paused", "get_rule", "parse", "patch_module", "patch_prepared", "patch_source",
           "prepare", "select_rules"]


def get_rule(rule_id: str) -> Rule:
    for rule in RULES:
        if rule.id == rule_id:
            return rule
    raise KeyError(rule_id)


def select_rules(ids: Iterable[str] | None = None, *, cpu: bool = False) -> list[Rule]:
    """The rules to run, in their fixed order.

    ``ids`` None: the default rules, plus the CPU rules if ``cpu``. Otherwise the named rules
    (naming a CPU or opt-in rule turns it on); the word ``default`` stands for the default set,
    so ``["default", "trainlog-flush-at-exit"]`` adds one opt-in rule. Unknown ids raise KeyError.
    """
    def wanted_by_default(rule: Rule) -> bool:
        return rule.default or (cpu and rule.cpu_only)

    if ids is None:
        return [r for r in RULES if wanted_by_default(r)]
    ids = [i.strip() for i in ids if i.strip()]
    known = {r.id for r in RULES}
    unknown = [i for i in ids if i != "default" and i not in known]
    if unknown:
        raise KeyError(", ".join(unknown))
    use_default = "default" in ids
    return [r for r in RULES if r.id in ids or (use_default and wanted_by_default(r))]
