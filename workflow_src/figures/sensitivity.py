"""Figures of Novak et al. 2018 (arXiv 1802.08760): sensitivity against generalization.

Each ``*_chart`` function takes tidy pandas data and returns an altair chart. Tooltips show
each network's hyperparameters. Per-point charts draw box plots and histograms of every
point and a seeded sample of the points themselves (``common``: the figure's size does not
grow with the study); the points are in metrics.zarr.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from ..stats.tables import converged_runs
from .common import MAX_POINTS, log_scale, panels, scatter, tooltips

# Axis titles are plain text, and Unicode has no subscript F: the norm is named in words.
JACOBIAN = "‖∂softmax/∂x‖ (Frobenius)"
STATUS_SHAPES = alt.Scale(domain=["converged", "unconverged", "diverged"],
                          range=["circle", "triangle", "cross"])


def jacobian_vs_gap_chart(networks: pd.DataFrame, hyperparameters: list[str], color_by: str,
                          width: int, height: int):
    """Novak et al. Fig. 4: mean test Jacobian norm against the generalization gap, per network."""
    varying = [h for h in hyperparameters if networks[h].nunique() > 1]
    color_type = "O" if pd.api.types.is_numeric_dtype(networks[color_by]) else "N"
    fields = ["run_id", "status", "gap", "jacobian_norm", *varying]
    frame = networks[list(dict.fromkeys([*fields, color_by]))]
    x = {"title": f"mean test {JACOBIAN} (log scale)", **log_scale(frame["jacobian_norm"])}
    y = {"title": "generalization gap (train acc − test acc)"}

    def points(rows):
        return alt.Chart(rows).mark_point(size=70, filled=True, opacity=0.8).encode(
            x=alt.X("jacobian_norm:Q", **x), y=alt.Y("gap:Q", **y),
            color=alt.Color(f"{color_by}:{color_type}", title=color_by,
                            scale=alt.Scale(scheme="viridis") if color_type == "O"
                            else alt.Undefined),
            shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"),
            tooltip=tooltips(rows, fields))

    chart, note = scatter(frame, points, "jacobian_norm", "gap", x, y, True, False)
    title = "Mean test Jacobian norm vs generalization gap"
    return chart.properties(width=width, height=height,
                            title=[title, note] if note else title)


POINT_COLUMNS = ["jacobian_norm", "loss", "correct"]


def points_table(ds: xr.Dataset, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per (converged run, evaluated point), padding dropped: run_id, point, the
    norm, loss and correctness, ``prediction``, and the run coordinates in ``columns``."""
    conv = converged_runs(ds)
    frame = conv[POINT_COLUMNS].reset_coords(drop=True).to_dataframe().reset_index()
    frame["run_id"] = np.repeat(conv["run_id"].values, conv.sizes["point"])
    for name in columns:
        frame[name] = np.repeat(conv[name].values, conv.sizes["point"])
    frame = frame.dropna(subset=["jacobian_norm", "correct"])
    frame["prediction"] = np.where(frame["correct"] > 0.5, "correct", "misclassified")
    return frame


