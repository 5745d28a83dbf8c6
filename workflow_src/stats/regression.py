"""Regression of the generalization gap on the log of an indicator.

Novak et al. 2018 (arXiv 1802.08760) show the gap growing roughly linearly
in the log of the mean test Jacobian norm, within each dataset. The model is
    gap = β₀ + β₁·log(indicator) + dataset fixed effect + ε,
fit by OLS with HC3 heteroskedasticity-robust standard errors (MacKinnon & White 1985),
since the spread of the gap differs between datasets and corruptions.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

COLUMNS = [
    "indicator", "term", "coef", "std_err", "z", "p_value", "ci_low", "ci_high",
    "n", "r_squared", "cov_type", "note",
]


def ols_gap_on_log_indicator(
    table: pd.DataFrame, indicator: str, target: str = "gap", confidence: float = 0.95
) -> tuple[pd.DataFrame, str]:
    """Coefficient table (one row per term) and ``str(result.summary())``.

    Networks with a non-positive or non-finite indicator, or a non-finite target, are
    dropped (log is undefined). The ``C(dataset)`` fixed effect is included only when the
    table holds more than one dataset. When the model cannot be fit the table is one
    NaN row whose ``note`` says why, and the summary text is that note.
    """
    data = _usable(table, indicator, target)
    n_datasets = data["dataset"].nunique()
    formula = f"{target} ~ np.log({indicator})" + (" + C(dataset)" if n_datasets > 1 else "")
    n_params = 2 + max(n_datasets - 1, 0)
    note = _why_unfit(data, indicator, target, n_params)
    if note:
        row = {"indicator": indicator, "term": f"np.log({indicator})", "n": len(data),
               "cov_type": "HC3", "note": note}
        return pd.DataFrame([row], columns=COLUMNS), f"{formula}: not fit, {note}"
    result = smf.ols(formula, data=data).fit(cov_type="HC3")
    ci = result.conf_int(alpha=1 - confidence)
    coefs = pd.DataFrame({
        "indicator": indicator,
        "term": result.params.index,
        "coef": result.params.to_numpy(),
        "std_err": result.bse.to_numpy(),
        "z": result.tvalues.to_numpy(),
        "p_value": result.pvalues.to_numpy(),
        "ci_low": ci[0].to_numpy(),
        "ci_high": ci[1].to_numpy(),
        "n": int(result.nobs),
        "r_squared": result.rsquared,
        "cov_type": "HC3",
        "note": "",
    })
    return coefs[COLUMNS], _without_clock(str(result.summary()))


def _without_clock(text: str) -> str:
    """statsmodels stamps its summary with the date and time of the call; blank both
    (keeping the columns aligned) so that a re-run writes the same file."""
    return re.sub(r"^((?:Date|Time):\s+)(\S(?:\S| (?! ))*)",
                  lambda m: m.group(1) + "-".ljust(len(m.group(2))), text, flags=re.M)


def _usable(table: pd.DataFrame, indicator: str, target: str) -> pd.DataFrame:
    """Rows where log(indicator) and the target are finite."""
    values = table[indicator].to_numpy(dtype=float)
    gap = table[target].to_numpy(dtype=float)
    keep = np.isfinite(values) & (values > 0) & np.isfinite(gap)
    return table.loc[keep, ["dataset", indicator, target]].reset_index(drop=True)


def _why_unfit(data: pd.DataFrame, indicator: str, target: str, n_params: int) -> str:
    """Why OLS with HC3 errors is undefined on ``data``, or "" when it can be fit."""
    # HC3 divides by (1 − h_ii); it needs residual degrees of freedom left over.
    if len(data) <= n_params:
        return f"{len(data)} networks with positive finite {indicator} for {n_params} parameters"
    if np.ptp(data[indicator].to_numpy()) == 0:
        return "indicator is constant"
    if np.ptp(data[target].to_numpy()) == 0:
        return "target is constant"
    return ""
