"""Granulated Kendall coefficient Ψ of Jiang et al. 2020 (arXiv 1912.02178, §4).

A plain τ over all networks rewards a measure that only tracks the hyperparameter with the
largest effect on the gap. The granulated coefficient asks, per hyperparameter axis i,
whether the measure ranks networks that differ *only* in axis i correctly:
    τ(G) = 1/(|G|(|G|−1)) Σ_a Σ_{b≠a} sign(μ_a − μ_b) · sign(g_a − g_b),
    ψ_i  = mean of τ(G) over every group G of networks sharing every other axis value,
    Ψ    = mean over axes of ψ_i.
τ(G) is Jiang's pair count (Kendall's τ-a): a tied pair contributes 0, so a group whose
indicator or gap is constant has τ = 0, and it counts towards ψ_i like any other group.
(scipy's τ-b, used for the overall τ in ``correlation``, divides by the untied pairs
instead and is undefined on a constant group.) Each row also gives the ψ of the rule this
package used before, τ-b averaged over the groups where it is defined, and counts the
groups where the two rules differ, so a reader can see what the constant groups change.

Jiang et al.'s axes are hyperparameters. Seeds are repeats, not a hyperparameter: networks
that differ only in their seed differ in gap by noise, so ψ_seed is reported as a
diagnostic but left out of Ψ (``not_averaged``); it still separates groups for the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ._checks import finite_xy

ALL_AXES = "__all__"
NOT_AVERAGED = ("seed",)
COLUMNS = ["indicator", "target", "axis", "psi", "n_groups", "n_groups_constant",
           "n_groups_tied", "psi_skip_constant", "note"]


def granulated_kendall(
    table: pd.DataFrame, indicator: str, axes: Sequence[str], target: str = "gap",
    not_averaged: Sequence[str] = NOT_AVERAGED,
) -> pd.DataFrame:
    """ψ_i for every axis in ``axes`` and Ψ (row ``axis == "__all__"``).

    ``axes`` are the hyperparameter columns that define the grid; networks that share the
    values of all of them except axis i form one group. A group counts towards ψ_i when
    it has at least two networks with finite values and more than one value of axis i.
    Columns per axis: ``n_groups`` (groups averaged), ``n_groups_constant`` (of those,
    groups with a constant indicator or target: τ = 0), ``n_groups_tied`` (groups with a
    tied pair but neither side constant: τ-a and τ-b differ), ``psi_skip_constant`` (mean
    τ-b over the non-constant groups). Axes in ``not_averaged`` get their ψ_i row, with a
    note, but Ψ and its counts leave them out; Ψ's ``psi_skip_constant`` is the mean of the
    averaged axes' ones.
    """
    axes = list(axes)
    rows = [_axis_row(table, indicator, target, axis, axes) for axis in axes]
    averaged = [row for row in rows if row["axis"] not in not_averaged]
    for row in rows:
        if row["axis"] in not_averaged and np.isfinite(row["psi"]):
            row["note"] = "; ".join(filter(None, [row["note"], "not averaged into Psi"]))
    return pd.DataFrame(rows + [_total_row(indicator, target, averaged)], columns=COLUMNS)


def _total_row(indicator: str, target: str, averaged: list[dict]) -> dict:
    """Ψ: means of the axes' ψ (each rule separately) and sums of their group counts."""
    total = {"indicator": indicator, "target": target, "axis": ALL_AXES}
    for count in ("n_groups", "n_groups_constant", "n_groups_tied"):
        total[count] = sum(row[count] for row in averaged)
    psis = [row["psi"] for row in averaged if np.isfinite(row["psi"])]
    skipping = [row["psi_skip_constant"] for row in averaged
                if np.isfinite(row["psi_skip_constant"])]
    total["psi_skip_constant"] = float(np.mean(skipping)) if skipping else np.nan
    if psis:
        return {**total, "psi": float(np.mean(psis)), "note": f"mean of psi over {len(psis)} axes"}
    return {**total, "psi": np.nan, "note": "no axis produced a value"}


def _axis_row(table: pd.DataFrame, indicator: str, target: str, axis: str,
              axes: list[str]) -> dict:
    """ψ_i for one axis under Jiang's rule, with the old rule's ψ and the counts beside it."""
    row = {"indicator": indicator, "target": target, "axis": axis,
           "n_groups_constant": 0, "n_groups_tied": 0, "psi_skip_constant": np.nan}
    if table[axis].nunique(dropna=False) < 2:
        return {**row, "psi": np.nan, "n_groups": 0, "note": "axis has a single value"}
    groups = [_group_taus(x, y) for x, y in _groups(table, indicator, target, axis, axes)]
    if not groups:
        return {**row, "psi": np.nan, "n_groups": 0, "note": "no group varies only in this axis"}
    jiang = [tau_a for tau_a, _, _ in groups]
    defined_b = [tau_b for _, tau_b, _ in groups if np.isfinite(tau_b)]
    n_constant = len(groups) - len(defined_b)
    n_tied = sum(tied for _, tau_b, tied in groups if np.isfinite(tau_b))
    note = (f"{n_constant} groups with a constant indicator or target count as tau = 0"
            if n_constant else "")
    return {**row, "psi": float(np.mean(jiang)), "n_groups": len(groups),
            "n_groups_constant": n_constant, "n_groups_tied": n_tied,
            "psi_skip_constant": float(np.mean(defined_b)) if defined_b else np.nan,
            "note": note}


def _groups(table: pd.DataFrame, indicator: str, target: str, axis: str, axes: list[str]):
    """(indicator, target) values, finite ones only, of every group that varies in ``axis``
    and has at least two networks."""
    others = [a for a in axes if a != axis]
    grouped = table.groupby(others, dropna=False) if others else [((), table)]
    for _, group in grouped:
        if group[axis].nunique(dropna=False) < 2:
            continue
        x, y = finite_xy(group, indicator, target)
        if len(x) >= 2:
            yield x, y


def _group_taus(x: np.ndarray, y: np.ndarray) -> tuple[float, float, bool]:
    """(Jiang's τ-a, scipy's τ-b or NaN when either side is constant, any tied pair)."""
    # (n, n) signs of every ordered pair; the diagonal is 0 and so drops out of the sum.
    concordance = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    n = len(x)
    tau_a = float(concordance.sum() / (n * (n - 1)))
    has_tie = bool(np.sum(concordance == 0) > n)  # more zeros than the diagonal's n
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return tau_a, np.nan, has_tie
    return tau_a, float(stats.kendalltau(x, y).statistic), has_tie
