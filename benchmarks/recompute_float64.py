"""Recompute a finished study's stored per-point numerics in float64 and compare.

For every network of ``results/<study>/metrics.zarr`` this rebuilds the network in float64
from ``results/runs/<run_id>/model.pt`` (and, for the ellipses' ``*_init`` control, from
``build_model(spec, run seed)``), takes its test points from its dataset
``results/datasets/<data_id>.zarr`` (the run -> data mapping of the study's own run table),
and recomputes with plain float64 autograd, independently of workflow_src.metrics.jacobian
and workflow_src.metrics.bounds:

- jacobian_norm, logit_jacobian_norm, jacobian_norm_true_class: ∂f/∂x and ∂σ/∂x row by row
  with ``torch.autograd.grad``; the top class's row of ∂σ/∂x is −Σ of the other rows
  (Σ σ = 1), because float64 autograd forms 1 − σ_top there and keeps only
  16 + log10(1 − σ_top) digits of it, while the other rows are accurate at any confidence;
- loss and bound_lower / bound_upper / bound_approx: in 50-digit decimal arithmetic from
  the float64 logits (p = σ_y, 1 − p, M = mean ‖∂f/∂x‖_F² / n over the run's points);
- trajectory_jacobian_norm: on the first ``--trajectories`` walked test points of each
  network (all of them with 0), at all ``jacobian_positions`` positions, since the stored
  value is their mean;
- ellipse_jacobian_norm (and _init): at every ``--ellipse-stride``-th stored angle.

Only the geometry (which input points a trajectory or an ellipse passes through) comes from
the workflow (``workflow_src.metrics.trajectories``), so that both sides see the same inputs.

Prints, per variable, the largest relative error |stored − float64| / |float64| and how many
values exceed ``--tolerance`` (default 1e-4); exits 1 if any does. Values at a breakpoint are
counted apart: where a hidden unit's pre-activation lies within ``--kink`` (default 1e-5) of a
breakpoint of its activation, the Jacobian of a piecewise-linear network jumps between two
linear pieces, and float32 rounding of the workflow's forward pass picks one of them, so the
stored value is a one-sided Jacobian that may differ from the float64 side. Those values are
listed (with their largest difference) but are not failures.

    .venv/bin/python benchmarks/recompute_float64.py --study demo
    .venv/bin/python benchmarks/recompute_float64.py --configfile studies/mine.yaml
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from workflow_src.config import load_study, validate_config
from workflow_src.metrics.trajectories import (draw_ellipses, ellipse_points, polygon_points,
                                               translation_polygon)
from workflow_src.nets.models import BREAKPOINTS, build_model, load_model
from workflow_src.runtable import build_run_table

BATCH = 256  # points per autograd batch: bounds memory at BATCH × d float64 per row
PER_POINT = ("jacobian_norm", "logit_jacobian_norm", "loss", "jacobian_norm_true_class",
             "bound_lower", "bound_upper", "bound_approx")


def jacobians64(model64, x: torch.Tensor):
    """(logits (B, n), ∂f/∂x (B, n, d), ∂σ/∂x (B, n, d)) of a float64 network at x, by
    plain autograd one output row at a time (points are independent in an MLP)."""
    out = [[], [], []]
    for start in range(0, len(x), BATCH):
        xb = x[start:start + BATCH].double().flatten(1).requires_grad_(True)
        logits = model64(xb)
        probs = torch.softmax(logits, dim=-1)
        n = logits.shape[1]
        jf = torch.stack([torch.autograd.grad(logits[:, k].sum(), xb, retain_graph=True)[0]
                          for k in range(n)], dim=1)
        js = torch.stack([torch.autograd.grad(probs[:, k].sum(), xb, retain_graph=True)[0]
                          for k in range(n)], dim=1)
        top = logits.argmax(dim=1)
        rows = torch.arange(len(xb))
        js[rows, top] = 0
        js[rows, top] = -js.sum(dim=1)  # the top row from the accurate others
        for store, value in zip(out, (logits, jf, js)):
            store.append(value.detach())
    return tuple(torch.cat(parts) for parts in out)


def decimal_loss_and_bounds(logits: np.ndarray, y: np.ndarray, M: float, n: int):
    """Per point (loss, lower, upper, approx) of Novak's bounds in 50-digit decimals."""
    rows = []
    with localcontext() as ctx:
        ctx.prec = 50
        M, n_ = Decimal(M), Decimal(n)
        for f, label in zip(logits, y):
            f = [Decimal(float(v)) for v in f]
            loss = sum((fk - f[label]).exp() for fk in f).ln()
            p = (-loss).exp()
            q = 1 - p
            rows.append((loss, (n_ * M / (n_ - 1)).sqrt() * p * q, (2 * M).sqrt() * p * q,
                         M.sqrt() / (n_ - 1) * q * (n_ * n_ * p * p + n_ - 2).sqrt()))
    return np.array(rows, dtype=np.float64).T


