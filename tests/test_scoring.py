"""Conditional mutual information score and robust sign-error on tables with a known answer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow_src.stats import correlations
from workflow_src.stats.scoring import conditional_mi_score, robust_sign_error


def grid_table(seed=0, seeds=2, **axes):
    """One network per point of the product of ``axes`` and ``seeds`` seeds, a continuous
    (tie-free) random gap, and attrs["hyperparameters"] as network_table sets them."""
    names = list(axes) + ["seed"]
    rows = [dict(zip(names, values))
            for values in itertools.product(*axes.values(), range(seeds))]
    table = pd.DataFrame(rows)
    table["gap"] = np.random.default_rng(seed).uniform(0.0, 0.5, len(table))
    table.attrs["hyperparameters"] = names
    return table


# --- brute force, one pair at a time --------------------------------------------------------

def sign(v):
    return (v > 0) - (v < 0)


def brute_cmi(table, indicator, subset, target="gap"):
    """Ĩ_S by explicit loops: ordered pairs i ≠ j with untied target, grouped by both
    networks' values on S; I and H from the counts of (sign Δμ, sign Δg) per group."""
    groups = {}
    records = table.to_dict("records")
    for i, j in itertools.permutations(range(len(records)), 2):
        a, b = records[i], records[j]
        if a[target] == b[target]:
            continue
        key = (tuple(a[h] for h in subset), tuple(b[h] for h in subset))
        cell = (sign(a[indicator] - b[indicator]), sign(a[target] - b[target]))
        groups.setdefault(key, {}).setdefault(cell, 0)
        groups[key][cell] += 1
    total = sum(sum(g.values()) for g in groups.values())
    mi = entropy = 0.0
    for counts in groups.values():
        n_u = sum(counts.values())
        p_mu, p_g = {}, {}
        for (vm, vg), c in counts.items():
            p_mu[vm] = p_mu.get(vm, 0) + c / n_u
            p_g[vg] = p_g.get(vg, 0) + c / n_u
        mi_u = sum(c / n_u * math.log((c / n_u) / (p_mu[vm] * p_g[vg]))
                   for (vm, vg), c in counts.items())
        h_u = -sum(p * math.log(p) for p in p_g.values())
        mi += n_u / total * mi_u
        entropy += n_u / total * h_u
    return mi / entropy


def brute_sign_errors(table, indicator, keys, target="gap"):
    """{(varied, frozenset of its two values, other values): mean sign-error} by loops
    over unordered pairs of networks whose configurations differ in exactly one key."""
    losses = {}
    records = table.to_dict("records")
    for a, b in itertools.combinations(records, 2):
        differ = [h for h in keys if a[h] != b[h]]
        if len(differ) != 1 or a[target] == b[target]:
            continue
        h = differ[0]
        env = (h, frozenset((a[h], b[h])), tuple(a[k] for k in keys if k != h))
        concordance = sign(a[indicator] - b[indicator]) * sign(a[target] - b[target])
        losses.setdefault(env, []).append((1 - concordance) / 2)
    return {env: sum(v) / len(v) for env, v in losses.items()}


# --- known answers --------------------------------------------------------------------------

