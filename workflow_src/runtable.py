"""From a study's config to the table of runs the workflow trains.

A run is a frozen dataclass of exactly the settings that determine its result; its id is a
hash of them, so equal runs in one study or in two studies are trained once, and the files
of a run live under ``results/runs/<run_id>/``. Bookkeeping settings (threads, device, chunk
sizes, plotting) stay out of the hash.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, fields

# The grid axes, named as in config.yaml; they become the `run` coordinates of metrics.zarr.
HYPERPARAMETERS = (
    "dataset", "corruption", "label_noise", "width", "depth", "activation", "bias",
    "optimizer", "learning_rate", "batch_size", "augment", "seed",
)


def stable_hash(payload, length: int = 12) -> str:
    """Hex digest of canonical JSON: insensitive to key order, stable across Python runs."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class DataSpec:
    """What fixes a corrupted dataset (docs/science.md §2)."""

    dataset: str
    n_train: int
    n_test: int
    corruption: str  # none | shuffled_pixels | random_pixels | gaussian
    label_noise: float  # probability that a training label is redrawn uniformly
    seed: int  # seeds the class-balanced subset and every corruption
    corrupt_test_inputs: bool  # apply pixel corruptions to the test images as well
    corrupt_test_labels: bool  # apply label noise to the test labels as well

    @property
    def id(self) -> str:
        return stable_hash(asdict(self))


@dataclass(frozen=True)
class RunSpec:
    """What fixes a trained network: its data, architecture and optimisation."""

    data: DataSpec
    width: int
    depth: int
    activation: str
    bias: bool
    optimizer: str
    learning_rate: float
    batch_size: int  # full-batch gd uses every training point; recorded as n_train
    augment: bool
    seed: int  # network initialisation and batch order
    target_train_acc: float
    max_steps: int
    eval_every: int  # steps between full evaluations; also when training may stop

    @property
    def id(self) -> str:
        return stable_hash(asdict(self))

    def hyperparameters(self) -> dict:
        """The grid coordinates of this run, named as in config.yaml."""
        # The data's fields first: its `seed` (of the subset and corruptions) must not stand
        # in for the network's seed, the grid's `seed` axis.
        values = {**asdict(self.data), **{f.name: getattr(self, f.name) for f in fields(self)}}
        return {name: values[name] for name in HYPERPARAMETERS}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunSpec":
        raw = dict(raw)
        raw["data"] = DataSpec(**raw["data"])
        return cls(**raw)


def expand_grid(grid: dict) -> list[dict]:
    """Every combination of the listed values of one grid block."""
    axes = sorted(grid)
    return [dict(zip(axes, combo)) for combo in itertools.product(*(grid[a] for a in axes))]


def build_run_table(config: dict) -> dict[str, RunSpec]:
    """run id -> RunSpec for every network of the study, in a stable order, without repeats.

    ``config["grid"]`` is one block or a list of blocks; each block is expanded as a product
    and the union is taken, so a study can combine a full grid with matched pairs.
    """
    blocks = config["grid"] if isinstance(config["grid"], list) else [config["grid"]]
    data_cfg, train_cfg = config["data"], config["training"]
    runs: dict[str, RunSpec] = {}
    for block in blocks:
        for point in expand_grid(block):
            data = DataSpec(
                dataset=point["dataset"], n_train=data_cfg["n_train"],
                n_test=data_cfg["n_test"], corruption=point["corruption"],
                label_noise=float(point["label_noise"]), seed=data_cfg["seed"],
                corrupt_test_inputs=data_cfg["corrupt_test_inputs"],
                corrupt_test_labels=data_cfg["corrupt_test_labels"],
            )
            full_batch = point["optimizer"] == "gd"
            run = RunSpec(
                data=data, width=point["width"], depth=point["depth"],
                activation=point["activation"], bias=point["bias"],
                optimizer=point["optimizer"], learning_rate=float(point["learning_rate"]),
                batch_size=data_cfg["n_train"] if full_batch else point["batch_size"],
                augment=point["augment"], seed=point["seed"],
                target_train_acc=float(train_cfg["target_train_acc"]),
                max_steps=train_cfg["max_steps"], eval_every=train_cfg["eval_every"],
            )
            runs.setdefault(run.id, run)
    return runs
