"""A checkpoint's identity, one test per field, as a shard's training job builds it
(workflow_src/jobs/train_shard.py, checkpoints.py): a member's names its run, the training code,
its dataset's content, the device type, torch and the checkpoint format and code; a
stack's names every member, each member's dataset, the code, device and torch. Whatever
else differs between two jobs (shard, shard-mates, their order, checkpoint_every,
keep_checkpoints, where results lie) must leave it, or a killed job would not resume."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_identities import DATA, RUN

from workflow_src.jobs import train_shard
from workflow_src.training import checkpoints
from workflow_src.data.corrupt import make_corrupted
from workflow_src.integrity import write_store
from workflow_src.jobs.train_shard import MemberFailed

CPU = torch.device("cpu")
# Three stackable members of one shape, on two datasets.
MATES = [RUN, replace(RUN, seed=1, data=replace(DATA, label_noise=0.5)), replace(RUN, seed=2)]


@pytest.fixture(scope="module")
def datasets(digits, tmp_path_factory):
    """data id -> a sealed store for both datasets of MATES."""
    folder = tmp_path_factory.mktemp("datasets")
    stores = {}
    for data in (MATES[0].data, MATES[1].data):
        stores[data.id] = folder / f"{data.id}.zarr"
        write_store(make_corrupted(digits, data), stores[data.id])
    return stores


def opened_identities(monkeypatch, results, runs, stores, stack=False, device=CPU,
                      shard="s" * 12, every=10, keep=()) -> dict:
    """run id (or "stack") -> the identity of the checkpoints the job opens for it; stand-ins
    for both trainers record it and fail, so the job ends without training anything."""
    seen = {}

    def member(run, data, device, log, checkpoints):
        seen[run.id] = checkpoints.identity
        raise RuntimeError("recorded")

    def stacked(runs, datas, device, log, checkpoints):
        seen["stack"] = checkpoints.identity
        raise RuntimeError("recorded")

    monkeypatch.setattr(train_shard, "train", member)
    monkeypatch.setattr(train_shard, "train_stacked", stacked)
    with pytest.raises(MemberFailed):
        train_shard.train_shard(shard, runs, stores, results, device, stack,
                                lambda *parts: None, every, keep)
    return seen


def other_dataset(stores, data_id):
    """The stores with ``data_id`` pointing at the other dataset's (different content)."""
    other = next(path for key, path in stores.items() if key != data_id)
    return {**stores, data_id: other}


def swapped(stores):
    """Each dataset id pointing at the other's store."""
    return dict(zip(stores, list(stores.values())[::-1]))


# Each situation: (what the job is given differently, whether the identity must change).
MEMBER_SITUATIONS = {
    "another run": (lambda mp, job: {**job, "runs": [MATES[2]], "of": MATES[2].id}, True),
    "other training code": (lambda mp, job: mp.setattr(train_shard, "training_code_sha",
                                                        lambda *arch: "0" * 16) or job, True),
    "another dataset content": (lambda mp, job: {**job, "stores": other_dataset(
        job["stores"], DATA.id)}, True),
    "another device type": (lambda mp, job: {**job, "device": torch.device("meta")}, True),
    "another torch": (lambda mp, job: mp.setattr(torch, "__version__", "0.0.0") or job, True),
    "another checkpoint format": (lambda mp, job: mp.setattr(checkpoints, "FORMAT",
                                                             checkpoints.FORMAT + 1) or job,
                                  True),
    "other checkpoint code": (lambda mp, job: mp.setattr(checkpoints, "CODE_SHA", "0" * 16)
                              or job, True),
    "another shard": (lambda mp, job: {**job, "shard": "t" * 12}, False),
    "shard-mates": (lambda mp, job: {**job, "runs": MATES}, False),
    "checkpoint_every": (lambda mp, job: {**job, "every": 3}, False),
    "keep_checkpoints": (lambda mp, job: {**job, "keep": (5, 10)}, False),
    "results elsewhere": (lambda mp, job: {**job, "results": job["results"] / "moved"}, False),
    "stacking asked for": (lambda mp, job: {**job, "stack": True}, False),
}


@pytest.mark.parametrize("situation", MEMBER_SITUATIONS)
def test_a_members_checkpoint_identity_changes_exactly_with_what_makes_the_network(
        monkeypatch, tmp_path, datasets, situation):
    job = {"runs": [RUN], "stores": datasets, "results": tmp_path, "of": RUN.id}
    before = opened_identities(monkeypatch, **{k: v for k, v in job.items() if k != "of"})
    change, matters = MEMBER_SITUATIONS[situation]
    job = change(monkeypatch, job)
    after = opened_identities(monkeypatch, **{k: v for k, v in job.items() if k != "of"})
    assert (after[job["of"]] != before[RUN.id]) is matters


STACK_SITUATIONS = {
    "a member less": (lambda mp, job: {**job, "runs": MATES[:2]}, True),
    "a member replaced": (lambda mp, job: {**job, "runs": [*MATES[:2],
                                                           replace(MATES[2], seed=3)]}, True),
    "a members dataset content": (lambda mp, job: {**job, "stores": other_dataset(
        job["stores"], DATA.id)}, True),
    "the members datasets swapped": (lambda mp, job: {**job, "stores": swapped(
        job["stores"])}, True),
    "other training code": MEMBER_SITUATIONS["other training code"],
    "another device type": MEMBER_SITUATIONS["another device type"],
    "another torch": MEMBER_SITUATIONS["another torch"],
    "the members order": (lambda mp, job: {**job, "runs": MATES[::-1]}, False),
    "another shard": MEMBER_SITUATIONS["another shard"],
    "checkpoint_every": MEMBER_SITUATIONS["checkpoint_every"],
}


@pytest.mark.parametrize("situation", STACK_SITUATIONS)
def test_a_stacks_checkpoint_identity_changes_exactly_with_its_members_and_code(
        monkeypatch, tmp_path, datasets, situation):
    job = {"runs": MATES, "stores": datasets, "results": tmp_path, "stack": True}
    before = opened_identities(monkeypatch, **job)["stack"]
    change, matters = STACK_SITUATIONS[situation]
    after = opened_identities(monkeypatch, **change(monkeypatch, job))["stack"]
    assert (after != before) is matters


def test_a_stack_identity_names_its_members_sorted_with_their_own_datasets(
        monkeypatch, tmp_path, datasets):
    ids = sorted(run.id for run in MATES)
    by_id = {run.id: run for run in MATES}
    for stores in (datasets, swapped(datasets)):  # either digest may sort first
        identity = opened_identities(monkeypatch, tmp_path, MATES[::-1], stores,
                                     stack=True)["stack"]
        assert identity["stack"] == ids
        assert identity["data_sha"] == [train_shard.data_sha(stores[by_id[i].data.id])
                                        for i in ids]
