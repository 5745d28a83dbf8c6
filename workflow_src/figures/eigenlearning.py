"""NTK eigenlearning (measures/eigenlearning.py; Simon, Dickens, Karkada & DeWeese 2021,
arXiv 2110.03922): the held-out MSE of kernel regression with each network's empirical NTK,
predicted from the kernel's spectrum against measured, one point per network and kernel
(trained, initial) with the line y = x; and the prediction against the network's own test
error. Titles give, per kernel, Spearman's ρ and the median relative error |pred − meas| /
meas over the networks (``agreement``).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from ..stats.tables import strings
from .common import scatter, tooltips
from .studies import message

KERNELS = {"": "NTK at the trained weights", "_init": "NTK at the initial weights"}
COLOURS = alt.Scale(domain=list(KERNELS.values()), range=["#D55E00", "#0072B2"])


def eigenlearning_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (network, kernel): run_id, kernel, predicted, measured, its standard
    error, and the network's test error (1 − test_acc); rows with a NaN dropped."""
    frames = []
    for suffix, kernel in KERNELS.items():
        frames.append(pd.DataFrame({
            "run_id": strings(ds["run_id"]), "kernel": kernel,
            "predicted": ds[f"eigenlearning_predicted_mse{suffix}"].values,
            "measured": ds[f"eigenlearning_measured_mse{suffix}"].values,
            "measured_se": ds[f"eigenlearning_measured_mse_se{suffix}"].values,
            "test_error": 1.0 - ds["test_acc"].values}))
    return pd.concat(frames, ignore_index=True).dropna(subset=["predicted", "measured"])


def agreement(table: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """kernel -> (Spearman ρ of predicted against measured, median relative error, networks)."""
    out = {}
    for kernel, rows in table.groupby("kernel", sort=False):
        rho = (rows["predicted"].corr(rows["measured"], method="spearman")
               if len(rows) > 1 else np.nan)
        error = float(np.median(np.abs(rows["predicted"] - rows["measured"]) / rows["measured"]))
        out[kernel] = (float(rho), error, len(rows))
    return out


def eigenlearning_chart(ds: xr.Dataset, width: int, height: int):
    """Predicted against measured kernel-regression MSE (y = x), and predicted (trained
    kernel) against the network's test error."""
    if "eigenlearning_predicted_mse" not in ds:
        return message("eigenlearning is not in metrics.zarr: enable measure.eigenlearning")
    table = eigenlearning_table(ds)
    if table.empty:
        return message("no network has an eigenlearning prediction")
    fields = ["run_id", "kernel", "predicted", "measured", "measured_se", "test_error"]
    color = alt.Color("kernel:N", scale=COLOURS, title="kernel")
    low = float(min(table["predicted"].min(), table["measured"].min()))
    high = float(max(table["predicted"].max(), table["measured"].max()))
    pad = 0.05 * (high - low) + 1e-12
    domain = [low - pad, high + pad]
    x = {"title": "measured held-out MSE of kernel regression", "scale": alt.Scale(
        domain=domain, zero=False)}
    y = {"title": "predicted MSE (eigenlearning)", "scale": alt.Scale(domain=domain,
                                                                      zero=False)}

    def dots(rows, x_field, x_channel):
        return alt.Chart(rows[fields]).mark_circle(size=40, opacity=0.7).encode(
            x=alt.X(f"{x_field}:Q", **x_channel), y=alt.Y("predicted:Q", **y), color=color,
            tooltip=tooltips(rows, fields))

    shown, note = scatter(table, lambda r: dots(r, "measured", x), "measured", "predicted", x,
                          y, False, False, "points (network, kernel)")
    diagonal = alt.Chart(pd.DataFrame({"v": domain})).mark_line(
        color="#222222", strokeDash=[5, 4]).encode(x=alt.X("v:Q", **x), y=alt.Y("v:Q", **y))
    stats = [f"{kernel}: Spearman ρ {rho:.2f}, median relative error {error:.1%} ({n} networks)"
             for kernel, (rho, error, n) in agreement(table).items()]
    left = alt.layer(diagonal, shown).properties(
        width=width, height=height, title=["predicted against measured (dashed: y = x)",
                                           *stats, *([note] if note else [])])
    trained = table[table["kernel"] == KERNELS[""]]
    x_error = {"title": "test error of the network (fraction)", "scale": alt.Scale(zero=False)}
    right, note = scatter(trained, lambda r: dots(r, "test_error", x_error), "test_error",
                          "predicted", x_error, y, False, False)
    heading = "prediction (trained NTK) against the test error of the network"
    right = right.properties(width=width, height=height,
                             title=[heading, note] if note else heading)
    return alt.hconcat(left, right).properties(
        title="NTK eigenlearning: held-out MSE of kernel regression on the pool "
              "(Simon et al. 2021)")
