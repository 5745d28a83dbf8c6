"""From the aggregate dataset (docs/science.md §7) to one row per network.

Every statistic in this package works on the network table: run_id, every hyperparameter,
the bookkeeping columns, and one column per indicator. A per-point indicator becomes its
mean over the points a run evaluated, which is how Novak et al. 2018 (arXiv 1802.08760)
turn the test-point Jacobian norm into one number per network.

Accuracies and the gap are taken exactly as training stored them and never re-derived by
subtraction: training computes each from integer counts, rounded once (train.TrainResult),
so two networks with equal counts have bit-equal gaps and rank statistics see a tie, where
float subtraction would not (0.80 − 0.56 = 0.24 but 0.81 − 0.57 = 0.2400000000000001).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

# Per-run variables that describe training, not indicators of generalization.
BOOKKEEPING = ("train_acc", "test_acc", "gap", "steps", "status", "fit_step")


def hyperparameters(ds: xr.Dataset) -> list[str]:
    """The hyperparameter coordinate names the aggregate step recorded."""
    return list(ds.attrs["hyperparameters"])


def _is_indicator(da: xr.DataArray) -> bool:
    """The aggregate step marks every indicator variable with attrs["role"] = "indicator";
    bookkeeping (accuracies, status), outcomes (loss, correct) and the loss-bound curves are
    not marked, so they never enter the correlations."""
    return da.attrs.get("role") == "indicator" and np.issubdtype(da.dtype, np.floating)


def point_indicators(ds: xr.Dataset) -> list[str]:
    """Indicator variables measured per test point: dims (run, point)."""
    return [name for name, da in ds.data_vars.items()
            if da.dims == ("run", "point") and _is_indicator(da)]


def network_indicators(ds: xr.Dataset) -> list[str]:
    """Indicator variables measured once per network, e.g. ``bound_M``: dims (run,)."""
    return [name for name, da in ds.data_vars.items()
            if da.dims == ("run",) and _is_indicator(da)]


def indicator_names(ds: xr.Dataset) -> list[str]:
    """Every indicator column ``network_table`` produces, per-point ones first."""
    return point_indicators(ds) + network_indicators(ds)


def network_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per run: run_id, hyperparameters, bookkeeping, then indicators.

    A per-point indicator's column holds its mean over the run's evaluated points; the
    NaN padding of runs that evaluated fewer points is skipped. The hyperparameter names
    travel in ``table.attrs["hyperparameters"]`` for the functions that match networks.
    """
    hps = hyperparameters(ds)
    columns: dict[str, np.ndarray] = {"run_id": strings(ds["run_id"])}
    for name in hps:
        columns[name] = ds[name].values
    for name in BOOKKEEPING:  # (fit_step: NaN in stores aggregated before it existed)
        columns[name] = ds[name].values if name in ds else np.full(ds.sizes["run"], np.nan)
    columns["status"] = strings(ds["status"])
    for name in point_indicators(ds):
        columns[name] = _nanmean_over_points(ds[name].values)
    for name in network_indicators(ds):
        columns[name] = ds[name].values
    table = pd.DataFrame(columns)
    table.attrs["hyperparameters"] = hps
    return table


def strings(da: xr.DataArray) -> np.ndarray:
    """A string variable as a fixed-width str array. Read back from metrics.zarr, strings
    are NumPy's variable-width StringDType, which ``astype(str)`` cannot cast."""
    return np.array(da.values.tolist(), dtype=str)


def _nanmean_over_points(values: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of a (run, point) array ignoring NaN; NaN for all-NaN rows."""
    counts = np.sum(~np.isnan(values), axis=1)
    sums = np.nansum(values, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def converged_runs(ds: xr.Dataset) -> xr.Dataset:
    """The aggregate dataset restricted to converged runs (the per-point counterpart of
    ``converged``)."""
    return ds.isel(run=np.flatnonzero(ds["status"].values == "converged"))


def converged(table: pd.DataFrame) -> pd.DataFrame:
    """Only the networks that reached the target training accuracy (docs/science.md §3, §6)."""
    kept = table[table["status"] == "converged"].reset_index(drop=True)
    kept.attrs = dict(table.attrs)
    return kept


def ellipse_summary_table(ds: xr.Dataset) -> pd.DataFrame:
    """Per converged network and ellipse: mean ‖J‖_F around the ellipse, ‖J‖_F at the three
    anchors (mean) and away from them, and the exact transition count (Novak §4.1). Where
    the study also measured the initial weights, the same ellipse's mean ‖J‖_F and count
    at initialisation follow (``*_init``)."""
    conv = converged_runs(ds)
    angles = ds["angle"].values
    anchors = [int(np.argmin(np.abs(angles - a))) for a in ds.attrs["anchor_angles"]]
    away = np.setdiff1d(np.arange(len(angles)), anchors)
    jac = conv["ellipse_jacobian_norm"].values  # (run, ellipse, position)
    frame = pd.DataFrame({
        "run_id": np.repeat(conv["run_id"].values, jac.shape[1]),
        "kind": np.tile(conv["ellipse_kind"].values, jac.shape[0]),
        "ellipse": np.tile(np.arange(jac.shape[1]), jac.shape[0]),
        "mean_jacobian_norm": jac.mean(axis=2).ravel(),
        "jacobian_norm_at_anchors": jac[:, :, anchors].mean(axis=2).ravel(),
        "jacobian_norm_away_from_anchors": jac[:, :, away].mean(axis=2).ravel(),
        "transitions": conv["ellipse_transitions"].values.ravel(),
    })
    if "ellipse_transitions_init" in conv:
        frame["mean_jacobian_norm_init"] = conv["ellipse_jacobian_norm_init"].values.mean(
            axis=2).ravel()
        frame["transitions_init"] = conv["ellipse_transitions_init"].values.ravel()
    for name in conv["run"].coords:
        if name not in ("run_id",) and conv[name].dims == ("run",):
            frame[name] = np.repeat(conv[name].values, jac.shape[1])
    return frame
