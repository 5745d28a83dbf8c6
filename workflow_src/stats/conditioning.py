"""The conditioning preset's findings (studies/conditioning.yaml) from its snapshot table
(``tables/snapshots.csv``, with the variables of measures/conditioning.py):

(a) how the tangent kernel's condition number and λ_min/tr K at initialisation change with
    width: their median per width and Kendall's τ with width over the distinct
    initialisations (one per width and seed: the optimizer and the loss do not change them);
(b) Kendall's τ between the condition number at initialisation and the steps to fit, within
    each optimizer (and each optimizer and loss; and each optimizer over the networks that
    fitted and have a nonsingular kernel);
(c) the kernel's relative change ‖K(w) − K(w₀)‖_F/‖K(w₀)‖_F at the last snapshot against
    width: median per width, τ with width within each optimizer and loss;
(d) per network, the smallest PL ratio ½‖∇L‖²/L over its snapshots and λ_min(K)/n at the same
    step, and for the squared loss the smallest bound ratio (PL ratio)/(λ_min/n) over every
    snapshot (≥ 1 by the inequality; the count below 1 − 1e-9); τ between the two per loss
    (networks with a singular kernel there have no λ_min/n and are left out).

τ is τ-b with a percentile bootstrap CI over networks (stats/correlation.correlations).
A singular kernel (condition number +inf) and a network that did not fit within the budget
(steps to fit +inf, censored) rank above every finite value: they are given a common value
larger than every finite one (ties, which τ-b accounts for), and their counts are reported.

    python -m workflow_src.stats.conditioning results/conditioning/tables/snapshots.csv
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

BOUND_TOLERANCE = 1e-9


def loss_column(table: pd.DataFrame) -> pd.Series:
    """The loss each network was trained with (cross-entropy for runs from before it)."""
    if "loss_function" in table:
        return table["loss_function"].fillna("cross_entropy")
    return pd.Series("cross_entropy", index=table.index)


def condition_number(table: pd.DataFrame, suffix: str = "") -> pd.Series:
    """The condition number column with +inf where the kernel is singular: the snapshot
    table writes the store's +inf as an empty cell, read back as NaN (λ_max > 0 there)."""
    values = table[f"conditioning_condition_number{suffix}"].astype(float)
    singular = values.isna() & (table[f"conditioning_lambda_max{suffix}"].astype(float) > 0)
    return values.mask(singular, np.inf)


def networks(table: pd.DataFrame) -> pd.DataFrame:
    """One row per network: width, seed, optimizer, loss, steps to fit (+inf if it did not
    fit), the values at initialisation, the kernel change at its last snapshot, and its
    smallest PL ratio over the snapshots with λ_min/n at that step."""
    table = table.assign(loss=loss_column(table),
                         conditioning_condition_number=condition_number(table),
                         conditioning_condition_number_init=condition_number(table, "_init"))
    table = table.assign(lambda_min_over_n=table["conditioning_pl_ratio"]
                         / table["conditioning_pl_bound_ratio"])
    rows = []
    for run_id, rows_of in table.groupby("run_id", sort=False):
        rows_of = rows_of.sort_values("step_used")
        last, first = rows_of.iloc[-1], rows_of.iloc[0]
        smallest = rows_of.loc[rows_of["conditioning_pl_ratio"].idxmin()] \
            if rows_of["conditioning_pl_ratio"].notna().any() else last
        fitted = str(first["status"]) == "converged"
        rows.append({
            "run_id": run_id, "width": int(first["width"]), "seed": int(first["seed"]),
            "optimizer": first["optimizer"], "loss": first["loss"],
            "steps_to_fit": float(first["final_steps"]) if fitted else np.inf,
            "condition_init": float(first["conditioning_condition_number_init"]),
            "lambda_min_over_trace_init":
                float(first["conditioning_lambda_min_over_trace_init"]),
            "kernel_change_last": float(last["conditioning_kernel_change"]),
            "min_pl_ratio": float(smallest["conditioning_pl_ratio"]),
            "min_pl_step": int(smallest["step_used"]),
            "lambda_min_over_n_there": float(smallest["lambda_min_over_n"]),
        })
    return pd.DataFrame(rows)


