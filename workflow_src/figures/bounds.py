"""Novak et al. 2018 (arXiv 1802.08760), appendix: measured Jacobian norms against the
per-point bounds and approximation derived from the loss.

Every network has its own M, so both measured norms and curves are divided by √M: the
normalised curves depend only on the loss and the number of classes, and one set of curves
serves every network of the study.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from ..metrics import bounds
from ..stats.tables import converged_runs
from .common import MAX_POINTS, log_scale, scatter, tooltips

# Plain-text names, since Unicode has no subscript F or y and the PNG fonts lack ₂: p is the
# true class's probability σ_y, and ‖∂p/∂x‖ (a gradient) is its Euclidean norm.
TRUE_CLASS = "‖∂p/∂x‖ / √M"
FROBENIUS = "‖∂softmax/∂x‖ (Frobenius) / √M"
LOWER, UPPER = "lower bound on ‖∂p/∂x‖", "upper bound on ‖∂p/∂x‖"
APPROX = "approximation of the Frobenius norm"


def bounds_table(ds: xr.Dataset) -> pd.DataFrame:
    """Per (converged run, point): loss, ‖J_y‖₂/√M, ‖J‖_F/√M, within_bounds; padding and
    points of loss 0 (no log axis can show them) dropped."""
    conv = converged_runs(ds)
    root_m = np.sqrt(conv["bound_M"])
    frame = xr.Dataset({
        "loss": conv["loss"],
        "true_class_norm": conv["jacobian_norm_true_class"] / root_m,
        "frobenius_norm": conv["jacobian_norm"] / root_m,
        "within_bounds": conv["within_bounds"],
    }).reset_coords(drop=True).to_dataframe().reset_index().dropna(
        subset=["loss", "true_class_norm"])
    frame["run_id"] = np.asarray(conv["run_id"].values)[frame["run"].to_numpy()]
    return frame[frame["loss"] > 0].drop(columns=["run"]).reset_index(drop=True)


def curves_table(loss_min: float, loss_max: float, n_classes: int) -> pd.DataFrame:
    """Bounds and approximation with M = 1 over a log-spaced grid of losses (nats, > 0)
    spanning the measured points, formed from the loss so they stay exact near loss 0."""
    loss = np.geomspace(loss_min, loss_max, 200)
    lower, upper = bounds.bounds_from_loss(loss, 1.0, n_classes)
    approx = bounds.approx_from_loss(loss, 1.0, n_classes)
    return pd.concat([
        pd.DataFrame({"loss": loss, "value": lower, "curve": LOWER, "panel": TRUE_CLASS}),
        pd.DataFrame({"loss": loss, "value": upper, "curve": UPPER, "panel": TRUE_CLASS}),
        pd.DataFrame({"loss": loss, "value": approx, "curve": APPROX, "panel": FROBENIUS}),
    ], ignore_index=True)


def bounds_chart(points: pd.DataFrame, n_classes: int, width: int, height: int) -> alt.Chart:
    """Two panels: measured ‖J_y‖₂/√M with its bounds, measured ‖J‖_F/√M with its approximation."""
    curves = curves_table(points["loss"].min(), points["loss"].max(), n_classes)
    x_channel = {"title": "test loss at the point (nats, log scale)",
                 **log_scale(points["loss"])}
    x = alt.X("loss:Q", **x_channel)
    colours = alt.Scale(domain=[LOWER, UPPER, APPROX], range=["#0072B2", "#D55E00", "#000000"])

    def panel(field, name):
        # The axis follows the measured points; curves beyond it are clipped.
        y = {"title": f"{name} (log scale)", **log_scale(points[field])}
        frame = points[["run_id", "loss", field]]

        def dots(rows):
            return alt.Chart(rows).mark_circle(size=12, opacity=0.45, color="#555555").encode(
                x=x, y=alt.Y(f"{field}:Q", **y), tooltip=tooltips(rows, ["run_id", "loss", field]))

        shown, note = scatter(frame, dots, "loss", field, x_channel, y, True, True, "points",
                              MAX_POINTS * 2)
        lines = alt.Chart(curves[curves["panel"] == name]).mark_line(
            strokeWidth=2, clip=True).encode(
            x=x, y=alt.Y("value:Q"), color=alt.Color("curve:N", scale=colours, title="curve",
                                                     legend=alt.Legend(labelLimit=300)))
        return alt.layer(shown, lines).properties(width=width, height=height,
                                                  title=[name, note] if note else name)

    inside = points["within_bounds"].mean()
    return alt.hconcat(
        panel("true_class_norm", TRUE_CLASS), panel("frobenius_norm", FROBENIUS),
    ).properties(title=[f"Jacobian norms vs loss with the bounds of Novak et al. ({inside:.0%} "
                        f"of points within the bounds on ‖∂p/∂x‖)",
                        "p: the network's probability of the true class"])
