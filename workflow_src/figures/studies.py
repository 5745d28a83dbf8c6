"""Figures of the study presets: Zhang et al. 2017's Figure 1 and Novak et al. 2018's factor
and correlation figures, drawn for every study from tidy tables.

- ``learning_curves_chart``: training loss vs step, one line per network, coloured by label
  noise and dashed by input corruption (Zhang et al., arXiv 1611.03530, Fig. 1a);
- ``time_to_fit_chart``: steps and seconds to the target training accuracy vs label noise
  (Fig. 1b); ``test_error_chart``: test error vs label noise with chance 1 − 1/K (Fig. 1c);
- ``factor_chart``: an indicator at both sides of each two-valued factor, pair by pair, and
  the paired differences (Novak et al., arXiv 1802.08760, §4.2);
- ``indicator_titles``: what each indicator is, for the overview figures (``indicators``).

A study of many networks gets the same figures at a bounded size (``common``): learning
curves as the median and interquartile band over the networks with a seeded sample of
them, per-network points as a seeded sample over their quartiles, matched pairs as a
seeded sample of pairs; every network stays in curves.csv and the statistics' CSVs.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from ..stats.tables import network_indicators, point_indicators
from .common import (MAX_LINES, MAX_POINTS, SAMPLE_LINES, band, log_scale, panels,
                     sample_groups, sample_rows, tooltips)

CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
           "svhn": 10}
STATUS_SHAPES = alt.Scale(domain=["converged", "unconverged", "diverged"],
                          range=["circle", "triangle-up", "cross"])
# Grouping by architecture gets one panel (or dash pattern) each only while it stays legible.
MAX_PANELS = 4
PANEL_COLUMNS = 2  # wrapped facets: a study with many panels grows down, not sideways
FACTOR_INDICATORS = ("jacobian_norm", "transitions_exact")
FACTOR_PAIRS = 40  # pairs of a contrast drawn (a seeded sample beyond)
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
    labels = f"{others[0]}=" + frame[others[0]].astype(str)
    for h in others[1:]:
        labels = labels + f", {h}=" + frame[h].astype(str)
    return frame.assign(group=labels)


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
    """One row per run: final accuracies from its last evaluation; steps and seconds to fit
    from the evaluation at its ``fit_step`` (the same one unless it trained on with a fixed
    budget, training.stop_at_target: false), else the budget spent."""
    ordered = curves.sort_values("step")
    last = ordered.groupby("run_id", sort=False).tail(1)
    fits = last.rename(columns={"step": "steps"}).reset_index(drop=True)
    if "fit_step" in fits:
        at_fit = ordered[ordered["step"] == ordered["fit_step"]].set_index("run_id")
        fitted = fits["run_id"].isin(at_fit.index)
        ids = fits.loc[fitted, "run_id"]
        fits.loc[fitted, "steps"] = at_fit.loc[ids, "step"].to_numpy()
        fits.loc[fitted, "seconds"] = at_fit.loc[ids, "seconds"].to_numpy()
    fits["test_error"] = 1.0 - fits["test_acc"]
    fits["chance"] = 1.0 - 1.0 / fits["dataset"].map(CLASSES)
    return with_group(fits, hyperparameters, exclude=("dataset", "corruption", "label_noise"))


def learning_curves_chart(curves: pd.DataFrame, hyperparameters: list[str], width: int,
                          height: int):
    """Zhang et al. Fig. 1a: training loss against optimizer steps, one line per network;
    with more than MAX_LINES networks, per (label noise, corruption) the median and
    interquartile band over the networks still training at each step, under a seeded
    sample of SAMPLE_LINES networks' lines."""
    frame = with_group(curves, hyperparameters, exclude=("dataset", "corruption", "label_noise"))
    shown = varying(frame, hyperparameters)
    # One panel per dataset, and per architecture group while there are few groups.
    panel = frame["dataset"].astype(str)
    if 1 < frame["group"].nunique() <= MAX_PANELS:
        panel = panel + ", " + frame["group"]
    frame = frame.assign(panel=panel)
    n_runs = frame["run_id"].nunique()
    many = n_runs > MAX_LINES
    x = {"title": "optimizer steps (updates)"}
    y = {"title": "training loss (the network's loss_function)"}
    color = alt.Color("label_noise:O", title="label noise p")
    fields = ["run_id", "status", "step", "train_loss", "train_acc", "test_acc", *shown]

    def make(rows):
        lines = rows[list(dict.fromkeys([*fields, "label_noise", "corruption"]))]
        if many:
            lines = sample_groups(lines, ["run_id"], SAMPLE_LINES)
        layers = [alt.Chart(lines).mark_line(opacity=0.45 if many else 0.8,
                                             strokeWidth=1 if many else 2).encode(
            x=alt.X("step:Q", **x), y=alt.Y("train_loss:Q", **y), color=color,
            strokeDash=alt.StrokeDash("corruption:N", title="input corruption"),
            detail="run_id:N", tooltip=tooltips(lines, fields))]
        if many:
            layers = band(rows, "step", "train_loss", ["label_noise", "corruption"], x, y,
                          color) + layers
        return alt.layer(*layers).properties(width=width, height=height)

    title = "Training loss while fitting (Zhang et al. Fig. 1a)"
    if many:
        title = [title, f"{n_runs} networks: median and interquartile band over the networks "
                        f"still training at each step; thin lines: a seeded sample of "
                        f"{SAMPLE_LINES}; every curve in curves.csv"]
    return panels(frame, "panel", make, min(frame["panel"].nunique(), PANEL_COLUMNS),
                  title=title)


