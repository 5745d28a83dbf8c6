"""Statistics stage against independent computations on data with a known answer."""

from __future__ import annotations

import itertools
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats
from statsmodels.discrete.discrete_model import Logit

from workflow_src.stats import (
    converged,
    correct_multiple,
    correlations,
    factor_comparisons,
    factor_tests,
    granulated_kendall,
    indicator_names,
    kind_ordering,
    matched_pairs,
    network_table,
    ols_gap_on_log_indicator,
    paired_factor_tests,
    per_point_misclassification,
    summary,
)
from workflow_src.training.train import TrainResult

HYPERPARAMETERS = {
    "dataset": "digits", "corruption": "none", "label_noise": 0.0, "width": 32, "depth": 2,
    "activation": "relu", "bias": True, "optimizer": "sgd", "learning_rate": 0.1,
    "batch_size": 32, "augment": False, "seed": 0,
}


def make_dataset(configs, gap, point_vars=None, run_vars=None, correct=None, status=None):
    """An aggregate Dataset shaped like docs/science.md §7: one run per config (overrides of
    HYPERPARAMETERS), NaN padding wherever a (run, point) value is NaN."""
    n_runs = len(configs)
    point_vars = point_vars or {"jacobian_norm": np.ones((n_runs, 4))}
    n_points = next(iter(point_vars.values())).shape[1]
    gap = np.asarray(gap, dtype=float)
    if correct is None:
        correct = np.ones((n_runs, n_points))
    coords = {"run_id": ("run", [f"r{i:04d}" for i in range(n_runs)])}
    for name, default in HYPERPARAMETERS.items():
        coords[name] = ("run", np.array([c.get(name, default) for c in configs]))
    data = {
        "train_acc": ("run", np.ones(n_runs)),
        "test_acc": ("run", 1.0 - gap),
        "gap": ("run", gap),
        "steps": ("run", np.full(n_runs, 100)),
        "status": ("run", np.array(status or ["converged"] * n_runs)),
        "loss": (("run", "point"), np.zeros((n_runs, n_points))),
        "correct": (("run", "point"), np.asarray(correct, dtype=float)),
    }
    data.update({k: (("run", "point"), v) for k, v in point_vars.items()})
    data.update({k: ("run", v) for k, v in (run_vars or {}).items()})
    ds = xr.Dataset(data, coords=coords, attrs={"hyperparameters": list(HYPERPARAMETERS)})
    for name in [*point_vars, *(run_vars or {})]:  # as the aggregate step marks indicators
        ds[name].attrs["role"] = "indicator"
    return ds


