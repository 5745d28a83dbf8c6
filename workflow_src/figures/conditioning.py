"""Conditioning of the training loss (measures/conditioning.py) from the snapshot table
(``tables/snapshots.csv``): drawn by rule plot_snapshots when measure.snapshots lists
``conditioning``.

- ``conditioning_vs_width``: per network, the tangent kernel's condition number and
  λ_min/tr K at initialisation, and the kernel's relative change ‖K(w) − K(w_0)‖_F/‖K(w_0)‖_F
  at its last snapshot, against width (log-log), one colour per optimizer and loss, the
  line through the mean over seeds. Networks whose kernel is singular (condition number
  +inf: fewer parameters than nK) are counted in the title, not drawn. Beyond
  ``common.MAX_POINTS`` networks a seeded sample of them is drawn (the means use all).
- ``conditioning_along_training``: the PL ratio ½‖∇L‖²/L, λ_min(K) and the bound ratio
  (PL ratio)/(λ_min/n) (≥ 1 for the squared loss) against the training step, one column per
  width (at most ``MAX_WIDTHS``: the smallest, the largest and evenly spaced ones between),
  one line per network (a seeded sample of ``common.MAX_LINES`` per panel beyond that).
Every value is in tables/snapshots.csv.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from .common import MAX_LINES, MAX_POINTS, log_scale, sample_groups, sample_rows, tooltips
from ..stats.conditioning import condition_number, loss_column
from .studies import message

MAX_WIDTHS = 4
GROUP = "optimizer, loss"
ALONG = {"conditioning_pl_ratio": "PL ratio ½‖∇L‖²/L",
         "conditioning_lambda_min": "λ_min(K), K = J Jᵀ (nK × nK)",
         "conditioning_pl_bound_ratio": "PL ratio / (λ_min(K)/n) (≥ 1: squared loss)"}
AT_INIT = {"condition_init": "λ_max/λ_min at initialisation",
           "lambda_min_over_trace_init": "λ_min(K)/tr K at initialisation",
           "kernel_change_last": "‖K − K₀‖_F/‖K₀‖_F, last snapshot"}


def with_group(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(**{GROUP: table["optimizer"].astype(str) + ", " + loss_column(table)})


def per_network(table: pd.DataFrame) -> pd.DataFrame:
    """One row per network: width, seed, group, final_steps, status, the values at
    initialisation and the kernel change at its last snapshot (the largest step used)."""
    table = with_group(table)
    last = table.sort_values("step_used").groupby("run_id", sort=False).tail(1)
    keep = ["run_id", "width", "seed", GROUP, "final_steps", "status"]
    out = last[[c for c in keep if c in last]].copy()
    out["condition_init"] = condition_number(last, "_init").to_numpy()
    out["lambda_min_over_trace_init"] = last["conditioning_lambda_min_over_trace_init"].to_numpy()
    out["kernel_change_last"] = last["conditioning_kernel_change"].to_numpy()
    return out.reset_index(drop=True)


def _positive(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    values = frame[column].astype(float)
    return frame[np.isfinite(values) & (values > 0)]


def conditioning_vs_width_chart(table: pd.DataFrame, width: int, height: int):
    """The condition number and λ_min/tr K at initialisation and the kernel change, against
    width (module doc)."""
    if table.empty or "conditioning_condition_number_init" not in table:
        return message("No conditioning snapshots were measured")
    networks = per_network(table)
    singular = int((~np.isfinite(networks["condition_init"].astype(float))).sum())
    fields = ["run_id", "width", "seed", GROUP, "final_steps", "status"]
    x = {"title": "width (units per hidden layer, log scale)", **log_scale(networks["width"])}

    def panel(column: str):
        rows = _positive(networks, column)
        y = {"title": AT_INIT[column], **log_scale(rows[column])} if len(rows) else {}
        color = alt.Color(f"{GROUP}:N", title=GROUP)
        drawn = sample_rows(rows, MAX_POINTS)  # a seeded sample beyond MAX_POINTS networks
        points = alt.Chart(drawn).mark_point(filled=True, size=40, opacity=0.7).encode(
            x=alt.X("width:Q", **x), y=alt.Y(f"{column}:Q", **y), color=color,
            tooltip=tooltips(drawn, [*fields, column]))
        means = rows.groupby([GROUP, "width"], as_index=False)[column].mean()
        line = alt.Chart(means).mark_line().encode(
            x=alt.X("width:Q", **x), y=alt.Y(f"{column}:Q", **y), color=color)
        return alt.layer(points, line).properties(width=width, height=height)

    title = "Tangent kernel conditioning against width (points: networks; lines: mean)"
    if singular:
        title = [title, f"{singular} network(s) with a singular kernel at initialisation "
                        "(condition number +inf) not drawn in the first panel"]
    return alt.hconcat(*(panel(c) for c in AT_INIT), title=title)


def chosen_widths(widths) -> list:
    """At most MAX_WIDTHS of the widths: the smallest, the largest, evenly spaced between."""
    widths = sorted(set(widths))
    if len(widths) <= MAX_WIDTHS:
        return widths
    picks = np.linspace(0, len(widths) - 1, MAX_WIDTHS).round().astype(int)
    return [widths[i] for i in sorted(set(picks))]


def conditioning_along_training_chart(table: pd.DataFrame, width: int, height: int):
    """The PL ratio, λ_min and their bound ratio against the step, per width (module doc)."""
    if table.empty or "conditioning_pl_ratio" not in table:
        return message("No conditioning snapshots were measured")
    table = with_group(table)
    widths = chosen_widths(table["width"])
    fields = ["run_id", "width", "seed", GROUP, "step", "step_used", "source"]
    x = {"title": "training step (log scale)", **log_scale(table["step_used"])}
    rows = []
    for column, title in ALONG.items():
        frame = _positive(table, column)
        y = {"title": title, **log_scale(frame[column])} if len(frame) else {}
        charts = []
        for w in widths:
            sub = sample_groups(frame[frame["width"] == w], ["run_id"], MAX_LINES)
            charts.append(alt.Chart(sub).mark_line(point=True, opacity=0.7).encode(
                x=alt.X("step_used:Q", **x), y=alt.Y(f"{column}:Q", **y),
                color=alt.Color(f"{GROUP}:N", title=GROUP), detail="run_id:N",
                tooltip=tooltips(sub, [*fields, column])
            ).properties(width=width * 2 // 3, height=height * 2 // 3, title=f"width {w}"))
        rows.append(alt.hconcat(*charts))
    return alt.vconcat(*rows, title="PL ratio and the tangent kernel's smallest eigenvalue "
                                    "along training (log scales; non-positive values left out)")