def relative_errors(stored, reference) -> np.ndarray:
    stored, reference = np.asarray(stored, np.float64), np.asarray(reference, np.float64)
    diff = np.abs(stored - reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(diff == 0, 0.0, diff / np.abs(reference))


def per_point_references(model64, x, y, n_classes):
    """{variable: float64 reference (P,)} for the Jacobian and bounds stores."""
    logits, jf, js = jacobians64(model64, x)
    logit_norm = jf.flatten(1).norm(dim=1)
    M = float((logit_norm**2).mean()) / n_classes
    loss, lower, upper, approx = decimal_loss_and_bounds(logits.numpy(), y.numpy(), M, n_classes)
    true_class = js[torch.arange(len(y)), y].norm(dim=1)
    return {"jacobian_norm": js.flatten(1).norm(dim=1).numpy(),
            "logit_jacobian_norm": logit_norm.numpy(), "loss": loss,
            "jacobian_norm_true_class": true_class.numpy(),
            "bound_lower": lower, "bound_upper": upper, "bound_approx": approx}


def softmax_norms(model64, points) -> np.ndarray:
    return jacobians64(model64, points)[2].flatten(1).norm(dim=1).numpy()


def breakpoint_margins(model64, points) -> np.ndarray:
    """(B,) distance of the pre-activation nearest to a breakpoint, over every hidden unit
    (inf for smooth activations): where it is tiny the Jacobian is one-sided."""
    breakpoints = BREAKPOINTS[model64.spec.activation]
    if not breakpoints:
        return np.full(len(points), np.inf)
    with torch.no_grad():
        z = torch.cat(model64.preactivations(points.double()), dim=1)  # (B, units)
        return torch.stack([(z - bp).abs().amin(dim=1) for bp in breakpoints]).amin(0).numpy()


def trajectory_references(model64, x, n_walked, positions):
    """Mean ‖∂σ/∂x‖_F over ``positions`` equally spaced points of each translation polygon,
    and each polygon's smallest breakpoint margin over those points."""
    s = torch.arange(positions, dtype=torch.float64) / positions
    polygons = [polygon_points(translation_polygon(image), s) for image in x[:n_walked]]
    return (np.array([softmax_norms(model64, points).mean() for points in polygons]),
            np.array([breakpoint_margins(model64, points).min() for points in polygons]))


def ellipse_references(networks, data, settings, angles):
    """{variable: ((E, len(angles)) profiles, (E, len(angles)) breakpoint margins)} along the
    study's ellipses at the given angles."""
    train_x = torch.as_tensor(data["x_train"].values)
    train_y = torch.as_tensor(data["y_train_clean"].values)
    _, ellipses = draw_ellipses(train_x, train_y, settings["per_kind"], settings["seed"])
    points = [ellipse_points(c, a, b, angles).to(train_x.dtype) for c, a, b in ellipses]
    return {name: (np.stack([softmax_norms(net, p) for p in points]),
                   np.stack([breakpoint_margins(net, p) for p in points]))
            for name, net in networks.items()}


def compare_run(ds_run, run, config, args, errors):
    """Append this network's relative errors, per variable, to ``errors``."""
    data = xr.open_zarr(f"results/datasets/{run.data.id}.zarr").load()
    n_classes = int(data.attrs["n_classes"])
    trained = load_model(f"results/runs/{ds_run.run_id.item()}/model.pt").double().eval()
    points = int(np.isfinite(ds_run["loss"].values).sum())
    x = torch.as_tensor(data["x_test"].values[:points])
    y = torch.as_tensor(data["y_test"].values[:points]).long()
    margins = breakpoint_margins(trained, x)
    for name, ref in per_point_references(trained, x, y, n_classes).items():
        errors[name].append((relative_errors(ds_run[name].values[:points], ref), margins))
    if "trajectory_jacobian_norm" in ds_run:
        stored = ds_run["trajectory_jacobian_norm"].values
        walked = int(np.isfinite(stored).sum())
        walked = min(walked, args.trajectories) if args.trajectories else walked
        positions = config["measure"]["transitions"]["jacobian_positions"]
        ref, margins = trajectory_references(trained, x, walked, positions)
        errors["trajectory_jacobian_norm"].append((relative_errors(stored[:walked], ref), margins))
    if "ellipse_jacobian_norm" in ds_run:
        networks = {"ellipse_jacobian_norm": trained}
        if "ellipse_jacobian_norm_init" in ds_run:
            networks["ellipse_jacobian_norm_init"] = build_model(
                trained.spec, int(ds_run.seed)).double().eval()
        chosen = slice(None, None, args.ellipse_stride)
        angles = torch.as_tensor(ds_run["angle"].values[chosen], dtype=torch.float64)
        for name, (ref, margins) in ellipse_references(
                networks, data, config["measure"]["ellipses"], angles).items():
            errors[name].append((relative_errors(ds_run[name].values[:, chosen], ref).ravel(),
                                 margins.ravel()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="results/<study>/ to check; default: the config's study")
    parser.add_argument("--configfile", default="config.yaml",
                        help="the study's config, for its run table and measuring settings")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--kink", type=float, default=1e-5,
                        help="pre-activation distance to a breakpoint that counts as on it")
    parser.add_argument("--trajectories", type=int, default=10,
                        help="walked test points per network to recompute (0: all)")
    parser.add_argument("--ellipse-stride", type=int, default=8,
                        help="recompute every k-th stored ellipse angle")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = validate_config(load_study([Path(args.configfile)], {}))
    study = args.study or config["study"]
    store = Path(f"results/{study}/metrics.zarr")
    if not store.exists():
        sys.exit(f"{store} does not exist: run the study first (snakemake --configfile "
                 f"{args.configfile}), from the directory that holds results/")
    ds = xr.open_zarr(store).load()
    runs = build_run_table(config)
    missing = sorted(set(ds.run_id.values) - set(runs))
    if missing:
        sys.exit(f"runs {missing} of {store} are not in the run table of {args.configfile}: "
                 f"pass the study's own config with --configfile")
    errors = {name: [] for name in (*PER_POINT, "trajectory_jacobian_norm",
                                    "ellipse_jacobian_norm", "ellipse_jacobian_norm_init")}
    for r in range(ds.sizes["run"]):
        ds_run = ds.isel(run=r)
        compare_run(ds_run, runs[ds_run.run_id.item()], config, args, errors)
        print(f"run {r + 1}/{ds.sizes['run']} ({ds_run.run_id.item()}) recomputed", flush=True)
    print(f"\n{'variable':<30}{'values':>8}{'max rel. error':>16}{f'> {args.tolerance:g}':>10}"
          f"{'at a breakpoint (max error)':>30}")
    failed = False
    for name, parts in errors.items():
        if not parts:
            continue
        values = np.concatenate([e for e, _ in parts])
        at_kink = np.concatenate([m for _, m in parts]) < args.kink
        off = values[~at_kink]
        over = int((off > args.tolerance).sum())
        failed |= over > 0
        kinks = f"{int(at_kink.sum())} ({values[at_kink].max():.3g})" if at_kink.any() else "0"
        print(f"{name:<30}{len(values):>8}{off.max(initial=0):>16.3g}{over:>10}{kinks:>30}")
    print(f"\ntrajectories: first {args.trajectories or 'all'} walked points per network, all "
          f"positions; ellipses: every {args.ellipse_stride}th angle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