@pytest.mark.parametrize("transform", [lambda g: g, lambda g: np.exp(5 * g), lambda g: 3 * g - 7])
def test_increasing_function_of_gap_has_cmi_one_and_no_sign_error(transform):
    table = grid_table(a=[0, 1, 2], b=["x", "y", "z"], c=[False, True])
    table["ind"] = transform(table["gap"])
    cmi = conditional_mi_score(table, "ind")
    assert cmi["score"] == pytest.approx(1.0)
    assert cmi["per_subset"]["value"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert cmi["per_subset"]["subset"].tolist() == ["a,b", "a,c", "b,c"]  # seed never
    assert cmi["keys"] == ["a", "b", "c"] and cmi["n_dropped"] == 0
    assert cmi["n_pairs"] == 36 * 35 and cmi["n_pairs_tied_target"] == 0
    rse = robust_sign_error(table, "ind")
    assert rse["max"] == 0.0 and rse["quantiles"] == {0.5: 0.0, 0.9: 0.0}
    # a: 3 value pairs × 6 contexts (b, c); b likewise; c: 1 × 9. Seeds cross: 2 × 2 pairs.
    assert rse["n_environments"] == 18 + 18 + 9
    assert (rse["per_environment"]["n_pairs"] == 4).all()
    assert rse["per_hyperparameter"]["n_environments"].tolist() == [18, 18, 9]


def test_minus_gap_has_cmi_one_and_sign_error_one():
    table = grid_table(seed=1, a=[0, 1, 2], b=[0, 1], c=[0, 1, 2, 3])
    table["ind"] = -table["gap"]
    assert conditional_mi_score(table, "ind")["score"] == pytest.approx(1.0)
    rse = robust_sign_error(table, "ind")
    assert rse["max"] == 1.0 and rse["mean"] == 1.0
    assert rse["per_environment"]["sign_error"].eq(1.0).all()


def test_independent_indicator_has_cmi_near_zero_and_sign_error_near_half():
    table = grid_table(seed=2, seeds=4, a=range(4), b=range(4), c=range(4))  # 256 networks
    table["ind"] = np.random.default_rng(3).normal(size=len(table))
    cmi = conditional_mi_score(table, "ind")
    assert 0.0 <= cmi["score"] < 0.05
    assert (cmi["per_subset"]["value"] < 0.05).all()
    rse = robust_sign_error(table, "ind")
    assert rse["n_environments"] == 3 * 6 * 16  # 6 value pairs per key, 16 contexts
    assert rse["mean"] == pytest.approx(0.5, abs=0.05)
    assert rse["quantiles"][0.5] == pytest.approx(0.5, abs=0.1)
    assert rse["max"] > 0.5  # the worst of 288 environments is worse than a coin flip


def test_indicator_that_only_tracks_a_confounder_scores_zero_when_conditioned_on_it():
    """The gap rises with h (and a little noise); the indicator is a function of h alone."""
    table = grid_table(seed=4, seeds=3, h=[1, 2, 3], a=[0, 1, 2], b=[0, 1])
    table["gap"] = table["h"] + 0.5 * table["gap"]  # noise < 1: h orders the gap fully
    table["ind"] = table["h"] ** 2
    tau = correlations(table, ["ind"], n_boot=20).set_index("statistic")
    assert tau.loc["kendall_tau", "value"] > 0.6
    unconditional = conditional_mi_score(table, "ind", k=0)
    assert unconditional["score"] > 0.3 and unconditional["argmin"] == ()
    cmi = conditional_mi_score(table, "ind")
    values = cmi["per_subset"].set_index("subset")["value"]
    # Given both networks' h, V_μ is constant in every group (0 when h_i = h_j): I = 0.
    assert values[["h,a", "h,b"]].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert values["a,b"] > 0.3  # without h in S the indicator still looks informative
    assert cmi["score"] == pytest.approx(0.0, abs=1e-12) and "h" in cmi["argmin"]
    assert conditional_mi_score(table, "ind", k=1)["argmin"] == ("h",)
    rse = robust_sign_error(table, "ind")
    per_hp = rse["per_hyperparameter"].set_index("varied")
    assert per_hp.loc["h", "max"] == 0.0  # it does order networks that differ in h
    assert per_hp.loc[["a", "b"], "mean"].tolist() == [0.5, 0.5]  # and ties otherwise
    assert rse["max"] == 0.5


def test_unconditional_score_is_a_function_of_kendall_tau():
    # No ties: the ordered pairs split into concordant (fraction c = (1 + τ)/2) and
    # discordant ones, symmetrically in sign, so H(V_g) = log 2 and I = log 2 − H_b(c).
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"a": np.arange(40) % 2, "gap": rng.normal(size=40)})
    table["ind"] = table["gap"] + rng.normal(size=40)
    tau = stats.kendalltau(table["ind"], table["gap"]).statistic
    c = (1 + tau) / 2
    expected = 1 + (c * math.log(c) + (1 - c) * math.log(1 - c)) / math.log(2)
    assert conditional_mi_score(table, "ind", k=0, keys=["a"])["score"] == pytest.approx(expected)


def tiny_table():
    """8 networks on binary a, b, c; the indicator ties once (networks 0, 5), the gap ties
    once (networks 2, 7, which differ in a and c)."""
    table = pd.DataFrame(list(itertools.product([0, 1], repeat=3)), columns=["a", "b", "c"])
    table["gap"] = [0.10, 0.40, 0.25, 0.30, 0.05, 0.20, 0.35, 0.25]
    table["ind"] = [1.0, 6.0, 3.0, 2.0, 0.5, 1.0, 7.0, 4.0]
    table.attrs["hyperparameters"] = ["a", "b", "c"]
    return table


def test_cmi_on_tiny_table_matches_pair_by_pair_computation():
    table = tiny_table()
    for k in (1, 2):
        cmi = conditional_mi_score(table, "ind", k=k)
        expected = {",".join(s): brute_cmi(table, "ind", s)
                    for s in itertools.combinations("abc", k)}
        got = cmi["per_subset"].set_index("subset")["value"].to_dict()
        assert got == pytest.approx(expected)
        best = min(expected, key=expected.get)
        assert cmi["score"] == pytest.approx(expected[best])
        assert cmi["argmin"] == tuple(best.split(","))
        assert cmi["n_pairs"] == 56 - 2 and cmi["n_pairs_tied_target"] == 2
    # Row order does not matter.
    shuffled = table.sample(frac=1.0, random_state=0)
    assert (conditional_mi_score(shuffled, "ind")["per_subset"]["value"].tolist()
            == pytest.approx(conditional_mi_score(table, "ind")["per_subset"]["value"].tolist()))


