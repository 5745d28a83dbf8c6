"""Implicit bias along training (measures/implicit_bias.py) from the snapshot table
(``tables/snapshots.csv``): drawn by rule plot_snapshots when measure.snapshots lists
``implicit_bias``.

``implicit_bias``, two panels against the training step (log scale), one line per network
(a seeded sample of ``common.MAX_LINES`` per group beyond that):
- the angle between a linear classifier's (W, b)/‖(W, b)‖ and the hard-margin multiclass
  SVM's (Soudry et al. 2018: it falls to 0 like 1/log t), with the dashed reference
  c / ln t, c the median over the networks of angle · ln t at their last snapshot;
- the normalized margin γ/‖θ‖^L of every network (Lyu & Li 2020: it rises once the
  training set is fitted), with the SVM's (the largest a linear classifier reaches) as a
  dashed rule.
Colour: the architecture (depth 0: linear; else depth and width). Every value is in
tables/snapshots.csv.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from .common import MAX_LINES, log_scale, sample_groups, tooltips
from .studies import message

GROUP = "network"
ANGLE = "implicit_bias_svm_angle"
MARGIN = "implicit_bias_normalized_margin"
SVM_MARGIN = "implicit_bias_svm_normalized_margin"


def with_group(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a column naming each network's architecture."""
    depth = table["depth"].astype(int)
    width = table["width"].astype(int) if "width" in table else pd.Series(0, table.index)
    label = np.where(depth == 0, "linear (depth 0)",
                     "depth " + depth.astype(str) + ", width " + width.astype(str))
    return table.assign(**{GROUP: label})


def angle_reference(table: pd.DataFrame) -> pd.DataFrame:
    """c / ln t over the table's steps (t > 1), c the median of angle · ln t at each
    network's last snapshot; empty without a finite angle."""
    rows = table[np.isfinite(table[ANGLE].astype(float)) & (table["step_used"] > 1)]
    if rows.empty:
        return pd.DataFrame(columns=["step_used", "reference"])
    last = rows.sort_values("step_used").groupby("run_id").tail(1)
    c = float(np.median(last[ANGLE].astype(float) * np.log(last["step_used"].astype(float))))
    steps = np.geomspace(rows["step_used"].min(), rows["step_used"].max(), 50)
    return pd.DataFrame({"step_used": steps, "reference": c / np.log(steps)})


def implicit_bias_chart(table: pd.DataFrame, width: int, height: int):
    """The angle to the SVM and the normalized margin against the step (module doc)."""
    if table.empty or MARGIN not in table:
        return message("No implicit_bias snapshots were measured")
    table = with_group(table[table["step_used"] > 0])
    fields = ["run_id", GROUP, "seed", "step", "step_used", "source", "train_acc",
              MARGIN, ANGLE, "implicit_bias_svm_train_acc"]
    x = alt.X("step_used:Q", title="training step (log scale)",
              **log_scale(table["step_used"]))
    color = alt.Color(f"{GROUP}:N", title=GROUP)

    def lines(frame, column, title):
        drawn = sample_groups(frame, ["run_id"], MAX_LINES)
        return alt.Chart(drawn).mark_line(point=True, opacity=0.8).encode(
            x=x, y=alt.Y(f"{column}:Q", title=title), color=color, detail="run_id:N",
            tooltip=tooltips(drawn, [f for f in fields if f in drawn]))

    angles = table[np.isfinite(table[ANGLE].astype(float))] if ANGLE in table else table[:0]
    if angles.empty:
        left = message("No linear classifier: no angle to the SVM")
    else:
        reference = alt.Chart(angle_reference(angles)).mark_line(
            strokeDash=[4, 3], color="#777777").encode(x="step_used:Q", y="reference:Q")
        left = alt.layer(lines(angles, ANGLE, "angle to the hard-margin SVM (radians)"),
                         reference).properties(
            width=width, height=height, title="Linear classifiers: angle to the SVM "
                                              "(dashed: c / ln t)")
    margins = table[np.isfinite(table[MARGIN].astype(float))]
    right = lines(margins, MARGIN, "normalized margin γ / ‖θ‖^L")
    svm = table[np.isfinite(table[SVM_MARGIN].astype(float))] if SVM_MARGIN in table \
        else table[:0]
    if not svm.empty:
        rule = alt.Chart(pd.DataFrame({"svm": [float(svm[SVM_MARGIN].max())]})).mark_rule(
            strokeDash=[4, 3], color="#777777").encode(y="svm:Q")
        right = alt.layer(right, rule)
    right = right.properties(width=width, height=height,
                             title="Normalized margin (dashed: the SVM's, the most a linear "
                                   "classifier reaches)")
    return alt.hconcat(left, right, title=[
        "Implicit bias of gradient descent on separable training points",
        "Soudry et al. 2018 (angle ~ 1/log t); Lyu & Li 2020 (normalized margin rises)"])
