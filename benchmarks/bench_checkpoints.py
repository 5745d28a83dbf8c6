"""What a training checkpoint costs (workflow_src/training/checkpoints.py), for the default study's
largest network, 784-256x2 relu on 1,000 training points, with each optimizer.

It trains the network for ``--steps`` steps with train.train (random 28x28 inputs and
labels: the cost does not depend on the data; evaluations every 50 steps, as the demo),
then writes its checkpoint ``--repeats`` times (temporary file, fsync, rename, digest,
pointer, fsync of the folder), loads it back, and prints the checkpoint's bytes, seconds
per write and per load, and the write's share of the time of ``checkpoint_every`` (1000)
training steps.

    .venv/bin/python benchmarks/bench_checkpoints.py [--steps 200] [--repeats 20] [--dir DIR]

--dir: where to write (default: a temporary folder under results/, the disk results use).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from workflow_src.training import train as training
from workflow_src.training.checkpoints import CheckpointStore
from workflow_src.runtable import DataSpec, RunSpec


def synthetic_data(n_train=1000, n_test=1000, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (1, 28, 28)
    return xr.Dataset(
        {"x_train": (("train", "c", "h", "w"), rng.random((n_train, *shape), np.float32)),
         "y_train": ("train", rng.integers(0, 10, n_train)),
         "x_test": (("test", "c", "h", "w"), rng.random((n_test, *shape), np.float32)),
         "y_test": ("test", rng.integers(0, 10, n_test))},
        attrs={"n_classes": 10})


class Timed(CheckpointStore):
    """Saves nothing during training; keeps the last state to write it afterwards."""

    def save(self, step, state):
        self.state = (step, state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = synthetic_data()
    parent = args.dir or Path("results")
    parent.mkdir(parents=True, exist_ok=True)
    print(f"784-256x2 relu, 1,000 training points, {args.steps} steps, 1 thread; "
          f"writing under {parent.resolve()}")
    print(f"{'optimizer':>10} {'bytes':>10} {'write s':>9} {'load s':>8} "
          f"{'1000 steps s':>13} {'write share':>12}")
    warm_up = RunSpec(data=DataSpec("synthetic", 1000, 1000, "none", 0.0, 0, False, False),
                      width=256, depth=2, activation="relu", bias=True, optimizer="sgd",
                      learning_rate=1e-3, batch_size=100, augment=False, seed=0,
                      target_train_acc=2.0, max_steps=50, eval_every=50)
    training.train(warm_up, data, torch.device("cpu"), log=lambda *a: None)
    for optimizer in ("sgd", "momentum", "adam", "rmsprop"):
        spec = DataSpec("synthetic", 1000, 1000, "none", 0.0, 0, False, False)
        run = RunSpec(data=spec, width=256, depth=2, activation="relu", bias=True,
                      optimizer=optimizer, learning_rate=1e-3, batch_size=100, augment=False,
                      seed=0, target_train_acc=2.0, max_steps=args.steps, eval_every=50)
        with tempfile.TemporaryDirectory(dir=parent) as folder:
            recorder = Timed(folder, {"run_id": run.id}, args.steps - 1, log=lambda *a: None)
            begin = time.perf_counter()
            training.train(run, data, torch.device("cpu"), log=lambda *a: None,
                           checkpoints=recorder)
            per_step = (time.perf_counter() - begin) / args.steps
            step, state = recorder.state
            store = CheckpointStore(folder, {"run_id": run.id}, 1000, log=print)
            writes, loads = [], []
            for _ in range(args.repeats):
                begin = time.perf_counter()
                store.save(step, state)
                writes.append(time.perf_counter() - begin)
                begin = time.perf_counter()
                assert store.load() is not None
                loads.append(time.perf_counter() - begin)
            size = (Path(folder) / f"checkpoint-{step}.pt").stat().st_size
            write = statistics.median(writes)
            print(f"{optimizer:>10} {size:>10,} {write:>9.4f} {statistics.median(loads):>8.4f} "
                  f"{1000 * per_step:>13.2f} {write / (1000 * per_step):>11.2%}")


if __name__ == "__main__":
    main()
