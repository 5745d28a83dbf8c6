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
# Every block lists the required ones; the optional ones have today's behaviour as default.
REQUIRED_AXES = (
    "dataset", "corruption", "label_noise", "width", "depth", "activation", "bias",
    "optimizer", "learning_rate", "batch_size", "augment", "seed",
)
OPTIONAL_AXES = ("architecture", "batch_norm", "momentum", "weight_decay", "lr_schedule",
                 "loss_function")
HYPERPARAMETERS = (*REQUIRED_AXES, *OPTIONAL_AXES)

ARCHITECTURES = ("mlp", "alexnet_small", "inception_small", "wrn")
# Architectures of published, fixed size: the width and depth axes do not apply to them.
FIXED_SIZE = ("alexnet_small", "inception_small")
# Architectures whose batch norm is fixed by their design (inception_small's is a switch).
FIXED_BATCH_NORM = {"mlp": False, "alexnet_small": False, "wrn": True}
FULL_BATCH_OPTIMIZERS = ("gd", "lbfgs")
LR_SCHEDULES = ("constant", "exponential", "multistep")
# The training losses (workflow_src/nets/losses.py). The grid axis is ``loss_function`` (the
# RunSpec field ``loss``): the metrics store already has a per-point variable ``loss``.
LOSSES = ("cross_entropy", "squared")
MOMENTUM_DEFAULT = 0.9  # the momentum optimizer's coefficient unless the grid sets one

# (C, H, W) of one input of each dataset, as stage 1 stores it (tests/test_acquire.py).
INPUT_SHAPES = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                "cifar100": (3, 32, 32), "svhn": (3, 32, 32), "digits": (1, 8, 8)}
MIN_CNN_SIDE = 8  # px: the convolutional networks pool twice by 2 and need 2x2 at the end


def architecture_problem(architecture: str, input_shape, width: int, depth: int) -> str | None:
    """Why ``architecture`` cannot take (C, H, W) inputs at this width and depth, or None.

    Checked when the config is read, so nothing is planned that cannot be built (and
    without importing torch, as the workflow's planning never does)."""
    if architecture == "mlp":
        return None
    side = min(input_shape[1:])
    if side < MIN_CNN_SIDE:
        return (f"inputs of {input_shape[1]}x{input_shape[2]} px are smaller than the "
                f"{MIN_CNN_SIDE}x{MIN_CNN_SIDE} px the convolutional networks need (they "
                f"downsample twice); use the mlp architecture for them")
    if architecture == "wrn":
        if depth < 10 or (depth - 4) % 6:
            return (f"depth {depth} is not a Wide ResNet depth 6n + 4 (n >= 1 blocks per "
                    f"group): use 10, 16, 22, 28, ...")
        if width < 1:
            return f"width (the widen factor k) must be at least 1, not {width}"
    return None


