"""Does a large per-point indicator flag misclassified test points?

Novak et al. 2018 (arXiv 1802.08760) find that, within one network, test
points with a larger input–output Jacobian norm are more often misclassified. Four views
of that claim, per run and pooled over runs:
- medians of the indicator on correct and misclassified points;
- Mann–Whitney U test (Mann & Whitney 1947) that misclassified points have larger values;
- ROC AUC of the indicator as a detector of misclassification (equal to U/(n₀n₁));
- logistic regression of misclassification on log(indicator) (statsmodels Logit), the one
  view that needs a positive indicator.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.discrete.discrete_model import Logit
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

from .datasets import AXIS, POOLED, dataset_names
from .tables import strings

COLUMNS = [
    "scope", "dataset", "indicator", "n_correct", "n_wrong", "n_indicator_missing",
    "n_nonpositive_not_in_logit", "median_correct", "median_wrong", "auc", "mannwhitney_p",
    "logit_coef", "logit_coef_ci_low", "logit_coef_ci_high", "logit_p", "note",
]


def per_point_misclassification(
    ds: xr.Dataset, indicator: str = "jacobian_norm", confidence: float = 0.95
) -> pd.DataFrame:
    """One row per run (scope = run_id) and one pooled over all runs' points (scope =
    ``pooled``); when the runs come from several datasets, also one pooled over each
    dataset's runs (scope = ``pooled``, ``dataset`` = its name). Column ``dataset``: the
    run's dataset on a run's row, ``pooled`` on the row over every run.

    A point is evaluated when ``correct`` is not NaN (the rest is padding). Evaluated points
    whose indicator is not finite (not measured there) are left out of every statistic and
    counted in ``n_indicator_missing``. Every other point enters the medians, the AUC and
    the Mann–Whitney test; the logit, which uses log(indicator), leaves out the
    non-positive ones and counts them in ``n_nonpositive_not_in_logit``. ``n_correct`` and
    ``n_wrong`` count the points of the medians, AUC and Mann–Whitney test. The caller
    selects which runs enter, e.g. only converged ones.
    A statistic that is undefined for a scope (no misclassified point, perfect
    separation) is NaN and the row's ``note`` says why.
    """
    values = ds[indicator].values  # (run, point)
    wrong = 1.0 - ds["correct"].values.astype(float)  # (run, point), NaN where padded
    run_ids = strings(ds["run_id"])
    datasets = strings(ds[AXIS]) if AXIS in ds.coords else np.full(len(run_ids), POOLED)
    rows = [
        {"scope": run_id, "dataset": datasets[i], **_describe(values[i], wrong[i], confidence)}
        for i, run_id in enumerate(run_ids)
    ]
    rows.append({"scope": POOLED, "dataset": POOLED,
                 **_describe(values.ravel(), wrong.ravel(), confidence)})
    names = dataset_names(datasets)
    for name in names if len(names) > 1 else []:
        within = datasets == name
        rows.append({"scope": POOLED, "dataset": name,
                     **_describe(values[within].ravel(), wrong[within].ravel(), confidence)})
    table = pd.DataFrame(rows)
    table["indicator"] = indicator
    return table[COLUMNS]


def _describe(values: np.ndarray, wrong: np.ndarray, confidence: float) -> dict:
    """All statistics for one scope's points; values and wrong are (point,)."""
    evaluated = np.isfinite(wrong)
    keep = evaluated & np.isfinite(values)
    values, is_wrong = values[keep], wrong[keep].astype(bool)
    row = {"n_correct": int((~is_wrong).sum()), "n_wrong": int(is_wrong.sum()),
           "n_indicator_missing": int((evaluated & ~keep).sum()),
           "n_nonpositive_not_in_logit": int((values <= 0).sum())}
    row["median_correct"] = float(np.median(values[~is_wrong])) if row["n_correct"] else np.nan
    row["median_wrong"] = float(np.median(values[is_wrong])) if row["n_wrong"] else np.nan
    if not (row["n_correct"] and row["n_wrong"]):
        which = "misclassified" if not row["n_wrong"] else "correctly classified"
        return {**row, "auc": np.nan, "mannwhitney_p": np.nan, **_no_logit(f"no {which} points")}
    row["auc"] = float(roc_auc_score(is_wrong, values))
    row["mannwhitney_p"] = float(
        stats.mannwhitneyu(values[is_wrong], values[~is_wrong], alternative="greater").pvalue
    )
    positive = values > 0
    return {**row, **_logit(np.log(values[positive]), is_wrong[positive], confidence)}


def _no_logit(note: str) -> dict:
    return {"logit_coef": np.nan, "logit_coef_ci_low": np.nan, "logit_coef_ci_high": np.nan,
            "logit_p": np.nan, "note": note}


def _logit(log_values: np.ndarray, is_wrong: np.ndarray, confidence: float) -> dict:
    """Slope of P(misclassified) on log(indicator) in a logit model with intercept.

    Under perfect (or quasi-perfect) separation the maximum-likelihood slope is infinite;
    statsmodels warns and returns a meaningless finite iterate, so the fit is reported as
    undefined. The AUC (then 1 or 0) still carries the information.
    """
    if is_wrong.all() or not is_wrong.any():
        return _no_logit("points with a positive indicator are not of both classes; logit not fit")
    if np.ptp(log_values) == 0:
        return _no_logit("indicator is constant")
    design = np.column_stack([np.ones_like(log_values), log_values])  # (point, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            result = Logit(is_wrong.astype(float), design).fit(disp=False)
        except (PerfectSeparationWarning, ConvergenceWarning, np.linalg.LinAlgError) as err:
            return _no_logit(f"logit not fit: {type(err).__name__}")
    low, high = result.conf_int(alpha=1 - confidence)[1]
    return {"logit_coef": float(result.params[1]), "logit_coef_ci_low": float(low),
            "logit_coef_ci_high": float(high), "logit_p": float(result.pvalues[1]), "note": ""}
