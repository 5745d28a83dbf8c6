"""Where the workflow keeps a study's outputs under its results folder: one home for the
paths that more than one stage reads (rules/common.smk names the same files for Snakemake).

- ``runs/<run_id>/``: one network's files (model.pt, its train.json record, checkpoints);
- ``shards/<shard>/train.json``: the training job's record of a shard's members;
- ``shards/<shard>/measured-<hash of the store names>.json``: the measuring job's record;
- ``shards/<shard>/<metric>-<hash of its settings>.zarr``: a metric's store
  (registry.store_name names it).
"""

from __future__ import annotations

from pathlib import Path

from .runtable import stable_hash


def run_folder(results, run_id: str) -> Path:
    """results/runs/<run_id>: one network's files."""
    return Path(results) / "runs" / run_id


def shard_folder(results, shard: str) -> Path:
    """results/shards/<shard>: a shard's records and metric stores."""
    return Path(results) / "shards" / shard


def shard_record(results, shard: str) -> Path:
    """results/shards/<shard>/train.json: the training job's record of the shard."""
    return shard_folder(results, shard) / "train.json"


def measure_record(results, shard: str, stores: dict[str, str]) -> Path:
    """results/shards/<shard>/measured-<hash of the store names>.json"""
    names = sorted(Path(path).name for path in stores.values())
    return shard_folder(results, shard) / f"measured-{stable_hash(names, 8)}.json"
