"""One table that ranks indicators the way Jiang et al. 2020 (arXiv 1912.02178) do.

Their headline is the granulated coefficient Ψ, with the plain Kendall τ beside it; a
measure that scores a high τ but a low Ψ only tracks whichever hyperparameter moves the
gap most. Ranks are by absolute value: a measure that decreases with the gap predicts it
as well as one that increases.
"""

from __future__ import annotations

import pandas as pd

from .granulated import ALL_AXES


def summary(correlations_df: pd.DataFrame, granulated_df: pd.DataFrame) -> pd.DataFrame:
    """One row per (indicator, target), sorted by |Ψ| then |τ|, largest first.

    Columns: indicator, target, rank_psi, rank_tau, psi, n_groups, one ``psi_<axis>``
    per axis, kendall_tau, kendall_tau_ci_low, kendall_tau_ci_high, kendall_p, n,
    confidence. An indicator missing from one input has NaN in that input's columns.
    """
    keys = ["indicator", "target"]
    tau = correlations_df[correlations_df["statistic"] == "kendall_tau"]
    tau = tau[keys + ["value", "ci_low", "ci_high", "p_value", "n", "confidence"]].rename(
        columns={"value": "kendall_tau", "ci_low": "kendall_tau_ci_low",
                 "ci_high": "kendall_tau_ci_high", "p_value": "kendall_p"}
    )
    is_all = granulated_df["axis"] == ALL_AXES
    psi = granulated_df.loc[is_all, keys + ["psi", "n_groups"]]
    per_axis = granulated_df[~is_all].pivot(index=keys, columns="axis", values="psi")
    per_axis.columns = [f"psi_{axis}" for axis in per_axis.columns]
    table = psi.merge(per_axis.reset_index(), on=keys, how="left").merge(tau, on=keys, how="outer")
    table["rank_psi"] = table["psi"].abs().rank(ascending=False, method="min")
    table["rank_tau"] = table["kendall_tau"].abs().rank(ascending=False, method="min")
    table = table.assign(_abs_psi=table["psi"].abs(), _abs_tau=table["kendall_tau"].abs())
    table = table.sort_values(["_abs_psi", "_abs_tau"], ascending=False, na_position="last")
    leading = keys + ["rank_psi", "rank_tau", "psi", "n_groups"] + list(per_axis.columns)
    trailing = ["kendall_tau", "kendall_tau_ci_low", "kendall_tau_ci_high", "kendall_p", "n",
                "confidence"]
    return table[leading + trailing].reset_index(drop=True)
