"""Which networks share a job: the study's runs grouped into shards.

A shard is the unit of work of stages 3 and 4: one job trains every network of a shard, and
one job per metric measures them. Snakemake plans one job per shard instead of one per
network, so a study of 10,000 networks plans about 1,600 jobs instead of 50,000, and each
job pays Python's and PyTorch's start-up once for all its members.

Membership is a pure function of the run table and ``shards.size``, and is built to stay put
when a study grows:

- runs are grouped by their *stack key*: everything their tensors must share to train as one
  stacked ensemble (dataset and split sizes, architecture, optimizer kind, batch size,
  augmentation; ``ensemble.SHARED_SETTINGS``). A new width, depth, activation, optimizer,
  batch size or dataset therefore only makes new groups, and leaves every existing shard as
  it is;
- within a group, runs are ordered by (seed, run id) and cut into consecutive shards of the
  group's shard size, so seeds added above the existing ones land in the group's last shard
  and new ones;
- a shard's id is the hash of its members' run ids: the same members, the same shard, in
  every study that has them.

This module is imported by the Snakefile to plan the DAG, so it imports nothing heavy.
"""

from __future__ import annotations

import math
from collections import defaultdict

from .runtable import RunSpec, stable_hash

# What members of one shard share (ensemble.SHARED_SETTINGS, plus the data's shape, which
# follows from the dataset and the split sizes). Kept here, not imported from ensemble, so
# that planning never imports torch; tests/test_shards.py checks the two agree.
STACK_SETTINGS = ("width", "depth", "activation", "bias", "optimizer", "batch_size", "augment",
                  "architecture", "batch_norm", "loss")
DATA_SHAPE = ("dataset", "n_train", "n_test")
# shards.size: auto. A shard should be large enough that one process start-up (~5 s on a
# laptop core) is small next to its members' work (~2-5 s each on a CPU; far less on a GPU,
# where a large stack also keeps the device busy), and small enough that a small study still
# makes several shards to keep every core busy: a group of n runs makes about SPREAD shards,
# each of at least MIN_SIZE members and at most the device's cap.
AUTO_CAP = {"cpu": 32, "cuda": 256}
MIN_SIZE = 4
SPREAD = 4


def stack_key(run: RunSpec) -> tuple:
    """What a run shares with every other member of its shard."""
    return (tuple(getattr(run.data, name) for name in DATA_SHAPE)
            + tuple(getattr(run, name) for name in STACK_SETTINGS))


def group_size_limit(n_group: int, size, device_kind: str) -> int:
    """Members per shard for a group of ``n_group`` runs: ``size`` itself, or for "auto"
    about n_group / SPREAD, within [MIN_SIZE, AUTO_CAP[device_kind]]."""
    if size != "auto":
        return int(size)
    return max(1, min(AUTO_CAP[device_kind], max(MIN_SIZE, math.ceil(n_group / SPREAD))))


def plan_shards(runs: dict[str, RunSpec], size="auto", device_kind: str = "cpu"
                ) -> dict[str, list[str]]:
    """shard id -> its members' run ids (in training order), for every run of ``runs``.

    Shards are listed group by group (groups in order of first appearance in ``runs``)."""
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for run in runs.values():
        groups[stack_key(run)].append(run)
    shards: dict[str, list[str]] = {}
    for members in groups.values():
        members = sorted(members, key=lambda run: (run.seed, run.id))
        limit = group_size_limit(len(members), size, device_kind)
        for start in range(0, len(members), limit):
            ids = [run.id for run in members[start:start + limit]]
            shards[shard_id(ids)] = ids
    return shards


def shard_id(run_ids: list[str]) -> str:
    return stable_hash(sorted(run_ids))


def shard_of(shards: dict[str, list[str]]) -> dict[str, str]:
    """run id -> the id of the shard it belongs to."""
    return {run_id: shard for shard, members in shards.items() for run_id in members}
