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
from .common import sample_rows


def bounds_table(ds: xr.Dataset, max_rows: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Per (converged run, point): loss, ‖J_y‖₂/√M, ‖J‖_F/√M, within_bounds; padding dropped."""
    conv = converged_runs(ds)
    root_m = np.sqrt(conv["bound_M"])
    frame = xr.Dataset({
        "loss": conv["loss"],
        "true_class_norm": conv["jacobian_norm_true_class"] / root_m,
        "frobenius_norm": conv["jacobian_norm"] / root_m,
        "within_bounds": conv["within_bounds"],
    }).to_dataframe().reset_index().dropna(subset=["loss", "true_class_norm"])
    return sample_rows(frame[frame["loss"] > 0], max_rows, seed)


def curves_table(loss_min: float, loss_max: float, n_classes: int) -> pd.DataFrame:
    """Bounds and approximation with M = 1 over a log-spaced grid of losses."""
    loss = np.geomspace(max(loss_min, 1e-6), loss_max, 200)
    p = np.exp(-loss)
    lower, upper = bounds.loss_bounds(p, 1.0, n_classes)
    approx = bounds.jacobian_norm_approx(p, 1.0, n_classes)
    return pd.concat([
        pd.DataFrame({"loss": loss, "value": lower, "curve": "lower bound on ‖J_y‖₂", "panel": "‖J_y‖₂ / √M"}),
        pd.DataFrame({"loss": loss, "value": upper, "curve": "upper bound on ‖J_y‖₂", "panel": "‖J_y‖₂ / √M"}),
        pd.DataFrame({"loss": loss, "value": approx, "curve": "approximation of ‖J‖_F", "panel": "‖J‖_F / √M"}),
    ], ignore_index=True)


def bounds_chart(points: pd.DataFrame, n_classes: int, width: int, height: int) -> alt.Chart:
    """Two panels: measured ‖J_y‖₂/√M with its bounds, measured ‖J‖_F/√M with its approximation."""
    curves = curves_table(points["loss"].min(), points["loss"].max(), n_classes)
    x = alt.X("loss:Q", scale=alt.Scale(type="log"), title="test loss at the point (nats, log scale)")
    colours = alt.Scale(domain=["lower bound on ‖J_y‖₂", "upper bound on ‖J_y‖₂",
                                "approximation of ‖J‖_F"], range=["#0072B2", "#D55E00", "#000000"])

    def panel(field, name):
        dots = alt.Chart(points).mark_circle(size=12, opacity=0.45, color="#555555").encode(
            x=x, y=alt.Y(f"{field}:Q", scale=alt.Scale(type="log"), title=f"{name} (log scale)"),
            tooltip=["run_id", "loss", field])
        lines = alt.Chart(curves[curves["panel"] == name]).mark_line(strokeWidth=2).encode(
            x=x, y=alt.Y("value:Q"), color=alt.Color("curve:N", scale=colours, title="curve"))
        return (dots + lines).properties(width=width, height=height, title=name)

    inside = points["within_bounds"].mean()
    return alt.hconcat(
        panel("true_class_norm", "‖J_y‖₂ / √M"), panel("frobenius_norm", "‖J‖_F / √M"),
    ).properties(title=f"Jacobian norms vs loss with the bounds of Novak et al. "
                       f"({inside:.0%} of points within the ‖J_y‖₂ bounds)")
