"""Snapshot bookkeeping in seconds, without Snakemake (tests/test_snapshots.py runs the
workflow, about a minute): which steps a shard's snapshot store measures, for which
members, from which source (final network, kept checkpoint, training again), the last
snapshot equal to the final network's metrics, and the study table's membership
(workflow_src/jobs/snapshots.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_shards import members, shard_dir  # noqa: F401 (a fixture)

from workflow_src.jobs.measure_shard import measure_shard
from workflow_src.jobs.snapshots import (kept_checkpoint, measure_snapshots, ordered_metrics,
                                    snapshot_table)
from workflow_src.jobs.train_shard import train_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
QUIET = lambda *parts: None  # noqa: E731
KEEP = 50  # the step whose checkpoint each member keeps
STEPS = [100, 1, KEEP, 10**6, 150, KEEP]  # unsorted, one repeated; 150: max_steps
METRICS = {"jacobian": {"n_points": 5}, "bounds": {"n_points": 5}}


@pytest.fixture
def shard(shard_dir):  # noqa: F811
    """Two members (label noise 0 and 1: the first stops early, the second runs to
    max_steps 150) trained one after another keeping the checkpoint at KEEP, as rule train
    leaves them."""
    results, stores = shard_dir
    runs = members(label_noises=(0.0, 1.0))
    summaries = train_shard("s" * 12, runs, stores, results, CPU, False, QUIET,
                            checkpoint_every=0, keep_checkpoints=(KEEP,))
    return results, stores, runs, summaries


def test_a_store_holds_every_member_at_every_requested_step_from_the_right_source(shard):
    results, stores, runs, summaries = shard
    store = measure_snapshots(STEPS, METRICS, "s" * 12, runs, stores, results, CPU, 8, QUIET)
    assert store["run_id"].values.tolist() == [run.id for run in runs]
    assert store["step"].values.tolist() == sorted(set(STEPS)) == store.attrs["steps"]
    assert store.attrs["metrics"] == ["jacobian", "bounds"]
    assert set(store["source"].values.ravel()) == {"final", "checkpoint", "regenerated"}
    for i, run in enumerate(runs):
        final = summaries[run.id]["steps"]
        member = store.isel(run=i)
        assert int(member["final_steps"]) == final
        for step in sorted(set(STEPS)):
            snap = member.sel(step=step)
            expected = ("final" if step >= final else "checkpoint" if step == KEEP
                        else "regenerated")
            assert (str(snap["source"].values), int(snap["step_used"]),
                    bool(snap["reached"])) == (expected, min(step, final), step <= final)


def test_the_last_snapshot_is_the_final_networks_metrics(shard):
    results, stores, runs, summaries = shard
    store = measure_snapshots([10**6], METRICS, "s" * 12, runs, stores, results, CPU, 8, QUIET)
    final = measure_shard(METRICS, "s" * 12, runs, stores, results, CPU, 8, QUIET)
    for i, run in enumerate(runs):
        last = store.isel(run=i, step=-1)
        for metric in METRICS:
            for name in final[metric].data_vars:
                np.testing.assert_array_equal(last[name].values, final[metric][name].values[i],
                                              err_msg=name)
        assert float(last["train_acc"]) == summaries[run.id]["train_acc"]
        assert float(last["test_acc"]) == summaries[run.id]["test_acc"]


@pytest.mark.parametrize("key", ["run_id", "code_sha", "data_sha"])
def test_a_kept_checkpoint_of_another_network_or_code_is_not_used(shard, key):
    results, _, runs, summaries = shard
    folder = results / "runs" / runs[1].id
    lines = []
    assert kept_checkpoint(folder, KEEP, summaries[runs[1].id], lines.append) is not None
    other = {**summaries[runs[1].id], key: "0" * 16}
    assert kept_checkpoint(folder, KEEP, other, lines.append) is None
    assert any(f"written for another network or training code ({key})" in line
               for line in lines), lines


def test_the_study_table_has_a_row_per_member_and_step_in_the_studys_order(shard):
    results, stores, runs, _ = shard
    store = measure_snapshots([1, KEEP], {"jacobian": {"n_points": 5}}, "s" * 12, runs,
                              stores, results, CPU, 8, QUIET)
    hyper = {run.id: run.hyperparameters() for run in runs[::-1]}
    table = snapshot_table([store], hyper)
    assert list(zip(table["run_id"], table["step"])) == [
        (run.id, step) for run in runs[::-1] for step in (1, KEEP)]
    assert table["label_noise"].tolist() == [1.0, 1.0, 0.0, 0.0]
    expected = store["jacobian_norm"].mean("point").values  # (run, step)
    np.testing.assert_allclose(table["jacobian_norm"].values,
                               expected[::-1].ravel(), rtol=1e-12)
    with pytest.raises(ValueError, match="not the study's"):
        snapshot_table([store], {runs[0].id: hyper[runs[0].id]})
    assert snapshot_table([], hyper).empty


def test_metrics_are_measured_in_their_order_and_bounds_need_the_jacobian():
    assert ordered_metrics(["critical", "bounds", "jacobian"]) == ["jacobian", "bounds",
                                                                    "critical"]
    for metrics, why in ((["bounds"], "list jacobian too"),
                         (["translation"], "cannot be measured on snapshots")):
        with pytest.raises(ValueError, match=why):
            ordered_metrics(metrics)
