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
# What the statistics stage correlates with the gap (marked attrs["role"] = "indicator"),
# each with the direction it is expected to go (attrs["expected_sign"]): +1, a larger value
# goes with a larger gap; -1, with a smaller one. The signs of the indicators beyond Novak's
# are those their metric modules state and argue (workflow_src/metrics/<module>.py
# EXPECTED_SIGN; tests/test_aggregate.py keeps the two in step: this module runs in the
# analysis environment, which has no PyTorch to import them from).
INDICATORS: dict[str, int] = {
    # Novak et al. 2018: more sensitive (larger norms, more transitions) -> larger gap.
    "jacobian_norm": +1, "logit_jacobian_norm": +1, "transitions_exact": +1,
    "transitions_sampled": +1, "trajectory_jacobian_norm": +1, "jacobian_norm_true_class": +1,
    "bound_M": +1,
    # Norms and margins (metrics/norms.py): capacity +1, the margin -1.
    "n_parameters": +1, "frobenius_sum": +1, "spectral_product": +1, "path_norm": +1,
    "distance_from_init": +1, "margin": -1, "frobenius_over_margin": +1,
    "spectral_over_margin": +1, "path_over_margin": +1,
    # Arpit et al. 2017: more critical samples, a more complex fit (grows with label noise).
    "critical_sample_ratio": +1,
    # Keskar et al. 2017 and the Hessian: sharper minimum -> larger gap.
    "hessian_top_eigenvalue": +1, "hessian_trace": +1,
    # Jiang et al. 2020's PAC-Bayes measures 1/sigma'^2, 1/alpha'^2 (sigma', alpha' themselves
    # are the same ranking reversed, kept as values, not scored twice).
    "pac_bayes_flatness": +1, "pac_bayes_mag_flatness": +1, "pac_bayes_sharpness": +1,
    "pac_bayes_mag_sharpness": +1,
    # The trained network's empirical NTK (metrics/ntk.py argues each sign; the _init twins
    # are the control, not indicators).
    "ntk_top_eigenvalue": +1, "ntk_trace": +1, "ntk_effective_rank": -1,
    "ntk_condition_number": +1, "ntk_target_alignment": -1,
    "ntk_kernel_regression_test_acc": -1,
}
# Keskar's sharpness has one variable per box size: sharpness_{full,subspace}_eps<epsilon>,
# e.g. sharpness_full_eps0p001 (measure_shard.epsilon_name).
SHARPNESS_PREFIXES = ("sharpness_full_eps", "sharpness_subspace_eps")


def expected_sign(name: str) -> int | None:
    """The expected direction of indicator ``name`` (+1 or -1); None: not an indicator."""
    if name in INDICATORS:
        return INDICATORS[name]
    if name.startswith(SHARPNESS_PREFIXES):
        return +1
    return None


# Indicators found by an optimizer or a search that can stop short, each with the per-run
# variable that says whether it converged (1) or not (0): written on the indicator as
# attrs["converged_by"] when the store has that variable, so the summary and the figures
# report and mark it without a table of their own. Kept in step with each module's
# CONVERGED_BY (tests/test_aggregate.py).
CONVERGED_BY: dict[str, str] = {
    "hessian_top_eigenvalue": "hessian_top_converged",  # Lanczos
    "pac_bayes_flatness": "pac_bayes_sigma_converged",  # the bisections of sigma', alpha'
    "pac_bayes_mag_flatness": "pac_bayes_mag_sigma_converged",
    "pac_bayes_sharpness": "pac_bayes_alpha_converged",
    "pac_bayes_mag_sharpness": "pac_bayes_mag_alpha_converged",
}


