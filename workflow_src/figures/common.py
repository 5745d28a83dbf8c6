"""What the figures share: log axes fitted to the data, tooltips, and the layers that keep a
figure's size independent of the study's size.

A figure draws at most ``MAX_POINTS`` points and ``MAX_LINES`` lines per panel. Beyond
that, a scatter panel shades a 2-D histogram of every row (``density``) under a seeded
sample of the points (``sample_rows``, ``scatter``), and a panel of lines draws the median
and the interquartile band over every line (``band``) under a seeded sample of the lines.
The histograms, bands and box plots are transforms of the chart, evaluated by VegaFusion
when the figure is written (``output.save``): the figure embeds their results, not the
rows. The rows themselves stay in metrics.zarr and the CSVs, which each caption names.
Writing figures: ``output``.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

MAX_POINTS = 300  # points of one panel drawn one by one; beyond: density + seeded sample
MAX_LINES = 60  # lines of one panel drawn one by one; beyond: median, band + seeded sample
SAMPLE_LINES = 12  # lines drawn over the band
SEED = 0  # seeds every sample a figure draws
DENSITY_BINS = (40, 30)  # at most, along x and y
GREY = "#6f6f6f"


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int = SEED) -> pd.DataFrame:
    """At most ``max_rows`` rows (a seeded random sample), in their original order."""
    if len(frame) <= max_rows:
        return frame
    return frame.sample(max_rows, random_state=seed).sort_index()


def sample_groups(frame: pd.DataFrame, by, max_groups: int, seed: int = SEED) -> pd.DataFrame:
    """The rows of at most ``max_groups`` of the groups ``by`` (a seeded sample of them)."""
    keys = frame[by].drop_duplicates()
    if len(keys) <= max_groups:
        return frame
    chosen = keys.sample(max_groups, random_state=seed)
    return frame.merge(chosen, on=by, how="inner")


def density(frame: pd.DataFrame, x: str, y: str, x_channel: dict, y_channel: dict,
            x_log: bool, y_log: bool, what: str = "networks",
            bins: tuple[int, int] = DENSITY_BINS) -> alt.Chart:
    """A 2-D histogram of every row of ``frame`` as grey cells whose opacity is the count
    (log scale): bins on the log of a log axis. ``x_channel``/``y_channel``: the keyword
    arguments (title, scale, axis) of the layer it goes under, so the two share axes."""
    data = frame[[x, y]].rename(columns={x: "x", y: "y"})
    positive = [f"datum.{c} > 0" for c, log in (("x", x_log), ("y", y_log)) if log]
    finite = "isFinite(datum.x) && isFinite(datum.y)"
    chart = alt.Chart(data).transform_filter(" && ".join([finite, *positive]))
    fields = {}
    for c, log, maxbins in (("x", x_log, bins[0]), ("y", y_log, bins[1])):
        if log:
            chart = chart.transform_calculate(**{f"{c}_v": f"log(datum.{c}) / log(10)"})
        else:
            chart = chart.transform_calculate(**{f"{c}_v": f"datum.{c}"})
        chart = chart.transform_bin([f"{c}_b0", f"{c}_b1"], f"{c}_v", bin=alt.Bin(maxbins=maxbins))
        fields[c] = log
    chart = chart.transform_aggregate(count="count()",
                                      groupby=["x_b0", "x_b1", "y_b0", "y_b1"])
    for c, log in fields.items():
        for end in ("0", "1"):
            value = f"pow(10, datum.{c}_b{end})" if log else f"datum.{c}_b{end}"
            chart = chart.transform_calculate(**{f"{c}{end}": value})
    return chart.mark_rect(color=GREY, stroke=None, clip=True).encode(
        x=alt.X("x0:Q", **x_channel), x2="x1:Q", y=alt.Y("y0:Q", **y_channel), y2="y1:Q",
        opacity=alt.Opacity("count:Q", title=f"{what} per cell (all)",
                            scale=alt.Scale(type="log", range=[0.15, 0.85])),
        tooltip=[alt.Tooltip("count:Q", title=f"{what} in the cell")])


def scatter(frame: pd.DataFrame, points, x: str, y: str, x_channel: dict, y_channel: dict,
            x_log: bool, y_log: bool, what: str = "networks", max_points: int = MAX_POINTS,
            bins: tuple[int, int] = DENSITY_BINS):
    """``points(rows)`` (a chart of one mark per row) for every row of ``frame`` while there
    are at most ``max_points``; beyond, over ``density`` of all of them, for a seeded
    sample of ``max_points``. Returns (chart, note): the note says what is drawn, or None."""
    if len(frame) <= max_points:
        return points(frame), None
    shade = density(frame, x, y, x_channel, y_channel, x_log, y_log, what, bins)
    note = f"shading: all {len(frame):,} {what}; points: a seeded sample of {max_points}"
    return alt.layer(shade, points(sample_rows(frame, max_points))), note


def band(frame: pd.DataFrame, x: str, y: str, groupby: list[str], x_channel: dict,
         y_channel: dict, color: alt.Color | None = None) -> list:
    """Median line and interquartile band of ``y`` over the lines of ``frame`` at each
    ``x`` and group (VegaFusion aggregates them): two layers, black without ``color``."""
    data = frame[[x, y, *groupby]]
    base = alt.Chart(data).transform_aggregate(
        median=f"median({y})", q1=f"q1({y})", q3=f"q3({y})", lines="count()",
        groupby=[x, *groupby])
    encode = {"color": color} if color is not None else {}
    fixed = {} if color is not None else {"color": "#222222"}
    area = base.mark_area(opacity=0.25, **fixed).encode(
        x=alt.X(f"{x}:Q", **x_channel), y=alt.Y("q1:Q", **y_channel), y2="q3:Q", **encode)
    line = base.mark_line(strokeWidth=2.5, **fixed).encode(
        x=alt.X(f"{x}:Q", **x_channel), y=alt.Y("median:Q", **y_channel), **encode,
        tooltip=[*(alt.Tooltip(g) for g in groupby), alt.Tooltip(f"{x}:Q"),
                 alt.Tooltip("median:Q", format=TOOLTIP_FORMAT),
                 alt.Tooltip("q1:Q", format=TOOLTIP_FORMAT),
                 alt.Tooltip("q3:Q", format=TOOLTIP_FORMAT), alt.Tooltip("lines:Q")])
    return [area, line]


def panels(frame: pd.DataFrame, by: str, make, columns: int | None = None, **title):
    """One chart ``make(rows)`` per value of ``by`` (titled with it, in sorted order),
    concatenated in ``columns``; the chart itself when there is one value. Concatenated
    rather than faceted: VegaFusion evaluates the transforms of each panel (it leaves a
    facet's to the browser, which would embed every row)."""
    values = list(frame[by].dropna().unique())
    try:
        values = sorted(values)
    except TypeError:
        values = sorted(values, key=str)
    if len(values) <= 1:
        return make(frame).properties(**title)
    charts = [make(frame[frame[by] == value]).properties(title=f"{by}: {value}"
                                                           if by != "panel" else str(value))
              for value in values]
    return alt.concat(*charts, columns=columns or len(charts), **title)


# Tooltip number format: 4 significant digits instead of float64's 17.
TOOLTIP_FORMAT = ".4g"
MAX_LOG_TICKS = 6  # labels on one log axis; more collide ("400500")
# Plain numbers in [1e-3, 1e5), exponent notation outside, so labels stay short.
LOG_LABELS = ("datum.value >= 1e-3 && datum.value < 1e5 ? format(datum.value, ',~g')"
              " : format(datum.value, '~e')")


def tooltips(frame: pd.DataFrame, fields: list[str]) -> list[alt.Tooltip]:
    """Tooltip channels for ``fields``, numbers (floats) shown to TOOLTIP_FORMAT."""
    return [alt.Tooltip(f"{name}:Q", format=TOOLTIP_FORMAT)
            if name in frame and pd.api.types.is_float_dtype(frame[name]) else alt.Tooltip(name)
            for name in fields]


def _steps(mantissas, low_decade: int, high_decade: int) -> np.ndarray:
    """m × 10^k for every mantissa m and k in [low_decade, high_decade], ascending; parsed
    from text so that 1e-30 is exactly the float nearest 10^-30."""
    return np.array([float(f"{m}e{k}") for k in range(low_decade, high_decade + 1)
                     for m in mantissas])


def log_scale(*values) -> dict:
    """``scale`` and ``axis`` keyword arguments for a log axis fitted to the positive,
    finite entries of ``values`` (arrays or Series; zeros and NaN are ignored, since a log
    axis cannot show them).

    The domain is the tightest 1-2-5 interval around the data plus a margin, so an axis neither
    stretches over decades without data nor loses its ticks. At most MAX_LOG_TICKS labels
    are placed: on 1-2-5 values for a narrow range, else on 1-5, on powers of ten, or on
    every few powers of ten.
    """
    data = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values])
    data = data[np.isfinite(data) & (data > 0)]
    if data.size == 0:
        return {"scale": alt.Scale(type="log"), "axis": alt.Axis(labelExpr=LOG_LABELS)}
    decades = int(np.floor(np.log10(data.min()))) - 1, int(np.ceil(np.log10(data.max()))) + 1
    steps = _steps((1, 2, 5), *decades)
    # 10 % of margin, so no point sits on the frame (and one value still gets a range).
    lo = steps[steps <= data.min() / 1.1].max()
    hi = steps[steps >= data.max() * 1.1].min()
    for mantissas in ((1, 2, 5), (1, 5), (1,)):
        ticks = _steps(mantissas, *decades)
        ticks = ticks[(ticks >= lo) & (ticks <= hi)]
        if len(ticks) <= MAX_LOG_TICKS:
            break
    else:
        ticks = ticks[::int(np.ceil(len(ticks) / MAX_LOG_TICKS))]
    return {"scale": alt.Scale(type="log", domain=[float(lo), float(hi)], nice=False),
            "axis": alt.Axis(values=[float(t) for t in ticks], labelExpr=LOG_LABELS)}
