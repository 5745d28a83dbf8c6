"""Writing figures: interactive HTML (JavaScript inlined, opens offline), PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import altair as alt

FORMATS = ("html", "png", "svg")


def outputs(directory: str, stem: str) -> dict[str, str]:
    """The files ``save`` writes for one figure, keyed by format (for rule outputs)."""
    return {fmt: f"{directory}/{stem}.{fmt}" for fmt in FORMATS}


def save(chart: alt.Chart, stem: str) -> None:
    """Write ``stem``.html, .png and .svg."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    chart.save(f"{stem}.html", inline=True)
    chart.save(f"{stem}.png", scale_factor=2)
    chart.save(f"{stem}.svg")
