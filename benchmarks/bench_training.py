"""Per-network wall time of four ways to train many networks of one shape.

The network is the default study's largest, 784-256x2 relu, Adam 1e-3, batches of 100, on
1,000 Fashion-MNIST training points and 1,000 test points (Debian's copy, read with the
workflow's own loaders in workflow_src/data/). Every way trains for the same fixed number
of steps (the target accuracy is set out of reach) and evaluates both whole splits every
``eval_every`` steps, as the workflow does:

(a) one network per process, process start included: ``python -c`` imports torch and the
    package, builds the dataset and trains one network with train.train;
(b) a shard of K networks trained one after another: train_shard.train_shard, the body
    of a `train` job (what it does on a CPU), writing and sealing every member's files;
(c) the same shard stacked (train_shard with stack=True, ensemble.train_stacked inside:
    what a `train` job does on CUDA);
(d) a plain pytorch/examples-style loop: DataLoader(shuffle=True) over a TensorDataset,
    nn.Module forward, loss.backward(), optimizer.step(), the same evaluations.
It prints seconds per network and each way's ratio to (d), all from one run.

    .venv/bin/python benchmarks/bench_training.py [--quick] [--device cuda] [-k 8] [--steps 500]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from workflow_src.data.acquire import acquire
from workflow_src.data.corrupt import make_corrupted
from workflow_src.integrity import write_store
from workflow_src.nets.models import build_model
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.jobs.train_shard import train_shard
from workflow_src.training.train import evaluate, model_spec_for

REPO = Path(__file__).resolve().parents[1]
QUIET = lambda *_: None  # noqa: E731
UNREACHABLE = 2.0  # target train accuracy: never met, so every way runs all its steps


def make_runs(k: int, n_points: int, steps: int, eval_every: int) -> list[RunSpec]:
    data = DataSpec(dataset="fashion_mnist", n_train=n_points, n_test=n_points,
                    corruption="none", label_noise=0.0, seed=0, corrupt_test_inputs=True,
                    corrupt_test_labels=False)
    return [RunSpec(data=data, width=256, depth=2, activation="relu", bias=True,
                    optimizer="adam", learning_rate=1e-3, batch_size=100, augment=False,
                    seed=seed, target_train_acc=UNREACHABLE, max_steps=steps,
                    eval_every=eval_every) for seed in range(k)]


def one_per_process(run: RunSpec, device: str, threads: int) -> float:
    """(a): seconds for a fresh interpreter to import, load the data and train one network."""
    script = (
        "import torch\n"
        f"torch.set_num_threads({threads})\n"
        "from workflow_src.data.acquire import acquire\n"
        "from workflow_src.data.corrupt import make_corrupted\n"
        "from workflow_src.runtable import RunSpec\n"
        "from workflow_src.training.train import train\n"
        f"run = RunSpec.from_dict({run.to_dict()!r})\n"
        "data = make_corrupted(acquire('fashion_mnist'), run.data)\n"
        f"train(run, data, torch.device({device!r}), log=lambda _: None)\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True)
    return time.perf_counter() - start


def dataloader_loop(run: RunSpec, data, device: torch.device) -> None:
    """(d): the same network, optimizer, steps and evaluations, written the usual way."""
    tensors = [torch.as_tensor(data[name].values) for name in ("x_train", "y_train")]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors),
                                         batch_size=run.batch_size, shuffle=True,
                                         drop_last=True,
                                         generator=torch.Generator().manual_seed(run.seed))
    x_train, y_train = (t.to(device) for t in tensors)
    x_test, y_test = (torch.as_tensor(data[name].values, device=device)
                      for name in ("x_test", "y_test"))
    model = build_model(model_spec_for(run, data), run.seed, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.learning_rate)
    step = 0
    while step < run.max_steps:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            step += 1
            if step % run.eval_every == 0 or step == run.max_steps:
                evaluate(model, x_train, y_train), evaluate(model, x_test, y_test)
            if step == run.max_steps:
                break


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: K=2, 20 steps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("-k", type=int, default=8, help="networks for (b), (c), (d)")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per network")
    parser.add_argument("--processes", type=int, default=2, help="networks timed for (a)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads, in this process and in (a)'s")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k, steps, n_points = (2, 20, 200) if args.quick else (args.k, args.steps, 1000)
    n_processes = 1 if args.quick else args.processes
    device = torch.device(args.device)
    runs = make_runs(k, n_points, steps, eval_every=10 if args.quick else 50)
    data = make_corrupted(acquire("fashion_mnist"), runs[0].data)
    print(f"784-256x2 relu, Adam, batch 100, {steps} steps, evaluation every "
          f"{runs[0].eval_every}; {n_points} Fashion-MNIST train/test points (Debian's copy); "
          f"K={k}; device {device}; {torch.get_num_threads()} threads")
    scratch = Path(tempfile.mkdtemp(prefix="bench_training_"))
    store = scratch / "datasets" / f"{runs[0].data.id}.zarr"
    write_store(data, store)

    def shard(members, stack):  # a fresh results folder each time: nothing to reuse
        results = Path(tempfile.mkdtemp(dir=scratch))
        train_shard("bench", members, {runs[0].data.id: store}, results, device, stack, QUIET)

    per_network = {
        "(a) one per process": sum(one_per_process(run, args.device, args.threads)
                                   for run in runs[:n_processes]) / n_processes,
        "(b) shard, one by one": timed(lambda: shard(runs, False)) / k,
        "(c) shard, stacked": timed(lambda: shard(runs, True)) / k,
        "(d) DataLoader loop": timed(lambda: [dataloader_loop(run, data, device)
                                              for run in runs]) / k,
    }
    shutil.rmtree(scratch)
    reference = per_network["(d) DataLoader loop"]
    print(f"{'way':24s} {'s / network':>12s} {'÷ (d)':>8s}")
    for name, seconds in per_network.items():
        print(f"{name:24s} {seconds:12.3f} {seconds / reference:8.2f}")


if __name__ == "__main__":
    main()
