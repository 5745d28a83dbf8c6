"""Granulated Kendall coefficient Ψ of Jiang et al. 2020 (arXiv 1912.02178, §4).

A plain τ over all networks rewards a measure that only tracks the hyperparameter with the
largest effect on the gap. The granulated coefficient asks, per hyperparameter axis i,
whether the measure ranks networks that differ *only* in axis i correctly:
    ψ_i = mean over groups G of networks sharing every other axis value of τ(G),
    Ψ   = mean over axes of ψ_i.
τ is scipy's τ-b, which equals Jiang's pair-counting τ within a group without ties.

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
COLUMNS = ["indicator", "target", "axis", "psi", "n_groups", "note"]


def granulated_kendall(
    table: pd.DataFrame, indicator: str, axes: Sequence[str], target: str = "gap",
    not_averaged: Sequence[str] = NOT_AVERAGED,
) -> pd.DataFrame:
    """ψ_i for every axis in ``axes`` and Ψ (row ``axis == "__all__"``).

    ``axes`` are the hyperparameter columns that define the grid; networks that share the
    values of all of them except axis i form one group. A group counts towards ψ_i when
    it has at least two networks with finite values, more than one value of axis i, and
    a defined τ (neither indicator nor target constant in it). Axes in ``not_averaged``
    get their ψ_i row, with a note, but Ψ and its n_groups leave them out.
    """
    axes = list(axes)
    rows = [_axis_row(table, indicator, target, axis, axes) for axis in axes]
    averaged = [row for row in rows if row["axis"] not in not_averaged]
    for row in rows:
        if row["axis"] in not_averaged and np.isfinite(row["psi"]):
            row["note"] = "; ".join(filter(None, [row["note"], "not averaged into Psi"]))
    psis = [row["psi"] for row in averaged if np.isfinite(row["psi"])]
    total = {"indicator": indicator, "target": target, "axis": ALL_AXES,
             "n_groups": sum(row["n_groups"] for row in averaged)}
    if psis:
        total.update(psi=float(np.mean(psis)), note=f"mean of psi over {len(psis)} axes")
    else:
        total.update(psi=np.nan, note="no axis produced a value")
    return pd.DataFrame(rows + [total], columns=COLUMNS)


def _axis_row(table: pd.DataFrame, indicator: str, target: str, axis: str,
              axes: list[str]) -> dict:
    """ψ_i for one axis: the mean within-group τ, with a note on skipped groups."""
    row = {"indicator": indicator, "target": target, "axis": axis}
    if table[axis].nunique(dropna=False) < 2:
        return {**row, "psi": np.nan, "n_groups": 0, "note": "axis has a single value"}
    others = [a for a in axes if a != axis]
    groups = table.groupby(others, dropna=False) if others else [((), table)]
    taus, n_undefined = [], 0
    for _, group in groups:
        if group[axis].nunique(dropna=False) < 2:
            continue
        x, y = finite_xy(group, indicator, target)
        if len(x) < 2:
            continue
        tau = _kendall(x, y)
        if np.isnan(tau):
            n_undefined += 1
        else:
            taus.append(tau)
    note = f"{n_undefined} groups skipped: constant indicator or target" if n_undefined else ""
    if not taus:
        note = note or "no group varies only in this axis"
        return {**row, "psi": np.nan, "n_groups": 0, "note": note}
    return {**row, "psi": float(np.mean(taus)), "n_groups": len(taus), "note": note}


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """τ-b, NaN when either side is constant (undefined; the caller counts it)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(stats.kendalltau(x, y).statistic)
