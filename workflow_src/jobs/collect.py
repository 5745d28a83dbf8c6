"""Gather every run's learning curve into one tidy table for the study's training figures.

Each run writes ``results/runs/<run_id>/curve.csv`` (one row per evaluation) and
``train.json`` (its final status). The study table repeats the run's hyperparameters and
status on every row, so a figure can group, colour and filter by any of them.
"""

from __future__ import annotations

import pandas as pd

from ..runtable import HYPERPARAMETERS

CURVE_COLUMNS = ["step", "train_loss", "test_loss", "train_acc", "test_acc", "seconds"]


def learning_curves(runs: dict[str, dict], curves: list[pd.DataFrame],
                    summaries: list[dict]) -> pd.DataFrame:
    """runs: run id -> hyperparameters; curves and summaries in the same order as runs.

    Columns: run_id, every hyperparameter, status, fit_step (the first evaluation at
    which the training accuracy reached the target; NaN: never), then step, train_loss and
    test_loss (the mean of the loss the run trained with, named by its loss_function:
    cross-entropy in nats, or the squared loss; test_loss NaN in curves written before it
    was recorded), train_acc, test_acc (fractions), seconds (wall time since training
    started).
    """
    columns = ["run_id", *HYPERPARAMETERS, "status", "fit_step", *CURVE_COLUMNS]
    frames = []
    for (run_id, hps), curve, summary in zip(runs.items(), curves, summaries, strict=True):
        if summary["run_id"] != run_id:
            raise ValueError(f"train.json of run {summary['run_id']} given for run {run_id}")
        labels = {name: hps[name] for name in HYPERPARAMETERS}
        fit_step = summary.get("fit_step")  # None: never fitted, or a record from before
        frames.append(curve.assign(run_id=run_id, status=summary["status"],
                                   fit_step=float("nan") if fit_step is None else fit_step,
                                   **labels).reindex(columns=columns))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
