"""The empirical neural tangent kernel (Jacot et al. 2018; Fort et al. 2020) of the trained
network and at its initial weights, on the first training points: its spectrum, alignment
with the labels and kernel-regression test accuracy (metrics/ntk.py)."""

from __future__ import annotations

METRIC = {
    "name": "ntk",
    "order": 100,
    "description": "Empirical NTK (logit-traced) on a subset of training points, trained and "
                   "at initialisation: top eigenvalues, trace, effective rank, condition "
                   "number, kernel-target alignment, kernel-regression test accuracy (float64; "
                   "costly: ~n_points^2 x parameters).",
    "section": "ntk",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure the empirical NTK spectrum (in the shard's "
                                   "measure job)."},
        "n_points": {"type": "integer", "minimum": 2, "default": 200, "at_most": ["data.n_train"],
                     "description": "Training points of the Gram matrix (the first ones)."},
        "n_test_points": {"type": "integer", "minimum": 1, "default": 1000,
                          "at_most": ["data.n_test"],
                          "description": "Test points for the kernel-regression accuracy (the "
                                         "first ones)."},
        "top_k": {"type": "integer", "minimum": 1, "default": 10,
                  "description": "Top eigenvalues stored (ntk_top_eigenvalues, dim eigen; the "
                                 "first is the indicator)."},
        "ridge": {"type": "number", "minimum": 0, "default": 1.0e-6,
                  "description": "Ridge added to the kernel's diagonal, relative to its mean "
                                 "diagonal, for kernel regression."},
        # Bookkeeping: it enters the store's name at its default whatever it is set to.
        "chunk_size": {"type": "integer", "minimum": 1, "default": 64, "hash": "default",
                       "description": "Points per Jacobian chunk: bounds memory (about 2 x "
                                      "chunk x classes x parameters floats), no effect on "
                                      "results."},
    },
    "needs": ["weights", "initial_weights", "training_data", "test_points"],
    "variables": {
        "ntk_top_eigenvalues": {"dims": ["eigen"],
                                "description": "largest eigenvalues, descending; NaN past n"},
        "ntk_top_eigenvalue": {"dims": [], "sign": 1,
                               "units": "largest eigenvalue of the logit-traced empirical NTK",
                               "description": "the first of ntk_top_eigenvalues"},
        "ntk_trace": {"dims": [], "sign": 1, "units": "trace of the logit-traced empirical NTK",
                      "description": "sum_i sum_k ||df_k(x_i)/dtheta||^2"},
        "ntk_effective_rank": {"dims": [], "sign": -1, "units": "trace / top eigenvalue",
                               "description": "(sum lambda)^2 / sum lambda^2"},
        "ntk_condition_number": {"dims": [], "sign": 1,
                                 "units": "largest / smallest positive eigenvalue",
                                 "description": "lambda_max / lambda_min (inf if singular)"},
        "ntk_target_alignment": {"dims": [], "sign": -1,
                                 "units": "kernel-target alignment with the one-hot labels "
                                          "trained on",
                                 "description": "Cristianini et al. 2002"},
        "ntk_kernel_regression_test_acc": {"dims": [], "sign": -1,
                                           "units": "fraction, kernel ridge regression with "
                                                    "the NTK",
                                           "description": "test accuracy of kernel regression"},
        # The same at the initial weights: the control, not indicators.
        "ntk_top_eigenvalues_init": {"dims": ["eigen"], "description": "at initialisation"},
        "ntk_top_eigenvalue_init": {"dims": [], "description": "at initialisation"},
        "ntk_trace_init": {"dims": [], "description": "at initialisation"},
        "ntk_effective_rank_init": {"dims": [], "description": "at initialisation"},
        "ntk_condition_number_init": {"dims": [], "description": "at initialisation"},
        "ntk_target_alignment_init": {"dims": [], "description": "at initialisation"},
        "ntk_kernel_regression_test_acc_init": {"dims": [], "description": "at initialisation"},
    },
    "code": ["metrics/ntk"],
    "cost": 209.0,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    from ..metrics.ntk import ntk_metrics

    x, y = job.train_points(data, settings["n_points"])
    x_test, y_test = job.test_points(data, settings["n_test_points"])
    out = ntk_metrics(model, job.initial_model(model), x, y, x_test, y_test,
                      n_points=settings["n_points"], top_k=settings["top_k"],
                      ridge=settings["ridge"], chunk_size=settings["chunk_size"])
    # The largest eigenvalue as a scalar of its own: the indicator (the rest stay in
    # ntk_top_eigenvalues, dim eigen).
    out["ntk_top_eigenvalue"] = out["ntk_top_eigenvalues"].isel(eigen=0, drop=True)
    out["ntk_top_eigenvalue_init"] = out["ntk_top_eigenvalues_init"].isel(eigen=0, drop=True)
    return job.without_attrs(out)
