"""Shards: which networks share a job (workflow_src/shards.py), and the jobs themselves:
training a shard (workflow_src/jobs/train_shard.py) gives every member exactly the network it
would get alone, reuses intact members, and survives a failing member; measuring a shard
(workflow_src/jobs/measure_shard.py) gives every member exactly its own metrics."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from workflow_src import integrity, shards
from workflow_src.training import ensemble
from workflow_src.jobs.adapter import Progress
from workflow_src.data.corrupt import make_corrupted
from workflow_src.integrity import write_store
from workflow_src.jobs.measure_shard import measure_shard
from workflow_src.metrics.jacobian import pointwise_metrics
from workflow_src.metrics.per_run import bound_metrics, ellipse_metrics, translation_metrics
from workflow_src.nets.models import build_model, load_model
from workflow_src.runtable import DataSpec, RunSpec, build_run_table
from workflow_src.training.train import train
from workflow_src.jobs.train_shard import MemberFailed, train_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GRID = {"dataset": ["digits"], "corruption": ["none"], "label_noise": [0.0, 0.5],
        "width": [16, 32], "depth": [1, 2], "activation": ["relu"], "bias": [True],
        "optimizer": ["adam"], "learning_rate": [0.01], "batch_size": [50],
        "augment": [False], "seed": [0, 1, 2]}


def config_with(**grid_changes):
    return {"grid": {**GRID, **grid_changes},
            "data": {"n_train": 100, "n_test": 50, "seed": 0, "corrupt_test_inputs": True,
                     "corrupt_test_labels": False},
            "training": {"target_train_acc": 1.0, "max_steps": 200, "eval_every": 25}}


# --- the plan ---------------------------------------------------------------------------

def test_every_run_is_in_exactly_one_shard_with_runs_it_can_stack_with():
    runs = build_run_table(config_with())
    plan = shards.plan_shards(runs, size=4)
    members = [run_id for ids in plan.values() for run_id in ids]
    assert sorted(members) == sorted(runs)
    for shard, ids in plan.items():
        assert shard == shards.shard_id(ids) and len(ids) <= 4
        assert len({shards.stack_key(runs[i]) for i in ids}) == 1
        ensemble.check_stackable([runs[i] for i in ids],
                                 [_shape_only(runs[i]) for i in ids])  # raises if not
    assert len(plan) == 4 * 2  # 4 shapes (width x depth) of 6 runs, in shards of <= 4


def _shape_only(run):
    """A dataset with the shapes check_stackable reads (no data needed for the plan)."""
    import xarray as xr
    return xr.Dataset({"x_train": (("n", "c"), np.zeros((run.data.n_train, 1), np.float32)),
                       "x_test": (("m", "c"), np.zeros((run.data.n_test, 1), np.float32)),
                       "y_train": ("n", np.zeros(run.data.n_train, np.int64)),
                       "y_test": ("m", np.zeros(run.data.n_test, np.int64))},
                      attrs={"n_classes": 10})


def test_stack_settings_are_the_stacked_trainers():
    assert shards.STACK_SETTINGS == ensemble.SHARED_SETTINGS


def test_a_new_width_leaves_every_existing_shard_as_it_is():
    before = shards.plan_shards(build_run_table(config_with()))
    after = shards.plan_shards(build_run_table(config_with(width=[16, 32, 64])))
    assert set(before) < set(after)
    new_runs = set(build_run_table(config_with(width=[16, 32, 64]))) - set(
        build_run_table(config_with()))
    assert {r for s in set(after) - set(before) for r in after[s]} == new_runs


def test_seeds_added_above_keep_the_full_shards_of_a_fixed_size():
    before = shards.plan_shards(build_run_table(config_with(seed=[0, 1, 2, 3])), size=4)
    after = shards.plan_shards(build_run_table(config_with(seed=list(range(8)))), size=4)
    # Each shape group (2 noise levels x 4 seeds = 8 runs) filled two shards of 4; with
    # seeds 4-7 added, ordering by seed keeps both and adds two.
    assert set(before) <= set(after) and len(after) == 2 * len(before)


@pytest.mark.parametrize("n_group, device, expected", [
    (1, "cpu", 1), (3, "cpu", 3), (12, "cpu", 4), (24, "cpu", 6), (100, "cpu", 25),
    (2502, "cpu", 32), (2502, "cuda", 256), (24, "cuda", 6)])
def test_auto_size_spreads_small_groups_and_caps_large_ones(n_group, device, expected):
    limit = shards.group_size_limit(n_group, "auto", device)
    assert min(limit, n_group) == expected
    assert shards.group_size_limit(n_group, 7, device) == 7


def test_the_demo_grid_at_834_seeds_plans_few_shards():
    import yaml
    config = yaml.safe_load((Path(__file__).parent.parent / "config.yaml").read_text())
    config["grid"]["seed"] = list(range(834))
    runs = build_run_table(config)
    plan = shards.plan_shards(runs)
    assert len(runs) == 10_008 and len(plan) == 4 * 79  # 4 shapes of 2,502 runs, 32 a shard


# --- training a shard -------------------------------------------------------------------


def members(label_noises=(0.0, 0.5, 1.0), **changes):
    """Runs of one shape: one per label noise, seeds 0.., and a low step budget so some
    stop unconverged; ``changes`` apply to every run."""
    runs = []
    for seed, noise in enumerate(label_noises):
        data = DataSpec("digits", 100, 50, "none", noise, 0, True, False)
        runs.append(RunSpec(data=data, width=16, depth=1, activation="relu", bias=True,
                            optimizer="adam", learning_rate=0.01, batch_size=50,
                            augment=False, seed=seed, target_train_acc=1.0, max_steps=150,
                            eval_every=25, **changes))
    return runs


@pytest.fixture
def shard_dir(tmp_path, digits):
    """A results folder with the datasets of members() written as stage 2 writes them."""
    stores = {}
    for run in members():
        path = tmp_path / "datasets" / f"{run.data.id}.zarr"
        if not path.exists():
            write_store(make_corrupted(digits, run.data), path)
        stores[run.data.id] = str(path)
    return tmp_path, stores


def _train(shard_dir, runs, stack=False, log=None):
    results, stores = shard_dir
    lines = []
    out = train_shard("s" * 12, runs, stores, results, torch.device("cpu"), stack,
                      log or (lambda *parts: lines.append(" ".join(map(str, parts)))))
    return out, lines


def test_a_shard_trains_each_member_exactly_as_alone(shard_dir):
    results, stores = shard_dir
    runs = members()
    summaries, lines = _train(shard_dir, runs)
    for run in runs:
        alone_model, alone = train(run, integrity.open_store(stores[run.data.id]),
                                   torch.device("cpu"), log=lambda *a: None)
        folder = results / "runs" / run.id
        record = integrity.read_record(folder / "train.json", ("status",))
        assert (record["status"], record["steps"], record["train_correct"],
                record["test_correct"]) == (alone.status, alone.steps, alone.train_correct,
                                            alone.test_correct)
        model = load_model(folder / "model.pt")
        for (name, p), q in zip(model.state_dict().items(), alone_model.state_dict().values()):
            assert torch.equal(p, q), name
        assert summaries[run.id]["gap"] == alone.gap
    shard = integrity.read_record(results / "shards" / ("s" * 12) / "train.json", ("members",))
    assert sorted(shard["members"]) == sorted(run.id for run in runs)
    assert {m["status"] for m in shard["members"].values()} <= {"converged", "unconverged"}
    # The log shows progress with an ETA while members remain, and each member's steps.
    assert any(re.match(r"\[1/3 networks, \d+ s, ETA \d+ s\] run \w+: \w+ after", line)
               for line in lines), lines
    assert any("step 25: train loss" in line for line in lines)


def test_a_stacked_shard_gives_the_same_networks_within_float32_rounding(shard_dir):
    results, stores = shard_dir
    runs = members()
    _train(shard_dir, runs, stack=True)
    for run in runs:
        alone_model, alone = train(run, integrity.open_store(stores[run.data.id]),
                                   torch.device("cpu"), log=lambda *a: None)
        record = integrity.read_record(results / "runs" / run.id / "train.json", ("status",))
        assert (record["status"], record["steps"]) == (alone.status, alone.steps)
        model = load_model(results / "runs" / run.id / "model.pt")
        for p, q in zip(model.parameters(), alone_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_intact_members_are_reused_and_damaged_ones_retrained(shard_dir):
    results, _ = shard_dir
    runs = members()
    _train(shard_dir, runs)
    mtimes = {run.id: (results / "runs" / run.id / "model.pt").stat().st_mtime_ns
              for run in runs}
    damaged = results / "runs" / runs[1].id / "model.pt"
    damaged.write_bytes(b"\0" * damaged.stat().st_size)
    _, lines = _train(shard_dir, runs)
    reused = {run.id for run in runs if any(f"run {run.id}: reused" in line for line in lines)}
    assert reused == {runs[0].id, runs[2].id}
    assert integrity.check_record(results / "runs" / runs[1].id / "train.json") == []
    for run in (runs[0], runs[2]):
        assert (results / "runs" / run.id / "model.pt").stat().st_mtime_ns == mtimes[run.id]


def test_members_from_other_training_code_or_data_are_retrained(shard_dir, monkeypatch):
    from workflow_src.jobs import train_shard as module

    results, stores = shard_dir
    runs = members()
    _train(shard_dir, runs)
    monkeypatch.setattr(module, "training_code_sha", lambda *arch: "0" * 16)
    _, lines = _train(shard_dir, runs)
    assert not any("reused" in line for line in lines)
    monkeypatch.undo()
    # A rebuilt dataset whose content differs: networks trained on the old one are stale.
    shas = {data_id: "1" * 16 for data_id in stores}
    monkeypatch.setattr(module, "data_sha", lambda path: shas[Path(path).stem])
    _, lines = _train(shard_dir, runs)
    assert not any("reused" in line for line in lines)


def test_a_failing_member_does_not_take_its_shard_mates_down(shard_dir, monkeypatch):
    from workflow_src.jobs import train_shard as module

    results, _ = shard_dir
    runs = members()
    real_train = module.train

    def failing(run, *args, **kwargs):
        if run.id == runs[1].id:
            raise RuntimeError("simulated failure")
        return real_train(run, *args, **kwargs)

    monkeypatch.setattr(module, "train", failing)
    with pytest.raises(MemberFailed, match=rf"1 of 3 networks .* failed to train: {runs[1].id}"):
        _train(shard_dir, runs)
    assert not (results / "shards" / ("s" * 12) / "train.json").exists()
    for run in (runs[0], runs[2]):
        assert integrity.check_record(results / "runs" / run.id / "train.json") == []
    monkeypatch.undo()
    _, lines = _train(shard_dir, runs)  # the next run trains only the one that failed
    assert sum("reused" in line for line in lines) == 2
    assert (results / "shards" / ("s" * 12) / "train.json").exists()


def test_a_diverging_member_is_a_result_not_a_failure(shard_dir):
    results, _ = shard_dir
    runs = members()
    runs[1] = replace(runs[1], learning_rate=1e30)
    summaries, _ = _train(shard_dir, runs)
    assert summaries[runs[1].id]["status"] == "diverged"
    assert {summaries[r.id]["status"] for r in (runs[0], runs[2])} <= {"converged", "unconverged"}


# --- measuring a shard ------------------------------------------------------------------

def test_a_shard_store_holds_each_members_own_metrics(shard_dir):
    results, stores = shard_dir
    runs = members()
    _train(shard_dir, runs)
    settings = {"jacobian": {"n_points": 20}, "bounds": {"n_points": 20}}
    measured = measure_shard(settings, "s" * 12, runs, stores, results, torch.device("cpu"),
                             8, lambda *a: None)
    assert measured["jacobian"]["run_id"].values.tolist() == [run.id for run in runs]
    for i, run in enumerate(runs):
        model = load_model(results / "runs" / run.id / "model.pt").eval()
        data = integrity.open_store(stores[run.data.id])
        x = torch.as_tensor(data["x_test"].values[:20])
        y = torch.as_tensor(data["y_test"].values[:20])
        alone = pointwise_metrics(model, x, y, 8)
        for name, values in alone.items():
            np.testing.assert_array_equal(measured["jacobian"][name].values[i], values)
        bounds = bound_metrics(model, x, y, alone["loss"], alone["logit_jacobian_norm"], 10, 8)
        for name in bounds.data_vars:
            np.testing.assert_array_equal(measured["bounds"][name].values[i],
                                          bounds[name].values)


def test_shard_walks_and_ellipses_equal_each_members_own(shard_dir):
    results, stores = shard_dir
    runs = members()[:2]
    _train(shard_dir, runs)
    settings = {"translation": {"n_points": 3, "k_sampled": 128, "jacobian_positions": 8},
                "ellipses": {"per_kind": 2, "n_positions": 16, "seed": 0,
                             "at_initialization": True}}
    measured = measure_shard(settings, "s" * 12, runs, stores, results, torch.device("cpu"),
                             8, lambda *a: None)
    for i, run in enumerate(runs):
        model = load_model(results / "runs" / run.id / "model.pt").eval()
        data = integrity.open_store(stores[run.data.id])
        walk = translation_metrics(model, torch.as_tensor(data["x_test"].values[:3]), 128, 8, 8)
        ellipses = ellipse_metrics(model, torch.as_tensor(data["x_train"].values),
                                   torch.as_tensor(data["y_train_clean"].values), 2, 16, 0, 8,
                                   initial_model=build_model(model.spec, run.seed).eval())
        for alone, metric in ((walk, "translation"), (ellipses, "ellipses")):
            for name in alone.data_vars:
                np.testing.assert_array_equal(measured[metric][name].values[i],
                                              alone[name].values, err_msg=name)


def test_shard_indicators_equal_each_members_own(shard_dir):
    """The new indicators in a shard store are each member's own: computed on its training
    labels as trained on (corrupted for label noise), from its own initial weights, with
    Arpit's grey-level settings converted to the pixel/255 inputs the network sees."""
    from workflow_src.metrics.critical import critical_sample_metrics
    from workflow_src.metrics.hessian import hessian_metrics
    from workflow_src.metrics.norms import norm_metrics
    from workflow_src.metrics.ntk import ntk_metrics
    from workflow_src.metrics.pac_bayes import pac_bayes_metrics
    from workflow_src.metrics.sharpness import sharpness_metrics

    results, stores = shard_dir
    runs = members()[1:]  # label noise 0.5 and 1.0: training labels differ from the clean
    _train(shard_dir, runs)
    settings = {
        "norms": {},
        "critical": {"n_points": 6, "alpha": 0.25, "beta": 0.2, "radius": 0.3,
                     "max_iterations": 10, "seed": 3},
        "hessian": {"n_points": 40, "n_iterations": 5, "tolerance": 1e-4, "n_probes": 3,
                    "seed": 1},
        "sharpness": {"epsilons": [1e-3, 5e-4], "subspace_dim": 5, "max_iterations": 2,
                      "seed": 2},
        "pac_bayes": {"target_deviation": 0.1, "tolerance": 0.01, "bisection_steps": 3,
                      "n_draws": 2, "ascent_steps": 2, "magnitude_eps": 1e-3,
                      "search_max": 2.0, "seed": 4},
        "ntk": {"n_points": 8, "n_test_points": 10, "top_k": 3, "ridge": 1e-6,
                "chunk_size": 4},
    }
    measured = measure_shard(settings, "s" * 12, runs, stores, results, torch.device("cpu"),
                             8, lambda *a: None)
    for i, run in enumerate(runs):
        model = load_model(results / "runs" / run.id / "model.pt").eval()
        initial = build_model(model.spec, run.seed).eval()
        data = integrity.open_store(stores[run.data.id])
        x, y = torch.as_tensor(data["x_train"].values), torch.as_tensor(data["y_train"].values)
        assert (data["y_train"].values != data["y_train_clean"].values).any()
        x_test = torch.as_tensor(data["x_test"].values)
        alone = {
            "norms": norm_metrics(model, initial, x, y, 8),
            "critical": critical_sample_metrics(model, x_test[:6], 0.25 / 255, 0.2 / 255,
                                                0.3 / 255, 10, 3, 8),
            "hessian": hessian_metrics(model, x[:40], y[:40], 5, 1e-4, 3, 1, 8),
            "pac_bayes": pac_bayes_metrics(model, x, y, 0.1, 0.01, 3, 2, 2, 1e-3, 2.0, 4, 8),
            "ntk": ntk_metrics(model, initial, x, y, x_test[:10],
                               torch.as_tensor(data["y_test"].values[:10]), 8, 3, 1e-6, 4),
        }
        for metric, values in alone.items():
            for name in values.data_vars:
                np.testing.assert_array_equal(measured[metric][name].values[i],
                                              values[name].values, err_msg=name)
        sharp = sharpness_metrics(model, x, y, (1e-3, 5e-4), 5, 2, 2, 8)
        for name in ("sharpness_full", "sharpness_subspace"):
            for epsilon, suffix in ((1e-3, "eps0p001"), (5e-4, "eps0p0005")):
                assert measured["sharpness"][f"{name}_{suffix}"].values[i] == \
                    sharp[name].sel(epsilon=epsilon).item()
        for flag in ("converged", "saturated", "deviation_at_scale"):
            np.testing.assert_array_equal(  # NaN equals NaN here
                measured["pac_bayes"][f"pac_bayes_alpha_{flag}"].values[i],
                float(alone["pac_bayes"]["pac_bayes_alpha"].attrs[flag]))
        assert measured["ntk"]["ntk_top_eigenvalue"].values[i] == \
            alone["ntk"]["ntk_top_eigenvalues"].values[0]
    assert measured["critical"]["point"].values.tolist() == list(range(6))


