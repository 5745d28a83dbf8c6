"""Pairwise scores of an indicator against the gap: Jiang's conditional mutual information and
Dziugaite et al.'s robust sign-error, beside Kendall τ (``correlation``) and Ψ (``granulated``).

Both scores look at pairs of networks and ask whether the indicator μ orders them as the
gap g does; they differ in which pairs they look at and in how they summarise.

Conditional mutual information (Jiang et al. 2020, "Fantastic Generalization Measures and
Where to Find Them", arXiv 1912.02178, "conditional independence tests"; the NeurIPS 2020
PGDL competition scored entries with it, Jiang et al. 2020, arXiv 2012.07976). For a pair
of networks (i, j),
    V_μ = sign(μ_i − μ_j),   V_g = sign(g_i − g_j),
and U_S = (θ_i[S], θ_j[S]) is the pair's values of the hyperparameters in S, for *both*
networks (the competition's scorer keys a pair by the concatenated values of network i and
network j on every hyperparameter in S). With p the empirical distribution over pairs,
    I(V_μ; V_g | U_S) = Σ_u p(u) Σ_{a,b} p(a, b | u) log[p(a, b | u) / (p(a | u) p(b | u))],
    H(V_g | U_S)      = −Σ_u p(u) Σ_b p(b | u) log p(b | u),
    Ĩ_S = I(V_μ; V_g | U_S) / H(V_g | U_S),     K(μ) = min over S with |S| = k of Ĩ_S,
k = 2 in Jiang et al.'s main table. If the hyperparameters in S explain the gap's ordering,
conditioning on them leaves little for μ to explain, so an indicator that only tracks a
hyperparameter h scores ~0 for every S that contains h, however high its overall τ.

Robust sign-error (Dziugaite, Drouin et al. 2020, "In Search of Robust Measures of
Generalization", arXiv 2010.11924, coupled-network experiments). An environment e is a pair
of training configurations that differ in exactly one hyperparameter (coupled networks); its
distribution P^e is over pairs (ω, ω') of networks trained under the two configurations,
and the loss on a pair is the sign-error
    ℓ(ω, ω') = (1 − sign(μ(ω) − μ(ω')) · sign(g(ω) − g(ω'))) / 2,
which is 0 when μ orders the pair as the gap does, 1 when it reverses it, 1/2 when μ ties.
The robust sign-error is sup_e E_{P^e}[ℓ]; the distribution of per-environment errors
(its quantiles, the fraction of environments a measure fails in) is read beside it.

Ĩ ignores the indicator's direction (V_μ ↦ −V_μ leaves it unchanged); the sign-error does
not: that of −μ is one minus that of μ. Both are unchanged by any strictly increasing
transform of μ.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .granulated import NOT_AVERAGED

# Seeds are repeats, not hyperparameters: they are never conditioned on or varied by default.
NOT_HYPERPARAMETERS = NOT_AVERAGED
SUBSET_COLUMNS = ["subset", "value", "mutual_information", "conditional_entropy", "n_pairs",
                  "n_groups", "note"]
ENVIRONMENT_COLUMNS = ["varied", "value_a", "value_b", "context", "n_a", "n_b", "n_pairs",
                       "n_pairs_tied_target", "weight_sum", "ess", "sign_error", "note"]
_BLOCK = 1 << 21  # pair-matrix elements handled at once, to bound memory on large tables
# Largest (configuration pair, V_μ, V_g) count array worth building (int64 cells, 128 MiB).
_CONFIG_CELLS = 1 << 24
# Most ordered pairs whose indices and (V_μ, V_g) cells are kept for every S (~72 MiB).
_PAIRS_KEPT = 1 << 22


def conditional_mi_score(
    table: pd.DataFrame, indicator: str, target: str = "gap", k: int = 2,
    keys: Sequence[str] | None = None,
) -> dict:
    """Jiang et al.'s conditional mutual information score K(μ) of ``indicator``.

    Returns a dict:
      ``score``: K = min over conditioning sets S (|S| = ``k``) of Ĩ_S, NaN when no Ĩ_S is
        defined; ``argmin``: that S as a tuple of column names (None when NaN);
      ``per_subset``: DataFrame, one row per S in ``itertools.combinations(keys, k)``
        order, with ``subset`` (the names joined by ","), ``value`` (Ĩ_S),
        ``mutual_information`` and ``conditional_entropy`` (in nats), ``n_pairs``,
        ``n_groups`` (values u of U_S with at least one pair), ``note``;
      ``keys`` (the hyperparameters S is drawn from), ``skipped_constant`` (keys with a
      single value, left out), ``n_networks`` (used), ``n_dropped`` (networks with a
      non-finite indicator or target), ``n_pairs`` (ordered pairs used),
      ``n_pairs_tied_target`` (ordered pairs dropped for a tied target), ``k``,
      ``indicator``, ``target``, ``note``.

    Choices (each one stated so the number can be reproduced by hand):
    - keys: default ``table.attrs["hyperparameters"]`` without ``seed``, which is a repeat
      and no confounder; keys with a single value among the used networks are skipped
      (conditioning on them changes nothing, and Jiang's min would count such an S as a
      smaller set). S ranges over the remaining keys' k-subsets.
    - pairs: every *ordered* pair (i, j) of distinct networks, all of them, whatever
      their other hyperparameters. Both orders are needed: within a group where both
      networks share their S-values, one order per pair would make V_g's distribution an
      artefact of row order; across two different S-values, (i, j) and (j, i) fall in the
      mirrored groups (u, w) and (w, u), which carry the same information.
      The competition's scorer also counts each network paired with itself; such a
      "pair" has no ordering and is left out here.
    - ties: a pair with g_i = g_j is dropped (there is no ordering of the gap to predict;
      this project's gaps come from integer counts and tie exactly), and counted in
      ``n_pairs_tied_target``; so V_g ∈ {−1, +1}. A tie in the indicator is kept as its
      own value V_μ = 0, so V_μ ∈ {−1, 0, +1} and the table per group is 3 × 2; a
      constant indicator has Ĩ = 0. (The competition's scorer files every tie under
      "not greater", i.e. with −1.)
    - weights: p(u) is the fraction of the used pairs in group u, exactly the formula
      above. (The competition's scorer averages the groups' I and H uniformly over all
      combinations of values, which equals this on a balanced grid.)
    - Ĩ_S is NaN, with a note, when S leaves no pair or H(V_g | U_S) = 0 (U_S fixes the
      gap's ordering in every group, so there is nothing left to inform); the minimum is
      over the defined Ĩ_S. Natural logarithms; Ĩ is unit-free and lies in [0, 1].
    - ``k = 0`` gives the single unconditional score I(V_μ; V_g) / H(V_g).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    used, keys, constant, n_dropped = _prepare(table, indicator, target, keys)
    result = {"indicator": indicator, "target": target, "k": k, "keys": keys,
              "skipped_constant": constant, "n_networks": len(used), "n_dropped": n_dropped,
              "n_pairs": 0, "n_pairs_tied_target": 0, "score": np.nan, "argmin": None,
              "per_subset": pd.DataFrame(columns=SUBSET_COLUMNS), "note": ""}
    if len(used) < 2:
        return {**result, "note": f"fewer than 2 networks with finite values (n={len(used)})"}
    if len(keys) < k:
        return {**result, "note": f"fewer than k={k} hyperparameters with more than one value "
                                  f"({len(keys)}: {keys})"}
    x = used[indicator].to_numpy(dtype=float)
    y = used[target].to_numpy(dtype=float)
    n_untied = _count_untied_pairs(y)
    result.update(n_pairs=n_untied, n_pairs_tied_target=len(y) * (len(y) - 1) - n_untied)
    subsets = list(itertools.combinations(keys, k))
    pair_counts = _pair_counter(used, x, y, keys)
    rows = [_subset_row(used, pair_counts, subset) for subset in subsets]
    per_subset = pd.DataFrame(rows, columns=SUBSET_COLUMNS)
    result["per_subset"] = per_subset
    defined = per_subset["value"].notna()
    if not defined.any():
        reason = "; ".join(sorted(set(per_subset["note"])))
        return {**result, "note": f"no conditioning set gives a value: {reason}"}
    best = per_subset.loc[defined, "value"].idxmin()
    note = (f"{int((~defined).sum())} of {len(per_subset)} conditioning sets undefined"
            if not defined.all() else "")
    return {**result, "score": float(per_subset.loc[best, "value"]),
            "argmin": subsets[best], "note": note}


def robust_sign_error(
    table: pd.DataFrame, indicator: str, target: str = "gap",
    keys: Sequence[str] | None = None, quantiles: Sequence[float] = (0.5, 0.9),
    n_test: int | None = None, min_ess: float = 1.0,
) -> dict:
    """Dziugaite et al.'s robust sign-error of ``indicator``: the worst environment's error.

    Returns a dict:
      ``max``: the largest per-environment sign-error (the robust sign-error), NaN when
        no environment has a usable pair; ``mean``; ``quantiles``: {q: value} over the
        environments (numpy's linear interpolation); ``n_environments`` (with a value);
      ``per_environment``: DataFrame, one row per environment, with ``varied`` (the
        hyperparameter that differs), ``value_a``, ``value_b`` (its two values),
        ``context`` (the other keys' shared values, "key=value" joined by ","), ``n_a``,
        ``n_b`` (networks per side), ``n_pairs`` (pairs used), ``n_pairs_tied_target``,
        ``weight_sum``, ``ess``, ``sign_error``, ``note``;
      ``per_hyperparameter``: DataFrame, per varied hyperparameter: n_environments,
        mean, max; ``keys``, ``skipped_constant``, ``n_networks``, ``n_dropped``,
        ``n_test``, ``min_ess``, ``indicator``, ``target``, ``note``.

    Definitions and choices:
    - configuration: the networks' values on ``keys`` (default
      ``table.attrs["hyperparameters"]`` without ``seed``). Networks with the same
      configuration are repeats (seeds); constant keys are skipped (they never vary).
    - environment: an unordered pair of configurations that differ in exactly one key,
      i.e. (the key h that varies, its two values {a, b}, the values of every other key).
      Its pairs are every network of configuration a with every network of configuration
      b (seeds drawn independently), as in the paper's reference code, which takes the
      expectation over all random seeds of the sign-error for every pair of
      configurations differing in one value. That code also lists each environment in
      both orders with the same error; here each appears once, which leaves the max and
      mean unchanged.
    - sign-error of a pair: (1 − sign(Δμ) · sign(Δg)) / 2, so an indicator tie costs 1/2
      (a coin flip). A pair whose targets tie exactly is dropped (``n_pairs_tied_target``):
      there is no ordering to predict; the paper's Monte Carlo filter gives such a pair
      weight 0 as well. A perfect indicator therefore scores 0, its negative 1.
    - an environment's sign-error: the weighted mean over its pairs. Without ``n_test``
      every pair weighs 1. With ``n_test`` (the number of test points each gap was
      measured on) the paper's Monte Carlo noise filter applies: a pair with gap
      difference Δ gets weight (w − 1/2)_+ with w = max(0, 1 − 2 exp(−n_test Δ² / 2))²,
      the Hoeffding probability that the two gaps really differ, so pairs whose order
      could be sampling noise do not count.
    - an environment has a value when its weights sum to more than 0 and its effective
      sample size ess = (Σw)² / Σw² is at least ``min_ess`` (the reference code's figures
      use 12, with the filter on); otherwise its row has NaN and a note, and it is not counted.
    """
    used, keys, constant, n_dropped = _prepare(table, indicator, target, keys)
    rows = list(_environment_rows(used, indicator, target, keys, n_test, min_ess))
    per_environment = pd.DataFrame(rows, columns=ENVIRONMENT_COLUMNS)
    errors = per_environment["sign_error"].dropna().to_numpy(dtype=float)
    result = {"indicator": indicator, "target": target, "keys": keys,
              "skipped_constant": constant, "n_networks": len(used), "n_dropped": n_dropped,
              "n_test": n_test, "min_ess": min_ess, "n_environments": len(errors),
              "per_environment": per_environment,
              "per_hyperparameter": _per_hyperparameter(per_environment)}
    if len(errors) == 0:
        reason = ("no two configurations differ in exactly one hyperparameter" if not rows
                  else "; ".join(sorted(set(per_environment["note"]))))
        return {**result, "max": np.nan, "mean": np.nan,
                "quantiles": {q: np.nan for q in quantiles}, "note": f"no environment: {reason}"}
    return {**result, "max": float(errors.max()), "mean": float(errors.mean()),
            "quantiles": {q: float(np.quantile(errors, q)) for q in quantiles}, "note": ""}


def _prepare(table: pd.DataFrame, indicator: str, target: str,
             keys: Sequence[str] | None) -> tuple[pd.DataFrame, list[str], list[str], int]:
    """Networks with finite indicator and target; keys with more than one value among them;
    the constant keys; how many networks were dropped."""
    if keys is None:
        if "hyperparameters" not in table.attrs:
            raise ValueError("pass keys, or a table with attrs['hyperparameters'] "
                             "(network_table sets it)")
        keys = [key for key in table.attrs["hyperparameters"] if key not in NOT_HYPERPARAMETERS]
    keys = list(keys)
    missing = [key for key in keys + [indicator, target] if key not in table.columns]
    if missing:
        raise KeyError(f"columns not in the table: {missing}")
    values = table[[indicator, target]].to_numpy(dtype=float)
    finite = np.isfinite(values).all(axis=1)
    used = table.loc[finite].reset_index(drop=True)
    used.attrs = {}  # read above; pandas would deep-copy them into every group and slice
    constant = [key for key in keys if used[key].nunique(dropna=False) < 2]
    return used, [key for key in keys if key not in constant], constant, int((~finite).sum())


def _blocks(n: int):
    """Row slices of an (n, n) pair matrix, each at most about _BLOCK elements."""
    step = max(1, _BLOCK // max(n, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _count_untied_pairs(y: np.ndarray) -> int:
    """Ordered pairs (i ≠ j) with y_i ≠ y_j."""
    return int(sum(np.count_nonzero(y[rows, None] != y[None, :]) for rows in _blocks(len(y))))


def _group_codes(used: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """0, 1, … per distinct value of ``columns`` (sorted), one per network; all 0 if none."""
    if not columns:
        return np.zeros(len(used), dtype=np.int64)
    return used.groupby(list(columns), dropna=False, sort=True).ngroup().to_numpy(dtype=np.int64)


def _pair_counter(used: pd.DataFrame, x: np.ndarray, y: np.ndarray, keys: list[str]):
    """A function (codes, n_codes) -> exactly ``_pair_counts(x, y, codes, n_codes)`` for
    codes that are functions of the networks' values on ``keys`` (every S ⊆ keys).

    Speed only, the counts are the same integers whichever way: where networks repeat
    configurations (seeds), the pairs are counted once per (configuration of i,
    configuration of j, V_μ, V_g) and each S's counts are sums of those, so one pass over
    the n² pairs serves every S. Where that array would have more cells than there are
    pairs (few repeats) or than ``_CONFIG_CELLS``, each S counts the pairs, from their
    untied pairs and cells computed once (up to ``_PAIRS_KEPT`` pairs), or afresh in blocks.
    """
    n = len(used)
    config = _group_codes(used, keys)
    n_config = int(config.max()) + 1 if n else 0
    cells = n_config * n_config * 6
    if cells > min(n * n, _CONFIG_CELLS):
        if n * n > _PAIRS_KEPT:
            return lambda codes, n_codes: _pair_counts(x, y, codes, n_codes)
        first, second = np.nonzero(y[:, None] != y[None, :])  # ordered pairs, untied target
        cell = ((np.sign(x[first] - x[second]).astype(np.int64) + 1) * 2
                + (y[first] > y[second]))  # as in _pair_counts: (V_μ + 1) · 2 + [V_g > 0]

        def counts_of_pairs(codes: np.ndarray, n_codes: int) -> np.ndarray:
            index = (codes[first] * n_codes + codes[second]) * 6 + cell
            return np.bincount(index, minlength=n_codes * n_codes * 6).reshape(-1, 3, 2)

        return counts_of_pairs
    per_config = _pair_counts(x, y, config, n_config).reshape(n_config, n_config, 6)

    def counts(codes: np.ndarray, n_codes: int) -> np.ndarray:
        of_config = np.empty(n_config, dtype=np.int64)
        of_config[config] = codes  # a configuration fixes its values on S, hence its code
        order = np.argsort(of_config, kind="stable")
        # Every code 0 … n_codes − 1 belongs to some network, so no segment is empty.
        starts = np.flatnonzero(np.r_[True, np.diff(of_config[order]) != 0])
        by_row = np.add.reduceat(per_config[order], starts, axis=0)
        by_both = np.add.reduceat(by_row[:, order], starts, axis=1)
        return by_both.reshape(n_codes * n_codes, 3, 2)

    return counts


def _subset_row(used: pd.DataFrame, pair_counts, subset: tuple) -> dict:
    """Ĩ_S and its parts for one conditioning set S; ``pair_counts`` as ``_pair_counter``."""
    row = {"subset": ",".join(subset)}
    codes = _group_codes(used, subset)
    counts = pair_counts(codes, int(codes.max()) + 1)
    n_pairs = int(counts.sum())
    occupied = counts.sum(axis=(1, 2)) > 0
    row.update(n_pairs=n_pairs, n_groups=int(occupied.sum()))
    if n_pairs == 0:
        return {**row, "value": np.nan, "mutual_information": np.nan,
                "conditional_entropy": np.nan, "note": "no pair with untied target"}
    mi, entropy = _conditional_mi(counts[occupied])
    if entropy <= 0:
        return {**row, "value": np.nan, "mutual_information": mi, "conditional_entropy": 0.0,
                "note": "H(V_g | U_S) = 0: U_S fixes the ordering of the target"}
    return {**row, "value": mi / entropy, "mutual_information": mi,
            "conditional_entropy": entropy, "note": ""}


def _pair_counts(x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """(group u, V_μ + 1, [V_g > 0]) counts over ordered pairs with untied target; the group
    of pair (i, j) is (codes[i], codes[j]), so there are n_codes² groups."""
    n_groups = n_codes * n_codes
    counts = np.zeros(n_groups * 6, dtype=np.int64)
    for rows in _blocks(len(x)):
        v_mu = np.sign(x[rows, None] - x[None, :]).astype(np.int64) + 1
        dy = y[rows, None] - y[None, :]
        group = codes[rows, None] * n_codes + codes[None, :]
        cell = (group * 3 + v_mu) * 2 + (dy > 0)
        counts += np.bincount(cell[dy != 0], minlength=n_groups * 6)
    return counts.reshape(n_groups, 3, 2)


def _conditional_mi(counts: np.ndarray) -> tuple[float, float]:
    """I(V_μ; V_g | U) and H(V_g | U) in nats from (group, V_μ, V_g) counts."""
    p = counts / counts.sum()
    p_u = p.sum(axis=(1, 2), keepdims=True)
    p_mu = p.sum(axis=2, keepdims=True)  # p(V_μ, u)
    p_g = p.sum(axis=1, keepdims=True)  # p(V_g, u)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi_terms = np.where(p > 0, p * np.log(p * p_u / (p_mu * p_g)), 0.0)
        h_terms = np.where(p_g > 0, -p_g * np.log(p_g / p_u), 0.0)
    # Rounding can leave a mutual information of −1e−17 where it is exactly 0.
    return max(float(mi_terms.sum()), 0.0), float(h_terms.sum())


def _hoeffding_weight(delta: np.ndarray, n_test: int) -> np.ndarray:
    """Dziugaite et al.'s Monte Carlo weight (w − 1/2)_+, w = (1 − 2 exp(−2 n (Δ/2)²))_+²."""
    w = np.maximum(0.0, 1.0 - 2.0 * np.exp(-2.0 * n_test * (np.abs(delta) / 2.0) ** 2)) ** 2
    return np.maximum(w - 0.5, 0.0)


def _environment_rows(used: pd.DataFrame, indicator: str, target: str, keys: list[str],
                      n_test: int | None, min_ess: float):
    """One dict per environment: configurations that differ in exactly one key."""
    if not keys or used.empty:
        return
    configs = {}  # configuration tuple -> (indicator values, target values)
    for config, group in used.groupby(keys, dropna=False, sort=True):
        config = config if isinstance(config, tuple) else (config,)
        configs[config] = (group[indicator].to_numpy(dtype=float),
                           group[target].to_numpy(dtype=float))
    for position, varied in enumerate(keys):
        contexts: dict[tuple, list[tuple]] = {}  # other keys' values -> configurations
        for config in configs:
            contexts.setdefault(config[:position] + config[position + 1:], []).append(config)
        others = keys[:position] + keys[position + 1:]
        for context, members in contexts.items():
            label = ",".join(f"{key}={value}" for key, value in zip(others, context))
            for config_a, config_b in itertools.combinations(members, 2):
                yield {"varied": varied, "value_a": config_a[position],
                       "value_b": config_b[position], "context": label,
                       **_environment_error(*configs[config_a], *configs[config_b], n_test,
                                            min_ess)}


def _environment_error(x_a, y_a, x_b, y_b, n_test: int | None, min_ess: float) -> dict:
    """Weighted mean sign-error over every (network of a, network of b) pair."""
    dx = (x_b[None, :] - x_a[:, None]).ravel()
    dy = (y_b[None, :] - y_a[:, None]).ravel()
    untied = dy != 0
    dx, dy = dx[untied], dy[untied]
    row = {"n_a": len(x_a), "n_b": len(x_b), "n_pairs": len(dy),
           "n_pairs_tied_target": int((~untied).sum())}
    weights = np.ones(len(dy)) if n_test is None else _hoeffding_weight(dy, n_test)
    total = float(weights.sum())
    ess = total ** 2 / float((weights ** 2).sum()) if total > 0 else 0.0
    row.update(weight_sum=total, ess=ess)
    if len(dy) == 0:
        return {**row, "sign_error": np.nan, "note": "every pair ties in the target"}
    if total <= 0:
        return {**row, "sign_error": np.nan, "note": "no pair passes the Monte Carlo filter"}
    if ess < min_ess and not np.isclose(ess, min_ess):
        return {**row, "sign_error": np.nan, "note": f"effective sample size below {min_ess}"}
    loss = (1.0 - np.sign(dx) * np.sign(dy)) / 2.0
    return {**row, "sign_error": float(np.sum(weights * loss) / total), "note": ""}


def _per_hyperparameter(per_environment: pd.DataFrame) -> pd.DataFrame:
    """Environments with a value, their mean and max sign-error, per varied hyperparameter."""
    defined = per_environment.dropna(subset=["sign_error"])
    summary = defined.groupby("varied", sort=False)["sign_error"].agg(["size", "mean", "max"])
    return summary.rename(columns={"size": "n_environments"}).reset_index()
