"""What the metric registry (workflow_src/registry.py) and the user indicators it takes in
(workflow_src/custom.py) share: a metric as declared, and the error a declaration that
cannot be used raises. Both import it; it imports nothing of the package."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


class DeclarationError(ValueError):
    """A metric module whose METRIC declaration the registry cannot use."""


@dataclass(frozen=True)
class Metric:
    name: str
    module: str  # the dotted module, workflow_src.measures.<name>
    path: Path
    order: float
    description: str
    section: str | None
    switch: str | None
    settings: dict
    needs: tuple
    variables: dict
    code: tuple
    cost: float
    snapshots: bool
    measure: str
    custom: dict | None = None  # measure.custom's entry, resolved (workflow_src/custom.py)

    @property
    def metric_needs(self) -> tuple:
        """The metrics whose results of the same network this one reads."""
        return tuple(n.split(":", 1)[1] for n in self.needs if n.startswith("metric:"))


def top_level_assignment(tree: ast.Module, name: str) -> ast.Assign | None:
    """The module's top-level ``<name> = ...`` statement, or None."""
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name):
            return node
    return None


def source_without(text: str, node: ast.Assign) -> str:
    """``text`` with the statement ``node`` removed: a declaration's units, descriptions or
    cost do not change what the module computes, so they stay out of its code hash."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[:node.lineno - 1] + lines[node.end_lineno:])


def literal_dict(node: ast.Assign, not_literal, not_dict) -> dict:
    """The assignment's value as a pure literal dict, read without running the module.
    ``not_literal(reason)`` and ``not_dict(type_name)`` build the caller's exception."""
    try:
        value = ast.literal_eval(node.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise not_literal(err) from None
    if not isinstance(value, dict):
        raise not_dict(type(value).__name__)
    return value
