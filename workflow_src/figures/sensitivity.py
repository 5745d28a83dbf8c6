"""Figures of Novak et al. 2018 (arXiv 1802.08760): sensitivity against generalization.

Each ``*_chart`` function takes tidy pandas data and returns an altair chart. Tooltips show
each network's hyperparameters.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

STATUS_SHAPES = alt.Scale(domain=["converged", "unconverged", "diverged"],
                          range=["circle", "triangle", "cross"])


def jacobian_vs_gap_chart(networks: pd.DataFrame, hyperparameters: list[str], color_by: str,
                          width: int, height: int) -> alt.Chart:
    """Novak et al. Fig. 4: mean test Jacobian norm against the generalization gap, per network."""
    varying = [h for h in hyperparameters if networks[h].nunique() > 1]
    color_type = "O" if pd.api.types.is_numeric_dtype(networks[color_by]) else "N"
    return (
        alt.Chart(networks, title="Mean test Jacobian norm vs generalization gap")
        .mark_point(size=70, filled=True, opacity=0.8)
        .encode(
            x=alt.X("jacobian_norm:Q", scale=alt.Scale(type="log"),
                    title="mean test ‖∂softmax/∂x‖_F (log scale)"),
            y=alt.Y("gap:Q", title="generalization gap (train acc − test acc)"),
            color=alt.Color(f"{color_by}:{color_type}", title=color_by,
                            scale=alt.Scale(scheme="viridis") if color_type == "O" else alt.Undefined),
            shape=alt.Shape("status:N", scale=STATUS_SHAPES, title="status"),
            tooltip=["run_id", "status", "gap", "jacobian_norm", *varying],
        )
        .properties(width=width, height=height)
    )


def points_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (converged run, evaluated point), padding dropped."""
    converged = ds.isel(run=np.flatnonzero(ds["status"].values == "converged"))
    frame = converged[["jacobian_norm", "correct"]].to_dataframe().reset_index()
    frame = frame.dropna(subset=["jacobian_norm", "correct"])
    frame["prediction"] = np.where(frame["correct"] > 0.5, "correct", "misclassified")
    return frame


def jacobian_by_correctness_chart(points: pd.DataFrame, facet_by: str, width: int,
                                  height: int) -> alt.Chart:
    """Novak et al. §4.3: Jacobian norm at correctly vs wrongly classified test points."""
    return (
        alt.Chart(points, title="Jacobian norm at test points by correctness (converged networks)")
        .mark_boxplot(extent="min-max")
        .encode(
            x=alt.X("prediction:N", title=None),
            y=alt.Y("jacobian_norm:Q", scale=alt.Scale(type="log"),
                    title="‖∂softmax/∂x‖_F at the point (log scale)"),
            color=alt.Color("prediction:N", scale=alt.Scale(
                domain=["correct", "misclassified"], range=["#0072B2", "#D55E00"]), legend=None),
            column=alt.Column(f"{facet_by}:N", title=facet_by),
        )
        .properties(width=max(80, width // 4), height=height)
    )
