"""One table that ranks indicators the way Jiang et al. 2020 (arXiv 1912.02178) do.

Their headline is the granulated coefficient Ψ, with the plain Kendall τ beside it; a
measure that scores a high τ but a low Ψ only tracks whichever hyperparameter moves the
gap most. Ranks are by absolute value: a measure that decreases with the gap predicts it
as well as one that increases.

Every indicator states the sign it is expected to have (the aggregate step writes
``attrs["expected_sign"]``: +1 when a larger value should go with a larger gap, −1 for
e.g. a margin; a variable without it counts as +1). Beside τ and Ψ the table says whether
τ has that sign, and carries two pairwise scores (``scoring``): Jiang et al.'s conditional
mutual information K, which is blind to direction, and Dziugaite et al.'s robust
sign-error, computed on the oriented indicator expected_sign · μ so that 0 means "every
coupled pair ordered as expected" for indicators of either sign.

Two caveats travel with each indicator (``indicator_notes``). An indicator found by an
optimizer that can stop short (Lanczos, L-BFGS-B, a bisection) names, in
``attrs["converged_by"]``, the per-network variable that says whether it converged: the
table gives the fraction of the scored networks for which it did. An indicator that takes
one value on every scored network (e.g. a critical sample ratio of 0 everywhere) ranks
nothing: it gets no rank, whatever its (tied, zero) Ψ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from .datasets import AXIS, POOLED, store_groups, with_dataset
from .granulated import ALL_AXES
from .scoring import conditional_mi_score, robust_sign_error
from .tables import converged, indicator_names, network_table, strings

SCORE_COLUMNS = ["indicator", "target", "cmi", "cmi_conditioning", "robust_sign_error",
                 "sign_error_mean", "n_environments", "score_note"]
NOTE_COLUMNS = ["indicator", "constant", "optimizer_converged_fraction", "indicator_note"]
NEW_COLUMNS = ["expected_sign", "direction"] + SCORE_COLUMNS[2:] + NOTE_COLUMNS[2:]


def _sign(value, name: str) -> int:
    """+1 or −1 from an attribute value (a NumPy scalar read back from Zarr is fine)."""
    try:
        sign = float(value)
    except (TypeError, ValueError):
        sign = np.nan
    if sign not in (1.0, -1.0):
        raise ValueError(f"expected_sign of {name!r} must be +1 or -1, got {value!r}")
    return int(sign)


def expected_signs(ds, indicators: Iterable[str] | None = None) -> dict[str, int]:
    """Indicator name -> its ``attrs["expected_sign"]`` (+1 or −1), +1 where the variable has
    no such attribute (stores written before the aggregate step recorded it). Default
    indicators: every one ``tables.indicator_names`` finds."""
    names = indicator_names(ds) if indicators is None else list(indicators)
    return {name: _sign(ds[name].attrs.get("expected_sign", 1), name) for name in names}


def optimizer_flags(ds) -> pd.DataFrame:
    """Whether each network's optimizer converged, for every indicator that names its
    convergence variable in ``attrs["converged_by"]`` and whose store has it: one column
    per such indicator (1.0 converged, 0.0 not, NaN not measured), index ``run_id`` (every
    run); ``attrs["converged_by"]``: indicator -> variable."""
    named = {name: ds[name].attrs["converged_by"] for name in indicator_names(ds)
             if ds[name].attrs.get("converged_by") in ds}
    flags = pd.DataFrame({name: np.asarray(ds[variable].values, dtype=float)
                          for name, variable in named.items()},
                         index=pd.Index(strings(ds["run_id"]), name="run_id"))
    flags.attrs["converged_by"] = named
    return flags


def _networks(n: int) -> str:
    return f"{n} network" if n == 1 else f"{n} networks"


def indicator_notes(ds, indicators: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per indicator (default: every one ``indicator_names`` finds), over the
    converged networks, the ones the statistics score: ``constant`` (its finite values, at
    least one, are all equal: it ranks nothing), ``optimizer_converged_fraction`` (of those
    with a convergence flag, the fraction whose optimizer converged; NaN for an indicator
    without one, ``optimizer_flags``) and ``indicator_note``, which says both in words
    ("" when there is nothing to say)."""
    table = converged(network_table(ds))
    flags = optimizer_flags(ds)
    named = flags.attrs["converged_by"]
    flags = flags.reindex(table["run_id"])
    rows = []
    for name in indicator_names(ds) if indicators is None else indicators:
        values = table[name].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        constant = values.size > 0 and bool((values == values[0]).all())
        notes = [f"constant over the {_networks(values.size)}: ranks nothing"] if constant \
            else []
        fraction = np.nan
        if name in flags:
            flag = flags[name].to_numpy(dtype=float)
            flag = flag[~np.isnan(flag)]
            if flag.size:
                fraction = float(np.mean(flag == 1.0))
                if fraction < 1:
                    notes.append(f"optimizer did not converge for {int(np.sum(flag != 1.0))} "
                                 f"of {_networks(flag.size)} ({named[name]})")
        rows.append({"indicator": name, "constant": constant,
                     "optimizer_converged_fraction": fraction,
                     "indicator_note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=NOTE_COLUMNS)


def scores(table: pd.DataFrame, indicators: Iterable[str],
           expected_signs: Mapping[str, int] | None = None, target: str = "gap",
           k: int = 2) -> pd.DataFrame:
    """One row per indicator: the pairwise scores of ``scoring`` on ``table`` (the converged
    network table, with ``attrs["hyperparameters"]``).

    Columns: indicator, target; ``cmi``: K = min over the k-subsets S of the hyperparameters
    that vary (seed excluded) of Ĩ_S, NaN when undefined; ``cmi_conditioning``: that S
    joined by "+" ("" when NaN); ``robust_sign_error`` (the worst environment's error) and
    ``sign_error_mean`` (its mean over the environments), both of expected_sign · μ, and
    ``n_environments``; ``score_note``: the scoring functions' notes, each prefixed by the
    score's name and joined by "; ", for the scores that are undefined ("" otherwise).
    An indicator missing from ``expected_signs`` counts as +1.
    """
    signs = dict(expected_signs or {})
    rows = []
    for name in indicators:
        sign = _sign(signs.get(name, 1), name)
        cmi = conditional_mi_score(table, name, target, k=k)
        oriented = table[[name, target, *table.attrs.get("hyperparameters", [])]].copy()
        oriented.attrs = dict(table.attrs)
        oriented[name] = sign * oriented[name].astype(float)
        rse = robust_sign_error(oriented, name, target)
        notes = [f"{label}: {result['note']}" for label, value, result in
                 (("cmi", cmi["score"], cmi), ("robust_sign_error", rse["max"], rse))
                 if np.isnan(value) and result["note"]]
        rows.append({
            "indicator": name, "target": target, "cmi": cmi["score"],
            "cmi_conditioning": "+".join(cmi["argmin"]) if cmi["argmin"] else "",
            "robust_sign_error": rse["max"], "sign_error_mean": rse["mean"],
            "n_environments": rse["n_environments"], "score_note": "; ".join(notes),
        })
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def _direction(tau: float, sign: int) -> str:
    if not np.isfinite(tau) or tau == 0:
        return ""
    return "as expected" if np.sign(tau) == sign else "reversed"


def summary(correlations_df: pd.DataFrame, granulated_df: pd.DataFrame,
            expected_signs: Mapping[str, int] | None = None,
            scores_df: pd.DataFrame | None = None,
            notes_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (indicator, target), sorted by |Ψ| then |τ|, largest first; an indicator
    that ``notes_df`` marks ``constant`` gets no rank and comes last.

    Columns: indicator, target, rank_psi, rank_tau, psi, n_groups, one ``psi_<axis>``
    per axis, kendall_tau, kendall_tau_ci_low, kendall_tau_ci_high, kendall_p, n,
    confidence; then expected_sign (+1 where ``expected_signs`` has no entry), direction
    ("as expected" when sign(τ) is the expected sign, "reversed" when it is the opposite,
    "" when τ is NaN or 0), and the columns of ``scores`` (cmi, cmi_conditioning,
    robust_sign_error, sign_error_mean, n_environments, score_note), NaN / "" where
    ``scores_df`` has no row; then optimizer_converged_fraction and indicator_note of
    ``indicator_notes`` (NaN / "" where ``notes_df`` has no row). An indicator missing from
    one input has NaN in that input's columns.
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
    if notes_df is None:
        notes_df = pd.DataFrame(columns=NOTE_COLUMNS)
    constant = table["indicator"].isin(notes_df.loc[notes_df["constant"].astype(bool),
                                                    "indicator"])
    # A constant indicator ties every pair: its Ψ is 0 and its τ undefined, and it ranks
    # nothing, so it takes no rank (and no place among the ranked).
    table = table.assign(_abs_psi=table["psi"].abs().mask(constant),
                         _abs_tau=table["kendall_tau"].abs().mask(constant))
    table["rank_psi"] = table["_abs_psi"].rank(ascending=False, method="min")
    table["rank_tau"] = table["_abs_tau"].rank(ascending=False, method="min")
    table = table.sort_values(["_abs_psi", "_abs_tau"], ascending=False, na_position="last")
    leading = keys + ["rank_psi", "rank_tau", "psi", "n_groups"] + list(per_axis.columns)
    trailing = ["kendall_tau", "kendall_tau_ci_low", "kendall_tau_ci_high", "kendall_p", "n",
                "confidence"]
    table = table[leading + trailing].reset_index(drop=True)

    signs = dict(expected_signs or {})
    table["expected_sign"] = [_sign(signs.get(name, 1), name) for name in table["indicator"]]
    table["direction"] = [_direction(float(t), s) for t, s in
                          zip(table["kendall_tau"], table["expected_sign"])]
    if scores_df is None:
        scores_df = pd.DataFrame(columns=SCORE_COLUMNS)
    on = [key for key in keys if key in scores_df.columns]
    table = table.merge(scores_df[on + SCORE_COLUMNS[2:]], on=on, how="left")
    for column in ("cmi_conditioning", "score_note"):
        table[column] = table[column].fillna("").astype(str)
    for column in ("cmi", "robust_sign_error", "sign_error_mean"):
        table[column] = table[column].astype(float)
    table["n_environments"] = table["n_environments"].astype("Int64")  # <NA> without scores
    table = table.merge(notes_df[["indicator"] + NOTE_COLUMNS[2:]], on="indicator", how="left")
    table["optimizer_converged_fraction"] = table["optimizer_converged_fraction"].astype(float)
    table["indicator_note"] = table["indicator_note"].fillna("").astype(str)
    return table[leading + trailing + NEW_COLUMNS]


def _rows_of(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of a correlate or granulate table for one ``dataset`` value, without that
    column; a table without it (written before the column existed) holds pooled rows."""
    if AXIS not in frame:
        return frame if name == POOLED else frame.iloc[:0]
    return frame[frame[AXIS].astype(str) == name].drop(columns=AXIS).reset_index(drop=True)


def summary_by_dataset(ds, correlations_df: pd.DataFrame, granulated_df: pd.DataFrame,
                       target: str = "gap") -> pd.DataFrame:
    """``summary`` over every converged network (``dataset`` = ``pooled``) and, when the
    study has several datasets, within each (``dataset`` = its name): the expected signs,
    scores and notes of each part computed on that part's networks, the τ and Ψ taken from
    the tables' rows with that ``dataset`` value, ranks within the part. The ``dataset``
    column follows ``target``; pooled rows come first."""
    parts = []
    for name, part in store_groups(ds):
        table = converged(network_table(part))
        indicators = indicator_names(part)
        signs = expected_signs(part, indicators)
        frame = summary(_rows_of(correlations_df, name), _rows_of(granulated_df, name), signs,
                        scores(table, indicators, signs, target),
                        indicator_notes(part, indicators))
        parts.append(with_dataset(frame, name))
    return pd.concat(parts, ignore_index=True)
