"""Writing figures: interactive HTML (JavaScript inlined, opens offline) and static PNG."""

from __future__ import annotations

from pathlib import Path

import altair as alt


def save(chart: alt.Chart, html_path: str, png_path: str) -> None:
    Path(html_path).parent.mkdir(parents=True, exist_ok=True)
    chart.save(html_path, inline=True)
    chart.save(png_path, scale_factor=2)
