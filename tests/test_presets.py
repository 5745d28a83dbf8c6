"""The study presets (studies/*.yaml): every full preset plans cleanly, every small variant
runs end to end, and the statistics of the small novak_factors run are sane.

Each preset's small variant runs once (the module-scoped fixture small_run, parametrized
per preset), so `-k zhang_cnn` runs only that preset. The tests that start Snakemake are
marked workflow and presets; the others here are unit tests of the presets' tables."""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, planned_jobs, snakemake

from workflow_src.config import validate_config
from workflow_src.runtable import build_run_table
from workflow_src.shards import plan_shards

PRESETS = sorted(p.stem for p in (REPO / "studies").glob("*.yaml"))
# Small variants that use Fashion-MNIST read Debian's copy (`make test` installs it).
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
STATS = ("networks.csv", "correlations.csv", "per_point.csv", "granulated.csv", "ols.csv",
         "ols_summary.txt", "paired.csv", "pairs.csv", "summary.csv")
FIGURES = ("learning_curves", "time_to_fit", "test_error", "factors", "indicators_vs_gap",
           "jacobian_vs_gap")
NOVAK_FACTORS = {"label_noise", "augment", "activation", "optimizer"}


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "studies" / f"{name}.yaml").read_text())


def small_datasets(name: str) -> set[str]:
    small = validate_config({**load(name), "scale": "small"})
    return {run.data.dataset for run in build_run_table(small).values()}


def runnable(name: str) -> bool:
    return FASHION.exists() or "fashion_mnist" not in small_datasets(name)


def test_the_three_presets_exist():
    assert set(PRESETS) >= {"zhang_corruption", "novak_factors", "novak_gap"}


@pytest.mark.parametrize("name", PRESETS)
def test_header_states_the_size_it_has(name):
    """The header's "N networks" (full) and "small: M networks" match the run tables."""
    header = "".join(line for line in (REPO / "studies" / f"{name}.yaml").open()
                     if line.startswith("#"))
    full = validate_config(load(name))
    small = validate_config({**load(name), "scale": "small"})
    assert f"{len(build_run_table(full))} networks" in header
    assert re.search(rf"small[^\n]*\b{len(build_run_table(small))} networks", header)
    assert full["study"] == name and small["study"] == f"{name}-small"


@pytest.mark.workflow
@pytest.mark.presets
@pytest.mark.parametrize("name", PRESETS)
def test_full_preset_dry_runs(tmp_path, name):
    config = load(name)
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout)
    runs = build_run_table(validate_config(copy.deepcopy(config)))
    size = validate_config(copy.deepcopy(config))["shards"]["size"]
    assert jobs["train"] == len(plan_shards(runs, size))  # one job a shard (no GPU here)
    for rule in ("granulate", "regress", "paired", "summarize", "plot_training",
                 "plot_metrics", "plot_summary"):
        assert jobs[rule] == 1


@pytest.fixture(scope="module")
def presets_dir(tmp_path_factory):
    """One scratch directory for the small variants (the datasets they share are made once)."""
    return tmp_path_factory.mktemp("presets")


@pytest.fixture(scope="module")
def small_run(request, presets_dir):
    """The small variant of the preset request.param, run end to end; its results folder.
    Tests take it through small(name) (one preset) or small(*PRESETS) (one test each)."""
    name = request.param
    if not runnable(name):
        pytest.skip(f"{name}'s small variant needs Fashion-MNIST at {FASHION.parent}")
    start = time.perf_counter()
    result = snakemake(presets_dir, load(name), "--config", "scale=small")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    print(f"{name} small: {time.perf_counter() - start:.1f} s end to end")
    return presets_dir / "results" / f"{name}-small"


def small(*names: str):
    """Runs the test on the small variant of each named preset (the fixture small_run)."""
    marks = (pytest.mark.workflow, pytest.mark.presets)
    return pytest.mark.parametrize("small_run", [pytest.param(n, marks=marks) for n in names],
                                   indirect=True)


