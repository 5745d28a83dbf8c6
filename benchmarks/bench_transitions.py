"""Exact transition walk vs the paper's sampled estimator, the batched walk vs the one-path
walk, and batched Jacobians vs a per-point autograd loop (Novak et al. 2018,
arXiv 1802.08760, §3.1-3.2).

For translation trajectories of 28 x 28 test images (28 cyclic shifts joined into a closed
polygon, as in the paper) it prints, measured in the same run:
- network evaluations, wall time and counts of the exact walk and of the sampled estimator
  at k = 2^12, 2^16, 2^20, and their ratios; the walk's evaluations include its first-layer
  passes (two per segment), counted as whole network passes;
- trajectories per second of the batched walk (``exact_transitions_polygons``, every
  trajectory of a network in lockstep) against the one-path walk, with equal counts, on
  784-256x2 networks;
- Jacobian norms per second of the workflow's batched path (one backward pass per class
  over a chunk of points) against a per-point autograd loop, on real test images.
Goals: the exact walk needs >= 100x fewer network evaluations than k = 2^20; the batched
walk runs >= 5x more trajectories per second than the one-path walk on CPU; the batched
Jacobian is >= 20x faster per point than the per-point loop.

    .venv/bin/python benchmarks/bench_transitions.py [--quick] [--images PATH.npy] [--threads N]
    .venv/bin/python benchmarks/bench_transitions.py --study demo   # the trained networks

--study takes a finished study's trained networks (the smallest and the largest clean-label
ones) and their own test images, instead of random networks. Without it, the images are
Fashion-MNIST's test images (Debian's copy, as the workflow finds it), or --images: an array
(N, 28, 28) or (N, 1, 28, 28), uint8 (scaled to [0, 1]) or float.

The batched-walk comparison uses the 784-256x2 networks of results/runs (the demo's) when
there are any, else it trains two with the workflow's own training code (1,000 Fashion-MNIST
points, clean and random labels, Adam 1e-3; about a minute each on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import copy
import glob
import time

import numpy as np
import torch

from workflow_src.data.acquire import acquire
from workflow_src.data.corrupt import make_corrupted
from workflow_src.metrics.jacobian import jacobian_norms
from workflow_src.metrics.trajectories import polygon_points, translation_polygon
from workflow_src.metrics.transitions import (
    exact_transitions_polygon,
    exact_transitions_polygons,
    sampled_transitions,
)
from workflow_src.nets.models import BREAKPOINTS, ModelSpec, build_model, load_model
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.train import train

SAMPLE_SIZES = (2**12, 2**16, 2**20)
BATCHED_SHAPE = (256, 2)  # width, depth of the demo's largest networks


def load_images(path: str | None, n: int) -> torch.Tensor:
    """(n, 1, 28, 28) float32 images in [0, 1]: the first n of the file, or of Fashion-MNIST's
    test split."""
    raw = acquire("fashion_mnist").test_images[:n] if path is None else np.load(path)[:n]
    images = torch.from_numpy(raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0))
    return images.reshape(len(images), 1, 28, 28)


def study_networks(study: str, n_images: int):
    """[(label, trained model)] and (n_images, C, H, W) test images of a finished study."""
    import pandas as pd
    import xarray as xr

    networks = pd.read_csv(f"results/{study}/stats/networks.csv")
    clean = networks[(networks["label_noise"] == 0) & (networks["corruption"] == "none")]
    chosen = clean.sort_values(["width", "depth"]).iloc[[0, -1]]
    models = [(f"trained {row.activation} 784-{row.width}x{row.depth} ({row.run_id})",
               load_model(f"results/runs/{row.run_id}/model.pt")) for row in chosen.itertuples()]
    data_id = next(  # the shard stores carry each member's data_id
        str(ds["data_id"].values[list(ds["run_id"].values).index(chosen.iloc[0].run_id)])
        for ds in map(xr.open_zarr, glob.glob("results/shards/*/jacobian-*.zarr"))
        if chosen.iloc[0].run_id in ds["run_id"].values)
    data = xr.open_zarr(f"results/datasets/{data_id}.zarr")
    return models, torch.as_tensor(data["x_test"].values[:n_images])


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_trajectory(model, image) -> None:
    """One translation polygon: exact walk against the sampled estimator, both in float64
    (in float32, samples 2^-20 apart let rounding flip units sitting on a breakpoint)."""
    vertices = translation_polygon(image).double()  # (28, 1, 28, 28)
    model = copy.deepcopy(model).double()
    exact, t_exact = timed(lambda: exact_transitions_polygon(model, vertices))
    evaluations = exact.evaluations + exact.first_layer_evaluations
    print(f"  {'exact walk':<12}{evaluations:>12,}{exact.count:>10,}{t_exact:>10.3f}")
    for k in SAMPLE_SIZES:  # the last, 2^20, is the paper's
        count, t_sampled = timed(
            lambda: sampled_transitions(model, lambda s: polygon_points(vertices, s), k)
        )
        print(f"  {f'sampled 2^{k.bit_length() - 1}':<12}{k:>12,}{count:>10,}{t_sampled:>10.3f}")
    print(
        f"  sampled 2^20 / exact: {SAMPLE_SIZES[-1] / evaluations:.0f}x the evaluations, "
        f"{t_sampled / t_exact:.1f}x the time"
    )


def stored_networks(width: int, depth: int) -> list[tuple[str, torch.nn.Module]]:
    """[(label, model)] of every trained 784-width x depth piecewise-linear network in
    results/runs (the demo's, once it has run)."""
    found = []
    for path in sorted(glob.glob("results/runs/*/model.pt")):
        model = load_model(path)
        spec = model.spec
        if ((spec.input_dim, spec.width, spec.depth) == (784, width, depth)
                and BREAKPOINTS[spec.activation]):
            found.append((f"trained {spec.activation} 784-{width}x{depth} ({path.split('/')[2]})",
                          model))
    return found


def trained_here(width: int, depth: int, label_noises) -> list[tuple[str, torch.nn.Module]]:
    """Networks trained now with the workflow's training code, one per label noise: the
    demo's settings (at most 3,000 steps)."""
    networks = []
    for label_noise in label_noises:
        data_spec = DataSpec("fashion_mnist", 1000, 1000, "none", label_noise, 0, True, False)
        run = RunSpec(data_spec, width, depth, "relu", True, "adam", 1e-3, 100, False, 0,
                      target_train_acc=1.0, max_steps=3000, eval_every=50)
        data = make_corrupted(acquire("fashion_mnist"), data_spec)
        model, result = train(run, data, torch.device("cpu"), log=lambda line: None)
        networks.append((f"trained here relu 784-{width}x{depth}, label noise {label_noise} "
                         f"({result.status}, {result.steps} steps, {result.seconds:.0f} s)", model))
    return networks


def bench_batched(model, images: torch.Tensor) -> None:
    """Trajectories per second of the batched walk against the one-path walk, all of the
    images' translation polygons, both in float64; the counts must agree path by path."""
    polygons = torch.stack([translation_polygon(image) for image in images]).double()
    exact_transitions_polygons(model, polygons[:2])  # warm-up
    one_path, t_one = timed(lambda: [exact_transitions_polygon(model, v) for v in polygons])
    batched, t_batched = timed(lambda: exact_transitions_polygons(model, polygons))
    assert [w.count for w in batched] == [w.count for w in one_path]
    counts = [w.count for w in batched]
    print(f"  {len(polygons)} trajectories, {min(counts)}-{max(counts)} transitions each")
    print(f"  one-path walk: {len(polygons) / t_one:>8.1f} trajectories/s ({t_one:.2f} s)")
    print(f"  batched walk:  {len(polygons) / t_batched:>8.1f} trajectories/s ({t_batched:.2f} s)")
    print(f"  ratio: {t_one / t_batched:.1f}x")


def per_point_jacobian_norms(model, x: torch.Tensor) -> torch.Tensor:
    """The plain baseline: one torch.autograd.functional.jacobian call per point."""
    def probs(z):
        return torch.softmax(model(z[None])[0], dim=0)

    return torch.stack([torch.autograd.functional.jacobian(probs, z).norm() for z in x])


def bench_jacobian(model, x: torch.Tensor, n_loop: int) -> None:
    """Points per second of the batched path (metrics.jacobian) vs the per-point loop."""
    jacobian_norms(model, x[:8])  # warm-up
    per_point_jacobian_norms(model, x[:2])
    (fast, _), t_fast = timed(lambda: jacobian_norms(model, x, chunk_size=256))
    slow, t_slow = timed(lambda: per_point_jacobian_norms(model, x[:n_loop]))
    torch.testing.assert_close(fast[:n_loop], slow.to(fast), rtol=1e-4, atol=1e-6)
    fast_rate, slow_rate = len(x) / t_fast, n_loop / t_slow
    print(f"  batched, a pass a class: {fast_rate:>10,.0f} points/s ({len(x)} points)")
    print(f"  per-point loop:          {slow_rate:>10,.0f} points/s ({n_loop} points)")
    print(f"  ratio: {fast_rate / slow_rate:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small network, one image")
    parser.add_argument("--images", help="(N, 28, 28) .npy of images; default: Fashion-MNIST")
    parser.add_argument("--study", help="use this finished study's trained networks and test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads (the workflow's jobs use "
                        "training.threads, default 1); default: PyTorch's own choice")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = [(64, 1)] if args.quick else [(64, 1), (256, 1), (256, 2)]
    n_images = 1 if args.quick else 2
    n_batched = 8 if args.quick else 32  # trajectories per network for the batched walk
    n_jacobian = 512 if args.quick else 4096
    n_all = max(n_images + 1, n_batched, n_jacobian)  # the extra image warms up the walks
    if args.study:
        models, images = study_networks(args.study, n_all)
    else:
        images = load_images(args.images, n_all)
        models = [(f"random relu 784-{w}x{d}",
                   build_model(ModelSpec((1, 28, 28), 10, w, d, "relu"), args.seed))
                  for w, d in shapes]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"images: {args.study or args.images or 'Fashion-MNIST test split'}")
    for label, model in models:
        warm_vertices = translation_polygon(images[n_images])  # warm-up on an image not timed
        exact_transitions_polygon(model, warm_vertices)
        sampled_transitions(model, lambda s: polygon_points(warm_vertices, s), 2**12)
        for i in range(n_images):
            print(f"\n{label}, translation polygon of image {i} (28 shifts)")
            print(f"  {'method':<12}{'evaluations':>12}{'count':>10}{'time_s':>10}")
            bench_trajectory(model, images[i])

    batched_models = stored_networks(*BATCHED_SHAPE) or trained_here(
        *BATCHED_SHAPE, label_noises=(0.0,) if args.quick else (0.0, 1.0))
    for label, model in batched_models[:1] if args.quick else batched_models[:4]:
        print(f"\nbatched vs one-path walk, {label}, float64 on CPU")
        bench_batched(copy.deepcopy(model).double(), images[:n_batched])

    label, model = models[-1]
    x = images[:n_jacobian]
    print(f"\nJacobian norms, {label}, float32 on CPU, {len(x)} test images")
    bench_jacobian(model, x, n_loop=32 if args.quick else 128)


if __name__ == "__main__":
    main()
