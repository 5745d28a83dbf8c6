"""Cost per network of the generalization indicators (workflow_src/metrics: norms, critical,
hessian, sharpness, pac_bayes, ntk), and torch.func against plain autograd loops.

The networks are the demo study's clean-label ones (config.yaml: relu, Adam 1e-3, batches
of 100, trained to 100 % on 1,000 Fashion-MNIST points): 784-64x1, 256x1, 64x2, 256x2. They
are read from results/runs/<run_id>/model.pt with their dataset results/datasets/<data_id>
.zarr when the demo has run (checked against their records); otherwise the networks are
trained here with the workflow's own code (a few seconds each) on Debian's Fashion-MNIST;
if that is missing too, untrained networks on uniform random images and labels (said so in
the output: the search-based metrics then stop at other places, so their costs differ).

It prints, all from one run:
1. seconds per network of every indicator at the demo's settings (config.yaml, measure.*):
   norms (1,000 training points); critical sample ratio (100 test points, LASS with
   alpha 0.25/255, beta 0.2/255, radius 0.3/255, 100 iterations); Hessian top eigenvalue
   and trace (1,000 training points, <= 100 Lanczos products, 100 probes);
   sharpness (epsilon 1e-3 and 5e-4, subspace 100, 10 L-BFGS-B iterations); PAC-Bayes
   (the module's defaults); NTK at the trained and the initial weights on --ntk-points
   training points (default 50; the preset's is 200) and --ntk-test-points test points
   (default 100; the preset's is 1,000, and its test-train kernel is most of the cost),
   with the preset's time extrapolated from the Jacobians computed (ntk_metrics's time is
   theirs). Each also as a ratio to the baseline, the Jacobian metrics every network
   already gets (jacobian.pointwise_metrics on 500 test points, chunks of 128). A call shorter than --min-seconds is repeated and averaged.
2. Hessian-vector products of the training loss on the same vectors (float64, the
   Hessian's 1,000 points): hessian.LossHessian (batched double backward, as the module
   computes them) vs torch.func forward-over-reverse jvp(grad(loss)) through
   functional_call (vmap-ed over a block) vs a plain loop of per-point double backwards
   summed (on the first --hvp-loop-points points, default 200, its time scaled to 1,000:
   it is one point after another, so linear in them); one vector per call (power
   iteration) and a block of 10 (Hutchinson's probes); seconds per product, speed-ups, and
   the largest absolute difference from the module's Hv on the same points.
3. The logit-traced NTK Gram matrix of 32 training points: ntk.ntk_gram (torch.func
   vmap(jacrev)) vs a per-example autograd loop (one backward per point and logit,
   parameter gradients stacked); seconds, speed-up, largest difference relative to the
   largest entry.
torch.func's first call in a process (it imports torch._dynamo) is timed once and left
out of every other number: the workflow pays it once per measuring job. No timing is
asserted; the differences are printed so that the comparisons can be judged.

    .venv/bin/python benchmarks/bench_indicators.py [--quick] [--threads 1] [--ntk-points 50]
        [--ntk-test-points 100] [--archs 64x1,256x1,64x2,256x2] [--skip-ntk]

The default run takes 3-4 minutes on one CPU thread (203 s on a shared 2-core machine);
--quick (the 64x1 network, small NTK and HVP-loop sets) under 30 s.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vmap

from workflow_src.metrics.critical import critical_sample_metrics
from workflow_src.metrics.hessian import LossHessian, hessian_metrics
from workflow_src.metrics.jacobian import cross_entropy, pointwise_metrics
from workflow_src.metrics.norms import norm_metrics
from workflow_src.metrics.ntk import ntk_gram, ntk_metrics
from workflow_src.metrics.pac_bayes import pac_bayes_metrics
from workflow_src.metrics.sharpness import sharpness_metrics
from workflow_src.nets.models import ModelSpec, build_model
from workflow_src.runtable import DataSpec, RunSpec

REPO = Path(__file__).resolve().parents[1]
ARCHS = ((64, 1), (256, 1), (64, 2), (256, 2))  # the demo's widths x depths
DEMO_DATA = DataSpec("fashion_mnist", 1000, 1000, "none", 0.0, 0, True, False)
HVP_BLOCK = 10  # hessian.PROBE_BLOCK: Hutchinson's probes per pass
NTK_LOOP_POINTS = 32


def demo_run(width: int, depth: int) -> RunSpec:
    """The demo's clean-label network of this shape (config.yaml: grid and training)."""
    return RunSpec(DEMO_DATA, width, depth, "relu", True, "adam", 1e-3, 100, False, 0,
                   target_train_acc=1.0, max_steps=10000, eval_every=50)


