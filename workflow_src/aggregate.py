"""Stage 5: combine every run's outputs into the study's labelled store (STUDY.md §7).

Result: one xarray Dataset with dimension ``run`` (hyperparameters as coordinates, named as
in config.yaml) and ``point`` (evaluated test points, NaN-padded where a run has fewer).
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .runtable import HYPERPARAMETERS, stable_hash

PER_RUN = ("train_acc", "test_acc", "gap", "steps", "status")
INDICATORS = ("jacobian_norm", "logit_jacobian_norm")
UNITS = {
    "train_acc": "fraction", "test_acc": "fraction",
    "gap": "fraction (train_acc - test_acc, clean test labels)", "steps": "optimizer updates",
    "loss": "nats (cross-entropy)", "correct": "bool",
    "jacobian_norm": "Frobenius norm of d softmax / d input (input in pixel/255 units)",
    "logit_jacobian_norm": "Frobenius norm of d logits / d input (input in pixel/255 units)",
}


def build_metrics(runs: dict[str, dict], summaries: list[dict],
                  point_sets: list[xr.Dataset], code_version: str) -> xr.Dataset:
    """runs: run id -> hyperparameters; summaries and point_sets in the same order as runs."""
    run_ids = list(runs)
    per_point = xr.concat(
        [ps.reset_coords(drop=True).drop_vars("point") for ps in point_sets],
        dim="run", join="outer", fill_value=np.nan,
    )
    per_point["correct"] = per_point["correct"].astype(float)  # NaN marks padding
    per_point = per_point.assign_coords(point=np.arange(per_point.sizes["point"]))
    ds = per_point.assign_coords(
        run_id=("run", run_ids),
        **{name: ("run", [runs[r][name] for r in run_ids]) for name in HYPERPARAMETERS},
    )
    for name in PER_RUN:
        values = [s[name] for s in summaries]
        ds[name] = ("run", np.array(values, dtype=str if name == "status" else float))
    ds["steps"] = ds["steps"].astype(int)
    for name, unit in UNITS.items():
        ds[name].attrs["units"] = unit
    for name in INDICATORS:  # what the statistics stage correlates with the gap
        ds[name].attrs["role"] = "indicator"
    datasets = {ps.attrs["dataset"]: {"source": ps.attrs["source"], "sha256": ps.attrs["source_sha256"]}
                for ps in point_sets}
    ds.attrs = {
        "code_version": code_version,
        # Hash of what determines this store's content: the runs and the evaluated points.
        "config_hash": stable_hash({"runs": sorted(run_ids), "n_points": per_point.sizes["point"]}),
        "datasets": json.dumps(datasets, sort_keys=True),
        "hyperparameters": list(HYPERPARAMETERS),
        "status_values": "converged | unconverged | diverged",
        "references": "Novak et al. 2018 (arXiv 1802.08760); Zhang et al. 2017 (arXiv 1611.03530)",
    }
    return ds
