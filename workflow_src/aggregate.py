"""Stage 5: combine every run's outputs into the study's labelled store (docs/science.md §7).

Result: one xarray Dataset with dimension ``run`` (hyperparameters as coordinates, named as
in config.yaml), ``point`` (evaluated test points, NaN-padded where a run or a metric has
fewer), and the dimensions metrics bring along (``ellipse``, ``position``).

It is written with ``integrity.write_store``, which keeps its strings portable.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .runtable import HYPERPARAMETERS, stable_hash

PER_RUN = ("train_acc", "test_acc", "gap", "steps", "status")
# What the statistics stage correlates with the gap (marked attrs["role"] = "indicator").
INDICATORS = ("jacobian_norm", "logit_jacobian_norm", "transitions_exact", "transitions_sampled",
              "trajectory_jacobian_norm", "jacobian_norm_true_class", "bound_M")
INPUT_UNITS = "input in pixel/255 units"
UNITS = {
    "train_acc": "fraction (training labels as trained on)", "test_acc": "fraction",
    "gap": "fraction (train_acc - test_acc)", "steps": "optimizer updates",
    "loss": "nats (cross-entropy)", "correct": "1 correct, 0 misclassified",
    "jacobian_norm": f"Frobenius norm of d softmax / d input ({INPUT_UNITS})",
    "logit_jacobian_norm": f"Frobenius norm of d logits / d input ({INPUT_UNITS})",
    "transitions_exact": "count of breakpoint crossings along the translation trajectory",
    "transitions_sampled": "count, sampled estimator along the translation trajectory",
    "trajectory_jacobian_norm": "mean Frobenius norm of d softmax / d input along the trajectory",
    "jacobian_norm_true_class": f"2-norm of d softmax_y / d input ({INPUT_UNITS})",
    "bound_lower": "lower bound on jacobian_norm_true_class", "bound_upper": "upper bound",
    "bound_approx": "approximation of jacobian_norm", "within_bounds": "1 inside, 0 outside",
    "bound_M": "mean squared norm of one logit's input gradient",
    "n_classes": "classes of the dataset",
    "ellipse_jacobian_norm": f"Frobenius norm of d softmax / d input ({INPUT_UNITS})",
    "ellipse_transitions": "count of breakpoint crossings around the ellipse",
    "ellipse_jacobian_norm_init": "as ellipse_jacobian_norm, at the network's initial weights",
    "ellipse_transitions_init": "as ellipse_transitions, at the network's initial weights",
}


def merge_shard(stores: list[xr.Dataset]) -> xr.Dataset:
    """One shard's metric stores (each with a ``run`` dimension and ``run_id``, the members
    in the shard's order) as one Dataset; per-point metrics share the ``point`` index."""
    cleaned = []
    for store in stores:
        store = store.drop_vars([c for c in ("test_index", "data_id") if c in store.coords])
        if "correct" in store:  # float, so padding can be NaN
            store["correct"] = store["correct"].astype(float)
        cleaned.append(store.assign_attrs({}))
    return xr.merge(cleaned, join="outer", fill_value=np.nan, compat="override",
                    combine_attrs="drop")


def build_metrics(runs: dict[str, dict], summaries: list[dict], stores: list[list[xr.Dataset]],
                  code_version: str) -> xr.Dataset:
    """runs: run id -> hyperparameters; summaries in the order of runs; stores: the metric
    stores of each shard (the Jacobian store first), whose ``run_id`` coordinates together
    list every run once, in any order. The result follows the order of runs."""
    run_ids = list(runs)
    ds = xr.concat([merge_shard(group) for group in stores], dim="run", join="outer",
                   fill_value=np.nan, coords="minimal", compat="override")
    position = {run_id: i for i, run_id in enumerate(ds["run_id"].values.tolist())}
    if len(position) != ds.sizes["run"] or sorted(position) != sorted(run_ids):
        raise ValueError("the shards' stores do not hold exactly the study's runs")
    ds = ds.isel(run=[position[run_id] for run_id in run_ids]).drop_vars("run_id")
    ds = ds.assign_coords(
        point=np.arange(ds.sizes["point"]),
        run_id=("run", run_ids),
        **{name: ("run", [runs[r][name] for r in run_ids]) for name in HYPERPARAMETERS},
    )
    for name in PER_RUN:
        values = [s[name] for s in summaries]
        ds[name] = ("run", np.array(values, dtype=str if name == "status" else float))
    ds["steps"] = ds["steps"].astype(int)
    for name, unit in UNITS.items():
        if name in ds:
            ds[name].attrs["units"] = unit
    for name in INDICATORS:
        if name in ds:
            ds[name].attrs["role"] = "indicator"
    ds.attrs = _provenance(run_ids, ds, stores, code_version)
    return ds


def _provenance(run_ids, ds, stores, code_version) -> dict:
    jacobian_stores = [run_stores[0] for run_stores in stores]
    datasets = {s.attrs["dataset"]: {"source": s.attrs["source"], "sha256": s.attrs["source_sha256"]}
                for s in jacobian_stores}
    notes = sorted({s.attrs["note"] for run_stores in stores for s in run_stores
                    if "note" in s.attrs})
    attrs = {
        "code_version": code_version,
        # Hash of what determines this store's content: the runs and the evaluated points.
        "config_hash": stable_hash({"runs": sorted(run_ids), "sizes": dict(ds.sizes)}),
        "datasets": json.dumps(datasets, sort_keys=True),
        "hyperparameters": list(HYPERPARAMETERS),
        "status_values": "converged | unconverged | diverged",
        "references": "Novak et al. 2018 (arXiv 1802.08760); Zhang et al. 2017 (arXiv 1611.03530)",
    }
    if "ellipse" in ds.dims:
        attrs["anchor_angles"] = [0.0, 2 * np.pi / 3, 4 * np.pi / 3]
    if notes:
        attrs["notes"] = notes
    return attrs
