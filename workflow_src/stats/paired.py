"""Matched-pairs tests of one hyperparameter's effect on an indicator.

Novak et al. 2018 (arXiv 1802.08760) compare, e.g., the Jacobian norm of networks
trained with and without data augmentation, or on true versus random labels. Pairing
networks that agree in every other hyperparameter (seed included) removes the other
factors' variance; the Wilcoxon signed-rank test (Wilcoxon 1945) asks whether the paired
differences are centred on zero. Effect sizes: the median paired difference with a
percentile bootstrap CI, and the matched-pairs rank-biserial correlation (Kerby 2014,
"The simple difference formula", Comprehensive Psychology 3:11.IT.3.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

COLUMNS = [
    "factor", "level_a", "level_b", "indicator", "n_pairs", "wilcoxon_statistic", "p_value",
    "median_diff", "median_diff_ci_low", "median_diff_ci_high", "rank_biserial",
    "n_boot", "confidence", "note",
]
FULL_BATCH = "gd"  # full-batch gradient descent records batch_size = n_train
NO_FACTOR = "no hyperparameter axis with exactly two values has matched pairs"
# pairs.csv: one row per (contrast, indicator, pair); the pair's other hyperparameters follow.
PAIR_COLUMNS = ["contrast", "factor", "level_a", "level_b", "indicator", "run_id_a",
                "run_id_b", "value_a", "value_b"]


def matched_pairs(
    table: pd.DataFrame,
    factor: str,
    levels: tuple,
    indicator: str,
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Networks at ``levels[0]`` and ``levels[1]`` of ``factor`` that agree on every other key.

    ``keys`` are the hyperparameter columns (default ``table.attrs["hyperparameters"]``,
    which ``network_table`` sets). Columns: the other keys, run_id_a, run_id_b,
    value_a, value_b; rows with a non-finite value on either side are dropped.
    """
    keys = list(table.attrs["hyperparameters"] if keys is None else keys)
    others = [k for k in keys if k != factor]
    sides = []
    for suffix, level in zip(("a", "b"), levels):
        side = table.loc[table[factor] == level, others + ["run_id", indicator]]
        if side.duplicated(others).any():
            raise ValueError(
                f"several networks at {factor}={level!r} share all other hyperparameters "
                f"{others}; pairs are ambiguous"
            )
        sides.append(side.rename(columns={"run_id": f"run_id_{suffix}",
                                          indicator: f"value_{suffix}"}))
    pairs = sides[0].merge(sides[1], on=others, how="inner")
    finite = np.isfinite(pairs[["value_a", "value_b"]].to_numpy(dtype=float)).all(axis=1)
    return pairs[finite].reset_index(drop=True)


