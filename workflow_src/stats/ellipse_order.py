"""Do the ellipse metrics order by kind of anchors as Novak et al. 2018 report?

Novak et al. (arXiv 1802.08760, §4.1, Fig. 2) find sensitivity lowest between training
points of one class, higher between classes and highest off the data manifold:
same_class < different_class < random. Each network is one observation: its metric is
averaged over the ellipses of each kind, and for every pair of kinds the networks are
matched with themselves, so the one-sided Wilcoxon signed-rank test asks whether the
lower kind is below the higher one across networks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .paired import correct_multiple

# (lower, higher) in the paper's order.
EXPECTED_ORDER = (("same_class", "different_class"), ("different_class", "random"),
                  ("same_class", "random"))
# Columns of the per-ellipse summary (tables.ellipse_summary_table) compared.
METRICS = ("mean_jacobian_norm", "transitions", "mean_jacobian_norm_init", "transitions_init")
COLUMNS = ["metric", "lower", "higher", "n_networks", "n_in_order", "n_tied",
           "fraction_in_order", "median_ratio", "wilcoxon_statistic", "p_value", "p_adjusted",
           "reject", "note"]


def kind_ordering(summary: pd.DataFrame, metrics=METRICS, alpha: float = 0.05) -> pd.DataFrame:
    """One row per metric and pair (lower, higher) of EXPECTED_ORDER.

    summary: one row per (run_id, kind, ellipse). Per network, a metric's mean over the
    ellipses of each kind; ``n_in_order`` counts networks where the lower kind's mean is
    strictly below the higher's and ``n_tied`` those where the two are equal (e.g. the
    same transition count), so n_in_order + n_tied + (networks out of order) = n_networks
    and a tie counts as not in order in ``fraction_in_order`` = n_in_order / n_networks.
    ``median_ratio`` is the median over networks of higher / lower, and ``p_value`` is the
    one-sided Wilcoxon signed-rank test of lower < higher (zero differences, the ties,
    dropped: scipy's default). ``p_adjusted`` and ``reject`` apply Holm's correction over
    every test in the table. Metrics absent from ``summary`` (e.g. ``*_init`` when the
    initial weights were not measured) are skipped.
    """
    rows = []
    for metric in (m for m in metrics if m in summary):
        # dropna=False keeps a kind whose values are all NaN (tanh transitions), for the note
        per_network = summary.pivot_table(index="run_id", columns="kind", values=metric,
                                          aggfunc="mean", dropna=False)
        for lower, higher in EXPECTED_ORDER:
            rows.append(_compare(per_network, metric, lower, higher))
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("p_adjusted", "reject")])
    return correct_multiple(table, alpha=alpha)[COLUMNS]


def _compare(per_network: pd.DataFrame, metric: str, lower: str, higher: str) -> dict:
    row = {"metric": metric, "lower": lower, "higher": higher, "note": ""}
    if lower not in per_network or higher not in per_network:
        return {**row, "n_networks": 0, "note": "a kind of ellipse is missing"}
    pair = per_network[[lower, higher]].to_numpy(dtype=float)
    pair = pair[np.isfinite(pair).all(axis=1)]
    low, high = pair[:, 0], pair[:, 1]
    row.update(n_networks=len(pair), n_in_order=int(np.sum(low < high)),
               n_tied=int(np.sum(low == high)))
    if len(pair) == 0:
        return {**row, "note": "no finite values (e.g. transitions of a smooth activation)"}
    row["fraction_in_order"] = row["n_in_order"] / len(pair)
    with np.errstate(divide="ignore", invalid="ignore"):
        row["median_ratio"] = float(np.median(high / low))
    diff = high - low
    if len(pair) < 2:
        row["note"] = f"fewer than 2 networks (n={len(pair)})"
    elif not np.any(diff):
        row["note"] = "all differences are zero"
    else:
        test = stats.wilcoxon(low, high, alternative="less")
        row.update(wilcoxon_statistic=float(test.statistic), p_value=float(test.pvalue))
    return row