def load_networks(archs):
    """({arch: (model, initial model)}, (x_train, y_train, x_test, y_test), where from)."""
    runs = {arch: demo_run(*arch) for arch in archs}
    store = REPO / "results" / "datasets" / f"{DEMO_DATA.id}.zarr"
    folders = {arch: REPO / "results" / "runs" / run.id for arch, run in runs.items()}
    if store.is_dir() and all((f / "model.pt").is_file() for f in folders.values()):
        from workflow_src.integrity import load_model, open_store

        data = open_store(store)
        models = {arch: load_model(f / "model.pt", f / "train.json", "cpu")
                  for arch, f in folders.items()}
        where = f"the demo's trained networks (results/runs) and dataset {DEMO_DATA.id}"
    else:
        from workflow_src.data.acquire import DatasetUnavailable, acquire
        from workflow_src.data.corrupt import make_corrupted
        from workflow_src.training.train import train

        try:
            data = make_corrupted(acquire("fashion_mnist"), DEMO_DATA)
        except DatasetUnavailable:
            return random_networks(archs)
        models, notes = {}, []
        for arch, run in runs.items():
            model, result = train(run, data, torch.device("cpu"), log=lambda _: None)
            models[arch] = model
            notes.append(f"{arch[0]}x{arch[1]} {result.status} in {result.steps} steps")
        where = ("networks trained here with the demo's settings, results/runs being absent ("
                 + "; ".join(notes) + ")")
    tensors = tuple(torch.as_tensor(data[name].values)
                    for name in ("x_train", "y_train", "x_test", "y_test"))
    initial = {arch: build_model(models[arch].spec, runs[arch].seed) for arch in archs}
    return {arch: (models[arch], initial[arch]) for arch in archs}, tensors, where


def random_networks(archs):
    """Untrained networks on uniform random images and labels: the fallback of last resort."""
    g = torch.Generator().manual_seed(0)
    tensors = (torch.rand(1000, 1, 28, 28, generator=g), torch.randint(0, 10, (1000,), generator=g),
               torch.rand(1000, 1, 28, 28, generator=g), torch.randint(0, 10, (1000,), generator=g))
    nets = {}
    for w, d in archs:
        spec = ModelSpec((1, 28, 28), 10, w, d, "relu", True)
        nets[(w, d)] = (build_model(spec, 1), build_model(spec, 0))
    return nets, tensors, ("NOTE: no results/runs and no Fashion-MNIST: UNTRAINED networks on "
                           "random images and labels; costs of the searches differ from "
                           "trained networks'")


def timed(fn, min_seconds: float = 0.0):
    """(result of the first call, mean seconds per call); calls repeat until min_seconds."""
    start = time.perf_counter()
    out = fn()
    elapsed, calls = time.perf_counter() - start, 1
    while elapsed < min_seconds and calls < 1000:
        start = time.perf_counter()
        fn()
        elapsed += time.perf_counter() - start
        calls += 1
    return out, elapsed / calls


# --- 1. cost of each indicator -------------------------------------------------------------

def indicator_calls(model, initial, data, ntk_points: int, ntk_test_points: int, skip_ntk: bool):
    """{name: zero-argument call} of every indicator at the demo's settings."""
    x_train, y_train, x_test, y_test = data
    calls = {
        "baseline: jacobian (500 test)": lambda: pointwise_metrics(model, x_test[:500],
                                                                   y_test[:500], 128),
        "norms": lambda: norm_metrics(model, initial, x_train, y_train),
        "critical (100 test)": lambda: critical_sample_metrics(
            model, x_test[:100], alpha=0.25 / 255, beta=0.2 / 255, radius=0.3 / 255,
            max_iterations=100, seed=0),
        "hessian (1,000 train)": lambda: hessian_metrics(
            model, x_train[:1000], y_train[:1000], n_iterations=100, tolerance=1e-4,
            n_probes=100, seed=0),
        "sharpness (2 eps)": lambda: sharpness_metrics(
            model, x_train, y_train, epsilons=(1e-3, 5e-4), subspace_dim=100,
            max_iterations=10, seed=0),
        "pac_bayes (defaults)": lambda: pac_bayes_metrics(model, x_train, y_train),
    }
    if not skip_ntk:
        calls[f"ntk ({ntk_points} train, {ntk_test_points} test)"] = lambda: ntk_metrics(
            model, initial, x_train, y_train, x_test, y_test, n_points=ntk_points,
            n_test_points=ntk_test_points, top_k=10, ridge=1e-6, chunk_size=64)
    return calls