def converged_by(name: str) -> str | None:
    """The variable that says whether indicator ``name``'s optimizer converged; None: it has
    none. Keskar's sharpness_<A>_eps<ε> (L-BFGS-B) has sharpness_<A>_converged_eps<ε>."""
    if name in CONVERGED_BY:
        return CONVERGED_BY[name]
    if name.startswith(SHARPNESS_PREFIXES):
        return name.replace("_eps", "_converged_eps", 1)
    return None
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
    "n_parameters": "count (weights and biases)",
    "frobenius_sum": "sum over layers of ||W||_F^2 (weights only)",
    "spectral_product": "product over layers of ||W||_2^2 (weights only)",
    "path_norm": "l2 path norm: sum of outputs of the squared-weight linear network on ones",
    "distance_from_init": "||w - w0||_2 over all parameters",
    "margin": "10th percentile over training points of f_y - max_{j!=y} f_j (logits)",
    "frobenius_over_margin": "frobenius_sum / margin^2 (NaN if margin <= 0)",
    "spectral_over_margin": "spectral_product / margin^2 (NaN if margin <= 0)",
    "path_over_margin": "path_norm / margin^2 (NaN if margin <= 0)",
    "critical": "1 critical (LASS changed the class inside the box), 0 not",
    "critical_steps": "ascent steps until the class changed (NaN if it did not)",
    "critical_sample_ratio": "fraction of searched test points that are critical",
    "hessian_top_eigenvalue": "largest eigenvalue of the training loss's Hessian (nats)",
    "hessian_top_residual": "||Hu - lambda u|| / |lambda| at the unit Ritz vector u",
    "hessian_top_iterations": "Hessian-vector products of the Lanczos iteration",
    "hessian_top_converged": "1 ARPACK converged and the residual is within tolerance, 0 not",
    "hessian_trace": "Hutchinson estimate of the Hessian's trace (nats)",
    "hessian_trace_stderr": "standard error of hessian_trace",
    "pac_bayes_flatness": "1 / sigma'^2 (weight noise)",
    "pac_bayes_mag_flatness": "1 / sigma'^2 (magnitude-aware weight noise)",
    "pac_bayes_sharpness": "1 / alpha'^2 (worst case in a box)",
    "pac_bayes_mag_sharpness": "1 / alpha'^2 (magnitude-aware box)",
    "ntk_top_eigenvalue": "largest eigenvalue of the logit-traced empirical NTK",
    "ntk_trace": "trace of the logit-traced empirical NTK",
    "ntk_effective_rank": "trace / top eigenvalue",
    "ntk_condition_number": "largest / smallest positive eigenvalue",
    "ntk_target_alignment": "kernel-target alignment with the one-hot labels trained on",
    "ntk_kernel_regression_test_acc": "fraction, kernel ridge regression with the NTK",
}
# Keskar's sharpness_<A>_<kind>_eps<ε> beside each phi (metrics/sharpness.py).
SHARPNESS_RUN_UNITS = {
    "evaluations": "L-BFGS-B (loss, gradient) evaluations",
    "iterations": "L-BFGS-B iterations of the run that found phi",
    "status": "L-BFGS-B stop of that run: 0 its convergence test, 1 iteration budget, 2 other",
    "converged": "1 that run stopped on L-BFGS-B's convergence test, 0 not",
    "restart_gain": "phi minus the phi of the run from z = 0 (Keskar phi units)",
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
        **{name: ("run", _coordinate([runs[r][name] for r in run_ids]))
           for name in HYPERPARAMETERS},
    )
    for name in PER_RUN:
        values = [s[name] for s in summaries]
        ds[name] = ("run", np.array(values, dtype=str if name == "status" else float))
    ds["steps"] = ds["steps"].astype(int)
    for name, unit in UNITS.items():
        if name in ds:
            ds[name].attrs["units"] = unit
    for name in ds.data_vars:
        sign = expected_sign(name)
        if sign is not None and ds[name].dims in (("run",), ("run", "point")):
            ds[name].attrs.update(role="indicator", expected_sign=sign)
            if converged_by(name) in ds:
                ds[name].attrs["converged_by"] = converged_by(name)
        if name.startswith(SHARPNESS_PREFIXES):
            ds[name].attrs["units"] = "Keskar phi: 100 (max loss in the box - loss) / (1 + loss)"
        elif name.startswith("sharpness_"):
            kind = name.rpartition("_eps")[0].split("_", 2)[-1]  # sharpness_<A>_<kind>_eps<ε>
            if kind in SHARPNESS_RUN_UNITS:
                ds[name].attrs["units"] = SHARPNESS_RUN_UNITS[kind]
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