# The RunSpec fields added after the first studies, at the values that reproduce the
# networks trained before they existed. A field at its legacy value is left out of the run
# id, so those networks keep their ids and caches.
LEGACY_DEFAULTS = {
    "architecture": "mlp", "batch_norm": False, "momentum": None, "weight_decay": 0.0,
    "lr_schedule": "constant", "lr_decay": None, "lr_milestones": (), "lr_gamma": None,
    "mixed_precision": False, "loss": "cross_entropy", "stop_at_target": True,
}


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
    # Added later (LEGACY_DEFAULTS): absent from the ids of runs that keep the defaults.
    architecture: str = "mlp"  # ARCHITECTURES; models.py and cnns.py
    batch_norm: bool = False  # inception_small's switch; fixed for the others
    momentum: float | None = None  # the momentum optimizer's coefficient; None: 0.9
    weight_decay: float = 0.0  # L2 coefficient (torch's coupled weight_decay)
    lr_schedule: str = "constant"  # LR_SCHEDULES
    lr_decay: float | None = None  # exponential: factor per epoch
    lr_milestones: tuple[int, ...] = ()  # multistep: the steps after which the rate drops
    lr_gamma: float | None = None  # multistep: factor at each milestone
    mixed_precision: bool = False  # forward and backward under bfloat16 autocast (train.py)
    loss: str = "cross_entropy"  # LOSSES (losses.py); the grid axis loss_function
    # False: train for exactly max_steps whatever the training accuracy (a fixed budget);
    # the step at which the network first fitted is recorded as fit_step either way.
    stop_at_target: bool = True

    @property
    def id(self) -> str:
        payload = asdict(self)
        for name, legacy in LEGACY_DEFAULTS.items():
            if payload[name] == legacy or (name == "lr_milestones" and not payload[name]):
                del payload[name]
        return stable_hash(payload)

    @property
    def full_batch(self) -> bool:
        return self.optimizer in FULL_BATCH_OPTIMIZERS

    @property
    def effective_momentum(self) -> float:
        """The heavy-ball coefficient the optimizer uses: 0 for all but ``momentum``."""
        if self.optimizer != "momentum":
            return 0.0
        return MOMENTUM_DEFAULT if self.momentum is None else self.momentum

    def hyperparameters(self) -> dict:
        """The grid coordinates of this run, named as in config.yaml."""
        # The data's fields first: its `seed` (of the subset and corruptions) must not stand
        # in for the network's seed, the grid's `seed` axis.
        values = {**asdict(self.data), **{f.name: getattr(self, f.name) for f in fields(self)}}
        values["momentum"] = self.effective_momentum  # a number for every run, NaN-free
        values["loss_function"] = self.loss
        return {name: values[name] for name in HYPERPARAMETERS}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunSpec":
        raw = dict(raw)
        raw["data"] = DataSpec(**raw["data"])
        if "lr_milestones" in raw:  # JSON gives a list; the spec is frozen and hashable
            raw["lr_milestones"] = tuple(raw["lr_milestones"])
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
        # An optional axis a block leaves out takes today's behaviour; one that does not
        # apply to a network (width for alexnet_small, momentum for adam) is ignored for it,
        # so a block's product never makes two runs that would train the same network.
        block = {"architecture": ["mlp"], "batch_norm": [None], "momentum": [None],
                 "weight_decay": [0.0], "lr_schedule": ["constant"],
                 "loss_function": ["cross_entropy"], **block}
        block.setdefault("width", [0])  # left out only where no network needs it
        block.setdefault("depth", [0])
        for point in expand_grid(block):
            data = DataSpec(
                dataset=point["dataset"], n_train=data_cfg["n_train"],
                n_test=data_cfg["n_test"], corruption=point["corruption"],
                label_noise=float(point["label_noise"]), seed=data_cfg["seed"],
                corrupt_test_inputs=data_cfg["corrupt_test_inputs"],
                corrupt_test_labels=data_cfg["corrupt_test_labels"],
            )
            architecture = point["architecture"]
            fixed_size = architecture in FIXED_SIZE
            # A depth-0 mlp is a linear classifier: no hidden layer, so no width (0).
            linear = architecture == "mlp" and point["depth"] == 0
            schedule = point["lr_schedule"]
            run = RunSpec(
                data=data, width=0 if fixed_size or linear else point["width"],
                depth=0 if fixed_size else point["depth"],
                activation=point["activation"], bias=point["bias"],
                optimizer=point["optimizer"], learning_rate=float(point["learning_rate"]),
                batch_size=(data_cfg["n_train"] if point["optimizer"] in FULL_BATCH_OPTIMIZERS
                            else point["batch_size"]),
                augment=point["augment"], seed=point["seed"],
                target_train_acc=float(train_cfg["target_train_acc"]),
                max_steps=train_cfg["max_steps"], eval_every=train_cfg["eval_every"],
                architecture=architecture,
                batch_norm=FIXED_BATCH_NORM.get(
                    architecture, True if point["batch_norm"] is None else point["batch_norm"]),
                momentum=(None if point["optimizer"] != "momentum" or point["momentum"] is None
                          or point["momentum"] == MOMENTUM_DEFAULT else float(point["momentum"])),
                weight_decay=float(point["weight_decay"]),
                lr_schedule=schedule,
                lr_decay=float(train_cfg["lr_decay"]) if schedule == "exponential" else None,
                lr_milestones=(tuple(train_cfg["lr_milestones"]) if schedule == "multistep"
                               else ()),
                lr_gamma=float(train_cfg["lr_gamma"]) if schedule == "multistep" else None,
                # (.get: run tables are also built from configs not yet validated)
                mixed_precision=bool(train_cfg.get("mixed_precision", False)),
                loss=point["loss_function"],
                stop_at_target=bool(train_cfg.get("stop_at_target", True)),
            )
            runs.setdefault(run.id, run)
    return runs