def warm_up(model, initial, data) -> None:
    """One small call of every indicator, untimed: first-call costs (imports, allocator)."""
    x_train, y_train, x_test, y_test = (t[:16] for t in data)
    pointwise_metrics(model, x_test, y_test, 8)
    norm_metrics(model, initial, x_train, y_train)
    critical_sample_metrics(model, x_test[:4], max_iterations=3)
    hessian_metrics(model, x_train, y_train, n_iterations=3, n_probes=2)
    sharpness_metrics(model, x_train, y_train, epsilons=(1e-3,), subspace_dim=4,
                      max_iterations=2)
    pac_bayes_metrics(model, x_train, y_train, bisection_steps=1, n_draws=1, ascent_steps=1)
    ntk_metrics(model, initial, x_train, y_train, x_test, y_test, n_points=4, n_test_points=4)


def bench_indicators(nets, data, args) -> None:
    names = None
    seconds = {}
    for arch, (model, initial) in nets.items():
        calls = indicator_calls(model, initial, data, args.ntk_points, args.ntk_test_points,
                                args.skip_ntk)
        names = list(calls)
        for name, call in calls.items():
            seconds[arch, name] = timed(call, args.min_seconds)[1]
    label = lambda a: f"{a[0]}x{a[1]}"  # noqa: E731
    archs = list(nets)
    params = {arch: sum(p.numel() for p in nets[arch][0].parameters()) for arch in archs}
    print("\n1. seconds per network (demo settings); in brackets: / baseline")
    print(f"  {'indicator':34s}" + "".join(f"{label(a):>20s}" for a in archs))
    print(f"  {'(parameters)':34s}" + "".join(f"{params[a]:>20,}" for a in archs))
    for name in names:
        cells = []
        for arch in archs:
            s, base = seconds[arch, name], seconds[arch, names[0]]
            cells.append(f"{s:10.3f}" + (f" ({s / base:6.1f}x)" if name != names[0] else " " * 10))
        print(f"  {name:34s}" + "".join(f"{c:>20s}" for c in cells))
    totals = [sum(seconds[a, n] for n in names[1:]) for a in archs]
    print(f"  {'all indicators above':34s}" + "".join(
        f"{t:10.3f} ({t / seconds[a, names[0]]:6.1f}x)" for t, a in zip(totals, archs)))
    if not args.skip_ntk:
        used = ntk_jacobian_points(args.ntk_points, args.ntk_test_points)
        preset = ntk_jacobian_points(200, 1000)
        print(f"  {'ntk at the preset (200, 1,000)*':34s}" + "".join(
            f"{seconds[a, names[-1]] * preset / used:10.1f} "
            f"({seconds[a, names[-1]] * preset / used / seconds[a, names[0]]:6.0f}x)"
            for a in archs))
        print(f"  * extrapolated: ntk_metrics's time is its vmap(jacrev) Jacobians, "
              f"{preset:,} point-Jacobians per network at the preset against {used:,} here "
              f"(x{preset / used:.1f})")


def ntk_jacobian_points(n_train: int, n_test: int, chunk: int = 64) -> int:
    """Points whose parameter Jacobian ntk_metrics computes (chunk after chunk, as ntk_gram
    loops), for the trained and the initial network together."""
    train = [min(chunk, n_train - i) for i in range(0, n_train, chunk)]
    test = [min(chunk, n_test - i) for i in range(0, n_test, chunk)]
    symmetric = sum(a + sum(train[k + 1:]) for k, a in enumerate(train))
    cross = sum(a + sum(train) for a in test)
    return 2 * (symmetric + cross)


# --- 2. Hessian-vector products --------------------------------------------------------------

