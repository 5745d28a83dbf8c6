"""Shard bookkeeping without Snakemake, in seconds (tests/test_shards.py has the rest): shard
sizes at their boundaries (workflow_src/shards.py), and a shard that mixes members the
stacked trainer takes with members it does not (train_shard.py, ensemble.py) saving each
member's own network under its own run id."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from test_shards import members, shard_dir  # noqa: F401 (a fixture)

from workflow_src import integrity, shards
from workflow_src.training.ensemble import stackable
from workflow_src.nets.models import load_model
from workflow_src.training.train import train
from workflow_src.jobs.train_shard import train_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_group(n: int, seeds_from: int = 0) -> dict:
    """n runs that stack together (one stack key), differing in seed only."""
    (run,) = members(label_noises=(0.0,))
    runs = [replace(run, seed=seed) for seed in range(seeds_from, seeds_from + n)]
    return {run.id: run for run in runs}


def assert_partition(runs: dict, plan: dict):
    """Every run in exactly one shard, each shard one stack key and named by its members."""
    members_ = [run_id for ids in plan.values() for run_id in ids]
    assert sorted(members_) == sorted(runs)
    for shard, ids in plan.items():
        assert shard == shards.shard_id(ids)
        assert len({shards.stack_key(runs[i]) for i in ids}) == 1


N = 7


@pytest.mark.parametrize("size, expected", [
    (1, [1] * N), (N - 1, [N - 1, 1]), (N, [N]), (N + 1, [N]), (3, [3, 3, 1]), (2, [2, 2, 2, 1]),
    (100, [N])])
def test_shards_are_consecutive_cuts_of_the_given_size_and_the_remainder(size, expected):
    runs = one_group(N)
    plan = shards.plan_shards(runs, size)
    assert_partition(runs, plan)
    assert [len(ids) for ids in plan.values()] == expected
    in_order = sorted(runs, key=lambda i: (runs[i].seed, i))
    assert [i for ids in plan.values() for i in ids] == in_order
    assert shards.plan_shards(runs, size) == plan  # deterministic


def test_each_group_is_cut_on_its_own_and_its_remainder_stays_in_it():
    small = one_group(3)
    other = {run.id: run for run in (replace(run, width=32) for run in one_group(5).values())}
    runs = {**small, **other}
    plan = shards.plan_shards(runs, size=2)
    assert_partition(runs, plan)
    assert [len(ids) for ids in plan.values()] == [2, 1, 2, 2, 1]


@pytest.mark.parametrize("n_group, device, limit", [
    (1, "cpu", 4), (16, "cpu", 4), (17, "cpu", 5), (128, "cpu", 32), (129, "cpu", 32),
    (1024, "cuda", 256), (1025, "cuda", 256), (1021, "cuda", 256), (1020, "cuda", 255)])
def test_auto_size_at_its_boundaries(n_group, device, limit):
    """A quarter of the group (rounded up), at least MIN_SIZE, at most the device's cap."""
    assert shards.group_size_limit(n_group, "auto", device) == limit
    assert limit == max(shards.MIN_SIZE, min(shards.AUTO_CAP[device],
                                             math.ceil(n_group / shards.SPREAD)))


@pytest.mark.parametrize("n", [1, 4, 16, 17, 33])
def test_auto_shards_of_a_group_cover_it_once(n):
    runs = one_group(n)
    plan = shards.plan_shards(runs, "auto")
    assert_partition(runs, plan)
    limit = shards.group_size_limit(n, "auto", "cpu")
    assert [len(ids) for ids in plan.values()] == [limit] * (n // limit) + (
        [n % limit] if n % limit else [])


def test_seeds_added_above_keep_the_shards_of_the_existing_ones():
    before = shards.plan_shards(one_group(6), 3)
    after = shards.plan_shards({**one_group(6), **one_group(4, seeds_from=6)}, 3)
    assert set(before) < set(after) and len(after) == 4


# --- a shard mixing stackable and unstackable members -----------------------------------

def test_a_mixed_shard_saves_each_members_own_network_under_its_own_id(shard_dir):  # noqa: F811
    """Two members the stacked trainer takes and, listed first, one it does not (weight
    decay; same stack key, so one shard): each run's folder holds the network train.train
    gives that run alone (the stacked ones within float32 rounding)."""
    results, stores = shard_dir
    plain = members()[1:]
    decayed = replace(members()[0], weight_decay=1e-3)
    runs = [decayed, *plain]
    assert [stackable(run) for run in runs] == [False, True, True]
    assert len({shards.stack_key(run) for run in runs}) == 1
    lines = []
    summaries = train_shard("m" * 12, runs, stores, results, torch.device("cpu"), True,
                            lambda *parts: lines.append(" ".join(map(str, parts))))
    assert any("training 2 networks as one stacked ensemble" in line for line in lines)
    shard = integrity.read_record(results / "shards" / ("m" * 12) / "train.json",
                                  ("members",))
    for run in runs:
        folder = results / "runs" / run.id
        record = integrity.read_record(folder / "train.json", ("status",))
        alone_model, alone = train(run, integrity.open_store(stores[run.data.id]),
                                   torch.device("cpu"), log=lambda *a: None)
        assert record["run_id"] == run.id
        assert (record["status"], record["steps"]) == (alone.status, alone.steps), run.id
        assert shard["members"][run.id]["steps"] == summaries[run.id]["steps"] == alone.steps
        model = load_model(folder / "model.pt")
        for p, q in zip(model.state_dict().values(), alone_model.state_dict().values()):
            if stackable(run):
                torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
            else:  # trained one after another: bit for bit
                assert torch.equal(p, q)
        if not stackable(run):
            assert (record["train_correct"], record["test_correct"], record["gap"]) == (
                alone.train_correct, alone.test_correct, alone.gap)