def paired_factor_tests(
    table: pd.DataFrame,
    factor: str,
    levels: tuple,
    indicator: str,
    keys: Sequence[str] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row: Wilcoxon signed-rank test of value_b − value_a over matched pairs.

    Differences are ``levels[1]`` minus ``levels[0]``, so a positive median difference
    and rank-biserial correlation mean the indicator is larger at ``levels[1]``. Zero
    differences are dropped before ranking (Wilcoxon's convention, scipy's default).
    """
    pairs = matched_pairs(table, factor, levels, indicator, keys)
    diff = (pairs["value_b"] - pairs["value_a"]).to_numpy(dtype=float)
    row = {"factor": factor, "level_a": levels[0], "level_b": levels[1], "indicator": indicator,
           "n_pairs": len(diff), "n_boot": n_boot, "confidence": confidence, "note": ""}
    if len(diff) < 2:
        row["note"] = f"fewer than 2 matched pairs (n={len(diff)})"
    elif not np.any(diff):
        row["note"] = "all paired differences are zero"
    else:
        test = stats.wilcoxon(diff)
        low, high = _median_ci(diff, n_boot, confidence, seed)
        row.update(wilcoxon_statistic=float(test.statistic), p_value=float(test.pvalue),
                   median_diff=float(np.median(diff)), median_diff_ci_low=low,
                   median_diff_ci_high=high, rank_biserial=_rank_biserial(diff))
    return pd.DataFrame([row], columns=COLUMNS)


def _median_ci(diff: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the median paired difference, resampling pairs."""
    boot = stats.bootstrap(
        (diff,), np.median, n_resamples=n_boot, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )
    return float(boot.confidence_interval.low), float(boot.confidence_interval.high)


def _rank_biserial(diff: np.ndarray) -> float:
    """Kerby's r = (R⁺ − R⁻)/(R⁺ + R⁻) over the ranks of the nonzero |differences|."""
    nonzero = diff[diff != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def factor_comparisons(table: pd.DataFrame, hyperparameters: Sequence[str]):
    """(factor, levels, contrast, subset, keys, note) for every two-valued axis of ``table``.

    Every hyperparameter with exactly two values among the networks is a factor (Novak et
    al.'s true vs random labels, augmentation, relu vs hard_sigmoid, mini-batch vs full
    batch). Levels are sorted (False before True, low before high), full-batch gd last, so
    differences read as level_b − level_a; ``contrast`` labels the comparison.

    Full-batch gd records batch_size = n_train, so a gd network never shares its batch size
    with its mini-batch twin: for an optimizer factor with gd as one level, batch_size is
    dropped from the matching ``keys`` and there is one comparison per batch size of the
    mini-batch side, on the ``subset`` of gd networks plus that batch size, with a note.
    """
    hyperparameters = list(hyperparameters)
    for factor in hyperparameters:
        values = table[factor].unique().tolist()
        if len(values) != 2:
            continue
        levels = tuple(sorted(values, key=lambda v: (v == FULL_BATCH, v)))
        if factor == "optimizer" and FULL_BATCH in levels:
            keys = [h for h in hyperparameters if h != "batch_size"]
            mini = table[table["optimizer"] != FULL_BATCH]
            for size in sorted(mini["batch_size"].unique()):
                subset = table[(table["optimizer"] == FULL_BATCH) | (table["batch_size"] == size)]
                note = (f"batch_size left out of the matching keys (gd uses all n_train points); "
                        f"mini-batch side batch_size={size}")
                contrast = f"{factor}: {levels[0]} (batch_size={size}) vs {levels[1]}"
                yield factor, levels, contrast, subset, keys, note
        else:
            contrast = f"{factor}: {levels[0]} vs {levels[1]}"
            yield factor, levels, contrast, table, hyperparameters, ""


def factor_tests(
    table: pd.DataFrame,
    indicators: Sequence[str],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "holm",
    log=lambda message: None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tests, pairs): ``paired_factor_tests`` of every factor of ``factor_comparisons``
    and every indicator, with ``p_adjusted``/``reject`` over the whole family (``method``,
    alpha = 1 − confidence), and the matched pairs behind them (PAIR_COLUMNS, then the
    pairs' other hyperparameters). Comparisons without a pair of finite values are logged
    and left out; with none at all, ``tests`` is one row whose note says so.
    """
    hyperparameters = list(table.attrs["hyperparameters"])
    tests, pairs = [], []
    for factor, levels, contrast, subset, keys, note in factor_comparisons(table, hyperparameters):
        for name in indicators:
            matched = matched_pairs(subset, factor, levels, name, keys)
            if matched.empty:
                log(f"{contrast}: no matched pairs with finite {name}; skipped")
                continue
            row = paired_factor_tests(subset, factor, levels, name, keys, n_boot, confidence,
                                      seed)
            row["note"] = "; ".join(part for part in (row["note"].iloc[0], note) if part)
            tests.append(row.assign(contrast=contrast))
            pairs.append(matched.assign(factor=factor, level_a=levels[0], level_b=levels[1],
                                        indicator=name, contrast=contrast))
    if tests:
        result = correct_multiple(pd.concat(tests, ignore_index=True), method, 1 - confidence)
    else:
        result = correct_multiple(pd.DataFrame([{"note": NO_FACTOR}], columns=COLUMNS))
        result["contrast"] = None
    result.insert(1, "contrast", result.pop("contrast"))
    pair_table = (pd.concat(pairs, ignore_index=True) if pairs
                  else pd.DataFrame(columns=PAIR_COLUMNS))
    others = [h for h in hyperparameters if h in pair_table.columns]
    # A factor's own column is empty in its rows; keep integers integer around those gaps.
    integers = {h: "Int64" for h in others if pd.api.types.is_integer_dtype(table[h])}
    return result, pair_table[PAIR_COLUMNS + others].astype(integers)


def correct_multiple(
    df: pd.DataFrame, method: str = "holm", alpha: float = 0.05, p_column: str = "p_value"
) -> pd.DataFrame:
    """Copy of ``df`` with ``p_adjusted`` and ``reject`` for the family of its p-values.

    The family is every row with a p-value; rows without one (degenerate tests) get NaN
    and a missing ``reject``. ``method`` is any of statsmodels' ``multipletests`` methods.
    """
    out = df.copy()
    p = out[p_column].to_numpy(dtype=float)
    tested = np.isfinite(p)
    adjusted = np.full(len(p), np.nan)
    reject = pd.array([pd.NA] * len(p), dtype="boolean")
    if tested.any():
        reject_tested, adjusted[tested], _, _ = multipletests(p[tested], alpha=alpha, method=method)
        reject[tested] = reject_tested
    out["p_adjusted"] = adjusted
    out["reject"] = reject
    return out