def test_cmi_by_hand_on_four_networks():
    # a, b binary; gap 1, 2, 3, 4. S = {a}: groups (a_i, a_j) = (0, 1) and (1, 0) hold the
    # 4 + 4 pairs across a, where V_g is constant: I = H = 0 there. Group (0, 0) holds
    # pairs (0, 1), (1, 0): V_g = −, +, and V_μ agrees: I = H = log 2. Group (1, 1) holds
    # (2, 3), (3, 2): V_g = −, + but μ ties: I = 0, H = log 2. Each group of 2 pairs has
    # weight 2/12: Ĩ_a = (2/12 log 2) / (4/12 log 2) = 1/2.
    # S = {b}: same-b groups hold (0, 2), (2, 0) and (1, 3), (3, 1), all concordant:
    # Ĩ_b = 1. So K = 1/2 at S = (a,).
    table = pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "gap": [1.0, 2.0, 3.0, 4.0],
                          "ind": [0.0, 1.0, 5.0, 5.0]})
    cmi = conditional_mi_score(table, "ind", k=1, keys=["a", "b"])
    per = cmi["per_subset"].set_index("subset")
    assert per["value"].tolist() == pytest.approx([0.5, 1.0])
    assert per.loc["a", "mutual_information"] == pytest.approx(2 / 12 * math.log(2))
    assert per.loc["a", "conditional_entropy"] == pytest.approx(4 / 12 * math.log(2))
    assert per["n_groups"].tolist() == [4, 4] and per["n_pairs"].tolist() == [12, 12]
    assert (cmi["score"], cmi["argmin"]) == (pytest.approx(0.5), ("a",))


def test_sign_error_on_tiny_table_matches_pair_by_pair_computation():
    table = tiny_table()
    rse = robust_sign_error(table, "ind", quantiles=(0.25, 0.5, 0.9))
    expected = brute_sign_errors(table, "ind", ["a", "b", "c"])
    # 12 edges of the cube; networks 2 and 7 differ in two keys, so no edge ties the gap.
    assert len(expected) == 12 and rse["n_environments"] == 12
    env = rse["per_environment"]
    got = {(r.varied, frozenset((r.value_a, r.value_b)),
            tuple(int(v.split("=")[1]) for v in r.context.split(","))): r.sign_error
           for r in env.itertuples()}
    assert got == pytest.approx(expected)
    values = np.array(list(expected.values()))
    assert rse["max"] == values.max() == 1.0
    for q in (0.25, 0.5, 0.9):
        assert rse["quantiles"][q] == pytest.approx(np.quantile(values, q))
    # Edge (0, 4) varies a with b = c = 0: μ 1 → 0.5 while the gap 0.10 → 0.05: concordant.
    # Edge (1, 5) varies a with b = 0, c = 1: μ 6 → 1, gap 0.40 → 0.20: concordant.
    # Edge (4, 5) varies c with a = 1, b = 0: μ 0.5 → 1, gap 0.05 → 0.20: concordant.
    # Edge (0, 2) varies b with a = c = 0: μ 1 → 3, gap 0.10 → 0.25: concordant.
    # Edge (2, 3) varies c with a = 0, b = 1: μ 3 → 2, gap 0.25 → 0.30: discordant.
    edge = env.set_index(["varied", "context"])["sign_error"]
    assert edge[("c", "a=0,b=1")] == 1.0 and edge[("a", "b=0,c=0")] == 0.0


def test_sign_error_crosses_seeds_ties_cost_half_and_tied_gaps_drop_out():
    # Two configurations (w = 1, 2) × seeds. Pairs (w1 seed, w2 seed):
    #   (0, 0): Δg = +0.2, Δμ = +1 → 0;  (0, 1): Δg = +0.1, Δμ = −1 → 1;
    #   (1, 0): Δg = +0.1, Δμ = +1 → 0;  (1, 1): Δg = 0 → dropped;
    #   (0, 2), (1, 2): Δg = +0.3, +0.2, Δμ = 0 → 1/2 each. Mean over 5 pairs: 2/5.
    table = pd.DataFrame({"w": [1, 1, 2, 2, 2], "seed": [0, 1, 0, 1, 2],
                          "gap": [0.1, 0.2, 0.3, 0.2, 0.4], "ind": [1.0, 1.0, 2.0, 0.0, 1.0]})
    table.attrs["hyperparameters"] = ["w", "seed"]
    rse = robust_sign_error(table, "ind")
    row = rse["per_environment"].iloc[0]
    assert (rse["n_environments"], row["n_a"], row["n_b"]) == (1, 2, 3)
    assert (row["n_pairs"], row["n_pairs_tied_target"]) == (5, 1)
    assert row["sign_error"] == pytest.approx(2 / 5) and rse["max"] == pytest.approx(2 / 5)
    assert row["context"] == ""