def test_measuring_refuses_a_member_its_shard_record_does_not_vouch_for(shard_dir):
    results, stores = shard_dir
    runs = members()
    _train(shard_dir, runs)
    model = results / "runs" / runs[2].id / "model.pt"
    model.write_bytes(model.read_bytes()[:-8])
    with pytest.raises(integrity.DamagedOutputError, match=str(model)):
        measure_shard({"jacobian": {"n_points": 5}}, "s" * 12, runs, stores, results,
                      torch.device("cpu"), 8, lambda *a: None)
    record = results / "shards" / ("s" * 12) / "train.json"
    content = json.loads(record.read_text())
    del content["members"][runs[0].id]
    record.write_text(json.dumps(content))
    with pytest.raises(integrity.DamagedOutputError, match="content changed"):
        measure_shard({"jacobian": {"n_points": 5}}, "s" * 12, runs, stores, results,
                      torch.device("cpu"), 8, lambda *a: None)


# --- progress ---------------------------------------------------------------------------

def test_progress_counts_reused_members_but_times_only_trained_ones(monkeypatch):
    from workflow_src.jobs import adapter

    # Read at: begin, the reuse line, start (twice), done (twice); in seconds.
    clock = iter([0.0, 0.0, 10.0, 10.0, 40.0, 40.0])
    monkeypatch.setattr(adapter.time, "perf_counter", lambda: next(clock))
    lines = []
    progress = Progress(lines.append, 4, "networks")
    progress.done("run a: reused")
    progress.start("run b")
    progress.done("run b: converged")
    assert lines[0] == "[1/4 networks, 0 s] run a: reused"
    assert lines[-1] == "[2/4 networks, 40 s, ETA 1m 00s] run b: converged"
