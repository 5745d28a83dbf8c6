"""A synthetic study of any size, for drawing every figure without training a network
(benchmarks/bench_figures.py, tests/test_figure_sizes.py): a ``metrics.zarr``-like
Dataset laid out as the aggregate step writes it (docs/outputs.md) and the tables the
statistics write (networks, summary, granulated, pairs, paired), the learning curves,
Keskar's interpolation table and a snapshot table. The numbers are random (seeded) with
the dependence on the gap the figures are meant to show; only their layout is real.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..runtable import HYPERPARAMETERS
from .catalogue import StudyData

# Real indicator names first (the snapshot table and axis titles know them), then numbered.
POINT_INDICATORS = ("jacobian_norm", "logit_jacobian_norm", "jacobian_norm_true_class",
                    "trajectory_jacobian_norm", "transitions_exact", "transitions_sampled")
NETWORK_INDICATORS = ("bound_M", "margin", "spectral_product", "path_norm",
                      "distance_from_init", "hessian_top_eigenvalue", "frobenius_sum",
                      "spectral_over_margin", "n_parameters", "critical_sample_ratio",
                      "path_over_margin")
GRID = {"dataset": ["digits", "fashion_mnist"], "corruption": ["none"],
        "label_noise": [0.0, 0.2, 0.5], "width": [32, 128], "depth": [1, 2],
        "activation": ["relu", "hard_tanh"], "bias": [True], "optimizer": ["sgd", "adam"],
        "learning_rate": [0.01], "batch_size": [32, 128], "augment": [False],
        "seed": [0, 1, 2, 3], "architecture": ["mlp"], "batch_norm": [False],
        "momentum": [0.9], "weight_decay": [0.0], "lr_schedule": ["constant"],
        "loss_function": ["cross_entropy"]}
KINDS = ("random", "different_class", "same_class")


def indicator_names(n: int) -> tuple[list[str], list[str]]:
    """(per-point, per-network) names of ``n`` indicators."""
    point = list(POINT_INDICATORS[:min(n, len(POINT_INDICATORS))])
    network = list(NETWORK_INDICATORS[:max(0, min(n - len(point), len(NETWORK_INDICATORS)))])
    network += [f"indicator_{i}" for i in range(n - len(point) - len(network))]
    return point, network


def metrics_dataset(n_networks: int, n_indicators: int = 17, n_points: int = 100,
                    per_kind: int = 2, n_positions: int = 64, seed: int = 0,
                    datasets: int = 2) -> xr.Dataset:
    """The study's metrics.zarr, synthetic (see the module doc), over the first
    ``datasets`` datasets of GRID."""
    rng = np.random.default_rng(seed)
    n = n_networks
    run_ids = np.array([f"{i:012x}" for i in rng.choice(16 ** 8, n, replace=False)])
    coords = {"run_id": ("run", run_ids)}
    stride = 1  # network i is cell i of the grid (mixed radix), repeated past its size
    for name in HYPERPARAMETERS:
        values = np.asarray(GRID[name][:datasets] if name == "dataset" else GRID[name])
        coords[name] = ("run", values[(np.arange(n) // stride) % len(values)])
        stride *= len(values)
    noise = np.asarray(coords["label_noise"][1], dtype=float)
    train_acc = np.where(rng.random(n) < 0.9, 1.0, rng.uniform(0.8, 0.99, n))
    test_acc = np.clip(0.9 - 0.6 * noise + rng.normal(0, 0.05, n), 0.05, 1.0)
    status = np.where(train_acc >= 1.0, "converged", "unconverged")
    gap = train_acc - test_acc
    point, network = indicator_names(n_indicators)
    data = {"train_acc": ("run", train_acc), "test_acc": ("run", test_acc),
            "gap": ("run", gap), "steps": ("run", rng.integers(100, 3000, n)),
            "status": ("run", status), "n_classes": ("run", np.full(n, 10)),
            "hessian_top_converged": ("run", (rng.random(n) < 0.8).astype(float))}
    scale = np.exp(2 * gap)[:, None]
    loss = rng.lognormal(-2, 1.5, (n, n_points))
    correct = (rng.random((n, n_points)) < test_acc[:, None]).astype(float)
    data["loss"] = (("run", "point"), loss)
    data["correct"] = (("run", "point"), correct)
    data["within_bounds"] = (("run", "point"), (rng.random((n, n_points)) < 0.9).astype(float))
    for name in point:
        data[name] = (("run", "point"), scale * rng.lognormal(0, 0.5, (n, n_points)) *
                      (1 + 2 * (1 - correct)))
    for name in network:
        values = np.exp(2 * gap + rng.normal(0, 0.5, n)) * rng.uniform(1, 100)
        if name == "n_parameters":  # a function of the architecture, as measured
            values = (np.asarray(coords["width"][1]) ** 2 * np.asarray(coords["depth"][1])
                      + 784 * np.asarray(coords["width"][1])).astype(float)
        data[name] = ("run", values if name != "margin" else 1 / values)
    if "bound_M" not in data:
        data["bound_M"] = ("run", rng.uniform(1, 50, n))
    data["jacobian_norm_true_class"] = data.get("jacobian_norm_true_class") or (
        ("run", "point"), scale * rng.lognormal(-1, 0.5, (n, n_points)))
    n_ellipses = per_kind * len(KINDS)
    profile = np.exp(rng.normal(0, 0.3, (n, n_ellipses, n_positions)))
    data["ellipse_jacobian_norm"] = (("run", "ellipse", "position"), profile)
    data["ellipse_jacobian_norm_init"] = (("run", "ellipse", "position"), profile * 0.5)
    data["ellipse_transitions"] = (("run", "ellipse"), rng.integers(1, 200, (n, n_ellipses))
                                   .astype(float))
    data["ellipse_transitions_init"] = (("run", "ellipse"),
                                        rng.integers(1, 50, (n, n_ellipses)).astype(float))
    # NTK eigenlearning (figures/eigenlearning.py): predicted near measured, per kernel; a
    # generator of its own, so the other variables are as before.
    el_rng = np.random.default_rng(seed + 1)
    for suffix, shift in (("", 0.0), ("_init", 0.1)):
        measured = np.clip(0.4 + gap + shift + el_rng.normal(0, 0.05, n), 0.05, None)
        data[f"eigenlearning_measured_mse{suffix}"] = ("run", measured)
        data[f"eigenlearning_measured_mse_se{suffix}"] = ("run", np.full(n, 0.02))
        data[f"eigenlearning_predicted_mse{suffix}"] = (
            "run", measured * el_rng.lognormal(0, 0.05, n))
    coords["ellipse_kind"] = ("ellipse", np.repeat(KINDS, per_kind))
    coords["angle"] = ("position", np.linspace(0, 2 * np.pi, n_positions, endpoint=False))
    ds = xr.Dataset(data, coords=coords, attrs={
        "hyperparameters": list(HYPERPARAMETERS), "anchor_angles": [0.0, 2.0944, 4.18879]})
    for i, name in enumerate([*point, *network]):
        ds[name].attrs.update(role="indicator", expected_sign=-1 if name == "margin" else 1,
                              units="nats" if i % 3 else "count")
    if "hessian_top_eigenvalue" in ds:
        ds["hessian_top_eigenvalue"].attrs["converged_by"] = "hessian_top_converged"
    return ds


def summary_tables(ds: xr.Dataset, networks: pd.DataFrame, seed: int = 0):
    """(summary.csv, granulated.csv) of the indicators, with random Ψ and τ."""
    rng = np.random.default_rng(seed)
    from ..stats.tables import indicator_names as names_of

    names = names_of(ds)
    axes = [h for h in HYPERPARAMETERS if networks[h].nunique() > 1]
    granulated = pd.DataFrame([{"indicator": name, "target": "gap", "axis": axis,
                                "psi": rng.uniform(-0.3, 0.9), "n_groups": 10,
                                "note": "not averaged into Psi" if axis == "seed" else ""}
                               for name in names for axis in axes])
    psi = granulated[granulated["axis"] != "seed"].groupby("indicator")["psi"].mean()
    tau = pd.Series(rng.uniform(-0.4, 0.9, len(names)), index=names)
    signs = pd.Series({name: int(ds[name].attrs["expected_sign"]) for name in names})
    summary = pd.DataFrame({
        "indicator": names, "target": "gap", "psi": psi.reindex(names).to_numpy(),
        "kendall_tau": tau.to_numpy(), "kendall_tau_ci_low": (tau - 0.2).to_numpy(),
        "kendall_tau_ci_high": (tau + 0.2).clip(upper=1).to_numpy(),
        "n": int((networks["status"] == "converged").sum()), "confidence": 0.95,
        "expected_sign": signs.to_numpy(),
        "direction": np.where(np.sign(tau) * signs > 0, "as expected", "reversed"),
        "indicator_note": ""})
    summary["rank_psi"] = summary["psi"].abs().rank(ascending=False, method="min")
    summary["rank_tau"] = summary["kendall_tau"].abs().rank(ascending=False, method="min")
    all_axes = psi.rename("psi").reset_index().assign(axis="__all__", target="gap")
    return summary, pd.concat([granulated, all_axes], ignore_index=True)


def pair_tables(networks: pd.DataFrame, seed: int = 0):
    """(pairs.csv, paired.csv): networks matched on every hyperparameter but one."""
    rng = np.random.default_rng(seed)
    pairs, tests = [], []
    for factor in ("width", "depth", "activation", "batch_size"):
        levels = sorted(networks[factor].unique(), key=str)
        if len(levels) < 2:
            continue
        a = networks[networks[factor] == levels[0]].reset_index(drop=True)
        b = networks[networks[factor] == levels[1]].reset_index(drop=True)
        m = min(len(a), len(b))
        contrast = f"{factor}: {levels[0]} vs {levels[1]}"
        for indicator in ("jacobian_norm", "transitions_exact"):
            others = [h for h in HYPERPARAMETERS if h != factor]
            frame = a.iloc[:m][others].assign(
                contrast=contrast, factor=factor, level_a=levels[0], level_b=levels[1],
                indicator=indicator, run_id_a=a["run_id"][:m], run_id_b=b["run_id"][:m].values,
                value_a=a[indicator][:m].values, value_b=b[indicator][:m].values)
            pairs.append(frame)
            diff = frame["value_b"] - frame["value_a"]
            tests.append({"factor": factor, "contrast": contrast, "level_a": levels[0],
                          "level_b": levels[1], "indicator": indicator, "n_pairs": m,
                          "median_diff": diff.median(), "median_diff_ci_low": diff.quantile(0.4),
                          "median_diff_ci_high": diff.quantile(0.6),
                          "rank_biserial": rng.uniform(-1, 1), "p_value": 0.01,
                          "p_adjusted": 0.04})
    return pd.concat(pairs, ignore_index=True), pd.DataFrame(tests)


def curves_table(networks: pd.DataFrame, n_steps: int = 30, seed: int = 0) -> pd.DataFrame:
    """curves.csv: every network's learning curve, ``n_steps`` evaluations each."""
    rng = np.random.default_rng(seed)
    n = len(networks)
    steps = np.arange(n_steps) * 100
    base = networks[["run_id", *HYPERPARAMETERS, "status"]]
    frame = base.loc[base.index.repeat(n_steps)].reset_index(drop=True)
    rate = rng.uniform(0.5, 3, n).repeat(n_steps) / 1000
    frame["step"] = np.tile(steps, n)
    frame["train_loss"] = 2.3 * np.exp(-rate * frame["step"]) + 1e-3
    frame["train_acc"] = 1 - 0.9 * np.exp(-rate * frame["step"])
    frame["test_acc"] = frame["train_acc"] * 0.8
    frame["seconds"] = frame["step"] * 1e-3
    return frame


