"""Figures of the study presets: Zhang et al. 2017's Figure 1 and Novak et al. 2018's factor
and correlation figures, drawn for every study from tidy tables.

- ``learning_curves_chart``: training loss vs step, one line per network, coloured by label
  noise and dashed by input corruption (Zhang et al., arXiv 1611.03530, Fig. 1a);
- ``time_to_fit_chart``: steps and seconds to the target training accuracy vs label noise
  (Fig. 1b); ``test_error_chart``: test error vs label noise with chance 1 − 1/K (Fig. 1c);
- ``factor_chart``: an indicator at both sides of each two-valued factor, pair by pair, and
  the paired differences (Novak et al., arXiv 1802.08760, §4.2);
- ``indicators_vs_gap_chart``: each indicator vs the generalization gap, one panel per
  dataset (Novak et al. Fig. 4); a network whose optimizer for that indicator did not
  converge is drawn hollow.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from ..stats.tables import network_indicators, point_indicators
from .common import log_scale, tooltips

# A network's optimizer for an indicator (stats.optimizer_flags: 1.0, 0.0, NaN)
OPTIMIZER_STATES = {1.0: "converged", 0.0: "stopped short"}
NOT_MEASURED = "not measured"

CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
           "svhn": 10}
STATUS_SHAPES = alt.Scale(domain=["converged", "unconverged", "diverged"],
                          range=["circle", "triangle-up", "cross"])
# Grouping by architecture gets one panel (or dash pattern) each only while it stays legible.
MAX_PANELS = 4
PANEL_COLUMNS = 2  # wrapped facets: a study with many panels grows down, not sideways
FACTOR_INDICATORS = ("jacobian_norm", "transitions_exact")
# pairs.csv columns that are not hyperparameters of the pair
PAIR_COLUMNS = {"factor", "contrast", "level_a", "level_b", "indicator", "run_id_a", "run_id_b",
                "value_a", "value_b"}


def varying(frame: pd.DataFrame, hyperparameters: list[str]) -> list[str]:
    return [h for h in hyperparameters if frame[h].nunique(dropna=False) > 1]


def with_group(frame: pd.DataFrame, hyperparameters: list[str], exclude: tuple) -> pd.DataFrame:
    """Adds ``group``: the varying hyperparameters outside ``exclude``, as one label."""
    others = [h for h in varying(frame, hyperparameters) if h not in exclude]
    if not others:
        return frame.assign(group="all networks")
    labels = frame[others].astype(str).apply(
        lambda row: ", ".join(f"{h}={v}" for h, v in row.items()), axis=1)
    return frame.assign(group=labels)


def _facet(chart, frame: pd.DataFrame, row: str | None = None, column: str | None = None):
    """Facet by the given columns when they have several values; headers name the column."""
    channels = {}
    if row and frame[row].nunique() > 1:
        channels["row"] = alt.Row(f"{row}:N", title=row)
    if column and frame[column].nunique() > 1:
        channels["column"] = alt.Column(f"{column}:N", title=column)
    return chart.facet(**channels) if channels else chart


def _by_group(frame: pd.DataFrame) -> dict:
    """Encoding of the group: a dash pattern per group when there are a few, else one
    unlabelled line each."""
    if 1 < frame["group"].nunique() <= MAX_PANELS:
        return {"strokeDash": alt.StrokeDash("group:N", title="network")}
    return {"detail": alt.Detail("group:N")}


def indicator_titles(ds: xr.Dataset) -> dict[str, list[str]]:
    """Two-line axis title per indicator: what it is per network, then its units."""
    titles = {}
    for name in point_indicators(ds) + network_indicators(ds):
        what = f"mean test {name}" if name in point_indicators(ds) else f"{name} (per network)"
        sign = ds[name].attrs.get("expected_sign")
        if sign is not None:  # the direction the indicator is expected to go with the gap
            what += "; expected: larger gap" if sign > 0 else "; expected: smaller gap"
        titles[name] = [what, f"[{ds[name].attrs.get('units', 'units in metrics.zarr')}]"]
    return titles


def fit_table(curves: pd.DataFrame, hyperparameters: list[str]) -> pd.DataFrame:
    """One row per run from its last evaluation: steps and seconds spent, final accuracies."""
    last = curves.sort_values("step").groupby("run_id", sort=False).tail(1)
    fits = last.rename(columns={"step": "steps"}).reset_index(drop=True)
    fits["test_error"] = 1.0 - fits["test_acc"]
    fits["chance"] = 1.0 - 1.0 / fits["dataset"].map(CLASSES)
    return with_group(fits, hyperparameters, exclude=("dataset", "corruption", "label_noise"))


def learning_curves_chart(curves: pd.DataFrame, hyperparameters: list[str], width: int,
                          height: int):
    """Zhang et al. Fig. 1a: training loss against optimizer steps, one line per network."""
    frame = with_group(curves, hyperparameters, exclude=("dataset", "corruption", "label_noise"))
    tooltip = tooltips(frame, ["run_id", "status", "step", "train_loss", "train_acc", "test_acc",
                               *varying(frame, hyperparameters)])
    # One panel per dataset, and per architecture group while there are few groups.
    panel = frame["dataset"].astype(str)
    if 1 < frame["group"].nunique() <= MAX_PANELS:
        panel = panel + ", " + frame["group"]
    frame = frame.assign(panel=panel)
    lines = (
        alt.Chart()
        .mark_line(opacity=0.8)
        .encode(
            x=alt.X("step:Q", title="optimizer steps (updates)"),
            y=alt.Y("train_loss:Q", title="training loss (cross-entropy, nats)"),
            color=alt.Color("label_noise:O", title="label noise p"),
            strokeDash=alt.StrokeDash("corruption:N", title="input corruption"),
            detail="run_id:N",
            tooltip=tooltip,
        )
        .properties(width=width, height=height)
    )
    return alt.layer(lines, data=frame).facet(
        facet=alt.Facet("panel:N", title=None, header=alt.Header(labelLimit=2 * width)),
        columns=min(frame["panel"].nunique(), PANEL_COLUMNS),
        title="Training loss while fitting (Zhang et al. Fig. 1a)")


def _noise_axis() -> alt.X:
    return alt.X("label_noise:Q", scale=alt.Scale(domain=[0, 1]),
                 title="label noise p (probability a training label is redrawn)")


def _versus_noise(fits: pd.DataFrame, field: str, title: str, hyperparameters: list[str],
                  width: int, height: int) -> alt.LayerChart:
    """Points per network against label noise; lines join converged networks of one group."""
    tooltip = tooltips(fits, ["run_id", "status", "steps", "seconds", "test_error",
                              *varying(fits, hyperparameters)])
    base = alt.Chart().encode(x=_noise_axis(), y=alt.Y(f"{field}:Q", title=title),
                              color=alt.Color("corruption:N", title="input corruption"))
    lines = (base.transform_filter(alt.datum.status == "converged")
             .mark_line(opacity=0.7).encode(**_by_group(fits)))
    points = base.mark_point(size=70, filled=True).encode(
        shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"), tooltip=tooltip)
    return alt.layer(lines, points).properties(width=width, height=height)


def time_to_fit_chart(fits: pd.DataFrame, hyperparameters: list[str], width: int, height: int):
    """Zhang et al. Fig. 1b: cost of reaching the target training accuracy vs label noise.

    Unconverged networks are drawn as triangles: their steps and seconds are the budget
    spent without reaching the target, a lower bound on the time to fit.
    """
    panels = [
        _facet(alt.layer(_versus_noise(fits, field, title, hyperparameters, width, height),
                         data=fits), fits, column="dataset")
        for field, title in (("steps", "optimizer steps to reach the target (updates)"),
                             ("seconds", "wall time to reach the target (s)"))
    ]
    return alt.hconcat(*panels, title="Time to fit the training set (Zhang et al. Fig. 1b); "
                                      "triangles: target not reached")


def test_error_chart(fits: pd.DataFrame, hyperparameters: list[str], width: int, height: int):
    """Zhang et al. Fig. 1c: test error (clean test labels) vs label noise, chance dashed."""
    points = _versus_noise(fits, "test_error", "test error (fraction, clean test labels)",
                           hyperparameters, width, height)
    chance = alt.Chart().mark_rule(strokeDash=[5, 4], color="#555555").encode(
        y="max(chance):Q", tooltip=[alt.Tooltip("max(chance):Q", title="chance 1 − 1/K",
                                                format=".4g")])
    chart = alt.layer(points, chance, data=fits,
                      title="Test error vs label noise (Zhang et al. Fig. 1c); "
                            "dashed: chance 1 − 1/K")
    return _facet(chart, fits, column="dataset")


def pair_sides(pairs: pd.DataFrame) -> pd.DataFrame:
    """Long form of matched pairs: one row per (pair, side) with the level as text."""
    pairs = pairs.assign(pair=np.arange(len(pairs)), diff=pairs["value_b"] - pairs["value_a"])
    sides = []
    for side in ("a", "b"):
        sides.append(pairs.assign(side=side, level=pairs[f"level_{side}"].astype(str),
                                  value=pairs[f"value_{side}"], run_id=pairs[f"run_id_{side}"]))
    return pd.concat(sides, ignore_index=True)


def factor_chart(pairs: pd.DataFrame, tests: pd.DataFrame, titles: dict[str, list[str]],
                 width: int, height: int):
    """Novak et al. §4.2: per factor, the indicator of each network of a matched pair (lines
    join the pair) and the paired differences level_b − level_a with the median's CI."""
    shown = [name for name in FACTOR_INDICATORS if name in set(pairs["indicator"])]
    if not shown:
        return _message("No two-valued factor with matched pairs in this study "
                        "(see stats/paired.csv)")
    rows = []
    for name in shown:
        sub = pairs[pairs["indicator"] == name]
        others = [c for c in sub.columns if c not in PAIR_COLUMNS]
        sides = pair_sides(sub)
        log = bool((sides["value"] > 0).all())
        slopes = alt.Chart(sides).mark_line(point=True, opacity=0.7).encode(
            x=alt.X("level:N", sort=alt.EncodingSortField("side"), title=None),
            y=alt.Y("value:Q", title=titles.get(name, name),
                    **(log_scale(sides["value"]) if log else {})),
            detail="pair:N",
            color=alt.Color("factor:N", legend=None),
            tooltip=tooltips(sides, ["contrast", "level", "run_id", "value", *others]),
        ).properties(width=max(140, width // 3), height=height).facet(
            column=alt.Column("contrast:N", title=None, header=alt.Header(labelLimit=180))
        ).resolve_scale(x="independent")
        rows.append(alt.hconcat(slopes, _differences(sub, tests[tests["indicator"] == name],
                                                     name, height)))
    return alt.vconcat(*rows, title="Matched pairs differing in one factor (Novak et al. §4.2): "
                                    "lines join the two networks of a pair")


def _differences(sub: pd.DataFrame, tests: pd.DataFrame, name: str, height: int):
    """Paired differences per contrast: one dot per pair, median with its bootstrap CI."""
    diffs = sub.assign(diff=sub["value_b"] - sub["value_a"])
    x = alt.X("contrast:N", title=None, axis=alt.Axis(labelAngle=-30, labelLimit=240))
    y_title = [f"paired difference of {name}", "(level_b − level_a; black: median, CI)"]
    dots = alt.Chart(diffs).mark_circle(size=45, opacity=0.6).encode(
        x=x, y=alt.Y("diff:Q", title=y_title), color=alt.Color("factor:N", legend=None),
        tooltip=tooltips(diffs, ["contrast", "run_id_a", "run_id_b", "value_a", "value_b",
                                 "diff"]))
    tested = tests.dropna(subset=["median_diff"])
    interval = alt.Chart(tested).mark_rule(strokeWidth=2, color="black").encode(
        x=x, y=alt.Y("median_diff_ci_low:Q", title=y_title), y2="median_diff_ci_high:Q")
    median = alt.Chart(tested).mark_tick(color="black", thickness=3, size=22).encode(
        x=x, y="median_diff:Q",
        tooltip=tooltips(tested, ["contrast", "n_pairs", "median_diff", "median_diff_ci_low",
                                  "median_diff_ci_high", "rank_biserial", "p_value",
                                  "p_adjusted"]))
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(y="zero:Q")
    return alt.layer(zero, dots, interval, median).properties(width=alt.Step(90), height=height)


def indicators_vs_gap_chart(networks: pd.DataFrame, titles: dict[str, list[str]],
                            hyperparameters: list[str], color_by: str, width: int, height: int,
                            flags: pd.DataFrame | None = None):
    """Novak et al. Fig. 4: each indicator vs the gap, one row per indicator and one panel
    per dataset; the shape marks networks that missed the target. ``flags``
    (stats.optimizer_flags, index run_id): for an indicator found by an optimizer, the
    networks where it stopped short are hollow, and a panel with any says how many of its
    networks converged in its title."""
    if not titles:
        return _message("The metrics store marks no indicator")
    shown = varying(networks, hyperparameters)  # for the tooltips
    rows = []
    for name, title in titles.items():
        log = bool((networks[name].dropna() > 0).all())
        x_title = [*title[:-1], f"{title[-1]}{', log scale' if log else ''}"]
        frame = networks
        if flags is not None and name in flags:
            states = networks["run_id"].astype(str).map(flags[name]).map(OPTIMIZER_STATES)
            frame = networks.assign(optimizer=states.fillna(NOT_MEASURED))
        panels = [_indicator_panel(frame[frame["dataset"] == dataset], name, x_title, log,
                                   shown, color_by, width, height)
                  for dataset in sorted(networks["dataset"].unique())]
        rows.append(alt.hconcat(*panels))
    return alt.vconcat(*rows, title="Indicators vs generalization gap, one panel per dataset "
                                    "(Novak et al. Fig. 4)")


def _panel_title(networks: pd.DataFrame) -> str | list[str]:
    """The dataset, and lines with the optimizer's converged fraction when it is below 1
    (over the panel's networks where it was measured)."""
    title = str(networks["dataset"].iloc[0])
    if "optimizer" not in networks:
        return title
    measured = networks["optimizer"][networks["optimizer"] != NOT_MEASURED]
    n_converged = int((measured == OPTIMIZER_STATES[1.0]).sum())
    if n_converged == len(measured):
        return title
    return [title, f"optimizer converged: {n_converged} of {len(measured)} "
                   f"({n_converged / len(measured):.0%})", "hollow: stopped short"]


def _indicator_panel(networks: pd.DataFrame, name: str, x_title: list[str], log: bool,
                     shown: list[str], color_by: str, width: int, height: int):
    """One dataset's networks: indicator ``name`` against the gap, its own x axis."""
    color_type = "O" if pd.api.types.is_numeric_dtype(networks[color_by]) else "N"
    x_scale = log_scale(networks[name]) if log else {"scale": alt.Scale(zero=False)}
    color = alt.Color(f"{color_by}:{color_type}", title=color_by)
    extra, fields = {}, ["run_id", "status", "gap", name, *shown]
    if "optimizer" in networks:  # hollow where the optimizer stopped short: fill off, the
        # outline in the network's colour
        extra = {"stroke": alt.Stroke(f"{color_by}:{color_type}", legend=None),
                 "fillOpacity": alt.condition(
                     alt.datum.optimizer == OPTIMIZER_STATES[0.0], alt.value(0.0),
                     alt.value(1.0))}
        fields.insert(2, "optimizer")
    return alt.Chart(networks, title=_panel_title(networks)).mark_point(
        size=70, filled=True, opacity=0.8).encode(
        x=alt.X(f"{name}:Q", title=x_title, **x_scale),
        y=alt.Y("gap:Q", title="generalization gap (train acc − test acc, fraction)"),
        color=color,
        shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"),
        tooltip=tooltips(networks, fields), **extra,
    ).properties(width=width, height=height)


def _message(text: str) -> alt.Chart:
    """A chart that only says why there is nothing to draw."""
    return alt.Chart(pd.DataFrame({"text": [text]})).mark_text(size=14).encode(text="text:N")


def double_descent_table(networks: pd.DataFrame, n_train: int) -> pd.DataFrame:
    """One row per network and error kind (train / test): n_parameters, error, and the
    interpolation threshold n_train x classes of its dataset (Belkin et al. 2019)."""
    frame = networks.assign(train_error=1.0 - networks["train_acc"],
                            test_error=1.0 - networks["test_acc"],
                            threshold=n_train * networks["dataset"].map(CLASSES))
    keep = ["run_id", "dataset", "label_noise", "depth", "width", "n_parameters", "status",
            "threshold"]
    long = frame.melt(id_vars=keep, value_vars=["train_error", "test_error"], var_name="error",
                      value_name="value")
    long["error"] = long["error"].str.replace("_error", "")
    return long.sort_values(["dataset", "label_noise", "depth", "error", "n_parameters"])


def double_descent_chart(networks: pd.DataFrame, n_train: int, width: int, height: int):
    """Model-wise double descent (Belkin et al. 2019 Fig. 2; Nakkiran et al. 2019 Fig. 1):
    training and test error (test: clean labels) against the number of parameters, one
    line per (label noise, depth), one panel per dataset; the dashed rule marks the
    interpolation threshold n_train x classes. Every network is drawn, fitted or not (the
    triangle marks those that missed the training target)."""
    if "n_parameters" not in networks:
        return _message("n_parameters is not in metrics.zarr: enable measure.norms")
    table = double_descent_table(networks, n_train)
    table["line"] = ("noise " + table["label_noise"].astype(str) + ", depth "
                     + table["depth"].astype(str) + ", " + table["error"])
    base = alt.Chart(table)
    lines = base.mark_line(point=False).encode(
        x=alt.X("n_parameters:Q", title="parameters (count, log scale)",
                scale=alt.Scale(type="log")),
        y=alt.Y("value:Q", title="error (fraction; test: clean labels)"),
        color=alt.Color("line:N", title="label noise, depth, error"),
        strokeDash=alt.StrokeDash("error:N", title="error",
                                  scale=alt.Scale(domain=["test", "train"],
                                                  range=[[1, 0], [4, 3]])))
    points = base.mark_point(size=60, filled=True).encode(
        x="n_parameters:Q", y="value:Q", color="line:N",
        shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"),
        tooltip=tooltips(table, ["run_id", "width", "depth", "n_parameters", "error", "value",
                                 "status"]))
    # One threshold per dataset: every row of a panel carries the same value.
    rule = base.mark_rule(strokeDash=[6, 4], color="gray").encode(x="mean(threshold):Q")
    label = base.mark_text(align="left", dx=4, color="gray").encode(
        x="mean(threshold):Q", y=alt.value(10), text=alt.value("n_train x classes"))
    layered = alt.layer(lines, points, rule, label).properties(width=width, height=height)
    return layered.facet(column=alt.Column("dataset:N", title=None)).properties(
        title="Model-wise double descent: error against parameters (Belkin et al. 2019)")