def func_hvp(hessian: LossHessian):
    """v -> Hv by torch.func: jvp(grad(loss)) through functional_call (forward over reverse),
    and its vmap over a block of vectors. Same float64 network, points and loss."""
    model, x, y, n = hessian.model, hessian.x, hessian.y, hessian.n_points
    params = {name: p.detach() for name, p in model.named_parameters()}
    shapes = [(name, p.shape, p.numel()) for name, p in params.items()]

    def loss(p):
        return cross_entropy(functional_call(model, p, (x,)), y).sum() / n

    def unflatten(v):
        out, start = {}, 0
        for name, shape, size in shapes:
            out[name] = v[start:start + size].view(shape)
            start += size
        return out

    def one(v):
        hv = jvp(grad(loss), (params,), (unflatten(v),))[1]
        return torch.cat([hv[name].reshape(-1) for name, _, _ in shapes])

    return one, vmap(one)


def loop_hvp(hessian: LossHessian, block: torch.Tensor) -> torch.Tensor:
    """The plain baseline: for each point, its loss / N, gradient with create_graph, then
    one more backward per vector; summed over the points."""
    params = hessian.params
    out = torch.zeros_like(block)
    for i in range(hessian.n_points):
        loss = cross_entropy(hessian.model(hessian.x[i:i + 1]), hessian.y[i:i + 1]).sum()
        g = torch.cat([t.reshape(-1) for t in
                       torch.autograd.grad(loss / hessian.n_points, params, create_graph=True)])
        for k in range(block.shape[0]):
            hv = torch.autograd.grad(g @ block[k], params, retain_graph=k + 1 < block.shape[0])
            out[k] += torch.cat([t.reshape(-1) for t in hv])
    return out


def bench_hvp(model, x, y, loop_points: int, label: str) -> None:
    hessian = LossHessian(model, x, y)
    one, block_fn = func_hvp(hessian)
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(HVP_BLOCK, hessian.dim, generator=g, dtype=torch.float64)
    one(vectors[0]), block_fn(vectors[:2])  # warm-up
    ref, t_mod_one = timed(lambda: torch.stack([hessian(v) for v in vectors]))
    blk, t_mod_blk = timed(lambda: hessian(vectors))
    f_one, t_func_one = timed(lambda: torch.stack([one(v) for v in vectors]))
    f_blk, t_func_blk = timed(lambda: block_fn(vectors))
    sub = LossHessian(model, x[:loop_points], y[:loop_points]) if loop_points < len(x) else hessian
    sub_ref = sub(vectors) if sub is not hessian else ref
    l_one, t_loop_one = timed(lambda: torch.stack([loop_hvp(sub, v[None])[0] for v in vectors]))
    l_blk, t_loop_blk = timed(lambda: loop_hvp(sub, vectors))
    scale = len(x) / sub.n_points  # the loop's seconds, scaled to all of x when on fewer
    k = HVP_BLOCK
    rows = [("LossHessian (module)", t_mod_one, t_mod_blk, (ref - ref).abs().max(),
             (blk - ref).abs().max()),
            ("torch.func jvp(grad)", t_func_one, t_func_blk, (f_one - ref).abs().max(),
             (f_blk - ref).abs().max()),
            ("per-point loop", t_loop_one * scale, t_loop_blk * scale,
             (l_one - sub_ref).abs().max(), (l_blk - sub_ref).abs().max())]
    loop_note = "" if scale == 1 else (f"; the loop ran on the first {sub.n_points} points, "
                                        f"its seconds scaled x{scale:g}")
    print(f"\n  {label}, {hessian.dim:,} parameters, {len(x)} points, {k} vectors "
          f"(max |Hv| = {float(ref.abs().max()):.3g}){loop_note}")
    print(f"    {'':22s}{'--- one vector a call ---':>33s}   {'--- block of 10 ---':>33s}")
    print(f"    {'path':22s}" + f"{'s/HVP':>10s}{'loop/this':>11s}{'max|diff|':>12s}   " * 2)
    for name, t_one, t_blk, d_one, d_blk in rows:
        d_one = "reference" if t_one is t_mod_one else f"{float(d_one):.1e}"
        print(f"    {name:22s}{t_one / k:10.4f}{rows[2][1] / t_one:10.1f}x{d_one:>12s}   "
              f"{t_blk / k:10.4f}{rows[2][2] / t_blk:10.1f}x{float(d_blk):12.1e}")
    print(f"    torch.func's speed-up over the module: {t_mod_one / t_func_one:.2f}x one at a "
          f"time, {t_mod_blk / t_func_blk:.2f}x in a block (below 1: slower)")


# --- 3. NTK Gram matrix ----------------------------------------------------------------------