def _noise_axis() -> dict:
    return {"scale": alt.Scale(domain=[0, 1]),
            "title": "label noise p (probability a training label is redrawn)"}


def _versus_noise(fits: pd.DataFrame, field: str, title: str, hyperparameters: list[str],
                  width: int, height: int):
    """Points per network against label noise; lines join converged networks of one group.
    With more than MAX_POINTS networks: per corruption, the median (line) and the
    interquartile range (bars) over the networks at each noise level, and a seeded sample
    of MAX_POINTS networks' points."""
    fields = ["run_id", "status", "steps", "seconds", "test_error",
              *varying(fits, hyperparameters)]
    frame = fits[list(dict.fromkeys([*fields, field, "label_noise", "corruption", "group",
                                     "chance"]))]
    x, y = _noise_axis(), {"title": title}
    color = alt.Color("corruption:N", title="input corruption")
    many = len(frame) > MAX_POINTS
    shown = sample_rows(frame, MAX_POINTS)
    points = alt.Chart(shown).mark_point(size=70 if not many else 30, filled=True,
                                         opacity=0.9 if not many else 0.5).encode(
        x=alt.X("label_noise:Q", **x), y=alt.Y(f"{field}:Q", **y), color=color,
        shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"),
        tooltip=tooltips(shown, fields))
    if not many:
        lines = alt.Chart(frame).transform_filter(alt.datum.status == "converged").mark_line(
            opacity=0.7).encode(x=alt.X("label_noise:Q", **x), y=alt.Y(f"{field}:Q", **y),
                                color=color, **_by_group(frame))
        return alt.layer(lines, points).properties(width=width, height=height)
    stats = alt.Chart(frame[["label_noise", "corruption", field]]).transform_aggregate(
        median=f"median({field})", q1=f"q1({field})", q3=f"q3({field})", networks="count()",
        groupby=["label_noise", "corruption"])
    iqr = stats.mark_rule(strokeWidth=3, opacity=0.6).encode(
        x=alt.X("label_noise:Q", **x), y=alt.Y("q1:Q", **y), y2="q3:Q", color=color)
    median = stats.mark_line(strokeWidth=2.5).encode(
        x=alt.X("label_noise:Q", **x), y=alt.Y("median:Q", **y), color=color,
        tooltip=["corruption:N", "label_noise:Q", alt.Tooltip("median:Q", format=".4g"),
                 alt.Tooltip("q1:Q", format=".4g"), alt.Tooltip("q3:Q", format=".4g"),
                 "networks:Q"])
    return alt.layer(iqr, median, points).properties(width=width, height=height)


def _sampled_note(fits: pd.DataFrame) -> str:
    return (f"; {len(fits)} networks: lines the median, bars the interquartile range, points a "
            f"seeded sample of {MAX_POINTS}" if len(fits) > MAX_POINTS else "")