def test_monte_carlo_filter_drops_pairs_within_noise():
    # With n_test = 10000, Δg = 0.001 gives w = (1 − 2 exp(−0.005))² ≈ 0 → weight 0, and
    # Δg ≥ 0.1 gives w = (1 − 2 exp(−50))² ≈ 1 → weight 1/2. The one discordant pair has
    # Δg = 0.001, so the filtered error is 0; unfiltered, 1 of 3 pairs errs.
    table = pd.DataFrame({"w": [1, 1, 1, 2], "seed": [0, 1, 2, 0],
                          "gap": [0.1, 0.2, 0.299, 0.3], "ind": [0.0, 1.0, 5.0, 2.0]})
    table.attrs["hyperparameters"] = ["w", "seed"]
    assert robust_sign_error(table, "ind")["max"] == pytest.approx(1 / 3)
    filtered = robust_sign_error(table, "ind", n_test=10_000)
    row = filtered["per_environment"].iloc[0]
    assert filtered["max"] == 0.0
    assert row["weight_sum"] == pytest.approx(1.0) and row["ess"] == pytest.approx(2.0)
    # The paper's minimum effective sample size leaves out an environment with too few pairs.
    strict = robust_sign_error(table, "ind", n_test=10_000, min_ess=3)
    assert strict["n_environments"] == 0 and np.isnan(strict["max"])
    assert "effective sample size below 3" in strict["note"]
    # A filter that nothing passes says so.
    nothing = robust_sign_error(table.assign(gap=[0.1, 0.1001, 0.1002, 0.1003]), "ind",
                                n_test=100)
    assert "no pair passes the Monte Carlo filter" in nothing["note"]


def test_nan_indicator_networks_are_dropped_and_constant_keys_skipped():
    table = grid_table(seed=6, a=[0, 1, 2], b=[0, 1], c=[0, 1])
    table["ind"] = table["gap"] + np.random.default_rng(7).normal(0, 0.1, len(table))
    table["const"] = "same"
    table.attrs["hyperparameters"] = ["a", "b", "const", "c", "seed"]
    holed = table.copy()
    holed.attrs = dict(table.attrs)
    holed.loc[[3, 10], "ind"] = np.nan
    cmi = conditional_mi_score(holed, "ind")
    assert (cmi["n_dropped"], cmi["n_networks"]) == (2, len(table) - 2)
    assert cmi["skipped_constant"] == ["const"] and cmi["keys"] == ["a", "b", "c"]
    assert "const" not in ",".join(cmi["per_subset"]["subset"])
    kept = table.drop(index=[3, 10])
    kept.attrs = dict(table.attrs)
    assert cmi["score"] == pytest.approx(conditional_mi_score(kept, "ind")["score"])
    assert cmi["score"] != pytest.approx(conditional_mi_score(table, "ind")["score"])
    rse = robust_sign_error(holed, "ind")
    assert rse["n_dropped"] == 2 and rse["skipped_constant"] == ["const"]
    assert set(rse["per_environment"]["varied"]) == {"a", "b", "c"}
    assert rse["max"] == pytest.approx(robust_sign_error(kept, "ind")["max"])


def test_too_few_pairs_give_nan_with_a_reason():
    table = pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "gap": [0.1, 0.2, 0.3, 0.4],
                          "ind": [1.0, 2.0, 3.0, 4.0]})
    # One network per (a, b) cell: given both networks' (a, b) every group holds one pair,
    # whose gap ordering U_S fixes: H(V_g | U_S) = 0.
    cmi = conditional_mi_score(table, "ind", keys=["a", "b"])
    assert np.isnan(cmi["score"]) and cmi["argmin"] is None
    assert "H(V_g | U_S) = 0" in cmi["note"]
    assert "fewer than k=3" in conditional_mi_score(table, "ind", k=3, keys=["a", "b"])["note"]
    one = conditional_mi_score(table.iloc[:1], "ind", keys=["a", "b"])
    assert np.isnan(one["score"]) and "fewer than 2 networks" in one["note"]
    # a and b both differ between networks 0 and 3 (and 1 and 2): no coupled pair there.
    rse = robust_sign_error(table.iloc[[0, 3]], "ind", keys=["a", "b"])
    assert rse["n_environments"] == 0 and np.isnan(rse["max"])
    assert "no two configurations differ in exactly one hyperparameter" in rse["note"]
    tied = robust_sign_error(table.assign(gap=0.2), "ind", keys=["a", "b"])
    assert np.isnan(tied["max"]) and "every pair ties in the target" in tied["note"]
    with pytest.raises(ValueError, match="hyperparameters"):
        conditional_mi_score(table, "ind")
