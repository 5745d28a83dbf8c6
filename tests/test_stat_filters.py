"""The constants of the statistics' filters at their boundary, one value on each side
(workflow_src/stats/, train.stop_status): the fewest networks a correlation, a granulated
group, a Wilcoxon test or a pairwise score uses, the minimum effective sample size of the
robust sign-error, and the converged filter's target accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.stats import converged
from workflow_src.stats.correlation import correlations
from workflow_src.stats.ellipse_order import _compare as kind_pair
from workflow_src.stats.granulated import granulated_kendall
from workflow_src.stats.paired import paired_factor_tests
from workflow_src.stats.scoring import conditional_mi_score, robust_sign_error
from workflow_src.training.train import Checkpoint, stop_status


def networks(n: int, **columns) -> pd.DataFrame:
    """n networks with a gap and an indicator increasing together, seeds 0..n-1."""
    table = pd.DataFrame({"gap": np.arange(n) / 10, "ind": np.arange(n) ** 2 + 1.0,
                          "seed": np.arange(n), **columns})
    table.attrs["hyperparameters"] = ["seed"]
    return table


@pytest.mark.parametrize("n, defined", [(2, False), (3, True)])
def test_a_correlation_needs_three_networks(n, defined):
    table = pd.concat([networks(n), pd.DataFrame({"gap": [0.5], "ind": [np.nan]})])
    rows = correlations(table, ["ind"], n_boot=100)
    assert (rows["n"] == n).all()
    assert bool(rows["value"].notna().all()) is defined
    if not defined:
        assert set(rows["note"]) == {f"fewer than 3 networks with finite values (n={n})"}
    else:  # (a resample of three networks may repeat one: the CI notes that)
        assert not any(note.startswith("fewer") for note in rows["note"])


@pytest.mark.parametrize("finite_in_second_group, groups", [(1, 1), (2, 2)])
def test_a_granulated_group_needs_two_networks_with_finite_values(finite_in_second_group,
                                                                  groups):
    """Axis a varies within each value of b; the group b = 1 keeps 1 or 2 finite networks."""
    table = pd.DataFrame({"a": [0, 1, 0, 1], "b": [0, 0, 1, 1], "gap": [0.1, 0.2, 0.3, 0.4],
                          "ind": [1.0, 2.0, 3.0, 4.0 if finite_in_second_group == 2 else np.nan]})
    row = granulated_kendall(table, "ind", ["a", "b"]).set_index("axis").loc["a"]
    assert row["n_groups"] == groups and row["psi"] == 1.0


@pytest.mark.parametrize("n_pairs, tested", [(1, False), (2, True)])
def test_a_wilcoxon_test_needs_two_matched_pairs(n_pairs, tested):
    table = pd.DataFrame({"factor": [0, 1] * n_pairs, "seed": np.repeat(range(n_pairs), 2),
                          "run_id": [f"r{i}" for i in range(2 * n_pairs)],
                          "ind": [1.0, 2.0, 1.0, 3.0][:2 * n_pairs]})
    row = paired_factor_tests(table, "factor", (0, 1), "ind", keys=["factor", "seed"],
                              n_boot=100).iloc[0]
    assert row["n_pairs"] == n_pairs
    assert bool(np.isfinite(row["p_value"])) is tested
    assert row["note"] == ("" if tested else "fewer than 2 matched pairs (n=1)")


@pytest.mark.parametrize("n, defined", [(1, False), (2, True)])
def test_the_ellipse_kind_order_test_needs_two_networks(n, defined):
    per_network = pd.DataFrame({"random": [2.0, 3.0][:n], "same_class": [1.0, 1.5][:n]})
    row = kind_pair(per_network, "m", "same_class", "random")
    assert row["n_networks"] == n and ("p_value" in row) is defined
    assert row["note"] == ("" if defined else "fewer than 2 networks (n=1)")


@pytest.mark.parametrize("n, defined", [(1, False), (2, True)])
def test_the_pairwise_score_needs_two_networks(n, defined):
    row = conditional_mi_score(networks(n), "ind", k=0, keys=["seed"])
    assert bool(np.isfinite(row["score"])) is defined
    assert ("fewer than 2 networks" in row["note"]) is not defined


@pytest.mark.parametrize("min_ess, defined", [(2.0, True), (2.0 + 1e-12, True),
                                              (2.01, False)])
def test_the_robust_sign_error_keeps_an_environment_at_exactly_the_minimum_ess(min_ess,
                                                                               defined):
    """Two networks per value of a, unweighted: the environment a=0 vs a=1 has 2 x 2 pairs,
    two of them tied in the gap, so its effective sample size is 2."""
    table = pd.DataFrame({"a": [0, 0, 1, 1], "gap": [0.1, 0.2, 0.2, 0.2],
                          "ind": [1.0, 2.0, 3.0, 4.0]})
    row = robust_sign_error(table, "ind", keys=["a"], min_ess=min_ess)
    environment = row["per_environment"].iloc[0]
    assert environment["ess"] == 2.0
    assert bool(np.isfinite(environment["sign_error"])) is defined
    assert bool(np.isfinite(row["max"])) is defined


def test_the_converged_filter_keeps_exactly_the_converged_networks():
    table = pd.DataFrame({"status": ["converged", "unconverged", "diverged", "converged"],
                          "gap": [0.1, 0.2, 0.3, 0.4]})
    table.attrs["hyperparameters"] = ["x"]
    kept = converged(table)
    assert kept["gap"].tolist() == [0.1, 0.4] and kept.attrs == table.attrs


@pytest.mark.parametrize("train_correct, status", [(98, None), (99, "converged"),
                                                   (100, "converged")])
def test_a_network_converges_at_exactly_the_target_accuracy(train_correct, status):
    run = RunSpec(DataSpec("digits", 100, 50, "none", 0.0, 0, True, False), 16, 1, "relu",
                  True, "sgd", 0.1, 20, False, 0, 0.99, 10, 5)
    point = Checkpoint(5, 0.3, train_correct, 100, 40, 50, 0.0)
    assert stop_status(run, point) == status
    assert stop_status(run, Checkpoint(5, float("nan"), train_correct, 100, 40, 50,
                                       0.0)) == "diverged"
