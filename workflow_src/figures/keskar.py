"""Keskar et al. 2017 (arXiv 1609.04836) Fig. 3: loss and accuracy along the line through a
small-batch and a large-batch solution, w(α) = α·w_large + (1 − α)·w_small.

``keskar_1d_chart`` draws the table of ``rule keskar_interpolation``
(``stats/keskar_interpolation.csv``, from ``metrics.interpolation.interpolate``):

- x is α; α = 0 (the small-batch network) and α = 1 (the large-batch one) are marked by
  dotted rules labelled "small batch" and "large batch";
- two panels one above the other instead of the authors' twin y axes: the cross-entropy
  (log axis, as in the authors' PyTorch script) above, the accuracy below, so each has an
  axis of its own and no line must be matched to an axis by colour;
- train solid, test dashed (as in the paper), and coloured too;
- one column of panels per pair while there are at most ``MAX_PANELS`` pairs (the header
  names the pair's batch sizes and what else varies between pairs); with more, every pair
  is a thin line in one column of panels, told apart in the tooltips; with more than
  ``common.MAX_LINES`` pairs, the median and interquartile band over the pairs at each α
  under a seeded sample of ``common.SAMPLE_LINES`` pairs' lines (every pair in the CSV).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from .common import MAX_LINES, SAMPLE_LINES, band, log_scale, sample_groups, tooltips
from .studies import MAX_PANELS, message

SPLITS = alt.Scale(domain=["train", "test"], range=["#0072B2", "#D55E00"])
DASHES = alt.Scale(domain=["train", "test"], range=[[1, 0], [6, 4]])
ENDS = {0.0: "small batch", 1.0: "large batch"}
# csv columns that are not hyperparameters shared by the pair
TABLE_COLUMNS = {"small_run", "large_run", "batch_small", "batch_large", "alpha", "train_loss",
                 "train_acc", "test_loss", "test_acc"}


def pair_labels(table: pd.DataFrame) -> pd.Series:
    """One label per row: "batch <small> vs <large>" and the shared hyperparameters that
    differ between the study's pairs (e.g. "depth=2")."""
    shared = [c for c in table.columns if c not in TABLE_COLUMNS]
    varying = [c for c in shared if table[c].nunique(dropna=False) > 1]
    labels = "batch " + table["batch_small"].astype(str) + " vs " + table["batch_large"].astype(str)
    for column in varying:
        labels = labels + f", {column}=" + table[column].astype(str)
    return labels


def long_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, α, split, measure): columns pair, small_run, large_run, alpha,
    split, measure ("loss" or "accuracy") and value."""
    table = table.assign(pair=pair_labels(table))
    rows = []
    for split in ("train", "test"):
        for measure, column in (("loss", f"{split}_loss"), ("accuracy", f"{split}_acc")):
            rows.append(table[["pair", "small_run", "large_run", "alpha"]].assign(
                split=split, measure=measure, value=table[column]))
    return pd.concat(rows, ignore_index=True)


def _panel(frame: pd.DataFrame, ends: pd.DataFrame, measure: str, y_channel: dict, width: int,
           height: int, one_column: bool, labelled: bool):
    """The layers of one measure: the curves, the rules at α = 0 and 1 (and their labels)."""
    every = frame[frame["measure"] == measure]
    many = every["pair"].nunique() > MAX_LINES
    curves = sample_groups(every, ["pair"], SAMPLE_LINES) if many else every
    if one_column:  # one rule at each end for all the pairs
        ends = ends.drop_duplicates("alpha").drop(columns="pair")
    data = pd.concat([curves.assign(layer="curve"), ends.assign(layer="end")],
                     ignore_index=True)
    low, high = float(curves["alpha"].min()), float(curves["alpha"].max())
    ticks = np.arange(np.ceil(low * 2) / 2, high + 1e-9, 0.5)  # the authors' -1, -0.5, ..., 2
    x_channel = {"title": "α in w(α) = α·w_large + (1 − α)·w_small",
                 "scale": alt.Scale(domain=[low, high], nice=False),
                 "axis": alt.Axis(values=[float(t) for t in ticks]) if len(ticks) <= 13
                 else alt.Axis()}
    x, y = alt.X("alpha:Q", **x_channel), alt.Y("value:Q", **y_channel)
    lines = alt.Chart().transform_filter(alt.datum.layer == "curve").mark_line(
        opacity=0.55 if one_column else 0.9, strokeWidth=1.5 if one_column else 2).encode(
        x=x, y=y,
        color=alt.Color("split:N", scale=SPLITS, title="split",
                        legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2)),
        strokeDash=alt.StrokeDash("split:N", scale=DASHES, title="split"),
        detail="pair:N",
        tooltip=tooltips(curves, ["pair", "small_run", "large_run", "split", "alpha", "value"]))
    points = lines.mark_point(size=18, filled=True, opacity=0.8)
    rules = alt.Chart().transform_filter(alt.datum.layer == "end").mark_rule(
        color="#555555", strokeDash=[2, 3]).encode(x="alpha:Q")
    layers = [rules, lines] if one_column else [rules, lines, points]
    if many:  # the band over every pair, per split, under the sampled lines
        layers[1:1] = band(every, "alpha", "value", ["split"], x_channel, y_channel,
                           alt.Color("split:N", scale=SPLITS, title="split"))
    if labelled:
        layers.append(alt.Chart().transform_filter(alt.datum.layer == "end").mark_text(
            align="left", baseline="top", dx=4, fontSize=12, color="#333333").encode(
            x="alpha:Q", y=alt.value(4), text="label:N"))
    chart = alt.layer(*layers, data=data).properties(width=width, height=height)
    if one_column:
        return chart
    return chart.facet(column=alt.Column(
        "pair:N", title=None, header=alt.Header(labels=labelled, labelLimit=width)))


def keskar_1d_chart(table: pd.DataFrame, width: int, height: int):
    """Keskar et al. Fig. 3 from ``stats/keskar_interpolation.csv`` (see the module doc)."""
    if table.empty:
        return message("No two networks of this study differ only in their batch size")
    frame = long_table(table)
    pairs = frame[["pair"]].drop_duplicates()
    ends = pd.concat([pairs.assign(alpha=alpha, label=label) for alpha, label in ENDS.items()],
                     ignore_index=True)
    one_column = frame["pair"].nunique() > MAX_PANELS
    losses = frame.loc[frame["measure"] == "loss", "value"]
    loss_axis = {"title": "cross-entropy (nats, mean)", **log_scale(losses)}
    accuracy_axis = {"title": "accuracy (fraction)", "scale": alt.Scale(domain=[0, 1])}
    n_pairs = frame["pair"].nunique()
    title = ("Loss and accuracy between a small- and a large-batch solution "
             f"(Keskar et al. Fig. 3); {n_pairs} pair{'s' if n_pairs > 1 else ''}; "
             "train solid, test dashed")
    if n_pairs > MAX_LINES:
        title = [title, f"bands: median and interquartile range over the pairs; thin lines: a "
                        f"seeded sample of {SAMPLE_LINES} pairs; every pair in "
                        "stats/keskar_interpolation.csv"]
    return alt.vconcat(
        _panel(frame, ends, "loss", loss_axis, width, height, one_column, labelled=True),
        _panel(frame, ends, "accuracy", accuracy_axis, width, height, one_column,
               labelled=False),
        title=title,
    ).resolve_scale(color="shared", strokeDash="shared")
