"""The one altair theme of every gensens figure.

Charts set their own axis titles (with units) and tooltips; the theme sets what they share:
font sizes readable in a report and on a slide, the Okabe–Ito categorical palette (Okabe &
Ito 2008, distinguishable under the common colour-vision deficiencies), viridis for ordered
and continuous colour, and a default panel size. Figure scripts call ``use_theme()`` once
before building charts.
"""

from __future__ import annotations

import altair as alt

NAME = "gensens"
FONT = "Helvetica, Arial, sans-serif"
# Okabe & Ito's eight colours, black moved last so it is used only when seven do not suffice.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442",
             "#000000"]
# viridis without its palest yellows, which vanish on a white background.
SEQUENTIAL = {"scheme": "viridis", "extent": [0.0, 0.88]}
WIDTH, HEIGHT = 360, 260  # pixels, one panel
SIZES = {"label": 12, "title": 13, "header": 13, "chart_title": 15}


@alt.theme.register(NAME, enable=False)
def gensens_theme() -> alt.theme.ThemeConfig:
    axis = {"labelFontSize": SIZES["label"], "titleFontSize": SIZES["title"],
            "titleFontWeight": "normal", "gridColor": "#e6e6e6"}
    header = {"labelFontSize": SIZES["header"], "titleFontSize": SIZES["header"]}
    return {
        "config": {
            "font": FONT,
            "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "stroke": "#cccccc"},
            "axis": axis,
            "legend": {"labelFontSize": SIZES["label"], "titleFontSize": SIZES["title"],
                       "titleFontWeight": "normal", "symbolSize": 80},
            "header": header,
            "headerRow": header,
            "headerColumn": header,
            "headerFacet": header,
            "title": {"fontSize": SIZES["chart_title"], "anchor": "start", "fontWeight": "normal"},
            "range": {"category": OKABE_ITO, "ordinal": SEQUENTIAL, "ramp": SEQUENTIAL,
                      "heatmap": SEQUENTIAL},
            "point": {"size": 60, "filled": True},
            "line": {"strokeWidth": 2},
        },
    }


def use_theme() -> None:
    """Make the gensens theme the active altair theme (idempotent)."""
    alt.theme.enable(NAME)