def time_to_fit_chart(fits: pd.DataFrame, hyperparameters: list[str], width: int, height: int):
    """Zhang et al. Fig. 1b: cost of reaching the target training accuracy vs label noise.

    Unconverged networks are drawn as triangles: their steps and seconds are the budget
    spent without reaching the target, a lower bound on the time to fit.
    """
    charts = [
        panels(fits, "dataset", lambda rows, f=field, t=title: _versus_noise(
            rows, f, t, hyperparameters, width, height))
        for field, title in (("steps", "optimizer steps to reach the target (updates)"),
                             ("seconds", "wall time to reach the target (s)"))
    ]
    return alt.hconcat(*charts, title="Time to fit the training set (Zhang et al. Fig. 1b); "
                                      "triangles: target not reached" + _sampled_note(fits))


def test_error_chart(fits: pd.DataFrame, hyperparameters: list[str], width: int, height: int):
    """Zhang et al. Fig. 1c: test error (clean test labels) vs label noise, chance dashed."""
    def make(rows):
        points = _versus_noise(rows, "test_error", "test error (fraction, clean test labels)",
                               hyperparameters, width, height)
        chance = alt.Chart(pd.DataFrame({"chance": [float(rows["chance"].max())]})).mark_rule(
            strokeDash=[5, 4], color="#555555").encode(
            y="chance:Q", tooltip=[alt.Tooltip("chance:Q", title="chance 1 − 1/K", format=".4g")])
        return alt.layer(points, chance)

    return panels(fits, "dataset", make,
                  title="Test error vs label noise (Zhang et al. Fig. 1c); dashed: chance "
                        "1 − 1/K" + _sampled_note(fits))


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
        return message("No two-valued factor with matched pairs in this study "
                        "(see stats/paired.csv)")
    rows = []
    n_pairs = 0
    for name in shown:
        sub = pairs[pairs["indicator"] == name]
        n_pairs = max(n_pairs, sub.groupby("contrast").size().max())
        others = [c for c in sub.columns if c not in PAIR_COLUMNS]
        sides = pair_sides(sub)
        log = bool((sides["value"] > 0).all())
        scale = log_scale(sides["value"]) if log else {}
        # at most FACTOR_PAIRS pairs a contrast (a seeded sample), their own columns only
        sides = pd.concat([sample_groups(group, ["pair"], FACTOR_PAIRS)
                           for _, group in sides.groupby("contrast", sort=False)])
        sides = sides[["contrast", "factor", "side", "level", "pair", "run_id", "value", *others]]
        slopes = alt.Chart(sides).mark_line(point=True, opacity=0.7).encode(
            x=alt.X("level:N", sort=alt.EncodingSortField("side"), title=None),
            y=alt.Y("value:Q", title=titles.get(name, name), **scale),
            detail="pair:N",
            color=alt.Color("factor:N", legend=None),
            tooltip=tooltips(sides, ["contrast", "level", "run_id", "value", *others]),
        ).properties(width=max(140, width // 3), height=height).facet(
            column=alt.Column("contrast:N", title=None, header=alt.Header(labelLimit=180))
        ).resolve_scale(x="independent")
        rows.append(alt.hconcat(slopes, _differences(sub, tests[tests["indicator"] == name],
                                                     name, height)))
    title = ("Matched pairs differing in one factor (Novak et al. §4.2): lines join the two "
             "networks of a pair")
    if n_pairs > FACTOR_PAIRS:
        title = [title, f"up to {n_pairs} pairs a contrast: lines and dots a seeded sample of "
                        f"{FACTOR_PAIRS} pairs each; medians and CIs over every pair "
                        "(stats/pairs.csv, stats/paired.csv)"]
    return alt.vconcat(*rows, title=title)


def _differences(sub: pd.DataFrame, tests: pd.DataFrame, name: str, height: int):
    """Paired differences per contrast: one dot per pair, median with its bootstrap CI."""
    diffs = sub.assign(diff=sub["value_b"] - sub["value_a"], pair=np.arange(len(sub)))
    diffs = pd.concat([sample_groups(group, ["pair"], FACTOR_PAIRS)
                       for _, group in diffs.groupby("contrast", sort=False)])
    diffs = diffs[["contrast", "factor", "run_id_a", "run_id_b", "value_a", "value_b", "diff"]]
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


def message(text: str) -> alt.Chart:
    """A chart that only says why there is nothing to draw."""
    return alt.Chart(pd.DataFrame({"text": [text]})).mark_text(size=14).encode(text="text:N")

