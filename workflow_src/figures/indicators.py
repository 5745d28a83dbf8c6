"""The two overview figures of the indicators.

- ``indicators_vs_gap_chart``: every indicator against the generalization gap (Novak et
  al. 2018 Fig. 4) as a grid of small multiples, ``GRID_COLUMNS`` wide, one panel per
  indicator (and per dataset, when the study has several), each with its own x axis and
  all with the same gap axis. A network whose optimizer for that indicator stopped short is
  drawn hollow, and a panel with any says in its title how many of its networks converged.
  A panel with more than ``common.MAX_POINTS`` networks shades all of them under a seeded
  sample of points.
- ``indicator_ranking_chart``: every indicator's granulated coefficient Ψ and Kendall τ
  with the gap (Jiang et al. 2020's headline table, from ``stats/summary.csv`` and
  ``stats/granulated.csv``), ranked by |Ψ|: τ with its bootstrap CI, Ψ with each axis's ψ
  it averages (the statistics give Ψ no CI); each mark coloured by whether its sign is
  the indicator's expected one.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..stats.datasets import AXIS, POOLED, pooled
from .common import log_scale, scatter, tooltips
from .studies import message

# A network's optimizer for an indicator (stats.optimizer_flags: 1.0, 0.0, NaN), in the
# column SEARCH (not "optimizer": that is the hyperparameter that trained the network)
OPTIMIZER_STATES = {1.0: "converged", 0.0: "stopped short"}
NOT_MEASURED = "not measured"
SEARCH = "optimizer_status"
STATUS_SHAPES = alt.Scale(domain=["converged", "unconverged", "diverged"],
                          range=["circle", "triangle-up", "cross"])
GRID_COLUMNS = 5  # panels a row with one dataset; with several, 6 // datasets indicators
PANEL = (150, 110)  # CSS pixels of one small multiple's plot area (PNG: x output.PNG_SCALE)
PANEL_POINTS = 60  # networks drawn one by one in a panel; beyond: shading + a sample
PANEL_BINS = (16, 12)  # the shading's cells, at most, along x and y
TITLE_SIZE, SUBTITLE_SIZE = 12, 10  # the smallest text of a panel stays >= 10 px
GAP_TITLE = ["generalization gap", "(train acc − test acc)"]


def _varying(frame: pd.DataFrame, hyperparameters: list[str]) -> list[str]:
    return [h for h in hyperparameters if h in frame and frame[h].nunique(dropna=False) > 1]


def converged_line(frame: pd.DataFrame) -> list[str]:
    """The optimizer's converged fraction over the panel's networks where it was measured,
    when it is below 1."""
    if SEARCH not in frame:
        return []
    measured = frame[SEARCH][frame[SEARCH] != NOT_MEASURED]
    n_converged = int((measured == OPTIMIZER_STATES[1.0]).sum())
    if n_converged == len(measured):
        return []
    return [f"optimizer converged: {n_converged} of {len(measured)} "
            f"({n_converged / len(measured):.0%})"]


def _describe(title: list[str]) -> list[str]:
    """studies.indicator_titles' first line as subtitle lines: what (per network or the mean
    over test points), then the expected sign."""
    what, *expected = title[0].split("; expected: ")
    what = ("mean over test points" if what.startswith("mean test ")
            else "per network" if what.endswith("(per network)") else what)
    return [what, *(f"expected: {e}" for e in expected)]


def _wrapped(text: str, log: bool, width: int = 26, lines: int = 3) -> list[str]:
    """An axis title (the units, in brackets) in lines that fit a small multiple."""
    import textwrap

    return textwrap.wrap(text + (", log scale" if log else ""), width, max_lines=lines,
                         placeholder=" …")


def _heading(text: str, subtitle: list[str], width: int) -> alt.TitleParams:
    return alt.TitleParams(text=text, subtitle=subtitle or "", fontSize=TITLE_SIZE,
                           subtitleFontSize=SUBTITLE_SIZE, limit=width + 40,
                           subtitlePadding=2, anchor="start")


def indicators_vs_gap_chart(networks: pd.DataFrame, titles: dict[str, list[str]],
                            hyperparameters: list[str], color_by: str,
                            flags: pd.DataFrame | None = None, columns: int = GRID_COLUMNS,
                            panel: tuple[int, int] = PANEL):
    """Each indicator vs the gap: a cell per indicator (a panel per dataset in it), the
    cells in a grid of ``columns`` panels a row (see the module doc). ``titles``: indicator
    -> [what it is; expected sign, units] (studies.indicator_titles); ``flags``:
    stats.optimizer_flags (index run_id)."""
    if not titles:
        return message("The metrics store marks no indicator")
    shown = _varying(networks, hyperparameters)  # for the tooltips
    datasets = sorted(networks["dataset"].unique())
    per_row = columns if len(datasets) == 1 else max(1, (columns + 1) // len(datasets))
    gap = networks["gap"].dropna()
    low, high = (float(gap.min()), float(gap.max())) if len(gap) else (0.0, 1.0)
    pad = 0.05 * (high - low) or 0.05
    gap_scale = alt.Scale(domain=[low - pad, high + pad], nice=False, zero=False)
    cells, stopped_short = [], False
    for i, name in enumerate(titles):
        charts = []
        for j, dataset in enumerate(datasets):
            frame = networks[networks["dataset"] == dataset]
            if flags is not None and name in flags:
                states = frame["run_id"].astype(str).map(flags[name]).map(OPTIMIZER_STATES)
                frame = frame.assign(**{SEARCH: states.fillna(NOT_MEASURED)})
            first = i % per_row == 0 and j == 0
            y = {"title": GAP_TITLE if first else None, "scale": gap_scale,
                 "axis": alt.Axis(labels=first, ticks=first, tickCount=4)}
            notes = converged_line(frame)
            stopped_short |= bool(notes)
            subtitle = notes if len(datasets) == 1 else [str(dataset), *notes]
            chart = _panel(frame, name, titles[name], y, shown, color_by, panel)
            if len(datasets) == 1:
                subtitle = [*_describe(titles[name]), *notes]
                charts.append(chart.properties(title=_heading(name, subtitle, panel[0])))
            else:
                charts.append(chart.properties(title=_heading(str(dataset), notes, panel[0])))
        cells.append(charts[0] if len(charts) == 1 else alt.hconcat(
            *charts, spacing=8, title=_heading(name, _describe(titles[name]),
                                               len(charts) * panel[0])))
    n_networks = len(networks)
    notes = [f"{n_networks} networks (every one in stats/networks.csv and metrics.zarr); "
             f"colour: {color_by}; shape: training status"
             + ("; hollow: the indicator's optimizer stopped short" if stopped_short else "")]
    if networks.groupby("dataset").size().max() > PANEL_POINTS:
        notes.append(f"a panel of more than {PANEL_POINTS} networks shades all of them and "
                     f"draws a seeded sample of {PANEL_POINTS}")
    return alt.concat(*cells, columns=per_row, spacing=14, title=alt.TitleParams(
        "Indicators vs generalization gap (Novak et al. Fig. 4): a panel per indicator"
        + (" and dataset" if len(datasets) > 1 else ""), subtitle=notes),
    ).configure_legend(orient="bottom", direction="horizontal")


def _panel(frame: pd.DataFrame, name: str, title: list[str], y: dict, shown: list[str],
           color_by: str, panel: tuple[int, int]):
    """One small multiple: indicator ``name`` against the gap, its own x axis."""
    values = frame[name]
    log = bool((values.dropna() > 0).all()) and values.notna().any()
    scale = log_scale(values) if log else {"scale": alt.Scale(zero=False)}
    axis = scale.pop("axis").to_dict() if "axis" in scale else {}
    x = {"title": _wrapped(title[-1], log), **scale,
         "axis": alt.Axis(**{"tickCount": 3, **axis, "labelOverlap": "greedy",
                             "titleFontSize": SUBTITLE_SIZE + 1})}
    color_type = "O" if pd.api.types.is_numeric_dtype(frame[color_by]) else "N"
    # tooltips: what is drawn and the run id (its hyperparameters: stats/networks.csv)
    fields = ["run_id", "status", "gap", name, *([color_by] if color_by in shown else [])]
    if SEARCH in frame:
        fields.insert(2, SEARCH)
    data = frame[list(dict.fromkeys([*fields, color_by]))]

    def points(rows):
        extra = {}
        if SEARCH in rows:  # hollow where the optimizer stopped short: fill off, the
            # outline in the network's colour
            extra = {"stroke": alt.Stroke(f"{color_by}:{color_type}", legend=None),
                     "fillOpacity": alt.condition(
                         alt.datum[SEARCH] == OPTIMIZER_STATES[0.0], alt.value(0.0),
                         alt.value(1.0))}
        return alt.Chart(rows).mark_point(size=36, filled=True, opacity=0.8).encode(
            x=alt.X(f"{name}:Q", **x), y=alt.Y("gap:Q", **y),
            color=alt.Color(f"{color_by}:{color_type}", title=color_by),
            shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"),
            tooltip=tooltips(rows, fields), **extra)

    chart, _ = scatter(data.dropna(subset=[name, "gap"]), points, name, "gap", x, y, log,
                       False, max_points=PANEL_POINTS, bins=PANEL_BINS)
    return chart.properties(width=panel[0], height=panel[1])


# --- The ranking chart ------------------------------------------------------------------
SIGNS = ["as expected", "reversed", "no sign"]
SIGN_COLOURS = alt.Scale(domain=SIGNS, range=["#009E73", "#D55E00", "#999999"])
ROW = 20  # pixels per indicator


def _agreement(value: pd.Series, expected: pd.Series) -> pd.Series:
    product = np.sign(value.astype(float)) * expected.astype(float)
    return pd.Series(np.select([product > 0, product < 0], SIGNS[:2], SIGNS[2]),
                     index=value.index)


def ranking_table(summary: pd.DataFrame, granulated: pd.DataFrame) -> tuple[pd.DataFrame,
                                                                            pd.DataFrame]:
    """(one row per indicator: rank order, Ψ, τ and its CI, the sign agreement of each;
    one row per (indicator, axis) averaged into Ψ: ψ) from summary.csv and granulated.csv,
    their rows over every network (``dataset`` = pooled) only."""
    summary, granulated = pooled(summary), pooled(granulated)
    table = summary.sort_values(["rank_psi", "rank_tau", "indicator"], na_position="last")
    note = table["indicator_note"].fillna("").astype(str) if "indicator_note" in table \
        else pd.Series("", index=table.index)
    rows = pd.DataFrame({
        "indicator": table["indicator"].astype(str),
        "rank_psi": table["rank_psi"], "rank_tau": table["rank_tau"],
        "psi": table["psi"], "tau": table["kendall_tau"],
        "tau_ci_low": table["kendall_tau_ci_low"], "tau_ci_high": table["kendall_tau_ci_high"],
        "expected_sign": table["expected_sign"], "n": table["n"],
        "psi_sign": _agreement(table["psi"], table["expected_sign"]),
        "tau_sign": (table["direction"].fillna("").astype(str).replace("", SIGNS[2])
                     if "direction" in table
                     else _agreement(table["kendall_tau"], table["expected_sign"])),
        "note": note})
    axes = granulated[(granulated["axis"] != "__all__") & granulated["psi"].notna()]
    if "note" in axes:  # axes left out of Ψ (seed) are not drawn with it
        axes = axes[~axes["note"].fillna("").astype(str).str.contains("not averaged")]
    axes = axes[axes["indicator"].isin(rows["indicator"])][["indicator", "axis", "psi"]]
    return rows.reset_index(drop=True), axes.reset_index(drop=True)


def indicator_ranking_chart(summary: pd.DataFrame, granulated: pd.DataFrame,
                            width: int = 230):
    """Ψ and τ of every indicator, one row each, ranked by |Ψ| (see the module doc)."""
    rows, axes = ranking_table(summary, granulated)
    if rows.empty:
        return message("No indicator was scored (stats/summary.csv is empty)")
    order = rows["indicator"].tolist()
    confidence = summary["confidence"].dropna()
    level = f"{float(confidence.iloc[0]):.0%} " if len(confidence) else ""
    y = alt.Y("indicator:N", sort=order, title=None,
              axis=alt.Axis(labelLimit=260, labelFontSize=12))
    colour = {"scale": SIGN_COLOURS, "title": "sign vs the expected one"}
    height = ROW * len(order)
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(
        color="#888888", strokeDash=[3, 3]).encode(x="zero:Q")
    x_range = alt.Scale(domain=[-1, 1], nice=False)
    info = ["indicator", "rank_psi", "rank_tau", "psi", "tau", "tau_ci_low", "tau_ci_high",
            "expected_sign", "n", "note"]

    ticks = alt.Chart(axes).mark_tick(color="#9a9a9a", thickness=1.5, size=10).encode(
        x=alt.X("psi:Q", scale=x_range), y=y,
        tooltip=[alt.Tooltip("indicator:N"), alt.Tooltip("axis:N", title="axis"),
                 alt.Tooltip("psi:Q", title="ψ of the axis", format=".3f")])
    psi = alt.Chart(rows).mark_point(size=90, filled=True).encode(
        x=alt.X("psi:Q", scale=x_range,
                title=["Ψ, granulated Kendall τ (mean of the axes' ψ)",
                       "grey ticks: each axis's ψ; no CI"]),
        y=y, color=alt.Color("psi_sign:N", **colour), tooltip=tooltips(rows, info))
    y = alt.Y("indicator:N", sort=order, title=None, axis=alt.Axis(labels=False, ticks=False))
    interval = alt.Chart(rows).mark_rule(strokeWidth=2.5).encode(
        x=alt.X("tau_ci_low:Q", scale=x_range), x2="tau_ci_high:Q", y=y,
        color=alt.Color("tau_sign:N", **colour))
    tau = alt.Chart(rows).mark_point(size=90, filled=True).encode(
        x=alt.X("tau:Q", scale=x_range,
                title=["Kendall τ with the gap", f"line: its {level}bootstrap CI"]),
        y=y, color=alt.Color("tau_sign:N", **colour), tooltip=tooltips(rows, info))
    left = alt.layer(zero, ticks, psi).properties(width=width, height=height, title="Ψ")
    right = alt.layer(zero, interval, tau).properties(width=width, height=height, title="τ")
    n = int(rows["n"].max()) if rows["n"].notna().any() else 0
    within = sorted(set(summary[AXIS].astype(str)) - {POOLED}) if AXIS in summary else []
    pooling = (f" of {len(within)} datasets pooled; each dataset's rows: stats/summary.csv, "
               "column dataset" if within else "")
    return alt.hconcat(left, right, spacing=12, title=alt.TitleParams(
        "Indicators ranked by |Ψ| (Jiang et al. 2020)", subtitle=[
            f"granulated Ψ and Kendall τ with the generalization gap over {n} converged "
            f"networks{pooling}",
            "colour: whether the sign is the indicator's expected one (stats/summary.csv: "
            "expected_sign, direction)"]),
    ).resolve_scale(y="shared").configure_legend(orient="bottom", direction="horizontal")
