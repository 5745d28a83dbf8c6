"""Double descent, model-wise and epoch-wise (studies/double_descent.yaml).

- ``double_descent_table``: one row per network and error kind (train / test) with its
  parameter count and the interpolation threshold n_train x classes (Belkin et al., PNAS
  2019, arXiv 1812.11118);
- ``width_table``: per (dataset, depth, label noise, width) the mean, lowest and highest
  error over the seeds;
- ``peak_table``: per (dataset, depth, label noise) the width of the highest mean test error,
  its height, its parameters relative to the threshold, and the error at the smallest and
  largest widths;
- ``epoch_table``: the mean learning curve (train and test error against step) of the widths
  nearest the threshold (Nakkiran et al., "Deep Double Descent", arXiv 1912.02292, Fig. 2);
- ``double_descent_chart`` and ``epoch_wise_chart`` draw them.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from .common import MAX_POINTS, log_scale, panels, sample_rows, tooltips
from .studies import CLASSES, STATUS_SHAPES, message

GROUP = ["dataset", "depth", "label_noise"]
NEAR_THRESHOLD = 2.0  # the epoch-wise figure's widths: parameters within this factor of n x K
EPOCH_WIDTHS = 4  # at most this many of them (the nearest)
ERROR_DASHES = alt.StrokeDash("error:N", title="error", scale=alt.Scale(
    domain=["test", "train"], range=[[1, 0], [4, 3]]))


def _threshold(frame: pd.DataFrame, n_train: int) -> pd.Series:
    unknown = sorted(set(frame["dataset"]) - set(CLASSES))
    if unknown:
        raise ValueError(f"the double-descent threshold needs the number of classes of "
                         f"{unknown}; add it to figures.studies.CLASSES")
    return n_train * frame["dataset"].map(CLASSES)


def double_descent_table(networks: pd.DataFrame, n_train: int) -> pd.DataFrame:
    """One row per network and error kind (train / test): n_parameters, error, and the
    interpolation threshold n_train x classes of its dataset (Belkin et al. 2019)."""
    frame = networks.assign(train_error=1.0 - networks["train_acc"],
                            test_error=1.0 - networks["test_acc"],
                            threshold=_threshold(networks, n_train))
    keep = ["run_id", "dataset", "label_noise", "depth", "width", "seed", "n_parameters",
            "status", "threshold"]
    if "fit_step" in frame:
        keep.append("fit_step")
    long = frame.melt(id_vars=[k for k in keep if k in frame], var_name="error",
                      value_vars=["train_error", "test_error"], value_name="value")
    long["error"] = long["error"].str.replace("_error", "")
    return long.sort_values([*GROUP, "error", "n_parameters"]).reset_index(drop=True)


def width_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, depth, label noise, error, width): the mean, lowest and highest error
    over the networks (seeds) of that width, and how many there are."""
    keys = [*GROUP, "error", "width", "n_parameters", "threshold"]
    out = (table.groupby(keys, as_index=False)["value"]
           .agg(mean="mean", low="min", high="max", networks="count"))
    return out.sort_values(keys).reset_index(drop=True)


def peak_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, depth, label noise): the width whose mean test error is highest (the
    first of equal ones), its parameters and their ratio to the threshold n x K, the
    height, and the mean test error at the smallest and the largest width. ``rise`` is the
    peak over the lowest error of the narrower widths, ``fall`` over that of the wider ones
    (0 when the peak is at an end): both positive means an interior peak."""
    means = width_table(table)
    rows = []
    for key, group in means[means["error"] == "test"].groupby(GROUP, sort=True):
        group = group.sort_values("width").reset_index(drop=True)
        top = int(group["mean"].to_numpy().argmax())
        peak = group.loc[top]
        before, after = group["mean"][:top], group["mean"][top + 1:]
        rows.append({
            **dict(zip(GROUP, key)), "threshold": peak["threshold"],
            "networks_per_width": int(group["networks"].min()),
            "peak_width": int(peak["width"]), "peak_parameters": int(peak["n_parameters"]),
            "peak_over_threshold": peak["n_parameters"] / peak["threshold"],
            "peak_test_error": peak["mean"],
            "peak_low": peak["low"], "peak_high": peak["high"],
            "rise": peak["mean"] - before.min() if len(before) else 0.0,
            "fall": peak["mean"] - after.min() if len(after) else 0.0,
            "smallest_width": int(group["width"].iloc[0]),
            "smallest_test_error": group["mean"].iloc[0],
            "largest_width": int(group["width"].iloc[-1]),
            "largest_test_error": group["mean"].iloc[-1],
        })
    return pd.DataFrame(rows)


def epoch_table(curves: pd.DataFrame, networks: pd.DataFrame, n_train: int) -> pd.DataFrame:
    """The mean over seeds of train and test error at each step (> 0) of the widths whose
    parameters are within NEAR_THRESHOLD of n x K (at most EPOCH_WIDTHS, the nearest; the
    single nearest when none is), per dataset, depth and label noise; long format (error,
    value), with each width's parameters and the seeds averaged (networks)."""
    sizes = networks[["run_id", "n_parameters"]]
    frame = curves.merge(sizes, on="run_id", how="inner")
    frame = frame[frame["step"] > 0].assign(threshold=_threshold(frame, n_train))
    frame["distance"] = np.abs(np.log(frame["n_parameters"] / frame["threshold"]))
    chosen = []
    for _, group in frame.groupby(["dataset", "depth"]):
        widths = group.groupby("width")["distance"].first().sort_values()
        near = widths[widths <= np.log(NEAR_THRESHOLD)].index[:EPOCH_WIDTHS]
        chosen.append(group[group["width"].isin(near if len(near) else widths.index[:1])])
    if not chosen:
        return pd.DataFrame(columns=[*GROUP, "width", "n_parameters", "threshold", "step",
                                     "error", "value", "networks"])
    frame = pd.concat(chosen).assign(train=lambda f: 1.0 - f["train_acc"],
                                     test=lambda f: 1.0 - f["test_acc"])
    keys = [*GROUP, "width", "n_parameters", "threshold", "step"]
    mean = frame.groupby(keys, as_index=False).agg(train=("train", "mean"),
                                                   test=("test", "mean"),
                                                   networks=("run_id", "nunique"))
    long = mean.melt(id_vars=[*keys, "networks"], value_vars=["train", "test"],
                     var_name="error", value_name="value")
    return long.sort_values([*GROUP, "width", "error", "step"]).reset_index(drop=True)


