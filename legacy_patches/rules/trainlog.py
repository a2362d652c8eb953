"""Opt-in: make the original's TrainLog also save when the process exits."""
from __future__ import annotations

import libcst as cst

from .._base import Rule, RuleTransformer, code

CALL = "atexit.register(self.save)"


def _assigns(cls: cst.ClassDef, name: str) -> bool:
    for stmt in cls.body.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Assign) and any(
                        isinstance(t.target, cst.Name) and t.target.value == name for t in small.targets):
                    return True
    return False


def _method(cls: cst.ClassDef, name: str) -> cst.FunctionDef | None:
    for stmt in cls.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value == name:
            return stmt
    return None


class TrainLogFlushAtExit(Rule):
    id = "trainlog-flush-at-exit"
    title = "TrainLog (saves every 300 s) also saves at exit"
    broke_in = "never worked (a limitation of the original, not a version change); opt-in"
    symptom = ("a short run's training.msgpack holds only its first row; a long run's misses "
               "its last minutes")
    triggers = ("INCREMENTAL_UPDATE_TIME",)
    region_keys = r"\bINCREMENTAL_UPDATE_TIME\b"
    region_unit = "class"      # the class that assigns it is rewritten as a whole
    review = ("Adds `atexit.register(self.save)` to the __init__ of a class that has an "
              "INCREMENTAL_UPDATE_TIME attribute and a save() method (the original's TrainLog). "
              "Nothing else changes: records, the 300 s rule and the file format stay as they "
              "were; the file is rewritten once more when Python exits normally (not on a kill).")
    default = False

    def transformer(self, ctx):
        return _Transformer(ctx)


class _Transformer(RuleTransformer):
    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef):
        if not (_assigns(original_node, "INCREMENTAL_UPDATE_TIME") and _method(original_node, "save")):
            return updated_node
        init = _method(updated_node, "__init__")
        if init is None or not isinstance(init.body, cst.IndentedBlock):
            return updated_node
        if any(CALL in code(s) for s in init.body.body):
            return updated_node
        self.ctx.need_import("atexit")
        self.ctx.edit(self.line(original_node), f"class {original_node.name.value}: {CALL} in __init__")
        new_init = init.with_changes(body=init.body.with_changes(
            body=[*init.body.body, cst.parse_statement(CALL + "\n")]))
        body = [new_init if s is init else s for s in updated_node.body.body]
        return updated_node.with_changes(body=updated_node.body.with_changes(body=body))