@small(*PRESETS)
def test_small_variant_writes_stats_and_figures(small_run):
    study = small_run
    for filename in STATS:
        assert (study / "stats" / filename).stat().st_size > 0, filename
    for stem in FIGURES:
        assert (study / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (study / "figures" / f"{stem}.svg").read_text().lstrip().startswith("<svg")
        assert "cdn.jsdelivr" not in (study / "figures" / f"{stem}.html").read_text()
    curves = pd.read_csv(study / "curves.csv")
    networks = pd.read_csv(study / "stats" / "networks.csv")
    assert set(curves["run_id"]) == set(networks["run_id"])
    assert {"label_noise", "corruption", "status", "step", "train_loss"} <= set(curves.columns)


@pytest.fixture
def factors(small_run):
    return small_run / "stats"


@small("novak_factors")
def test_paired_has_each_factor_with_pairs_and_holm_adjusted_p(factors):
    paired = pd.read_csv(factors / "paired.csv")
    jacobian = paired[paired["indicator"] == "jacobian_norm"]
    assert set(jacobian["factor"]) >= NOVAK_FACTORS  # width also has two values
    assert jacobian["factor"].is_unique  # one row per factor and indicator
    assert (jacobian["n_pairs"] >= 2).all()
    tested = paired.dropna(subset=["p_value"])
    assert len(tested) >= len(NOVAK_FACTORS)
    assert (tested["p_adjusted"] >= tested["p_value"] - 1e-12).all()
    assert (tested["p_adjusted"] <= 1).all()
    levels = dict(zip(jacobian["factor"], zip(jacobian["level_a"], jacobian["level_b"])))
    assert levels["optimizer"] == ("sgd", "gd")  # full batch second: differences read gd − sgd
    gd_row = jacobian[jacobian["factor"] == "optimizer"]
    assert "batch_size left out of the matching keys" in gd_row["note"].iloc[0]


@small("novak_factors")
def test_pairs_match_the_paired_counts(factors):
    paired = pd.read_csv(factors / "paired.csv")
    pairs = pd.read_csv(factors / "pairs.csv")
    counts = pairs.groupby(["contrast", "indicator"]).size()
    for _, row in paired.iterrows():
        assert counts[(row["contrast"], row["indicator"])] == row["n_pairs"]
    assert (pairs["run_id_a"] != pairs["run_id_b"]).all()


@small("novak_factors")
def test_granulated_scores_every_indicator_and_names_skipped_axes(factors):
    granulated = pd.read_csv(factors / "granulated.csv")
    correlations = pd.read_csv(factors / "correlations.csv")
    indicators = set(correlations["indicator"])
    assert set(granulated["indicator"]) == indicators
    overall = granulated[granulated["axis"] == "__all__"]
    assert len(overall) == len(indicators)
    psi = granulated["psi"].dropna()
    assert ((psi >= -1) & (psi <= 1)).all()
    single = granulated[granulated["axis"] == "dataset"]  # the small variant has one dataset
    assert (single["note"] == "axis has a single value").all() and single["psi"].isna().all()


@small("novak_factors")
def test_summary_ranks_every_indicator(factors):
    summary = pd.read_csv(factors / "summary.csv")
    correlations = pd.read_csv(factors / "correlations.csv")
    assert set(summary["indicator"]) == set(correlations["indicator"])
    assert {"rank_psi", "rank_tau", "psi", "kendall_tau", "kendall_tau_ci_low",
            "kendall_tau_ci_high", "n"} <= set(summary.columns)
    assert (summary["rank_tau"].dropna() >= 1).all()
    abs_psi = summary["psi"].abs().dropna().to_numpy()
    assert np.all(np.diff(abs_psi) <= 1e-12)  # sorted by |Ψ|, largest first


@small("novak_factors")
def test_ols_covers_every_indicator(factors):
    ols = pd.read_csv(factors / "ols.csv")
    correlations = pd.read_csv(factors / "correlations.csv")
    assert set(ols["indicator"]) == set(correlations["indicator"])
    text = (factors / "ols_summary.txt").read_text()
    assert all(f"log({name})" in text for name in set(correlations["indicator"]))


def test_learning_curves_repeat_hyperparameters_and_status_per_row():
    from workflow_src.jobs.collect import learning_curves
    from workflow_src.runtable import HYPERPARAMETERS

    runs = build_run_table(validate_config({**load("zhang_corruption"), "scale": "small"}))
    ids = list(runs)[:2]
    curve = pd.DataFrame({"step": [25, 50], "train_loss": [2.0, 1.0], "train_acc": [0.5, 1.0],
                          "test_acc": [0.4, 0.8], "seconds": [0.1, 0.2]})
    summaries = [{"run_id": i, "status": s} for i, s in zip(ids, ("converged", "unconverged"))]
    table = learning_curves({i: runs[i].hyperparameters() for i in ids}, [curve, curve], summaries)
    assert len(table) == 4 and list(table.columns[:len(HYPERPARAMETERS) + 1]) == [
        "run_id", *HYPERPARAMETERS]
    assert table.groupby("run_id")["status"].first().to_dict() == dict(
        zip(ids, ("converged", "unconverged")))
    with pytest.raises(ValueError, match="given for run"):
        learning_curves({i: runs[i].hyperparameters() for i in ids}, [curve, curve],
                        summaries[::-1])


def test_fit_table_takes_each_runs_last_evaluation_and_chance():
    from workflow_src.figures.studies import fit_table
    from workflow_src.runtable import HYPERPARAMETERS

    hps = {h: 0 for h in HYPERPARAMETERS} | {"dataset": "cifar100", "corruption": "none"}
    curves = pd.DataFrame([
        {**hps, "run_id": "a", "status": "converged", "step": s, "train_loss": 1 / s,
         "train_acc": 1.0, "test_acc": 0.25, "seconds": s / 10} for s in (50, 100, 25)])
    fits = fit_table(curves, list(HYPERPARAMETERS))
    assert len(fits) == 1 and fits["steps"].iloc[0] == 100 and fits["seconds"].iloc[0] == 10
    assert fits["test_error"].iloc[0] == pytest.approx(0.75)
    assert fits["chance"].iloc[0] == pytest.approx(0.99)  # 1 - 1/K with K = 100


def test_theme_is_registered_and_enabled_by_use_theme():
    import altair as alt

    from workflow_src.figures.theme import NAME, OKABE_ITO, use_theme

    use_theme()
    assert alt.theme.active == NAME
    config = alt.theme.get()()["config"]
    assert config["range"]["category"] == OKABE_ITO
    assert config["axis"]["labelFontSize"] >= 11


@small("keskar_batch")
def test_keskar_small_variant_draws_the_1d_plot_of_its_twins(small_run):
    study = small_run
    table = pd.read_csv(study / "stats" / "keskar_interpolation.csv")
    assert table.groupby(["small_run", "large_run"]).size().tolist() == [7, 7]  # 2 seeds
    assert set(table["batch_small"]) == {10} and set(table["batch_large"]) == {100}
    assert (study / "figures" / "keskar_1d.png").read_bytes()[:4] == b"\x89PNG"
    summary = pd.read_csv(study / "stats" / "summary.csv")
    assert {"sharpness_full_eps0p001", "hessian_top_eigenvalue"} <= set(summary["indicator"])
    paired = pd.read_csv(study / "stats" / "paired.csv")
    assert "batch_size" in set(paired["factor"])


@small("arpit_memorization")
def test_arpit_small_variant_scores_the_critical_sample_ratio_and_norms(small_run):
    networks = pd.read_csv(small_run / "stats" / "networks.csv")
    assert networks["critical_sample_ratio"].between(0, 1).all()
    assert sorted(networks["label_noise"]) == [0.0, 0.5, 1.0]
    assert {"path_norm", "spectral_product", "margin"} <= set(networks.columns)


@small("double_descent")
def test_double_descent_small_variant_writes_the_peak_and_the_epoch_wise_curve(small_run):
    stats = small_run / "stats"
    table = pd.read_csv(stats / "double_descent.csv")
    assert sorted(table["width"].unique()) == [8, 32]
    assert set(table["threshold"]) == {200 * 10}
    peak = pd.read_csv(stats / "double_descent_peak.csv")
    assert sorted(peak["label_noise"]) == [0.0, 0.2]
    networks = pd.read_csv(stats / "networks.csv")
    for row in peak.itertuples():
        errors = 1 - networks[networks["label_noise"] == row.label_noise]["test_acc"]
        assert row.peak_test_error == pytest.approx(errors.max())  # one seed: the max
    assert (networks["steps"] == 600).all()  # a fixed budget, whether fitted or not
    epochs = pd.read_csv(stats / "double_descent_epochs.csv")
    assert set(epochs["width"]) == {32}  # 2,410 parameters; width 8 has 610, 3.3x below
    assert set(epochs["step"]) == set(range(50, 601, 50))
    for stem in ("double_descent", "double_descent_epochs"):
        assert (small_run / "figures" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"


@small("jiang_measures")
def test_jiang_small_variant_ranks_every_indicator(small_run):
    summary = pd.read_csv(small_run / "stats" / "summary.csv")
    expected = {"jacobian_norm", "path_norm", "margin", "critical_sample_ratio",
                "hessian_top_eigenvalue", "sharpness_subspace_eps0p0005",
                "pac_bayes_mag_flatness", "ntk_top_eigenvalue", "transitions_exact"}
    assert expected <= set(summary["indicator"])
    assert {"expected_sign", "cmi", "robust_sign_error"} <= set(summary.columns)


@small("zhang_cnn")
def test_zhang_cnn_small_variant_fits_random_labels_with_both_cnns(small_run):
    """Zhang et al. Fig. 1 with the CNNs: every network fits, random labels included; the
    random labels take longer; the test error of random labels is about chance."""
    study = small_run
    networks = pd.read_csv(study / "stats" / "networks.csv")
    assert sorted(networks["architecture"]) == ["alexnet_small"] * 2 + ["inception_small"] * 2
    assert (networks["status"] == "converged").all() and (networks["train_acc"] == 1).all()
    for _, pair in networks.groupby("architecture"):
        true, random = (pair[pair["label_noise"] == p].iloc[0] for p in (0.0, 1.0))
        assert random["steps"] > true["steps"] and random["test_acc"] < true["test_acc"]
    assert {"n_parameters", "frobenius_sum"} <= set(networks.columns)
    assert networks["spectral_product"].isna().all()  # not defined for the CNNs (norms.py)
    assert (study / "figures" / "time_to_fit.png").read_bytes()[:4] == b"\x89PNG"


@small("zhang_batchnorm")
def test_zhang_batchnorm_small_variant_trains_inception_with_and_without(small_run):
    study = small_run
    curves = pd.read_csv(study / "curves.csv")
    last = curves.sort_values("step").groupby("batch_norm").last()
    assert sorted(last.index) == [False, True]
    assert set(curves["architecture"]) == {"inception_small"}
    # With batch norm the Inception fits, and in fewer steps (Zhang et al. Fig. 2).
    assert last.loc[True, "status"] == "converged" and last.loc[True, "train_acc"] == 1
    assert last.loc[True, "step"] < last.loc[False, "step"]
    assert (study / "figures" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