def keskar_table(networks: pd.DataFrame, n_alpha: int = 25) -> pd.DataFrame:
    """stats/keskar_interpolation.csv for one pair per two networks."""
    n_pairs = len(networks) // 2
    alpha = np.linspace(-1, 2, n_alpha)
    small = networks.iloc[:n_pairs]
    shared = small.loc[small.index.repeat(n_alpha),
                       [h for h in HYPERPARAMETERS if h != "batch_size"]].reset_index(drop=True)
    rows = pd.DataFrame({
        "small_run": np.repeat(small["run_id"].values, n_alpha),
        "large_run": np.repeat(networks["run_id"][n_pairs:2 * n_pairs].values, n_alpha),
        "batch_small": 32, "batch_large": 128, "alpha": np.tile(alpha, n_pairs)})
    rows = pd.concat([rows, shared.assign(seed=np.repeat(np.arange(n_pairs), n_alpha))],
                     axis=1)
    bump = (rows["alpha"] - 0.5) ** 2
    rows["train_loss"] = 0.05 + bump
    rows["test_loss"] = 0.3 + bump
    rows["train_acc"] = np.clip(1 - bump / 3, 0, 1)
    rows["test_acc"] = np.clip(0.85 - bump / 3, 0, 1)
    return rows


def snapshot_table(networks: pd.DataFrame, steps=(0, 100, 300, 1000, 3000)) -> pd.DataFrame:
    """tables/snapshots.csv: each network at each requested step."""
    base = networks[["run_id", *HYPERPARAMETERS, "status", "steps"]]
    frame = base.loc[base.index.repeat(len(steps))].reset_index(drop=True)
    frame["step"] = np.tile(steps, len(networks))
    frame["step_used"] = np.minimum(frame["step"].clip(lower=1), frame["steps"])
    frame["reached"] = frame["step"] <= frame["steps"]
    frame["source"] = "regenerated"
    growth = np.log1p(frame["step_used"])
    for name in ("jacobian_norm", "margin", "spectral_product"):
        frame[name] = growth * (1 + frame.index % 7)
    frame["train_acc"] = 1 - 0.9 / (1 + growth)
    frame["test_acc"] = frame["train_acc"] * 0.8
    return frame


def synthetic_study(n_networks: int, n_indicators: int = 17, seed: int = 0, **sizes):
    """Every table a figure is drawn from, for ``n_networks`` synthetic networks: a
    StudyData, and a dict of the same tables (for writing them out)."""
    from ..stats.tables import network_table

    ds = metrics_dataset(n_networks, n_indicators, seed=seed, **sizes)
    networks = network_table(ds)
    summary, granulated = summary_tables(ds, networks, seed)
    pairs, paired = pair_tables(networks, seed)
    from ..stats.tables import ellipse_summary_table

    tables = {"metrics": ds, "networks": networks, "summary": summary,
              "ellipses": ellipse_summary_table(ds),
              "granulated": granulated, "pairs": pairs, "paired": paired,
              "curves": curves_table(networks, seed=seed), "keskar": keskar_table(networks),
              "snapshots": snapshot_table(networks)}
    return StudyData(**{name: (lambda t=table: t) for name, table in tables.items()}), tables
