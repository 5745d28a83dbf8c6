"""Exact transition walk vs the paper's sampled estimator, and torch.func Jacobians vs a
per-point autograd loop (Novak et al. 2018, arXiv 1802.08760, §3.1-3.2).

For translation trajectories of 28 x 28 images (28 cyclic shifts joined into a closed
polygon, as in the paper) through random fully connected relu networks shaped like the
default study's, prints network evaluations, wall time and counts of the exact walk and of
the sampled estimator at k = 2^12, 2^16, 2^20, measured in the same run, and the ratios.
Goals: the exact walk needs >= 100x fewer network evaluations than k = 2^20; the batched
torch.func Jacobian is >= 20x faster per point than the autograd loop.

    .venv/bin/python benchmarks/bench_transitions.py [--quick] [--images PATH.npy]
    .venv/bin/python benchmarks/bench_transitions.py --study demo   # the trained networks

--study takes a finished study's trained networks (the smallest and the largest clean-label
ones) and their own test images, instead of random networks and noise.

--images takes an array (N, 28, 28) or (N, 1, 28, 28), uint8 (scaled to [0, 1]) or float;
without it the images are uniform noise in [0, 1].
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from workflow_src.metrics.jacobian import jacobian_norms
from workflow_src.metrics.trajectories import polygon_points, translation_polygon
from workflow_src.metrics.transitions import exact_transitions_polygon, sampled_transitions
from workflow_src.models import ModelSpec, build_model, load_model

SAMPLE_SIZES = (2**12, 2**16, 2**20)


def load_images(path: str | None, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, 28, 28) float32 images: the first n of the file, or uniform noise."""
    if path is None:
        return torch.rand(n, 1, 28, 28, generator=generator)
    raw = np.load(path)[:n]
    images = torch.from_numpy(raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0))
    return images.reshape(len(images), 1, 28, 28)


def study_networks(study: str, n_images: int):
    """[(label, trained model)] and (n_images, C, H, W) test images of a finished study."""
    import glob

    import pandas as pd
    import xarray as xr

    networks = pd.read_csv(f"results/{study}/stats/networks.csv")
    clean = networks[(networks["label_noise"] == 0) & (networks["corruption"] == "none")]
    chosen = clean.sort_values(["width", "depth"]).iloc[[0, -1]]
    models = [(f"trained {row.activation} 784-{row.width}x{row.depth} ({row.run_id})",
               load_model(f"results/runs/{row.run_id}/model.pt")) for row in chosen.itertuples()]
    store = glob.glob(f"results/runs/{chosen.iloc[0].run_id}/jacobian-*.zarr")[0]
    data = xr.open_zarr(f"results/datasets/{xr.open_zarr(store).attrs['data_id']}.zarr")
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
    print(f"  {'exact walk':<12}{exact.evaluations:>12,}{exact.count:>10,}{t_exact:>10.3f}")
    for k in SAMPLE_SIZES:  # the last, 2^20, is the paper's
        count, t_sampled = timed(
            lambda: sampled_transitions(model, lambda s: polygon_points(vertices, s), k)
        )
        print(f"  {f'sampled 2^{k.bit_length() - 1}':<12}{k:>12,}{count:>10,}{t_sampled:>10.3f}")
    print(
        f"  sampled 2^20 / exact: {SAMPLE_SIZES[-1] / exact.evaluations:.0f}x the evaluations, "
        f"{t_sampled / t_exact:.1f}x the time"
    )


def per_point_jacobian_norms(model, x: torch.Tensor) -> torch.Tensor:
    """The plain baseline: one torch.autograd.functional.jacobian call per point."""
    def probs(z):
        return torch.softmax(model(z[None])[0], dim=0)

    return torch.stack([torch.autograd.functional.jacobian(probs, z).norm() for z in x])


def bench_jacobian(model, x: torch.Tensor, n_loop: int) -> None:
    """Points per second of the batched torch.func path vs the autograd loop."""
    jacobian_norms(model, x[:8])  # warm-up
    per_point_jacobian_norms(model, x[:2])
    (fast, _), t_fast = timed(lambda: jacobian_norms(model, x, chunk_size=256))
    slow, t_slow = timed(lambda: per_point_jacobian_norms(model, x[:n_loop]))
    torch.testing.assert_close(fast[:n_loop], slow, rtol=1e-4, atol=1e-6)
    fast_rate, slow_rate = len(x) / t_fast, n_loop / t_slow
    print(f"  torch.func vmap(jacrev): {fast_rate:>10,.0f} points/s ({len(x)} points)")
    print(f"  autograd loop:           {slow_rate:>10,.0f} points/s ({n_loop} points)")
    print(f"  ratio: {fast_rate / slow_rate:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small network, one image")
    parser.add_argument("--images", help="(N, 28, 28) .npy of images; default: noise")
    parser.add_argument("--study", help="use this finished study's trained networks and test images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    shapes = [(64, 1)] if args.quick else [(64, 1), (256, 1), (256, 2)]
    n_images = 1 if args.quick else 2
    if args.study:
        models, images = study_networks(args.study, n_images + 1)  # the extra one warms up
    else:
        images = load_images(args.images, n_images + 1, generator)
        models = [(f"random relu 784-{w}x{d}",
                   build_model(ModelSpec((1, 28, 28), 10, w, d, "relu"), args.seed))
                  for w, d in shapes]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"images: {args.study or args.images or 'uniform noise'}")
    for label, model in models:
        warm_vertices = translation_polygon(images[-1])  # warm-up on an image not timed
        exact_transitions_polygon(model, warm_vertices)
        sampled_transitions(model, lambda s: polygon_points(warm_vertices, s), 2**12)
        for i in range(n_images):
            print(f"\n{label}, translation polygon of image {i} (28 shifts)")
            print(f"  {'method':<12}{'evaluations':>12}{'count':>10}{'time_s':>10}")
            bench_trajectory(model, images[i])

    label, model = models[-1]
    x = torch.rand(512 if args.quick else 4096, 1, 28, 28, generator=generator)
    print(f"\nJacobian norms, {label}, float32 on CPU")
    bench_jacobian(model, x, n_loop=32 if args.quick else 128)


if __name__ == "__main__":
    main()
