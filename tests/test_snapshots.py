"""Metrics along training (workflow_src/jobs/snapshots.py, rules/snapshots.smk): the network at a
step is a kept checkpoint or the member trained again from scratch, bit-identical either
way; a step beyond the last is the final network; a damaged kept checkpoint is named and
regenerated; the workflow writes one store per shard, the study's table and figure, the
curve ends at the final network's value, and switching `enabled` off and on finds the store."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from workflow_helpers import TINY_CONFIG, planned_jobs, snakemake

from workflow_src import integrity
from workflow_src.training.checkpoints import KEPT, CheckpointStore, checkpoint_path
from workflow_src.data.corrupt import make_corrupted
from workflow_src.nets.checked import load_checked
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.jobs.snapshots import kept_checkpoint, regenerate, snapshot_weights
from workflow_src.training.train import train
from workflow_src.jobs.train_shard import save_trained

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
QUIET = lambda *parts: None  # noqa: E731
KEEP = (20, 45)


def run_spec():
    # As tests/test_checkpoints.py: label noise 0.5 keeps it from converging in 90 steps.
    data = DataSpec("digits", 100, 50, "none", 0.5, 0, True, False)
    return RunSpec(data=data, width=16, depth=1, activation="relu", bias=True,
                   optimizer="adam", learning_rate=0.01, batch_size=30, augment=False, seed=3,
                   target_train_acc=1.0, max_steps=90, eval_every=10)


@pytest.fixture(scope="module")
def member(digits, tmp_path_factory):
    """A member trained and saved as its shard's job does, checkpoints kept at KEEP."""
    run = run_spec()
    data = make_corrupted(digits, run.data)
    folder = tmp_path_factory.mktemp("member") / "runs" / run.id
    identity = {"run_id": run.id, "code_sha": "c" * 16, "data_sha": "d" * 16,
                "device": "cpu", "torch": str(torch.__version__)}
    store = CheckpointStore(folder, identity, every=0, keep=KEEP, log=QUIET)
    model, result = train(run, data, CPU, QUIET, checkpoints=store)
    summary = save_trained(run, model, result, folder, CPU, "c" * 16, "d" * 16)
    assert store.finish() == list(KEEP)
    assert result.steps == 90 and result.status == "unconverged"
    return run, data, folder, summary


def assert_same_weights(a: dict, b: dict):
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name].cpu(), b[name].cpu()), name


def test_kept_checkpoint_and_regenerated_weights_are_identical(member):
    run, data, folder, summary = member
    regenerated = regenerate(run, data, KEEP, CPU, QUIET)
    assert sorted(regenerated) == list(KEEP)
    for step in KEEP:
        assert_same_weights(kept_checkpoint(folder, step, summary, QUIET), regenerated[step])
    assert not torch.equal(regenerated[20]["hidden.0.weight"], regenerated[45]["hidden.0.weight"])


def test_regenerated_final_step_is_the_saved_network(member):
    """Training again to the member's final step gives model.pt exactly: regeneration is
    the member's own training, step for step."""
    run, data, folder, summary = member
    regenerated = regenerate(run, data, [summary["steps"]], CPU, QUIET)[summary["steps"]]
    saved = load_checked(folder / "model.pt", folder / "train.json")
    assert_same_weights(saved.state_dict(), regenerated)


def test_each_step_comes_from_a_checkpoint_the_regenerated_member_or_the_final_network(member):
    run, data, folder, summary = member
    final = summary["steps"]
    got = snapshot_weights(run, data, [10**6, 33, 20, final], summary, folder, CPU, QUIET)
    assert list(got) == [20, 33, final, 10**6]
    assert [(used, source) for _, used, source in got.values()] == [
        (20, "checkpoint"), (33, "regenerated"), (final, "final"), (final, "final")]
    assert got[final][0] is None and got[10**6][0] is None  # the final network: model.pt
    assert_same_weights(got[33][0], regenerate(run, data, [33], CPU, QUIET)[33])


def test_a_damaged_kept_checkpoint_is_named_and_its_step_regenerated(member, tmp_path):
    run, data, folder, summary = member
    damaged = tmp_path / run.id
    shutil.copytree(folder, damaged)
    path = checkpoint_path(damaged, 20)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    lines = []
    got = snapshot_weights(run, data, [20, 45], summary, damaged, CPU,
                           lambda *parts: lines.append(" ".join(map(str, parts))))
    assert [source for _, _, source in got.values()] == ["regenerated", "checkpoint"]
    assert any(str(path) in line and "damaged" in line and "SHA-256" in line for line in lines)
    assert_same_weights(got[20][0], kept_checkpoint(folder, 20, summary, QUIET))
    assert path.read_bytes() == bytes(raw)  # nothing is deleted
    # A checkpoint record whose own seal is broken is not trusted either.
    (damaged / KEPT).write_text((damaged / KEPT).read_text().replace('"steps"', '"stepz"', 1))
    lines.clear()
    assert kept_checkpoint(damaged, 45, summary, lines.append) is None
    assert any("kept checkpoints not used" in line for line in lines)


# --- the workflow ----------------------------------------------------------------------------

