"""Metrics along training (measure.snapshots): each indicator of the snapshot table
(``tables/snapshots.csv``, workflow_src/jobs/snapshots.py) against the training step.

One panel per indicator (each with its own y axis), then the snapshot's training and test
accuracy; x is the step the network was at (log scale), one line per network coloured by
``plots.color_by``. A requested step beyond a network's final step is the final network:
it is drawn at the final step, as a hollow point (tooltips say which step was asked for).
With more than ``common.MAX_LINES`` networks, each panel draws the median and interquartile
band over the networks at each step, under a seeded sample of ``common.SAMPLE_LINES``
networks' lines; every value is in tables/snapshots.csv.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .common import MAX_LINES, SAMPLE_LINES, band, log_scale, sample_groups, tooltips
from .studies import PANEL_COLUMNS, message, varying

ACCURACIES = {"train_acc": "training accuracy (labels as trained on)",
              "test_acc": "test accuracy"}


def snapshots_long(table: pd.DataFrame, indicators: list[str]) -> pd.DataFrame:
    """One row per (run, step, measure): the table's columns, plus measure and value; the
    indicators first, then the accuracies, each in ``panel`` order."""
    measures = [*indicators, *ACCURACIES]
    frames = [table.assign(measure=ACCURACIES.get(name, name), value=table[name],
                           order=i)
              for i, name in enumerate(measures) if name in table]
    return pd.concat(frames, ignore_index=True)


def snapshots_chart(table: pd.DataFrame, indicators: list[str], hyperparameters: list[str],
                    color_by: str, width: int, height: int):
    """Each indicator (and the accuracies) against the training step, per network."""
    if table.empty:
        return message("No snapshots were measured")
    frame = snapshots_long(table, indicators)
    shown = varying(table, hyperparameters)
    color_type = "O" if pd.api.types.is_numeric_dtype(table[color_by]) else "N"
    order = list(dict.fromkeys(frame.sort_values("order")["measure"]))
    n_runs = table["run_id"].nunique()
    many = n_runs > MAX_LINES
    fields = ["run_id", "measure", "value", "step", "step_used", "reached", "source", "status",
              *shown]
    frame = frame[list(dict.fromkeys([*fields, color_by]))]
    x = {"title": "training step (updates, log scale)", **log_scale(frame["step_used"])}
    y = {"title": None, "scale": alt.Scale(zero=False)}
    color = alt.Color(f"{color_by}:{color_type}", title=color_by,
                      scale=alt.Scale(scheme="viridis") if color_type == "O" else alt.Undefined)
    # reached is read back from the CSV as a bool (a string "True" in some readers).
    reached = "datum.reached === true || datum.reached === 'True'"

    def make(measure):
        rows = frame[frame["measure"] == measure]
        lines = sample_groups(rows, ["run_id"], SAMPLE_LINES) if many else rows
        base = alt.Chart(lines).encode(
            x=alt.X("step_used:Q", **x), y=alt.Y("value:Q", **y), color=color,
            detail="run_id:N", tooltip=tooltips(lines, fields))
        layers = [base.mark_line(opacity=0.7 if not many else 0.4),
                  base.mark_point(size=36, opacity=0.9, filled=True).transform_filter(reached),
                  base.mark_point(size=60, opacity=0.9, filled=False, strokeWidth=1.5
                                  ).transform_filter(f"!({reached})")]
        if many:
            # at each requested step (a network past its last step is its final network)
            layers = band(rows.assign(all="all networks"), "step", "value", ["all"], x, y
                          ) + layers
        return alt.layer(*layers).properties(width=width, height=height, title=measure)

    title = (f"Indicators along training ({n_runs} network{'s' if n_runs != 1 else ''}; "
             "hollow: a step beyond the network's last, i.e. its final network)")
    if many:
        title = [title, f"black: median and interquartile band over the networks; lines: a "
                        f"seeded sample of {SAMPLE_LINES}; every value in tables/snapshots.csv"]
    return alt.concat(*(make(m) for m in order), columns=min(len(order), PANEL_COLUMNS),
                      title=title).resolve_scale(y="independent")
