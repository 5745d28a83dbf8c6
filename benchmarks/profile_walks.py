"""Where the measuring job's time goes on `studies/novak_1000.yaml`'s largest networks: the
translation and ellipse metrics (the exact walks, the sampled estimator, the Jacobian
norms) under cProfile, against the Jacobian metric as the plain baseline.

    .venv/bin/python benchmarks/profile_walks.py [--steps 1000] [--top 12] [--threads 1]

It trains one 784-128x2 network of each activation of the preset (relu and hard_tanh, sgd,
300 Fashion-MNIST points, the workflow's training code) and measures it with novak_1000's
settings through the measuring job's own entry point (jobs.measure_shard.measure_member).
For each metric it prints the wall time, its ratio to the Jacobian metric's, and the
functions of workflow_src and torch that took the most time (own time, cumulative time and
calls), summed into the stages the docs name (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from pathlib import Path

import torch

from workflow_src import registry
from workflow_src.config import load_study, validate_config
from workflow_src.data.acquire import acquire
from workflow_src.data.corrupt import make_corrupted
from workflow_src.jobs.measure_shard import MemberJob, copy_for, measure_member
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.train import train

PRESET = Path(__file__).resolve().parents[1] / "studies" / "novak_1000.yaml"
METRICS = ("jacobian", "translation", "ellipses")  # the first is the baseline
# Stages: a profiled function's file (relative to workflow_src/) -> the stage it belongs to.
STAGES = {
    "metrics/mlp_walk.py": "exact walk (one path)",
    "metrics/mlp_walk_batched.py": "exact walk (batched)",
    "metrics/transitions.py": "activation codes, sampled estimator",
    "metrics/jacobian.py": "Jacobian norms",
    "metrics/trajectories.py": "trajectories (polygons, ellipses)",
}


def preset_settings() -> dict:
    """Each metric's settings as novak_1000 sets them (the preset read and validated as the
    workflow reads it)."""
    config = validate_config(load_study([PRESET], {}))
    return {name: registry.settings(name, config) for name in METRICS}


def trained(activation: str, steps: int):
    spec = DataSpec("fashion_mnist", 300, 300, "none", 0.0, 0, True, False)
    run = RunSpec(spec, 128, 2, activation, True, "sgd", 0.1, 32, False, 0,
                  target_train_acc=1.0, max_steps=steps, eval_every=100)
    data = make_corrupted(acquire("fashion_mnist"), spec)
    model, result = train(run, data, torch.device("cpu"), log=lambda line: None)
    return run, model, data, result  # data: the dataset as its store holds it (xarray)


def stage_of(filename: str) -> str | None:
    for suffix, stage in STAGES.items():
        if filename.endswith(suffix):
            return stage
    return None


def profile(name, settings, model, data, run, top: int) -> float:
    job = MemberJob(torch.device("cpu"), 128, log=lambda line: None)
    job.run = run
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    measure_member(name, copy_for(model), data, settings, job)
    profiler.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    own = defaultdict(float)
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():
        stage = stage_of(filename)
        if stage is None:
            stage = ("C calls: tensor ops, builtins" if filename == "~" else
                     "torch's Python" if "/torch/" in filename else "other Python")
        own[stage] += tottime
        short = (filename.split("workflow_src/")[-1] if "workflow_src" in filename else
                 "torch/" + filename.split("/torch/")[-1] if "/torch/" in filename else
                 "" if filename == "~" else filename.rsplit("/", 1)[-1])
        rows.append((tottime, cumtime, calls, f"{short}:{line} {function}" if short else function))
    print(f"\n{name}: {seconds:.2f} s wall")
    print("  own time by stage (s): " + ", ".join(
        f"{stage} {t:.2f}" for stage, t in sorted(own.items(), key=lambda kv: -kv[1]) if t >= 0.01))
    print(f"  {'own s':>7} {'cum s':>7} {'calls':>8}  function")
    for tottime, cumtime, calls, label in sorted(rows, reverse=True)[:top]:
        print(f"  {tottime:7.2f} {cumtime:7.2f} {calls:8d}  {label}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per network")
    parser.add_argument("--top", type=int, default=12, help="functions listed per metric")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a job's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = preset_settings()
    print("novak_1000's settings: " + "; ".join(f"{n} {settings[n]}" for n in METRICS))
    for activation in ("relu", "hard_tanh"):
        run, model, data, result = trained(activation, args.steps)
        print(f"\n=== {activation} 784-128x2, {result.steps} steps, train acc "
              f"{result.train_acc:.3f} ({result.status}), {args.threads} thread(s) ===")
        times = {name: profile(name, settings[name], model, data, run, args.top)
                 for name in METRICS}
        base = times["jacobian"]
        print("\n  wall s (ratio to the Jacobian metric's): " + ", ".join(
            f"{name} {t:.2f} ({t / base:.1f}x)" for name, t in times.items()))


if __name__ == "__main__":
    main()
