"""Statistics within each dataset as well as pooled (stats/datasets.py): a pooled correlation
that only the difference between two datasets creates, and tables of one-dataset studies
that change by their ``dataset`` column only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from test_stats import grid, make_dataset
from test_summary import run_summarize

from workflow_src import stats
from workflow_src.figures.indicators import ranking_table
from workflow_src.stats.datasets import POOLED

N_PER_DATASET = 40


def two_populations(seed=0):
    """Two datasets whose networks differ in indicator level and in gap level, with the
    indicator drawn independently of the gap within each: pooled, the indicator tracks the
    gap (Simpson); within either dataset it does not."""
    rng = np.random.default_rng(seed)
    configs = ([{"dataset": "digits", "seed": s} for s in range(N_PER_DATASET)]
               + [{"dataset": "fashion_mnist", "seed": s} for s in range(N_PER_DATASET)])
    level = np.repeat([0.0, 1.0], N_PER_DATASET)
    gap = 0.05 + 0.3 * level + 0.02 * rng.standard_normal(2 * N_PER_DATASET)
    indicator = 1.0 + 5.0 * level + rng.standard_normal(2 * N_PER_DATASET)
    points = indicator[:, None] * np.ones((1, 3))
    return make_dataset(configs, gap, {"jacobian_norm": points})


def test_pooling_creates_a_correlation_that_no_dataset_shows():
    ds = two_populations()
    table = stats.converged(stats.network_table(ds))
    out = stats.per_dataset(lambda part: stats.correlations(part, ["jacobian_norm"], "gap",
                                                            n_boot=300), table)
    assert list(out.columns[:3]) == ["indicator", "target", "dataset"]
    tau = out[out["statistic"] == "kendall_tau"].set_index("dataset")
    assert list(tau.index) == [POOLED, "digits", "fashion_mnist"]
    assert tau.loc[POOLED, "value"] > 0.4 and tau.loc[POOLED, "ci_low"] > 0.3
    assert tau.loc[POOLED, "n"] == 2 * N_PER_DATASET
    for name in ("digits", "fashion_mnist"):
        part = table[table["dataset"] == name]
        expected = scipy_stats.kendalltau(part["jacobian_norm"], part["gap"])
        assert tau.loc[name, "value"] == pytest.approx(expected.statistic, abs=1e-12)
        assert tau.loc[name, "p_value"] == pytest.approx(expected.pvalue, abs=1e-12)
        assert tau.loc[name, "n"] == N_PER_DATASET
        assert tau.loc[name, "ci_low"] < 0 < tau.loc[name, "ci_high"]
        assert abs(tau.loc[name, "value"]) < 0.25


def test_one_dataset_tables_change_by_their_dataset_column_only():
    configs = grid(width=[16, 32, 64], depth=[1, 2], seed=[0, 1, 2])
    rng = np.random.default_rng(3)
    gap = rng.uniform(0, 0.3, len(configs))
    ds = make_dataset(configs, gap, {"jacobian_norm": rng.uniform(1, 2, (len(configs), 4))})
    table = stats.converged(stats.network_table(ds))
    before = stats.correlations(table, ["jacobian_norm"], "gap", n_boot=100)
    after = stats.per_dataset(lambda part: stats.correlations(part, ["jacobian_norm"], "gap",
                                                              n_boot=100), table)
    assert (after["dataset"] == POOLED).all()
    pd.testing.assert_frame_equal(after.drop(columns="dataset"), before)
    points = stats.per_point_misclassification(ds)
    assert points["dataset"].tolist() == ["digits"] * len(configs) + [POOLED]
    assert (points["scope"] == POOLED).sum() == 1


def test_per_point_rows_within_each_dataset_equal_the_dataset_alone():
    ds = two_populations()
    rng = np.random.default_rng(5)
    ds["correct"] = (("run", "point"), (rng.uniform(size=ds["correct"].shape) > 0.3) * 1.0)
    ds["jacobian_norm"] = (("run", "point"), rng.uniform(0.5, 2, ds["correct"].shape))
    ds["jacobian_norm"].attrs["role"] = "indicator"
    out = stats.per_point_misclassification(ds)
    pooled_rows = out[out["scope"] == POOLED].set_index("dataset")
    assert list(pooled_rows.index) == [POOLED, "digits", "fashion_mnist"]
    for name in ("digits", "fashion_mnist"):
        alone = stats.per_point_misclassification(ds.isel(run=ds["dataset"].values == name))
        expected = alone[alone["scope"] == POOLED].iloc[0]
        got = pooled_rows.loc[name]
        for column in ("n_correct", "n_wrong", "median_correct", "auc", "mannwhitney_p"):
            assert got[column] == pytest.approx(expected[column], rel=1e-12)
    runs = out[out["scope"] != POOLED]
    assert (runs["dataset"].to_numpy() == ds["dataset"].values).all()


def test_summary_ranks_within_each_dataset_and_the_figure_draws_the_pooled_rows(tmp_path):
    ds = two_populations()
    summary = run_summarize(tmp_path, ds)
    assert summary["dataset"].tolist() == [POOLED, "digits", "fashion_mnist"]
    assert list(summary.columns[:3]) == ["indicator", "target", "dataset"]
    table = stats.converged(stats.network_table(ds))
    by_name = summary.set_index("dataset")
    for name in ("digits", "fashion_mnist"):
        part = table[table["dataset"] == name]
        tau = scipy_stats.kendalltau(part["jacobian_norm"], part["gap"]).statistic
        assert by_name.loc[name, "kendall_tau"] == pytest.approx(tau, abs=1e-12)
        assert by_name.loc[name, "rank_tau"] == 1
    pooled_tau = scipy_stats.kendalltau(table["jacobian_norm"], table["gap"]).statistic
    assert by_name.loc[POOLED, "kendall_tau"] == pytest.approx(pooled_tau, abs=1e-12)
    rows, _ = ranking_table(summary, pd.DataFrame(columns=["indicator", "axis", "psi"]))
    assert len(rows) == 1 and rows["tau"].iloc[0] == pytest.approx(pooled_tau, abs=1e-12)