def _ranked(values: pd.Series) -> pd.Series:
    """+inf replaced by a common value above every finite one (module doc)."""
    finite = values[np.isfinite(values)]
    top = (finite.abs().max() if len(finite) else 1.0) * 10 + 1
    return values.where(np.isfinite(values) | values.isna(), top)


def kendall(frame: pd.DataFrame, x: str, y: str, n_boot: int, seed: int) -> dict:
    # Imported here: figures/conditioning imports this module for condition_number only,
    # and a figure job need not import scipy.stats (stats/__init__.py says why).
    from .correlation import correlations

    data = frame.assign(**{x: _ranked(frame[x].astype(float)),
                           y: _ranked(frame[y].astype(float))})
    row = correlations(data, [x], target=y, n_boot=n_boot, seed=seed)
    row = row[row["statistic"] == "kendall_tau"].iloc[0]
    return {"x": x, "y": y, "tau": row["value"], "ci_low": row["ci_low"],
            "ci_high": row["ci_high"], "n": int(row["n"]), "note": row["note"]}


def findings(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """The module doc's (a)-(d) as tables."""
    nets = networks(table)
    inits = nets.drop_duplicates(["width", "seed"])
    per_width = nets.groupby("width").agg(
        condition_init_median=("condition_init", "median"),
        singular_init=("condition_init", lambda v: int(np.isinf(v).sum())),
        lambda_min_over_trace_init_median=("lambda_min_over_trace_init", "median"),
        kernel_change_median=("kernel_change_last", "median"),
        fitted=("steps_to_fit", lambda v: f"{int(np.isfinite(v).sum())}/{len(v)}"),
        steps_to_fit_median=("steps_to_fit", "median"))
    taus = [dict(group="all initialisations", **kendall(inits, "width", column, n_boot, seed))
            for column in ("condition_init", "lambda_min_over_trace_init")]
    for keys, group in [*nets.groupby("optimizer"), *nets.groupby(["optimizer", "loss"])]:
        name = keys if isinstance(keys, str) else ", ".join(keys)
        taus.append(dict(group=name, **kendall(group, "condition_init", "steps_to_fit",
                                               n_boot, seed)))
    fitted = nets[np.isfinite(nets["condition_init"]) & np.isfinite(nets["steps_to_fit"])]
    for name, group in fitted.groupby("optimizer"):
        taus.append(dict(group=f"{name}, fitted with a nonsingular kernel",
                         **kendall(group, "condition_init", "steps_to_fit", n_boot, seed)))
    for keys, group in nets.groupby(["optimizer", "loss"]):
        taus.append(dict(group=", ".join(keys),
                         **kendall(group, "width", "kernel_change_last", n_boot, seed)))
    for name, group in nets.groupby("loss"):
        taus.append(dict(group=name, **kendall(group, "lambda_min_over_n_there",
                                               "min_pl_ratio", n_boot, seed)))
    squared = table[loss_column(table) == "squared"]
    ratios = squared["conditioning_pl_bound_ratio"].astype(float)
    bound = {"squared_snapshots": int(len(squared)),
             "with_bound_ratio": int(ratios.notna().sum()),
             "min_bound_ratio": float(ratios.min()) if ratios.notna().any() else np.nan,
             "below_one": int((ratios < 1 - BOUND_TOLERANCE).sum()),
             # λ_min numerically 0 (singular K): the bound ratio is NaN, the bound vacuous
             "singular": int(np.isinf(condition_number(squared)).sum())}
    return {"networks": nets, "per_width": per_width, "taus": pd.DataFrame(taus),
            "bound": bound}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m {__spec__.name} <tables/snapshots.csv>")
    found = findings(pd.read_csv(argv[0]))
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print("per width (medians over networks):")
        print(found["per_width"].to_string())
        print("\nKendall tau-b, 95 % percentile bootstrap CI:")
        print(found["taus"].to_string(index=False))
        print("\nsmallest PL ratio per network and lambda_min(K)/n at that step:")
        print(found["networks"][["width", "seed", "optimizer", "loss", "min_pl_step",
                                 "min_pl_ratio", "lambda_min_over_n_there"]].to_string(
            index=False))
        print("\nsquared loss, PL bound over every snapshot:", found["bound"])


if __name__ == "__main__":
    main(sys.argv[1:])