STEPS = [1, 10, 60, 100000]
SNAPSHOT_CONFIG = copy.deepcopy(TINY_CONFIG)
SNAPSHOT_CONFIG["training"] = {**TINY_CONFIG["training"], "keep_checkpoints": [10]}
SNAPSHOT_CONFIG["measure"] = {
    **copy.deepcopy(TINY_CONFIG["measure"]),
    "transitions": {"n_points": 0}, "ellipses": {"per_kind": 0},
    "critical": {"enabled": True, "n_points": 20, "max_iterations": 20},
    "snapshots": {"enabled": True, "steps": STEPS, "metrics": ["critical", "jacobian"]},
}
TARGETS = ["results/tiny/tables/snapshots.csv", "results/tiny/figures/snapshots.html",
           "results/tiny/metrics.zarr"]


def with_snapshots(**changes):
    config = copy.deepcopy(SNAPSHOT_CONFIG)
    config["measure"]["snapshots"].update(changes)
    return config


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("snapshots")
    result = snakemake(workdir, SNAPSHOT_CONFIG, *TARGETS)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir


@pytest.mark.workflow
def test_the_table_has_every_run_at_every_step(study):
    table = pd.read_csv(study / "results/tiny/tables/snapshots.csv")
    metrics = xr.open_zarr(study / "results/tiny/metrics.zarr").load()
    assert len(table) == 4 * len(STEPS) and table["run_id"].nunique() == 4
    assert sorted(table["label_noise"].unique()) == [0.0, 1.0]
    for column in ("step", "step_used", "reached", "source", "train_acc", "test_acc",
                   "train_loss", "final_steps", "status", "critical_sample_ratio",
                   "jacobian_norm", "loss", "correct"):
        assert column in table, column
    for row in table.itertuples():
        final = int(metrics["steps"].values[list(metrics["run_id"].values).index(row.run_id)])
        assert row.final_steps == final and row.step_used == min(row.step, final)
        assert row.reached == (row.step <= final)
        expected = ("final" if row.step >= final else "checkpoint" if row.step == 10
                    else "regenerated")
        assert row.source == expected, row
    # The first update leaves the networks far from fitted; at the end they fit (or try).
    first, last = table[table["step"] == 1], table[table["step"] == STEPS[-1]]
    assert (first["train_acc"].values < last["train_acc"].values).all()
    for name in ("html", "png", "svg"):
        assert (study / f"results/tiny/figures/snapshots.{name}").stat().st_size > 0


@pytest.mark.workflow
def test_the_curve_ends_at_the_final_networks_metrics(study):
    metrics = xr.open_zarr(study / "results/tiny/metrics.zarr").load()
    stores = sorted((study / "results/shards").glob("*/snapshots-*.zarr"))
    assert len(stores) == len(list((study / "results/shards").glob("*/train.json"))) == 2
    for path in stores:
        store = integrity.open_store(path)
        assert set(store.dims) == {"run", "step", "point"}
        assert store["jacobian_norm"].dims == ("run", "step", "point")
        for i, run_id in enumerate(store["run_id"].values):
            j = list(metrics["run_id"].values).index(run_id)
            last = store.isel(run=i).sel(step=STEPS[-1])
            assert not bool(last["reached"])
            for name in ("jacobian_norm", "logit_jacobian_norm", "loss"):
                np.testing.assert_array_equal(last[name].values, metrics[name].values[j])
            # The critical search covers the first 20 points; the Jacobian's 40 pad it.
            np.testing.assert_array_equal(last["critical"].values[:20],
                                          metrics["critical"].values[j, :20])
            assert float(last["critical_sample_ratio"]) == float(
                metrics["critical_sample_ratio"].values[j])
            assert float(last["train_acc"]) == float(metrics["train_acc"].values[j])
            assert float(last["test_acc"]) == float(metrics["test_acc"].values[j])


@pytest.mark.workflow
def test_switching_snapshots_off_and_on_finds_the_stores(study):
    stores = {p: p.stat().st_mtime_ns for p in (study / "results/shards").glob("*/snapshots-*")}
    off = snakemake(study, with_snapshots(enabled=False), "-n")
    assert off.returncode == 0, off.stdout + off.stderr
    assert not {"measure_snapshots", "plot_snapshots"} & set(planned_jobs(off.stdout))
    on = snakemake(study, with_snapshots(enabled=True), "-n", *TARGETS[:2])
    assert on.returncode == 0, on.stdout + on.stderr
    assert planned_jobs(on.stdout) == {}, on.stdout
    other = snakemake(study, with_snapshots(steps=[5, 100000]), "-n", *TARGETS[:2])
    assert planned_jobs(other.stdout).get("measure_snapshots") == 2, other.stdout
    assert {p: p.stat().st_mtime_ns for p in stores} == stores


@pytest.mark.workflow
def test_a_damaged_snapshot_store_is_removed_by_verify_and_measured_again(study):
    """Last in the module: it changes the study's files."""
    stores = sorted((study / "results/shards").glob("*/snapshots-*.zarr"))
    damaged, intact = stores
    chunk = next(p for p in (damaged / "jacobian_norm").rglob("*") if p.is_file()
                 and p.name != "zarr.json")
    chunk.write_bytes(b"\0" + chunk.read_bytes()[1:])
    intact_mtime = intact.stat().st_mtime_ns
    verify = snakemake(study, SNAPSHOT_CONFIG, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert str(damaged.relative_to(study)) in verify.stdout + verify.stderr
    assert not damaged.exists() and intact.exists()
    again = snakemake(study, SNAPSHOT_CONFIG, "-n", *TARGETS[:2])
    assert planned_jobs(again.stdout).get("measure_snapshots") == 1, again.stdout
    assert intact.stat().st_mtime_ns == intact_mtime