def grid(**axes):
    """One config per point of the product of the given axis values."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


@pytest.fixture
def monotone_table():
    """27 networks on a width × depth × seed grid; gap strictly increases in the indicator."""
    configs = grid(width=[16, 32, 64], depth=[1, 2, 3], seed=[0, 1, 2])
    rng = np.random.default_rng(1)
    indicator = rng.permutation(np.arange(1, 28)) * 0.5
    gap = 0.5 * np.tanh(np.log(indicator))
    noise = rng.normal(size=27)
    ds = make_dataset(configs, gap, point_vars={"jacobian_norm": indicator[:, None]},
                      run_vars={"noise": noise})
    return network_table(ds)


def test_network_table_means_over_evaluated_points_and_keeps_per_network_indicators():
    jac = np.array([[1.0, 3.0, np.nan], [2.0, 2.0, 5.0]])
    ds = make_dataset(
        [{"seed": 0}, {"seed": 1}], gap=[0.1, 0.2],
        point_vars={"jacobian_norm": jac, "logit_jacobian_norm": 2 * jac},
        run_vars={"bound_M": np.array([7.0, 8.0])},
        status=["converged", "diverged"],
    )
    ds["transitions_count"] = (("run", "point"), np.ones((2, 3), dtype=int))  # not float
    ds["transitions_count"].attrs["role"] = "indicator"
    ds["bound_upper"] = (("run", "point"), np.ones((2, 3)))  # float, but not an indicator
    assert indicator_names(ds) == ["jacobian_norm", "logit_jacobian_norm", "bound_M"]
    table = network_table(ds)
    assert list(table.columns) == ["run_id", *HYPERPARAMETERS, "train_acc", "test_acc", "gap",
                                   "steps", "status", "fit_step", "jacobian_norm",
                                   "logit_jacobian_norm",
                                   "bound_M"]
    np.testing.assert_allclose(table["jacobian_norm"], [2.0, 3.0])
    np.testing.assert_allclose(table["logit_jacobian_norm"], [4.0, 6.0])
    np.testing.assert_allclose(table["bound_M"], [7.0, 8.0])
    kept = converged(table)
    assert kept["run_id"].tolist() == ["r0000"]
    assert kept.attrs["hyperparameters"] == list(HYPERPARAMETERS)


def test_monotone_indicator_has_tau_one_and_psi_one(monotone_table):
    corr = correlations(monotone_table, ["jacobian_norm"], n_boot=200).set_index("statistic")
    for name in ("kendall_tau", "spearman_rho"):
        assert corr.loc[name, "value"] == pytest.approx(1.0)
        assert corr.loc[name, "ci_low"] == pytest.approx(1.0)
        assert corr.loc[name, "ci_high"] == pytest.approx(1.0)
    assert corr.loc["kendall_tau", "n"] == 27
    psi = granulated_kendall(monotone_table, "jacobian_norm", ["width", "depth", "seed"])
    psi = psi.set_index("axis")
    np.testing.assert_allclose(psi["psi"], 1.0)
    assert psi.loc[["width", "depth", "seed"], "n_groups"].tolist() == [9, 9, 9]
    assert psi.loc["__all__", "n_groups"] == 18  # seed is reported but not averaged
    assert psi.loc["seed", "note"] == "not averaged into Psi"


def test_independent_indicator_bootstrap_cis_cover_zero():
    rng = np.random.default_rng(2)
    table = pd.DataFrame({"ind": rng.normal(size=200), "gap": rng.normal(size=200)})
    corr = correlations(table, ["ind"], n_boot=500, seed=3)
    assert (corr["ci_low"] < 0).all() and (corr["ci_high"] > 0).all()
    assert (corr["ci_low"] < corr["value"]).all() and (corr["value"] < corr["ci_high"]).all()
    assert (corr["note"] == "").all()


def test_kendall_tau_equals_brute_force_pair_count():
    rng = np.random.default_rng(4)
    x, y = rng.permutation(12).astype(float), rng.permutation(12).astype(float)
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
             for i, j in itertools.combinations(range(12), 2)]
    expected = sum(signs) / len(signs)  # (concordant − discordant) / C(n, 2), no ties
    table = pd.DataFrame({"ind": x, "gap": y})
    tau = correlations(table, ["ind"], n_boot=50).set_index("statistic").loc["kendall_tau"]
    assert tau["value"] == pytest.approx(expected)


def test_psi_leaves_seed_out_of_the_mean_but_reports_it():
    """Indicator follows the gap across widths, and runs against it across seeds."""
    configs = grid(width=[16, 32, 64], seed=[0, 1, 2])
    gap = [0.1 * c["width"] / 16 + 0.01 * c["seed"] for c in configs]
    indicator = [c["width"] - c["seed"] for c in configs]
    table = network_table(make_dataset(configs, gap, point_vars={
        "jacobian_norm": np.asarray(indicator, dtype=float)[:, None]}))
    psi = granulated_kendall(table, "jacobian_norm", ["width", "seed"]).set_index("axis")
    assert psi.loc["width", "psi"] == pytest.approx(1.0)
    assert psi.loc["seed", "psi"] == pytest.approx(-1.0)
    assert psi.loc["__all__", "psi"] == pytest.approx(1.0)
    every = granulated_kendall(table, "jacobian_norm", ["width", "seed"], not_averaged=())
    assert every.set_index("axis").loc["__all__", "psi"] == pytest.approx(0.0)


def test_psi_on_hand_built_table():
    # Axis a groups (by b): b=0 has τ = 1; b=1 has pairs D, C, C so τ = 1/3; ψ_a = 2/3.
    # Axis b groups (by a): a=0 C, a=1 D, a=2 C so ψ_b = 1/3. Ψ = 1/2. c is constant.
    table = pd.DataFrame({
        "a": [0, 1, 2, 0, 1, 2],
        "b": [0, 0, 0, 1, 1, 1],
        "c": [5, 5, 5, 5, 5, 5],
        "ind": [1.0, 2.0, 3.0, 1.5, 2.5, 3.5],
        "gap": [1.0, 2.0, 3.0, 3.0, 1.0, 4.0],
    })
    psi = granulated_kendall(table, "ind", ["a", "b", "c"]).set_index("axis")
    assert psi.loc["a", "psi"] == pytest.approx(2 / 3)
    assert psi.loc["b", "psi"] == pytest.approx(1 / 3)
    assert psi.loc["__all__", "psi"] == pytest.approx(1 / 2)
    assert psi.loc[["a", "b", "__all__"], "n_groups"].tolist() == [2, 3, 5]
    assert np.isnan(psi.loc["c", "psi"]) and psi.loc["c", "note"] == "axis has a single value"


def test_equal_counts_tie_in_tau_and_psi_although_their_float_gaps_differ():
    # (train correct, test correct) out of 100 each; networks 0 and 1 both have gap 24/100.
    counts = [(80, 56), (81, 57), (90, 60), (95, 85)]
    float_gaps = [train / 100 - test / 100 for train, test in counts]
    assert float_gaps[0] != float_gaps[1]  # 0.24 vs 0.2400000000000001
    exact_gaps = [Fraction(train, 100) - Fraction(test, 100) for train, test in counts]
    # The gaps as training stores them (from the counts), which the statistics must not alter.
    stored_gaps = [TrainResult("converged", 1, train, 100, test, 100, 0.0, 0.0).gap
                   for train, test in counts]
    indicator = [1.0, 2.0, 3.0, 4.0]
    configs = grid(depth=[1, 2], width=[16, 32])  # networks 0, 1 at depth 1; 2, 3 at depth 2
    ds = make_dataset(configs, stored_gaps,
                      point_vars={"jacobian_norm": np.array(indicator)[:, None]})
    table = network_table(ds)

    # τ-b by hand on the exact gaps: S = Σ_{a<b} sign(Δμ)·sign(Δg), divided by
    # sqrt((pairs − pairs tied in μ)(pairs − pairs tied in g)).
    signs = [np.sign(indicator[b] - indicator[a]) * np.sign(exact_gaps[b] - exact_gaps[a])
             for a, b in itertools.combinations(range(4), 2)]
    gap_ties = sum(exact_gaps[a] == exact_gaps[b] for a, b in itertools.combinations(range(4), 2))
    assert (sum(signs), gap_ties) == (-1, 1)
    tau = correlations(table, ["jacobian_norm"], n_boot=20).set_index("statistic")
    assert tau.loc["kendall_tau", "value"] == pytest.approx(-1 / np.sqrt(6 * (6 - gap_ties)))

    # ψ_width: depth-1 group {0, 1} has tied gaps, τ = 0; depth-2 group {2, 3}: μ up, gap
    # down, τ = −1. ψ_depth: width 16 {0, 2} τ = +1, width 32 {1, 3} τ = −1.
    psi = granulated_kendall(table, "jacobian_norm", ["width", "depth"]).set_index("axis")
    assert psi.loc["width", "psi"] == pytest.approx(-0.5)
    assert psi.loc["width", "n_groups_constant"] == 1
    assert psi.loc["depth", "psi"] == pytest.approx(0.0)
    assert psi.loc["__all__", "psi"] == pytest.approx(-0.25)


def test_psi_counts_constant_groups_as_zero_and_reports_the_skipping_rule():
    # Axis a (groups by b): b=0 has gap tied in pair (0, 1): τ-a = (0 + 1 + 1)/3 = 2/3,
    # τ-b = 2/sqrt(3·2); b=1 has a constant indicator: τ-a = 0, τ-b undefined.
    # Axis b (groups by a): a=0 has a tied gap, so constant in its pair: 0; a=1, a=2: +1.
    table = pd.DataFrame({
        "a": [0, 1, 2, 0, 1, 2],
        "b": [0, 0, 0, 1, 1, 1],
        "ind": [1.0, 2.0, 3.0, 5.0, 5.0, 5.0],
        "gap": [1.0, 1.0, 2.0, 1.0, 2.0, 3.0],
    })
    psi = granulated_kendall(table, "ind", ["a", "b"]).set_index("axis")
    expected = {  # psi, n_groups, n_groups_constant, n_groups_tied, psi_skip_constant
        "a": (1 / 3, 2, 1, 1, 2 / np.sqrt(6)),
        "b": (2 / 3, 3, 1, 0, 1.0),
        "__all__": (1 / 2, 5, 2, 1, (2 / np.sqrt(6) + 1) / 2),
    }
    columns = ["psi", "n_groups", "n_groups_constant", "n_groups_tied", "psi_skip_constant"]
    for axis, values in expected.items():
        assert psi.loc[axis, columns].tolist() == pytest.approx(values), axis
    assert psi.loc["a", "note"] == "1 groups with a constant indicator or target count as tau = 0"


def test_ols_recovers_known_slope_with_dataset_fixed_effect():
    rng = np.random.default_rng(5)
    n = 300
    dataset = np.where(np.arange(n) % 2 == 0, "mnist", "cifar10")
    ind = rng.lognormal(sigma=1.0, size=n)
    gap = 0.1 * np.log(ind) + np.where(dataset == "mnist", 0.0, 0.3) + rng.normal(0, 0.02, n)
    table = pd.DataFrame({"dataset": dataset, "jacobian_norm": ind, "gap": gap})
    coefs, text = ols_gap_on_log_indicator(table, "jacobian_norm")
    slope = coefs.set_index("term").loc["np.log(jacobian_norm)"]
    assert slope["ci_low"] < 0.1 < slope["ci_high"]
    assert slope["coef"] == pytest.approx(0.1, abs=0.01)
    assert slope["n"] == n and slope["cov_type"] == "HC3"
    assert "C(dataset)[T.mnist]" in coefs["term"].tolist()
    assert "OLS Regression Results" in text and "HC3" in text
    # No clock in the text (re-runs write the same file); the right-hand column survives.
    date, time = (line for line in text.splitlines() if line.startswith(("Date:", "Time:")))
    assert not any(ch.isdigit() for ch in date[:39] + time[:39])
    assert "Prob (F-statistic)" in date and "Log-Likelihood" in time
    one, _ = ols_gap_on_log_indicator(table[table["dataset"] == "mnist"], "jacobian_norm")
    assert one["term"].tolist() == ["Intercept", "np.log(jacobian_norm)"]


def paired_table(shift):
    """Networks over width × seed × augment; augment=True adds shift[i] to pair i.
    One extra augment=False network (seed 9) has no partner."""
    configs = grid(width=[16, 32], seed=range(5), augment=[False, True]) + [
        {"width": 16, "seed": 9, "augment": False}]
    rows = []
    for i, config in enumerate(configs):
        pair = config["seed"] * 2 + (config["width"] == 32)
        base = 10.0 + pair
        value = base + (shift[pair] if config["augment"] and pair < len(shift) else 0.0)
        rows.append({**HYPERPARAMETERS, **config, "run_id": f"w{config['width']}s"
                     f"{config['seed']}a{int(config['augment'])}", "jacobian_norm": value})
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter
    table.attrs["hyperparameters"] = list(HYPERPARAMETERS)
    return table


def test_matched_pairs_pair_networks_differing_only_in_factor():
    table = paired_table(shift=1.0 + 0.1 * np.arange(10))
    pairs = matched_pairs(table, "augment", (False, True), "jacobian_norm")
    assert len(pairs) == 10
    assert (pairs["run_id_a"].str[:-1] == pairs["run_id_b"].str[:-1]).all()
    assert pairs["run_id_a"].str.endswith("a0").all() and pairs["run_id_b"].str.endswith("a1").all()
    expected = {f"w{w}s{s}a1": 1.0 + 0.1 * (2 * s + (w == 32)) for w in (16, 32) for s in range(5)}
    got = dict(zip(pairs["run_id_b"], pairs["value_b"] - pairs["value_a"]))
    assert got == pytest.approx(expected)


def test_wilcoxon_on_known_shift():
    shift = 1.0 + 0.1 * np.arange(10)
    row = paired_factor_tests(paired_table(shift), "augment", (False, True), "jacobian_norm",
                              n_boot=200).iloc[0]
    assert row["n_pairs"] == 10
    # All 10 differences positive: the exact two-sided p-value is 2 / 2^10.
    assert row["p_value"] == pytest.approx(2 / 2**10)
    assert row["median_diff"] == pytest.approx(np.median(shift))
    assert row["median_diff_ci_low"] <= np.median(shift) <= row["median_diff_ci_high"]
    assert row["rank_biserial"] == pytest.approx(1.0)
    # Differences 3, -1, 2, 4 (others zero, dropped): R+ = 3+2+4, R- = 1, r = 8/10.
    mixed = paired_factor_tests(paired_table([3.0, -1.0, 2.0, 4.0]), "augment",
                                (False, True), "jacobian_norm", n_boot=50).iloc[0]
    assert mixed["rank_biserial"] == pytest.approx(0.8)


def test_median_difference_and_its_ci_are_medians_not_means():
    # Nine differences of 1 and one of 100: median 1, mean 10.9. A resample's median
    # exceeds 1 only if at least 5 of its 10 draws are the 100, with probability
    # Σ_{k≥5} C(10,k) 0.1^k 0.9^(10−k) ≈ 0.0016 < 2.5 %: both percentiles are 1.
    shift = np.r_[np.ones(9), 100.0]
    row = paired_factor_tests(paired_table(shift), "augment", (False, True), "jacobian_norm",
                              n_boot=1000).iloc[0]
    assert row["median_diff"] == 1.0
    assert (row["median_diff_ci_low"], row["median_diff_ci_high"]) == (1.0, 1.0)


def optimizer_table():
    """sgd at batch sizes 32 and 64 and full-batch gd (batch_size = n_train = 200), with and
    without augmentation, 3 widths x 5 seeds; gd adds 1 + seed to the indicator, augment
    subtracts 0.5, and width (three values) is no factor."""
    rows = []
    for width, seed, augment in itertools.product((16, 32, 64), range(5), (False, True)):
        for optimizer, batch_size in (("sgd", 32), ("sgd", 64), ("gd", 200)):
            value = 10.0 + width + (1.0 + seed if optimizer == "gd" else 0.0) - 0.5 * augment
            rows.append({**HYPERPARAMETERS, "width": width, "seed": seed, "augment": augment,
                         "optimizer": optimizer, "batch_size": batch_size,
                         "run_id": f"{optimizer}{batch_size}w{width}s{seed}a{int(augment)}",
                         "jacobian_norm": value})
    table = pd.DataFrame(rows)
    table.attrs["hyperparameters"] = list(HYPERPARAMETERS)
    return table


def test_factor_comparisons_two_valued_axes_and_full_batch_per_batch_size():
    table = optimizer_table()
    found = {contrast: (levels, subset, keys, note) for _, levels, contrast, subset, keys, note
             in factor_comparisons(table, list(HYPERPARAMETERS))}
    assert sorted(found) == ["augment: False vs True", "optimizer: sgd (batch_size=32) vs gd",
                             "optimizer: sgd (batch_size=64) vs gd"]
    levels, subset, keys, note = found["augment: False vs True"]
    assert levels == (False, True) and len(subset) == len(table) and "batch_size" in keys
    assert note == ""
    levels, subset, keys, note = found["optimizer: sgd (batch_size=32) vs gd"]
    assert levels == ("sgd", "gd")  # full batch last: differences read gd - sgd
    assert "batch_size" not in keys and "batch_size=32" in note
    assert set(subset["batch_size"]) == {32, 200}


def test_factor_tests_match_gd_with_each_minibatch_size_and_correct_over_the_family():
    tests, pairs = factor_tests(optimizer_table(), ["jacobian_norm"], n_boot=100)
    rows = tests.set_index("contrast")
    gd32 = rows.loc["optimizer: sgd (batch_size=32) vs gd"]
    assert gd32["n_pairs"] == 30 and gd32["median_diff"] == pytest.approx(3.0)  # 1 + seed
    known = [1.0 + seed for _ in range(3) for seed in range(5) for _ in range(2)]
    assert gd32["p_value"] == pytest.approx(stats.wilcoxon(known).pvalue)
    assert "batch_size left out" in gd32["note"]
    augment = rows.loc["augment: False vs True"]
    assert augment["n_pairs"] == 45 and augment["median_diff"] == pytest.approx(-0.5)
    assert (tests["p_adjusted"] >= tests["p_value"]).all() and tests["reject"].all()
    assert list(pairs.columns[:9]) == ["contrast", "factor", "level_a", "level_b", "indicator",
                                       "run_id_a", "run_id_b", "value_a", "value_b"]
    gd_pairs = pairs[pairs["contrast"] == "optimizer: sgd (batch_size=64) vs gd"]
    assert len(gd_pairs) == 30 and gd_pairs["run_id_a"].str.startswith("sgd64").all()
    assert (gd_pairs["run_id_a"].str[5:] == gd_pairs["run_id_b"].str[5:]).all()
    assert pairs["width"].dtype == "Int64"  # integers stay integers next to the gaps


def test_factor_tests_without_a_factor_says_so():
    table = optimizer_table()
    table = table[(table["optimizer"] == "sgd") & (table["batch_size"] == 32) & ~table["augment"]]
    tests, pairs = factor_tests(table, ["jacobian_norm"], n_boot=100)
    assert len(tests) == 1 and "no hyperparameter axis" in tests["note"].iloc[0]
    assert pairs.empty


def test_holm_matches_hand_computation_and_never_lowers_p():
    df = pd.DataFrame({"p_value": [0.01, 0.04, 0.03, np.nan]})
    out = correct_multiple(df)
    # Sorted 0.01, 0.03, 0.04 → 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04).
    np.testing.assert_allclose(out["p_adjusted"][:3], [0.03, 0.06, 0.06])
    assert (out["p_adjusted"][:3] >= df["p_value"][:3]).all()
    assert out["reject"][:3].tolist() == [True, False, False]
    assert np.isnan(out["p_adjusted"][3]) and pd.isna(out["reject"][3])


def test_per_point_auc_one_when_misclassified_points_have_larger_indicator():
    rng = np.random.default_rng(6)
    n = 40
    separated = np.concatenate([rng.uniform(1, 2, 30), rng.uniform(3, 4, 10)])
    overlap = rng.lognormal(size=n)
    overlap_correct = (rng.uniform(size=n) > overlap / overlap.max()).astype(float)
    jac = np.stack([separated, overlap, np.r_[rng.uniform(1, 2, n - 5), [np.nan] * 5]])
    correct = np.stack([np.r_[np.ones(30), np.zeros(10)], overlap_correct,
                        np.r_[np.ones(n - 5), [np.nan] * 5]])
    ds = make_dataset([{"seed": s} for s in range(3)], [0.2, 0.3, 0.0],
                      point_vars={"jacobian_norm": jac}, correct=correct)
    out = per_point_misclassification(ds).set_index("scope")
    assert out.index.tolist() == ["r0000", "r0001", "r0002", "pooled"]
    first = out.loc["r0000"]
    assert first["auc"] == 1.0 and (first["n_correct"], first["n_wrong"]) == (30, 10)
    assert first["mannwhitney_p"] < 1e-5 and first["median_wrong"] > first["median_correct"]
    assert np.isnan(first["logit_coef"]) and "logit not fit" in first["note"]
    second = out.loc["r0001"]
    wrong, right = overlap[overlap_correct == 0], overlap[overlap_correct == 1]
    brute_auc = np.mean([w > r for w in wrong for r in right])  # no ties in continuous data
    assert second["auc"] == pytest.approx(brute_auc)
    assert second["logit_coef_ci_low"] < second["logit_coef"] < second["logit_coef_ci_high"]
    assert second["note"] == ""
    third = out.loc["r0002"]
    assert (third["n_correct"], third["n_wrong"]) == (n - 5, 0)
    assert np.isnan(third["auc"]) and third["note"] == "no misclassified points"
    assert out.loc["pooled", "n_wrong"] == 10 + (overlap_correct == 0).sum()


def test_per_point_keeps_non_positive_values_in_auc_and_mann_whitney():
    right = [1.0, 2.0, 3.0, 5.0]
    wrong = [0.0, 4.0, -1.0, 1.5, 6.0]
    # One evaluated point without an indicator value, and one padded point (correct NaN).
    jac = np.array([right + wrong + [np.nan, np.nan]])
    correct = np.array([[1.0] * 4 + [0.0] * 5 + [1.0, np.nan]])
    ds = make_dataset([{}], [0.1], point_vars={"jacobian_norm": jac}, correct=correct)
    row = per_point_misclassification(ds).set_index("scope").loc["r0000"]
    assert (row["n_correct"], row["n_wrong"]) == (4, 5)
    assert (row["n_indicator_missing"], row["n_nonpositive_not_in_logit"]) == (1, 2)
    assert (row["median_correct"], row["median_wrong"]) == (2.5, 1.5)
    # AUC by hand: wrong points above correct ones: 0 → 0, 4 → 3, -1 → 0, 1.5 → 1, 6 → 4.
    assert row["auc"] == pytest.approx(8 / 20)
    assert row["mannwhitney_p"] == pytest.approx(
        stats.mannwhitneyu(wrong, right, alternative="greater").pvalue)
    # The logit sees only the 7 positive points: correct 1, 2, 3, 5; wrong 4, 1.5, 6.
    positive = np.log([1.0, 2.0, 3.0, 5.0, 4.0, 1.5, 6.0])
    fit = Logit(np.r_[np.zeros(4), np.ones(3)], np.column_stack([np.ones(7), positive])).fit(
        disp=False)
    assert row["logit_coef"] == pytest.approx(fit.params[1])


def test_degenerate_inputs_give_nan_rows_with_notes():
    table = pd.DataFrame({"few": [1.0, 2.0, np.nan], "flat": [1.0, 1.0, 1.0],
                          "gap": [0.1, 0.2, 0.3], "dataset": ["digits"] * 3, "a": [0, 1, 2]})
    corr = correlations(table, ["few", "flat"], n_boot=20)
    assert corr["value"].isna().all() and corr["ci_low"].isna().all()
    assert set(corr.loc[corr["indicator"] == "few", "note"]) == {
        "fewer than 3 networks with finite values (n=2)"}
    assert set(corr.loc[corr["indicator"] == "flat", "note"]) == {"indicator is constant"}
    coefs, text = ols_gap_on_log_indicator(table, "flat")
    assert coefs["coef"].isna().all() and "indicator is constant" in text
    psi = granulated_kendall(table.assign(b=0), "flat", ["a", "b"]).set_index("axis")
    # Jiang's τ of a constant indicator is 0 (every pair tied), not undefined.
    assert psi.loc["a", "psi"] == 0.0 and psi.loc["a", "n_groups_constant"] == 1
    assert np.isnan(psi.loc["a", "psi_skip_constant"])
    assert np.isnan(psi.loc["b", "psi"]) and psi.loc["b", "note"] == "axis has a single value"
    assert psi.loc["__all__", "psi"] == 0.0
    psi = granulated_kendall(table.assign(b=0), "flat", ["b"]).set_index("axis")
    assert psi.loc["__all__", "note"] == "no axis produced a value"


def test_summary_ranks_by_psi_then_tau(monotone_table):
    indicators = ["noise", "jacobian_norm"]
    corr = correlations(monotone_table, indicators, n_boot=100)
    psi = pd.concat([granulated_kendall(monotone_table, i, ["width", "depth", "seed"])
                     for i in indicators])
    out = summary(corr, psi)
    assert out["indicator"].tolist() == ["jacobian_norm", "noise"]
    assert out["rank_psi"].tolist() == [1, 2] and out["rank_tau"].tolist() == [1, 2]
    assert {"psi_width", "psi_depth", "psi_seed", "kendall_tau_ci_low", "n"} <= set(out.columns)
    assert out.loc[0, "psi"] == pytest.approx(1.0) and out.loc[0, "n"] == 27


# --- ordering of ellipse metrics by kind of anchors -----------------------------------------

def _ellipse_summary(values: dict[str, list[list[float]]], metric="transitions"):
    """Per-ellipse rows from {kind: [per network: [per ellipse values]]}."""
    rows = []
    for kind, networks in values.items():
        for n, ellipses in enumerate(networks):
            rows += [{"run_id": f"net{n}", "kind": kind, "ellipse": e, metric: v}
                     for e, v in enumerate(ellipses)]
    return pd.DataFrame(rows)


def test_kind_ordering_counts_networks_in_order_and_tests_one_sided():
    # Network means (over 2 ellipses): same, different, random per network.
    same = [[1, 3], [2, 2], [5, 5], [1, 1], [2, 4]]          # 2, 2, 5, 1, 3
    different = [[4, 4], [3, 5], [4, 4], [6, 6], [7, 9]]     # 4, 4, 4, 6, 8
    random = [[9, 9], [1, 1], [8, 8], [10, 12], [9, 11]]     # 9, 1, 8, 11, 10
    table = kind_ordering(_ellipse_summary(
        {"same_class": same, "different_class": different, "random": random}))
    assert list(table["metric"]) == ["transitions"] * 3  # absent metrics are skipped
    rows = {(r.lower, r.higher): r for r in table.itertuples()}
    s_d = rows[("same_class", "different_class")]
    assert (s_d.n_networks, s_d.n_in_order) == (5, 4)  # network 2: 5 > 4
    assert s_d.fraction_in_order == pytest.approx(0.8)
    assert s_d.median_ratio == pytest.approx(np.median([4 / 2, 4 / 2, 4 / 5, 6 / 1, 8 / 3]))
    lo, hi = np.array([2, 2, 5, 1, 3.0]), np.array([4, 4, 4, 6, 8.0])
    assert s_d.p_value == pytest.approx(
        stats.wilcoxon(lo - hi, alternative="less").pvalue)
    assert rows[("different_class", "random")].n_in_order == 4  # network 1: 1 < 4
    assert (table["p_adjusted"] >= table["p_value"]).all()


def test_kind_ordering_reversed_order_gives_large_p_and_zero_in_order():
    table = kind_ordering(_ellipse_summary(
        {"same_class": [[9]] * 3 + [[8]], "different_class": [[5]] * 3 + [[6]],
         "random": [[1]] * 3 + [[2]]}))
    assert (table["n_in_order"] == 0).all()
    assert (table["p_value"] > 0.5).all()


def test_kind_ordering_nan_transitions_give_a_note_not_a_test():
    nan = [[np.nan, np.nan]] * 3
    table = kind_ordering(_ellipse_summary(
        {"same_class": nan, "different_class": nan, "random": nan}))
    assert (table["n_networks"] == 0).all()
    assert table["p_value"].isna().all() and table["note"].str.contains("no finite").all()


def test_kind_ordering_counts_a_tie_as_tied_not_in_order():
    # Network means: same 2, 3, 4; different 2, 5, 1: a tie, in order, out of order.
    table = kind_ordering(_ellipse_summary(
        {"same_class": [[2], [3], [4]], "different_class": [[2], [5], [1]],
         "random": [[9], [9], [9]]}))
    row = table.set_index(["lower", "higher"]).loc[("same_class", "different_class")]
    assert (row["n_networks"], row["n_in_order"], row["n_tied"]) == (3, 1, 1)
    assert row["fraction_in_order"] == pytest.approx(1 / 3)
    # The tie is a zero difference, dropped by the signed-rank test.
    assert row["p_value"] == pytest.approx(stats.wilcoxon([-2.0, 3.0], alternative="less").pvalue)


@pytest.mark.parametrize("n", [3, 5, 12, 40])
def test_vectorized_resample_statistics_equal_scipy_row_by_row(n):
    """The bootstrap computes τ-b, ρ and r for all resamples at once; each must be scipy's
    value for that resample, ties and constant resamples (NaN) included."""
    from scipy import stats as sps

    from workflow_src.stats import correlation as C

    rng = np.random.default_rng(n)
    x = rng.integers(0, 4, size=(300, n)).astype(float)  # many ties
    y = rng.normal(size=(300, n))
    y[:, : n // 2] = np.round(y[:, : n // 2])
    x[0] = 1.0  # a constant row
    for name, rows, func in (("kendall_tau", C._kendall_rows, sps.kendalltau),
                             ("spearman_rho", C._spearman_rows, sps.spearmanr),
                             ("pearson_r", C._pearson_rows, sps.pearsonr)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.array([func(a, b).statistic for a, b in zip(x, y)])
        np.testing.assert_allclose(rows(x, y), expected, rtol=0, atol=1e-12, err_msg=name)
        assert np.isnan(rows(x, y)[0]) and np.isnan(expected[0])


def test_bootstrap_intervals_equal_the_one_call_per_resample_bootstrap(monkeypatch):
    from scipy import stats as sps

    from workflow_src.stats import correlation as C

    rng = np.random.default_rng(1)
    table = pd.DataFrame({"ind": rng.normal(size=15), "gap": rng.normal(size=15)})
    table.loc[:4, "gap"] = 0.25  # ties in the gap
    fast = correlations(table, ["ind"], n_boot=300, seed=5).set_index("statistic")
    for name, func in C.STATISTICS.items():
        slow = sps.bootstrap((table["ind"].to_numpy(), table["gap"].to_numpy()),
                             lambda a, b: func(a, b).statistic, n_resamples=300, paired=True,
                             vectorized=False, confidence_level=0.95, method="percentile",
                             rng=np.random.default_rng(5))
        np.testing.assert_allclose(fast.loc[name, ["ci_low", "ci_high"]].to_numpy(float),
                                   [slow.confidence_interval.low, slow.confidence_interval.high],
                                   rtol=0, atol=1e-12, err_msg=name)
    # Above PAIRWISE_MAX_N the per-resample scipy route gives the same numbers.
    monkeypatch.setattr(C, "PAIRWISE_MAX_N", 2)
    routed = correlations(table, ["ind"], n_boot=300, seed=5).set_index("statistic")
    np.testing.assert_allclose(routed.loc["kendall_tau", ["ci_low", "ci_high"]].to_numpy(float),
                               fast.loc["kendall_tau", ["ci_low", "ci_high"]].to_numpy(float),
                               rtol=0, atol=1e-12)
