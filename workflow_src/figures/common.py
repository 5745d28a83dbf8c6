"""Writing figures: interactive HTML (JavaScript inlined, opens offline), PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

FORMATS = ("html", "png", "svg")


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows (a seeded random sample), to keep interactive figures light."""
    return frame if len(frame) <= max_rows else frame.sample(max_rows, random_state=seed)


def outputs(directory: str, stem: str) -> dict[str, str]:
    """The files ``save`` writes for one figure, keyed by format (for rule outputs)."""
    return {fmt: f"{directory}/{stem}.{fmt}" for fmt in FORMATS}


def save(chart: alt.Chart, stem: str) -> None:
    """Write ``stem``.html, .png and .svg."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    chart.save(f"{stem}.html", inline=True)
    chart.save(f"{stem}.png", scale_factor=2)
    chart.save(f"{stem}.svg")
