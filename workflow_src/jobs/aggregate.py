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

from .. import registry
from ..runtable import HYPERPARAMETERS, stable_hash

PER_RUN = ("train_acc", "test_acc", "gap", "steps", "status", "fit_step")
# Units of the per-network training results; every metric variable's units, its expected
# sign (+1: a larger value goes with a larger gap; -1: a smaller one) and the variable that
# says whether its optimizer converged come from its metric's declaration (workflow_src/
# measures/<metric>.py, read by workflow_src/registry.py without torch: this module runs in
# the analysis environment).
UNITS = {
    "train_acc": "fraction (training labels as trained on)", "test_acc": "fraction",
    "gap": "fraction (train_acc - test_acc)", "steps": "optimizer updates",
    "fit_step": "optimizer updates (first evaluation reaching target_train_acc; NaN: never)",
}


def expected_sign(name: str) -> int | None:
    """The expected direction of indicator ``name`` (+1 or -1); None: not an indicator."""
    return registry.expected_sign(name)


def converged_by(name: str) -> str | None:
    """The variable that says whether indicator ``name``'s optimizer converged; None: it has
    none (e.g. Keskar's sharpness_<A>_eps<ε> has sharpness_<A>_converged_eps<ε>)."""
    return registry.converged_by(name)


def units(name: str) -> str | None:
    return UNITS.get(name) or registry.units(name)


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
        **{name: ("run", _coordinate([runs[r][name] for r in run_ids]))
           for name in HYPERPARAMETERS},
    )
    for name in PER_RUN:
        # (.get: shard records written before fit_step existed have none: NaN)
        values = [s.get(name) for s in summaries]
        ds[name] = ("run", np.array(values, dtype=str if name == "status" else float))
    ds["steps"] = ds["steps"].astype(int)
    for name in ds.data_vars:
        if units(name) is not None:
            ds[name].attrs["units"] = units(name)
        sign = expected_sign(name)
        if sign is not None and ds[name].dims in (("run",), ("run", "point")):
            ds[name].attrs.update(role="indicator", expected_sign=sign)
            if converged_by(name) in ds:
                ds[name].attrs["converged_by"] = converged_by(name)
    ds.attrs = _provenance(run_ids, ds, stores, code_version)
    return ds


def _coordinate(values: list) -> list:
    """A hyperparameter's values as one coordinate: as they are when of one type, else as
    strings (augment mixes true/false with "crop"; Zarr stores no mixed object arrays)."""
    if len({type(value) for value in values}) > 1:
        return [str(value).lower() if isinstance(value, bool) else str(value)
                for value in values]
    return values


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
        "references": "Novak et al. 2018 (arXiv 1802.08760); Zhang et al. 2017 (arXiv 1611.03530); "
                      "Keskar et al. 2017 (arXiv 1609.04836); Arpit et al. 2017 (arXiv "
                      "1706.05394); Neyshabur et al. 2017 (arXiv 1706.08947); Jiang et al. "
                      "2020 (arXiv 1912.02178)",
    }
    if "ellipse" in ds.dims:
        attrs["anchor_angles"] = [0.0, 2 * np.pi / 3, 4 * np.pi / 3]
    if notes:
        attrs["notes"] = notes
    return attrs