def jacobian_by_correctness_chart(points: pd.DataFrame, facet_by: str, width: int,
                                  height: int) -> alt.Chart:
    """Novak et al. §4.3: Jacobian norm at correctly vs wrongly classified test points; box
    plots over every point (the quartiles are computed when the figure is written)."""
    frame = points[["prediction", "jacobian_norm", facet_by]]
    y = {"title": f"{JACOBIAN} at the point (log scale)", **log_scale(frame["jacobian_norm"])}

    def boxes(rows):
        return alt.Chart(rows[["prediction", "jacobian_norm"]]).mark_boxplot(
            extent="min-max").encode(
            x=alt.X("prediction:N", title=None),
            y=alt.Y("jacobian_norm:Q", **y),
            color=alt.Color("prediction:N", scale=alt.Scale(
                domain=["correct", "misclassified"], range=["#0072B2", "#D55E00"]),
                legend=None),
        ).properties(width=max(80, width // 4), height=height)

    return panels(frame, facet_by, boxes, title="Jacobian norm at test points by correctness "
                                                f"(converged networks; {len(frame):,} points)")


KIND_ORDER = ["same_class", "different_class", "random"]
KIND_COLOURS = alt.Scale(domain=KIND_ORDER, range=["#009E73", "#E69F00", "#CC79A7"])


def ellipse_profile_table(ds: xr.Dataset) -> pd.DataFrame:
    """Per (kind, angle): geometric mean and ±1 sd band (in log space) of ‖J‖_F over the
    ellipses of that kind and the converged networks. Norms differ by orders of magnitude
    between networks, so the band is taken on the log scale the chart uses."""
    logs = np.log(converged_runs(ds)["ellipse_jacobian_norm"])  # (run, ellipse, position)
    rows = []
    for kind in KIND_ORDER:
        values = logs.isel(ellipse=np.flatnonzero(ds["ellipse_kind"].values == kind))
        flat = values.stack(sample=("run", "ellipse"))  # (position, sample)
        mean, sd = flat.mean("sample").values, flat.std("sample").values
        rows.append(pd.DataFrame({
            "kind": kind, "angle_deg": np.degrees(ds["angle"].values),
            "jacobian_norm": np.exp(mean), "band_low": np.exp(mean - sd),
            "band_high": np.exp(mean + sd)}))
    return pd.concat(rows, ignore_index=True)


def ellipse_profile_chart(profile: pd.DataFrame, width: int, height: int) -> alt.Chart:
    """Novak Fig. 2: ‖J‖_F around ellipses through random points, points of different
    classes and points of one class; the anchors sit at 0°, 120° and 240°."""
    base = alt.Chart(profile).encode(
        x=alt.X("angle_deg:Q", title="angle along the ellipse (degrees)",
                scale=alt.Scale(domain=[0, 360]), axis=alt.Axis(values=list(range(0, 361, 60)))),
        color=alt.Color("kind:N", scale=KIND_COLOURS, sort=KIND_ORDER, title="anchors"),
    )
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("band_low:Q", title=f"{JACOBIAN} (geometric mean ± 1 sd, log scale)",
                **log_scale(profile["band_low"], profile["band_high"])),
        y2="band_high:Q")
    line = base.mark_line().encode(
        y="jacobian_norm:Q", tooltip=tooltips(profile, ["kind", "angle_deg", "jacobian_norm"]))
    anchors = alt.Chart(pd.DataFrame({"anchor": [0, 120, 240]})).mark_rule(
        strokeDash=[4, 4], color="gray").encode(x="anchor:Q")
    return (band + line + anchors).properties(
        width=width, height=height,
        title="Jacobian norm around ellipses through three anchor points (converged networks)")


def ellipse_kinds_chart(summary: pd.DataFrame, width: int, height: int) -> alt.Chart:
    """Novak Fig. 2 (right): mean ‖J‖_F and transitions per ellipse, by kind of anchors;
    where the initial weights were measured too, each kind has a second box for them."""
    weights = ["trained"]
    columns = {"trained": ("mean_jacobian_norm", "transitions")}
    if "transitions_init" in summary:
        weights.append("initial")
        columns["initial"] = ("mean_jacobian_norm_init", "transitions_init")
    long = pd.concat([
        pd.DataFrame({"kind": summary["kind"], "weights": name,
                      "mean_jacobian_norm": summary[jac], "transitions": summary[count]})
        for name, (jac, count) in columns.items()], ignore_index=True)

    def panel(field, title):
        return alt.Chart(long).mark_boxplot(extent="min-max").encode(
            x=alt.X("kind:N", sort=KIND_ORDER, title=None),
            xOffset=alt.XOffset("weights:N", sort=weights),
            y=alt.Y(f"{field}:Q", title=title, **log_scale(long[field])),
            color=alt.Color("kind:N", scale=KIND_COLOURS, sort=KIND_ORDER, legend=None),
            opacity=alt.Opacity("weights:N", sort=weights, scale=alt.Scale(
                domain=weights, range=[1.0, 0.35][:len(weights)]), title="weights"),
        ).properties(width=max(150, width // 2), height=height)

    return alt.hconcat(
        panel("mean_jacobian_norm", f"mean {JACOBIAN} around the ellipse (log scale)"),
        panel("transitions", "exact transitions around the ellipse (count, log scale)"),
    ).properties(title="Sensitivity on and off the data manifold (converged networks"
                 + ("; faint boxes: the same networks at their initial weights)"
                    if len(weights) > 1 else ")"))


def jacobian_vs_loss_chart(points: pd.DataFrame, width: int, height: int):
    """Novak Fig. 5: per test point, Jacobian norm against the cross-entropy loss: a 2-D
    histogram of every point under a seeded sample of them.

    Both axes are logarithmic, so points with loss or norm 0 (a point classified with
    certainty in floating point) cannot be drawn; they are left out, and the title says
    how many.
    """
    frame = points[["run_id", "loss", "jacobian_norm", "prediction"]]
    shown = frame[(frame["loss"] > 0) & (frame["jacobian_norm"] > 0)]
    left_out = len(frame) - len(shown)
    title = "Jacobian norm vs loss at test points (converged networks)"
    if left_out:
        title += f"; {left_out:,} points with loss or norm 0 not shown"
    x = {"title": "test loss at the point (nats, log scale)", **log_scale(shown["loss"])}
    y = {"title": f"{JACOBIAN} at the point (log scale)", **log_scale(shown["jacobian_norm"])}

    def dots(rows):
        return alt.Chart(rows).mark_circle(size=12, opacity=0.4).encode(
            x=alt.X("loss:Q", **x), y=alt.Y("jacobian_norm:Q", **y),
            color=alt.Color("prediction:N", scale=alt.Scale(
                domain=["correct", "misclassified"], range=["#0072B2", "#D55E00"])),
            tooltip=tooltips(rows, ["run_id", "loss", "jacobian_norm", "prediction"]))

    chart, note = scatter(shown, dots, "loss", "jacobian_norm", x, y, True, True, "points",
                          MAX_POINTS * 2)
    return chart.properties(width=width, height=height,
                            title=[title, note] if note else title)
