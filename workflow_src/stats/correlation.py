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
# Above this many networks Kendall's τ of a resample is computed by scipy's O(n log n)
# routine one resample at a time; below it, for all resamples at once from pairwise signs
# (O(n²) memory per resample, far less time than a thousand scipy calls).
PAIRWISE_MAX_N = 300
# Resamples whose (resample, n, n) pairwise signs are formed at once.
PAIRWISE_BLOCK = 2_000_000


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of every row of x (..., n) with the same row of y; NaN for a constant row."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    return np.clip(r, -1.0, 1.0)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ per row: Pearson's r of the mid-ranks (ties share their mean rank)."""
    return _pearson_rows(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b per row (scipy's definition, ties corrected); NaN when a row of x or y
    is constant. The sums run over ordered pairs, which doubles numerator and denominator
    alike."""
    n = x.shape[-1]
    if n > PAIRWISE_MAX_N:
        flat_x, flat_y = x.reshape(-1, n), y.reshape(-1, n)
        out = [stats.kendalltau(a, b).statistic for a, b in zip(flat_x, flat_y)]
        return np.asarray(out, dtype=float).reshape(x.shape[:-1])
    flat_x, flat_y = x.reshape(-1, n), y.reshape(-1, n)
    step = max(1, PAIRWISE_BLOCK // (n * n))
    out = np.empty(flat_x.shape[0])
    for start in range(0, flat_x.shape[0], step):
        a, b = flat_x[start:start + step], flat_y[start:start + step]
        sa = np.sign(a[:, :, None] - a[:, None, :])
        sb = np.sign(b[:, :, None] - b[:, None, :])
        concordance = (sa * sb).sum(axis=(1, 2))
        untied = np.count_nonzero(sa, axis=(1, 2)) * np.count_nonzero(sb, axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + step] = concordance / np.sqrt(untied.astype(float))
    return np.clip(out, -1.0, 1.0).reshape(x.shape[:-1])


# The statistic of each resample, for scipy's vectorized bootstrap: every resample at once.
ROW_STATISTICS = {
    "kendall_tau": _kendall_rows,
    "spearman_rho": _spearman_rows,
    "pearson_r": _pearson_rows,
}


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
                row.update(_estimate(func, ROW_STATISTICS[name], x, y, n_boot, confidence,
                                     seed))
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _estimate(func, rows, x, y, n_boot: int, confidence: float, seed: int) -> dict:
    """Point estimate and p-value (scipy's ``func``) and percentile bootstrap CI of one
    correlation; ``rows`` computes the same statistic for every resample at once (scipy
    draws the same resamples whether or not the statistic is vectorized; tests/test_stats.py
    checks the intervals against the one-call-per-resample bootstrap)."""
    result = func(x, y)

    def statistic(xb, yb, axis=-1):
        return rows(np.moveaxis(xb, axis, -1), np.moveaxis(yb, axis, -1))

    # A resample can repeat one network n times and so be constant; its coefficient is
    # undefined (NaN) and scipy warns. The NaN is kept: it makes the CI NaN, noted below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = stats.bootstrap(
            (x, y), statistic, n_resamples=n_boot, paired=True, vectorized=True,
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