def _panel(frame: pd.DataFrame) -> pd.Series:
    """dataset (and depth, when the study has several) of each row, for panels."""
    panel = frame["dataset"].astype(str)
    if frame["depth"].nunique() > 1:
        panel = panel + ", depth " + frame["depth"].astype(str)
    return panel


def double_descent_chart(networks: pd.DataFrame, n_train: int, width: int, height: int):
    """Model-wise double descent (Belkin et al. 2019 Fig. 2; Nakkiran et al. 2019 Fig. 1):
    training and test error (test: clean labels) against the number of parameters, one
    line per (label noise, error) through the mean over the seeds at each width, with the
    seeds' range as a band, one panel per dataset (and depth); every network is a point
    (a triangle when it never fit its training set); the dashed rule marks the interpolation
    threshold n_train x classes."""
    if "n_parameters" not in networks:
        return message("n_parameters is not in metrics.zarr: enable measure.norms")
    table = double_descent_table(networks, n_train)
    table["panel"] = _panel(table)
    means = width_table(table)
    means["panel"] = _panel(means)
    x = {"title": "parameters (count, log scale)", **log_scale(table["n_parameters"],
                                                                table["threshold"])}
    y = {"title": "error (fraction; test: clean labels)"}
    color = alt.Color("label_noise:O", title="label noise p")
    fields = ["run_id", "width", "seed", "n_parameters", "error", "value", "status"]

    def make(rows):
        key = rows["panel"].iloc[0]
        mean = means[means["panel"] == key][["label_noise", "error", "n_parameters", "mean",
                                             "low", "high", "networks", "width"]]
        base = alt.Chart(mean).encode(x=alt.X("n_parameters:Q", **x), color=color)
        spread = base.mark_area(opacity=0.15).encode(
            y=alt.Y("low:Q", **y), y2="high:Q", detail="error:N")
        lines = base.mark_line(strokeWidth=2).encode(
            y=alt.Y("mean:Q", **y), strokeDash=ERROR_DASHES,
            tooltip=tooltips(mean, ["width", "n_parameters", "error", "mean", "low", "high",
                                    "networks"]))
        shown = sample_rows(rows[[f for f in [*fields, "label_noise"] if f in rows]],
                            2 * MAX_POINTS)
        points = alt.Chart(shown).mark_point(size=30, opacity=0.6).encode(
            x=alt.X("n_parameters:Q", **x), y=alt.Y("value:Q", **y), color=color,
            shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"),
            tooltip=tooltips(shown, [f for f in fields if f in shown]))
        mark = pd.DataFrame({"threshold": [float(rows["threshold"].mean())],
                             "text": ["n_train x classes"]})
        rule = alt.Chart(mark).mark_rule(strokeDash=[6, 4], color="gray").encode(
            x="threshold:Q")
        label = alt.Chart(mark).mark_text(align="left", dx=4, color="gray").encode(
            x="threshold:Q", y=alt.value(10), text="text:N")
        return alt.layer(spread, lines, points, rule, label).properties(width=width,
                                                                         height=height)

    seeds = int(means["networks"].max())
    title = ["Model-wise double descent: error against parameters (Belkin et al. 2019)",
             f"lines: the mean over {seeds} network(s) per width; band: their range"]
    return panels(table, "panel", make, title=title)


def epoch_wise_chart(curves: pd.DataFrame, networks: pd.DataFrame, n_train: int, width: int,
                     height: int):
    """Epoch-wise double descent (Nakkiran et al. 2019 Fig. 2): train and test error (mean
    over seeds) against optimizer steps, log scale, one line per width near the threshold
    (epoch_table), one panel per dataset (and depth) and label noise."""
    if "n_parameters" not in networks:
        return message("n_parameters is not in metrics.zarr: enable measure.norms")
    table = epoch_table(curves, networks, n_train)
    if table.empty:
        return message("no learning curve after step 0 to draw")
    table["panel"] = _panel(table) + ", label noise " + table["label_noise"].astype(str)
    x = {"title": "optimizer steps (updates, log scale)", **log_scale(table["step"])}
    y = {"title": "error (fraction; test: clean labels)"}
    fields = ["width", "n_parameters", "step", "error", "value", "networks"]

    def make(rows):
        data = rows[fields]
        return alt.Chart(data).mark_line(strokeWidth=2).encode(
            x=alt.X("step:Q", **x), y=alt.Y("value:Q", **y),
            color=alt.Color("width:O", title="width (hidden units)"),
            strokeDash=ERROR_DASHES, detail="error:N",
            tooltip=tooltips(data, fields)).properties(width=width, height=height)

    title = ["Epoch-wise double descent: error along training (Nakkiran et al. 2019 Fig. 2)",
             f"widths within a factor {NEAR_THRESHOLD:g} of n_train x classes parameters; "
             f"mean over seeds"]
    return panels(table, "panel", make, 2, title=title)
