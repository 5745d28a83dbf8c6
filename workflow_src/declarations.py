"""What the metric registry (workflow_src/registry.py) and the user indicators it takes in
(workflow_src/custom.py) share: a metric as declared, and the error a declaration that
cannot be used raises. Both import it; it imports nothing of the package."""

from __future__ import annotations

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
