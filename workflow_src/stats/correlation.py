"""Rank and linear correlation between an indicator and the generalization gap.

Jiang et al. 2020 (arXiv 1912.02178, §4) score a generalization measure by Kendall's
τ with the gap over all networks; Novak et al. 2018 (arXiv 1802.08760) report how the
mean test Jacobian norm tracks the gap. Spearman's ρ and Pearson's r are reported beside τ.
Confidence intervals come from a paired percentile bootstrap over networks (Efron &
Tibshirani 1993, ch. 13), resampling (indicator, gap) pairs together.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ._checks import degeneracy, finite_xy

# τ-b equals Jiang's pair-counting τ when there are no ties and corrects for ties otherwise.
STATISTICS = {
    "kendall_tau": stats.kendalltau,
    "spearman_rho": stats.spearmanr,
    "pearson_r": stats.pearsonr,
}
COLUMNS = [
    "indicator", "target", "statistic", "value", "ci_low", "ci_high",
    "p_value", "n", "n_boot", "confidence", "note",
]


def correlations(
    table: pd.DataFrame,
    indicators: Sequence[str],
    target: str = "gap",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Kendall τ, Spearman ρ and Pearson r of each indicator with ``target``.

    One row per (indicator, statistic). Networks where either value is not finite are
    dropped. Every statistic of every indicator is bootstrapped with the same seed, so
    their intervals come from the same resamples of networks.
    """
    rows = []
    for indicator in indicators:
        x, y = finite_xy(table, indicator, target)
        note = degeneracy(x, y, min_n=3)
        for name, func in STATISTICS.items():
            row = {"indicator": indicator, "target": target, "statistic": name,
                   "n": len(x), "n_boot": n_boot, "confidence": confidence}
            if note:
                row.update(value=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan, note=note)
            else:
                row.update(_estimate(func, x, y, n_boot, confidence, seed))
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _estimate(func, x, y, n_boot: int, confidence: float, seed: int) -> dict:
    """Point estimate, p-value and percentile bootstrap CI of one correlation."""
    result = func(x, y)

    def statistic(xb, yb):
        return func(xb, yb).statistic

    # A resample can repeat one network n times and so be constant; its coefficient is
    # undefined (NaN) and scipy warns. The NaN is kept: it makes the CI NaN, noted below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = stats.bootstrap(
            (x, y), statistic, n_resamples=n_boot, paired=True, vectorized=False,
            confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
        )
    n_undefined = int(np.isnan(boot.bootstrap_distribution).sum())
    note = (f"bootstrap CI undefined: {n_undefined} of {n_boot} resamples were constant"
            if n_undefined else "")
    return {
        "value": float(result.statistic),
        "ci_low": float(boot.confidence_interval.low),
        "ci_high": float(boot.confidence_interval.high),
        "p_value": float(result.pvalue),
        "note": note,
    }
