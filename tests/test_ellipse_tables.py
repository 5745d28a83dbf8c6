"""The tables behind ellipses.csv and ellipse_order.csv (Novak §4.1, Fig. 2), on a small
aggregate-shaped Dataset built by hand, against expectations computed by plain loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from workflow_src.stats.tables import ellipse_summary_table
from workflow_src.stats.ellipse_order import kind_ordering

# Not kind-major on purpose: a table that assumes an order of kinds mislabels them.
KINDS = ["same_class", "random", "different_class", "random", "same_class", "different_class"]
N_POSITIONS = 12  # angles k * 30 degrees: the anchors 0, 120, 240 degrees are positions 0, 4, 8
ANCHOR_POSITIONS = (0, 4, 8)


def aggregate(jac, transitions, status, activation, init=None):
    """The ellipse part of the aggregate store (docs/science.md §7): jac (run, ellipse,
    position), transitions (run, ellipse), status and activation (run,)."""
    n_runs = len(status)
    variables = {"ellipse_jacobian_norm": (("run", "ellipse", "position"), jac),
                 "ellipse_transitions": (("run", "ellipse"), transitions),
                 "status": ("run", np.asarray(status, dtype=str))}
    if init is not None:
        variables["ellipse_jacobian_norm_init"] = (("run", "ellipse", "position"), init[0])
        variables["ellipse_transitions_init"] = (("run", "ellipse"), init[1])
    return xr.Dataset(
        variables,
        coords={"run_id": ("run", [f"run{r}" for r in range(n_runs)]),
                "width": ("run", 10 * (1 + np.arange(n_runs))),
                "activation": ("run", list(activation)),
                "ellipse_kind": ("ellipse", KINDS),
                "angle": ("position", np.arange(N_POSITIONS) * 2 * math.pi / N_POSITIONS)},
        attrs={"anchor_angles": [0.0, 2 * math.pi / 3, 4 * math.pi / 3]},
    )


def random_store(n_runs, status, activation, seed=0, init=False):
    rng = np.random.default_rng(seed)
    shape = (n_runs, len(KINDS), N_POSITIONS)
    jac = rng.lognormal(0.0, 1.0, shape)
    transitions = rng.integers(0, 50, shape[:2]).astype(float)
    extra = (rng.lognormal(0.0, 1.0, shape), rng.integers(0, 50, shape[:2]).astype(float))
    return aggregate(jac, transitions, status, activation, init=extra if init else None)


def test_summary_table_every_column_by_hand():
    status = ["converged", "unconverged", "converged"]
    ds = random_store(3, status, ["relu", "relu", "hard_tanh"], init=True)
    table = ellipse_summary_table(ds)
    jac, count = ds["ellipse_jacobian_norm"].values, ds["ellipse_transitions"].values
    jac0, count0 = ds["ellipse_jacobian_norm_init"].values, ds["ellipse_transitions_init"].values
    assert len(table) == 2 * len(KINDS)  # the unconverged run is left out
    assert table.groupby(["run_id", "ellipse"]).size().eq(1).all()
    for r in (0, 2):
        for e in range(len(KINDS)):
            row = table[(table["run_id"] == f"run{r}") & (table["ellipse"] == e)].iloc[0]
            away = [p for p in range(N_POSITIONS) if p not in ANCHOR_POSITIONS]
            assert row["kind"] == KINDS[e]
            assert row["mean_jacobian_norm"] == pytest.approx(sum(jac[r, e]) / N_POSITIONS)
            assert row["jacobian_norm_at_anchors"] == pytest.approx(
                sum(jac[r, e, p] for p in ANCHOR_POSITIONS) / 3)
            assert row["jacobian_norm_away_from_anchors"] == pytest.approx(
                sum(jac[r, e, p] for p in away) / len(away))
            assert row["transitions"] == count[r, e]
            assert row["mean_jacobian_norm_init"] == pytest.approx(sum(jac0[r, e]) / N_POSITIONS)
            assert row["transitions_init"] == count0[r, e]
            assert row["width"] == 10 * (1 + r)
            assert row["activation"] == ("relu" if r == 0 else "hard_tanh")


def test_summary_table_without_init_has_no_init_columns():
    ds = random_store(2, ["converged"] * 2, ["relu"] * 2)
    table = ellipse_summary_table(ds)
    assert not [c for c in table.columns if c.endswith("_init")]
    assert len(table) == 2 * len(KINDS)


def test_summary_table_keeps_nan_transitions_of_smooth_networks():
    ds = random_store(2, ["converged"] * 2, ["relu", "tanh"])
    ds["ellipse_transitions"][1] = np.nan  # tanh: transitions undefined
    table = ellipse_summary_table(ds)
    tanh = table[table["run_id"] == "run1"]
    assert tanh["transitions"].isna().all() and tanh["mean_jacobian_norm"].notna().all()
    np.testing.assert_array_equal(table.loc[table["run_id"] == "run0", "transitions"],
                                  ds["ellipse_transitions"].values[0])


def exact_wilcoxon_less(low, high):
    """W+ (sum of ranks of |d| where d = low - high > 0) and P(W+ <= observed) under the
    null, by enumerating all 2^n sign patterns; no ties or zeros in d."""
    d = np.asarray(low) - np.asarray(high)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[d > 0].sum()
    patterns = itertools.product([0, 1], repeat=len(d))
    n_at_most = sum(np.dot(signs, ranks) <= observed for signs in patterns)
    return float(observed), n_at_most / 2 ** len(d)


def holm(p):
    """Holm step-down adjusted p-values, by the textbook loop."""
    order = np.argsort(p)
    adjusted, running = np.empty(len(p)), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[j]))
        adjusted[j] = running
    return adjusted


def per_network_means(ds, name):
    """{run index: {kind: mean of the per-ellipse metric over that kind's ellipses}}."""
    values = ds[name].values
    if values.ndim == 3:
        values = values.mean(axis=2)
    return {r: {k: np.mean([values[r, e] for e in range(len(KINDS)) if KINDS[e] == k])
                for k in set(KINDS)} for r in range(len(values))}


PAIRS = (("same_class", "different_class"), ("different_class", "random"),
         ("same_class", "random"))  # (lower, higher): Novak's order, written out here


def check_row(row, low, high):
    """One row of kind_ordering against per-network means low, high (n,) of its kinds."""
    n = len(low)
    assert row["n_networks"] == n
    assert row["n_in_order"] == sum(a < b for a, b in zip(low, high))
    assert row["fraction_in_order"] == pytest.approx(row["n_in_order"] / n)
    assert row["median_ratio"] == pytest.approx(np.median([b / a for a, b in zip(low, high)]))
    statistic, p_value = exact_wilcoxon_less(low, high)
    assert row["wilcoxon_statistic"] == statistic
    assert row["p_value"] == pytest.approx(p_value)


def test_kind_ordering_by_hand_with_a_smooth_network():
    """Five converged networks, the last one tanh (NaN transitions), one unconverged."""
    status = ["converged"] * 5 + ["unconverged"]
    ds = random_store(6, status, ["relu"] * 4 + ["tanh", "relu"], seed=3)
    ds["ellipse_transitions"][4] = np.nan
    order = kind_ordering(ellipse_summary_table(ds))
    assert len(order) == 2 * len(PAIRS)  # no *_init metrics in this store
    for metric, variable, runs in (("mean_jacobian_norm", "ellipse_jacobian_norm", range(5)),
                                   ("transitions", "ellipse_transitions", range(4))):
        means = per_network_means(ds, variable)
        for lower, higher in PAIRS:
            row = order[(order["metric"] == metric) & (order["lower"] == lower)
                        & (order["higher"] == higher)]
            assert len(row) == 1
            check_row(row.iloc[0], [means[r][lower] for r in runs],
                      [means[r][higher] for r in runs])
    np.testing.assert_allclose(order["p_adjusted"], holm(order["p_value"].to_numpy()))
    np.testing.assert_array_equal(order["reject"].astype(bool), order["p_adjusted"] <= 0.05)


def test_kind_ordering_all_nan_transitions_are_not_an_order():
    status = ["converged"] * 4
    ds = random_store(4, status, ["tanh"] * 4, seed=4)
    ds["ellipse_transitions"][:] = np.nan
    order = kind_ordering(ellipse_summary_table(ds))
    transitions = order[order["metric"] == "transitions"]
    assert len(transitions) == 3
    assert (transitions["n_networks"] == 0).all() and (transitions["n_in_order"] == 0).all()
    assert transitions["p_value"].isna().all() and transitions["p_adjusted"].isna().all()
    assert transitions["reject"].isna().all()
    assert transitions["note"].str.contains("no finite values").all()
    # The Jacobian rows form the Holm family on their own: three tests, not six.
    jacobian = order[order["metric"] == "mean_jacobian_norm"]
    assert (jacobian["n_networks"] == 4).all() and jacobian["p_value"].notna().all()
    np.testing.assert_allclose(jacobian["p_adjusted"], holm(jacobian["p_value"].to_numpy()))


def test_kind_ordering_counts_only_networks_in_order():
    """A hand-made summary: network a in order for every pair, b reversed, c tied."""
    rows = []
    for run, values in (("a", (1.0, 2.0, 3.0)), ("b", (3.0, 2.0, 1.0)), ("c", (2.0, 2.0, 2.0))):
        for kind, value in zip(("same_class", "different_class", "random"), values):
            rows.append({"run_id": run, "kind": kind, "ellipse": 0, "transitions": value})
    order = kind_ordering(pd.DataFrame(rows), metrics=("transitions",))
    assert order["n_networks"].tolist() == [3, 3, 3]
    assert order["n_in_order"].tolist() == [1, 1, 1]
    first = order.iloc[0]  # same_class vs different_class: ratios 2, 2/3, 1
    assert first["median_ratio"] == pytest.approx(1.0)