def loop_gram(model, x: torch.Tensor) -> torch.Tensor:
    """The plain baseline: per point one forward, one backward per logit (retained graph),
    parameter gradients flattened and stacked into J (n, K, P); Θ = Σ_k J_k J_kᵀ."""
    model64 = copy.deepcopy(model).double()
    params = list(model64.parameters())
    rows = []
    for i in range(x.shape[0]):
        logits = model64(x[i:i + 1].double())[0]
        rows.append(torch.stack([
            torch.cat([t.reshape(-1) for t in torch.autograd.grad(
                logits[k], params, retain_graph=k + 1 < logits.shape[0])])
            for k in range(logits.shape[0])]))
    jac = torch.stack(rows)  # (n, K, P)
    return torch.einsum("akp,bkp->ab", jac, jac)


def bench_ntk_gram(model, x, label: str) -> None:
    fast, t_fast = timed(lambda: ntk_gram(model, x))
    slow, t_slow = timed(lambda: loop_gram(model, x).numpy())
    diff = float(np.abs(fast - slow).max() / np.abs(slow).max())
    print(f"    {label:8s}{t_fast:12.3f}{t_slow:12.3f}{t_slow / t_fast:10.2f}x{diff:16.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 64x1 only, NTK 8 + 100 points, HVP loop on 100 points")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the workflow's jobs use training.threads: 1)")
    parser.add_argument("--archs", default=",".join(f"{w}x{d}" for w, d in ARCHS),
                        help="comma-separated WIDTHxDEPTH of the demo, e.g. 64x1,256x2")
    parser.add_argument("--ntk-points", type=int, default=50,
                        help="NTK training points (the preset's is 200: ~200 s on 256x2)")
    parser.add_argument("--ntk-test-points", type=int, default=100,
                        help="NTK kernel-regression test points (the preset's is 1000, the "
                             "larger part of its cost; the preset's time is extrapolated)")
    parser.add_argument("--skip-ntk", action="store_true", help="leave ntk_metrics out of 1.")
    parser.add_argument("--hvp-loop-points", type=int, default=200,
                        help="points of the per-point HVP loop, of the 1,000 (its time is "
                             "linear in them and scaled to 1,000)")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="repeat a timed call shorter than this and average")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # raised inside torch while it registers jvp decompositions on the first jvp call
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated",
                            category=FutureWarning)
    archs = [tuple(int(v) for v in a.split("x")) for a in args.archs.split(",")]
    if args.quick:
        archs, args.ntk_points, args.ntk_test_points = [(64, 1)], 8, 100
        args.hvp_loop_points, args.min_seconds = 100, 0.2
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        parser.error(f"--archs: {unknown} are not demo architectures {list(ARCHS)}")

    t0 = time.perf_counter()
    nets, data, where = load_networks(archs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, float64 "
          f"for every indicator but critical and the baseline (float32, the network's own)")
    print(f"networks: {where}")
    model, initial = nets[archs[0]]
    _, t_first = timed(lambda: ntk_gram(model, data[0][:2]))
    print(f"torch.func's first call in this process: {t_first:.2f} s (once per measuring "
          f"job; left out of everything below)")
    warm_up(model, initial, data)
    bench_indicators(nets, data, args)

    x_train, y_train = data[0], data[1]
    print("\n2. Hessian-vector products of the mean training loss, float64, seconds per "
          "product:\n   one vector a call (Lanczos) or blocks of 10 (Hutchinson's "
          "probes); loop/this: speed-up over the\n   per-point loop; max|diff|: largest "
          "|Hv - module's Hv| (the loop's: against the module on the loop's points)")
    for arch in archs:
        bench_hvp(nets[arch][0], x_train[:1000], y_train[:1000], args.hvp_loop_points,
                  f"{arch[0]}x{arch[1]}")

    print(f"\n3. NTK Gram matrix of {NTK_LOOP_POINTS} training points, float64: ntk_gram "
          f"(vmap(jacrev)) vs a per-example autograd loop (one backward per point and logit)")
    print(f"    {'network':8s}{'ntk_gram s':>12s}{'loop s':>12s}{'loop/func':>11s}"
          f"{'max|diff|/max':>16s}")
    for arch in archs:
        bench_ntk_gram(nets[arch][0], x_train[:NTK_LOOP_POINTS], f"{arch[0]}x{arch[1]}")
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
