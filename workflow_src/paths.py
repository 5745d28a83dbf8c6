"""Where the workflow keeps its outputs under the results folder: the one home of the
layout, read by the package and by the rules (rules/common.smk), so no stage spells a path
another stage reads. A study's own outputs lie under ``<study>/`` (study_folder); the rest
is shared by every study, so a network or a dataset is built once for all of them:

- ``datasets/raw/<name>.zarr``: a dataset as downloaded (raw_dataset_store);
- ``datasets/<data_id>.zarr``: a corrupted subset that networks train on (dataset_store);
- ``runs/<run_id>/``: one network's files: model.pt, curve.csv, and train.json, its record,
  which vouches for both (run_record, model_file, curve_file), and its checkpoints;
- ``shards/<shard>/train.json``: the training job's record of a shard's members;
- ``shards/<shard>/measured-<hash of the store names>.json``: the measuring job's record;
- ``shards/<shard>/<metric>-<hash of its settings>.zarr``: a metric's store (metric_store;
  registry.store_name names it);
- ``shards/<shard>/snapshots-<hash of the snapshot settings>.zarr``: metrics along training;
- ``<study>/``: the study's metrics.zarr, curves.csv, stats/, tables/, figures/, seals/, logs/.
"""

from __future__ import annotations

from pathlib import Path

from .runtable import stable_hash

# The results folder, relative to the working directory (Snakemake's --directory).
RESULTS = "results"
# A network's files in its run folder.
RUN_RECORD = "train.json"
MODEL_FILE = "model.pt"
CURVE_FILE = "curve.csv"


def raw_dataset_store(results, name: str) -> Path:
    """results/datasets/raw/<name>.zarr: a dataset as acquired."""
    return Path(results) / "datasets" / "raw" / f"{name}.zarr"


def dataset_store(results, data_id: str) -> Path:
    """results/datasets/<data_id>.zarr: a corrupted subset, what networks train on."""
    return Path(results) / "datasets" / f"{data_id}.zarr"


def run_folder(results, run_id: str) -> Path:
    """results/runs/<run_id>: one network's files."""
    return Path(results) / "runs" / run_id


def run_record(results, run_id: str) -> Path:
    """results/runs/<run_id>/train.json: the network's record, vouching for its files."""
    return run_folder(results, run_id) / RUN_RECORD


def model_file(results, run_id: str) -> Path:
    """results/runs/<run_id>/model.pt: the trained network."""
    return run_folder(results, run_id) / MODEL_FILE


def curve_file(results, run_id: str) -> Path:
    """results/runs/<run_id>/curve.csv: the network's learning curve."""
    return run_folder(results, run_id) / CURVE_FILE


def shard_folder(results, shard: str) -> Path:
    """results/shards/<shard>: a shard's records and metric stores."""
    return Path(results) / "shards" / shard


def shard_record(results, shard: str) -> Path:
    """results/shards/<shard>/train.json: the training job's record of the shard."""
    return shard_folder(results, shard) / RUN_RECORD


def results_of_shard_record(record) -> Path:
    """The results folder, from a shard record's path (shard_record's inverse)."""
    return Path(record).parents[2]


def metric_store(results, shard: str, store_name: str) -> Path:
    """results/shards/<shard>/<store_name>: a metric's store (registry.store_name)."""
    return shard_folder(results, shard) / store_name


def snapshot_store(results, shard: str, settings) -> Path:
    """results/shards/<shard>/snapshots-<hash of settings>.zarr: metrics along training."""
    return shard_folder(results, shard) / f"snapshots-{stable_hash(settings, 8)}.zarr"


def measure_record(results, shard: str, stores: dict[str, str]) -> Path:
    """results/shards/<shard>/measured-<hash of the store names>.json"""
    names = sorted(Path(path).name for path in stores.values())
    return shard_folder(results, shard) / f"measured-{stable_hash(names, 8)}.json"


def study_folder(results, study: str) -> Path:
    """results/<study>: the study's own outputs (metrics.zarr, tables, figures, logs)."""
    return Path(results) / study
