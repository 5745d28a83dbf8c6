"""The whole workflow through the Snakemake CLI on a tiny `digits` study (offline, CPU)."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from workflow_helpers import (
    REPO,
    SNAKEMAKE,
    TINY_CONFIG,
    planned_jobs,
    planned_shards,
    snakemake,
)

from workflow_src import registry
from workflow_src.config import validate_config
from workflow_src.runtable import HYPERPARAMETERS, build_run_table
from workflow_src.shards import plan_shards

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    result = snakemake(workdir, TINY_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir


def test_aggregate_satisfies_output_contract(study):
    ds = xr.open_zarr(study / "results/tiny/metrics.zarr")
    assert dict(ds.sizes) == {"run": 4, "point": 40, "ellipse": 6, "position": 64}
    for name in HYPERPARAMETERS:  # one coordinate per hyperparameter, named as in the config
        assert ds[name].dims == ("run",)
    assert sorted(ds["label_noise"].values.tolist()) == [0.0, 0.0, 1.0, 1.0]
    for name in ("train_acc", "test_acc", "gap", "steps", "status"):
        assert ds[name].dims == ("run",)
    for name in ("loss", "correct", "jacobian_norm", "logit_jacobian_norm",
                 "jacobian_norm_true_class", "bound_lower", "bound_upper", "bound_approx",
                 "within_bounds"):
        assert ds[name].dims == ("run", "point")
        assert np.isfinite(ds[name].values).all()
    for name in ("transitions_exact", "transitions_sampled", "trajectory_jacobian_norm"):
        assert ds[name].dims == ("run", "point")  # walked for the first 10 points only
        assert np.isfinite(ds[name].values[:, :10]).all() and np.isnan(ds[name].values[:, 10:]).all()
    assert (ds["transitions_sampled"] <= ds["transitions_exact"]).values[:, :10].all()
    assert ds["bound_M"].dims == ("run",)
    assert ds["ellipse_jacobian_norm"].dims == ("run", "ellipse", "position")
    assert ds["ellipse_transitions"].dims == ("run", "ellipse")
    # The control: the same ellipses at each network's initial weights.
    assert ds["ellipse_jacobian_norm_init"].dims == ("run", "ellipse", "position")
    assert ds["ellipse_transitions_init"].dims == ("run", "ellipse")
    assert np.isfinite(ds["ellipse_transitions_init"]).all()
    assert not np.array_equal(ds["ellipse_jacobian_norm_init"], ds["ellipse_jacobian_norm"])
    assert list(ds["ellipse_kind"].values) == ["random"] * 2 + ["different_class"] * 2 + [
        "same_class"] * 2
    assert ds["angle"].dims == ("position",) and ds.sizes["position"] == 64
    assert set(ds["status"].values) <= {"converged", "unconverged", "diverged"}
    np.testing.assert_allclose(ds["gap"], ds["train_acc"] - ds["test_acc"])
    assert ds.attrs["code_version"] and len(ds.attrs["config_hash"]) == 12
    datasets = json.loads(ds.attrs["datasets"])
    assert len(datasets["digits"]["sha256"]) == 64


def test_per_run_outputs_are_consistent(study):
    ds = xr.open_zarr(study / "results/tiny/metrics.zarr").load()
    for i, run_id in enumerate(ds["run_id"].values):
        summary = json.loads((study / f"results/runs/{run_id}/train.json").read_text())
        assert summary["status"] == ds["status"].values[i]
        curve = (study / f"results/runs/{run_id}/curve.csv").read_text().splitlines()
        assert curve[0] == "step,train_loss,test_loss,train_acc,test_acc,seconds"


def test_stats_and_figures_written(study):
    stats = study / "results/tiny/stats"
    correlations = (stats / "correlations.csv").read_text()
    assert "jacobian_norm,gap,pooled,kendall_tau" in correlations  # pooled: one dataset
    assert "pooled" in (stats / "per_point.csv").read_text()
    assert (stats / "ellipses.csv").read_text().startswith("run_id,kind,ellipse")
    order = (stats / "ellipse_order.csv").read_text()
    assert order.startswith("metric,lower,higher,n_networks")
    assert "transitions_init,different_class,random" in order
    for stem in ("jacobian_vs_gap", "jacobian_by_correctness", "jacobian_vs_loss",
                 "ellipse_profile", "ellipse_kinds", "loss_bounds"):
        assert (study / f"results/tiny/figures/{stem}.svg").stat().st_size > 0
    for stem in ("jacobian_vs_gap", "jacobian_by_correctness"):
        png = (study / f"results/tiny/figures/{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        html = (study / f"results/tiny/figures/{stem}.html").read_text()
        assert "vega" in html and "cdn.jsdelivr" not in html  # self-contained, opens offline


def test_second_dry_run_has_nothing_to_do(study):
    result = snakemake(study, TINY_CONFIG, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_shard_records_list_every_network_once(study):
    records = [json.loads(p.read_text()) for p in (study / "results/shards").glob("*/train.json")]
    assert len(records) == 2  # one shard per depth: 2 label noise levels each
    members = [run_id for record in records for run_id in record["members"]]
    ds = xr.open_zarr(study / "results/tiny/metrics.zarr")
    assert sorted(members) == sorted(ds["run_id"].values.tolist())
    for log in (study / "results/logs/train").glob("*.log"):  # progress, for `tail -f`
        assert re.search(r"^\[2/2 networks, \d+ s\] run \w+: \w+ after", log.read_text(),
                         re.M), log.read_text()


def test_new_width_plans_only_new_networks(study):
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"]["width"] = [32, 48]
    result = snakemake(study, config, "-n")
    jobs = planned_jobs(result.stdout)
    # The new width makes new shards (one per depth, 2 label noise levels each); the
    # existing shards keep their members and are not re-planned.
    assert jobs["train"] == 2 and jobs["measure"] == 2, jobs
    planned = planned_shards(result.stdout)
    new_runs = set(build_run_table(validate_config(copy.deepcopy(config)))) - set(
        build_run_table(validate_config(copy.deepcopy(TINY_CONFIG))))
    plan = plan_shards(build_run_table(validate_config(copy.deepcopy(config))))
    assert {run_id for shard in planned for run_id in plan[shard]} == new_runs
    assert "acquire" not in jobs and "corrupt" not in jobs


def test_a_removed_shard_record_reuses_its_networks(study):
    """A shard's training job run again (its record removed and asked for) reuses its
    networks instead of retraining them, and the study then settles."""
    (record, *_) = sorted((study / "results/shards").glob("*/train.json"))
    members = list(json.loads(record.read_text())["members"])
    models = {m: (study / f"results/runs/{m}/model.pt").stat().st_mtime_ns for m in members}
    record.unlink()
    result = snakemake(study, TINY_CONFIG, str(record.relative_to(study)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert record.exists()
    result = snakemake(study, TINY_CONFIG)  # the shard's stores are older now: re-measured
    assert result.returncode == 0, result.stdout + result.stderr
    log = (study / f"results/logs/train/{record.parent.name}.log").read_text()
    assert all(f"run {m}: reused" in log for m in members), log
    assert {m: (study / f"results/runs/{m}/model.pt").stat().st_mtime_ns for m in members} == models
    assert "Nothing to be done" in snakemake(study, TINY_CONFIG, "-n").stdout


def test_plot_option_reruns_only_plots(study):
    config = copy.deepcopy(TINY_CONFIG)
    config["plots"] = {"color_by": "depth"}
    jobs = planned_jobs(snakemake(study, config, "-n").stdout)
    # only the figure job whose figures use plots.color_by (inside it, only those figures
    # are drawn again: tests/test_indicator_figure.py)
    assert set(jobs) - {"all"} == {"plot_metrics"}, jobs


def test_one_metric_setting_recomputes_only_that_metric(study):
    """The shards' measuring jobs run (one a shard) and nothing trains; inside them only the
    ellipses are measured, the other stores reused (tests/test_measure_workflow.py)."""
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"]["ellipses"]["n_positions"] = 32
    jobs = planned_jobs(snakemake(study, config, "-n").stdout)
    assert jobs["measure"] == 2  # one job a shard
    assert "train" not in jobs


def test_exact_cnn_walks_enter_the_translation_store_only_when_on(study):
    """measure.transitions.exact_cnn at its default leaves the translation stores' names
    (and so every existing study's cache) as they were; switched on, it re-measures the
    translation stores only."""
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"].setdefault("transitions", {})["exact_cnn"] = False
    assert "Nothing to be done" in snakemake(study, config, "-n").stdout
    config["measure"]["transitions"]["exact_cnn"] = True
    jobs = planned_jobs(snakemake(study, config, "-n").stdout)
    assert jobs["measure"] == 2, jobs  # one job a shard, which re-measures its translation
    assert "train" not in jobs, jobs


def test_enabling_an_indicator_measures_only_it(study):
    """A new metric is its own store: switching it on never retrains (each shard's measuring
    job measures it and reuses its other stores), and switching it off again finds
    everything up to date."""
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"]["hessian"] = {"enabled": True, "n_points": 50, "n_iterations": 5}
    jobs = planned_jobs(snakemake(study, config, "-n").stdout)
    assert jobs["measure"] == 2  # one job a shard
    assert "train" not in jobs, jobs
    assert "aggregate" in jobs


# Every indicator on (every metric of the registry with an `enabled` switch), at settings
# small enough for a test (the workflow's wiring is under test here; each metric's numbers
# are tested against references in its own module's tests).
SMALL = {
    "critical": {"n_points": 20, "max_iterations": 20},
    "hessian": {"n_points": 100, "n_iterations": 20, "n_probes": 10},
    "sharpness": {"subspace_dim": 10, "max_iterations": 3},
    "pac_bayes": {"bisection_steps": 5, "n_draws": 2, "ascent_steps": 3},
    "ntk": {"n_points": 20, "n_test_points": 50, "top_k": 5},
}
EVERY_INDICATOR = {m: {"enabled": True, **SMALL.get(m, {})}
                   for m, d in registry.metrics().items() if d.switch == "enabled"}


def test_every_indicator_is_measured_scored_and_drawn(tmp_path):
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"].update(copy.deepcopy(EVERY_INDICATOR))
    config["measure"]["ellipses"]["per_kind"] = 0
    config["measure"]["transitions"]["n_points"] = 0
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stdout + result.stderr
    ds = xr.open_zarr(tmp_path / "results/tiny/metrics.zarr")
    indicators = {name: int(da.attrs["expected_sign"]) for name, da in ds.data_vars.items()
                  if da.attrs.get("role") == "indicator"}
    expected = {"jacobian_norm": 1, "margin": -1, "path_norm": 1, "frobenius_over_margin": 1,
                "critical_sample_ratio": 1, "hessian_top_eigenvalue": 1, "hessian_trace": 1,
                "sharpness_full_eps0p001": 1, "sharpness_subspace_eps0p0005": 1,
                "pac_bayes_flatness": 1, "pac_bayes_mag_sharpness": 1,
                "ntk_top_eigenvalue": 1, "ntk_effective_rank": -1,
                "ntk_kernel_regression_test_acc": -1}
    assert expected.items() <= indicators.items()
    declared = {name: v["sign"] for m in EVERY_INDICATOR
                for name, v in registry.metric(m).variables.items()
                if "sign" in v and not name.endswith("*")}
    assert declared.items() <= indicators.items()  # every declared indicator, its sign
    # sigma' and alpha' are 1/sqrt of the scored measures: kept, not scored twice.
    assert "pac_bayes_sigma" in ds and "pac_bayes_sigma" not in indicators
    assert ds["critical"].dims == ("run", "point")
    assert np.isfinite(ds["critical"].values[:, :20]).all()
    assert np.isnan(ds["critical"].values[:, 20:]).all()
    np.testing.assert_allclose(ds["critical_sample_ratio"], ds["critical"][:, :20].mean("point"))
    assert ds["ntk_top_eigenvalues"].dims == ("run", "eigen")
    np.testing.assert_array_equal(ds["ntk_top_eigenvalue"], ds["ntk_top_eigenvalues"][:, 0])
    for name in ("hessian_top_converged", "pac_bayes_sigma_saturated",
                 "sharpness_full_evaluations_eps0p001"):
        assert ds[name].dims == ("run",) and name not in indicators
    for name in indicators:
        assert ds[name].dims in (("run",), ("run", "point")) and "units" in ds[name].attrs
    stats = tmp_path / "results/tiny/stats"
    scored = set(pd.read_csv(stats / "summary.csv")["indicator"])
    assert set(indicators) <= scored
    assert set(indicators) <= set(pd.read_csv(stats / "networks.csv").columns)
    # A panel per indicator, titled with its name (the figure's data hold only what it
    # draws), and a row of the ranking
    figure = (tmp_path / "results/tiny/figures/indicators_vs_gap.html").read_text()
    ranking = (tmp_path / "results/tiny/figures/indicator_ranking.html").read_text()
    for name in indicators:
        assert f'"text":"{name}"' in figure and f'"{name}"' in ranking, name


def test_missing_dataset_fails_clearly_and_keeps_results(study):
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"]["dataset"] = ["digits", "mnist"]  # mnist is not on this machine
    config["data"]["download_dir"] = "nowhere"
    before = {p: p.stat().st_mtime for p in (study / "results/runs").rglob("model.pt")}
    result = snakemake(study, config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "mnist not found" in output and "data.root" in output and "data.download" in output
    assert {p: p.stat().st_mtime for p in (study / "results/runs").rglob("model.pt")} == before


def test_bad_config_fails_before_any_job(tmp_path):
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"]["activation"] = ["relu", "swish"]
    result = snakemake(tmp_path, config, "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "grid.activation[1]" in output and "'swish'" in output and "hard_tanh" in output
    assert not (tmp_path / "results").exists()


def test_lint_is_clean():
    import subprocess

    result = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "good condition" in result.stdout + result.stderr


def test_report_embeds_every_figure_and_table(study):
    report = study / "report.html"
    result = snakemake(study, TINY_CONFIG, "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    html = report.read_text()
    for name in ("jacobian_vs_gap.png", "ellipse_profile.png", "loss_bounds.png",
                 "learning_curves.png", "indicators_vs_gap.png", "indicator_ranking.png",
                 "correlations.csv",
                 "summary.csv", "granulated.csv", "ellipse_order.csv", "networks.csv",
                 "pairs.csv", "ols_summary.txt"):
        assert f"filename={name}" in html, name
    # docutils renders a caption's RST mistakes (e.g. |Ψ| read as a substitution) into the
    # page as "System Message" boxes and reports them on stderr as (ERROR/3), (WARNING/2).
    for problem in ("System Message", "Undefined substitution", "Duplicate explicit target"):
        assert problem not in html, problem
    for level in ("(WARNING/", "(ERROR/", "(SEVERE/"):
        assert level not in result.stderr, result.stderr


def test_killed_snakemake_resumes_to_identical_statistics(study, tmp_path):
    """kill -9 of Snakemake and its jobs mid-study, a second Snakemake refused meanwhile:
    after `--unlock`, a re-run finishes with statistics byte-identical to a clean run's."""
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(TINY_CONFIG))
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "--configfile", str(config_path), "--cores", "2"]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "results/runs").glob("*/train.json")):
            assert first.poll() is None, "the study ended before it could be interrupted"
            assert time.monotonic() < deadline, "no network finished training in 300 s"
            time.sleep(0.5)
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # Snakemake and every job it started
        first.wait()
    assert not (tmp_path / "results/tiny/stats/correlations.csv").exists()
    assert subprocess.run([*command, "--unlock"], cwd=REPO, capture_output=True).returncode == 0
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for table in ("networks.csv", "correlations.csv", "granulated.csv", "per_point.csv"):
        assert ((tmp_path / "results/tiny/stats" / table).read_bytes()
                == (study / "results/tiny/stats" / table).read_bytes()), table
