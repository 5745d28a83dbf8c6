"""Conditioning of the training problem (Liu, Zhu & Belkin 2022, arXiv 2003.00307, §3-4):
on the first training points, labels as trained on, the PL ratio ½‖∇L‖²/L of the training
loss the network was trained with (squared or cross-entropy, mean over points, L* = 0), the
full nK × nK tangent kernel K = J Jᵀ's extreme eigenvalues, condition number and trace, the
bound ½‖∇L‖²/L ≥ λ_min(K)/n as a ratio, and K's relative change since initialisation; at the
weights and at the initial weights (``_init``). Formulas and normalisation:
metrics/conditioning.py. Not indicators of the gap: no expected sign."""

from __future__ import annotations

METRIC = {
    "name": "conditioning",
    "order": 120,
    "description": "Conditioning of the training loss (Liu, Zhu & Belkin 2022, arXiv "
                   "2003.00307): PL ratio 1/2 ||grad L||^2 / L of the loss trained with "
                   "(squared or cross-entropy, mean over points, L* = 0), spectrum of the "
                   "full nK x nK tangent kernel J J^T and its relative change since "
                   "initialisation, on the first training points (float64).",
    "section": "conditioning",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure the conditioning (in the shard's measure job, "
                                   "and along training with measure.snapshots)."},
        "n_points": {"type": "integer", "minimum": 1, "default": 50,
                     "at_most": ["data.n_train"],
                     "description": "Training points of the loss and the kernel (the first "
                                    "ones; capped at data.n_train): the kernel is (n_points "
                                    "x classes) squared, its cost (n_points x classes)^2 x "
                                    "parameters: ~90 s per network of the default study "
                                    "at 50 points, 1 thread."},
        "chunk_size": {"type": "integer", "minimum": 1, "default": 16, "hash": "default",
                       "description": "Points per Jacobian chunk: bounds memory (about 2 x "
                                      "chunk x classes x parameters float64 numbers), no "
                                      "effect on results."},
    },
    "needs": ["weights", "initial_weights", "training_data"],
    "variables": {
        "conditioning_loss": {
            "dims": [], "units": "training loss L, mean over the points",
            "description": "(1/n) sum_i l_i; squared: 1/2 ||f_i - onehot(y_i)||^2, "
                           "cross-entropy: -log softmax(f_i)_y"},
        "conditioning_grad_norm_sq": {
            "dims": [], "units": "||grad L||^2",
            "description": "||(1/n) J^T r||^2, r the stacked output residuals"},
        "conditioning_pl_ratio": {
            "dims": [], "units": "1/2 ||grad L||^2 / L (L* = 0)",
            "description": "PL ratio of the mean training loss; NaN if L = 0"},
        "conditioning_lambda_min": {
            "dims": [], "units": "smallest eigenvalue of the nK x nK kernel J J^T",
            "description": "lambda_min(K) (numpy eigvalsh; ~0 or below when K is singular)"},
        "conditioning_lambda_max": {
            "dims": [], "units": "largest eigenvalue of the nK x nK kernel J J^T",
            "description": "lambda_max(K)"},
        "conditioning_condition_number": {
            "dims": [], "units": "lambda_max / lambda_min of K",
            "description": "+inf if lambda_min <= nK eps lambda_max (K singular)"},
        "conditioning_trace": {
            "dims": [], "units": "tr K = sum_i sum_k ||df_k(x_i)/dw||^2",
            "description": "trace of the full tangent kernel"},
        "conditioning_lambda_min_over_trace": {
            "dims": [], "units": "lambda_min(K) / tr K",
            "description": "scale-free smallest eigenvalue (at most 1/(nK))"},
        "conditioning_pl_bound_ratio": {
            "dims": [], "units": "pl_ratio / (lambda_min(K) / n)",
            "description": ">= 1 for the squared loss; NaN if K is singular or L = 0"},
        "conditioning_kernel_bound_ratio": {
            "dims": [], "units": "n^2 ||grad L||^2 / (lambda_min(K) ||r||^2)",
            "description": ">= 1 for both losses; NaN if K is singular or r = 0"},
        "conditioning_kernel_change": {
            "dims": [], "units": "||K(w) - K(w_0)||_F / ||K(w_0)||_F",
            "description": "relative change of the tangent kernel since initialisation"},
        # The same at the initial weights.
        "conditioning_loss_init": {"dims": [], "description": "at initialisation"},
        "conditioning_grad_norm_sq_init": {"dims": [], "description": "at initialisation"},
        "conditioning_pl_ratio_init": {"dims": [], "description": "at initialisation"},
        "conditioning_lambda_min_init": {"dims": [], "description": "at initialisation"},
        "conditioning_lambda_max_init": {"dims": [], "description": "at initialisation"},
        "conditioning_condition_number_init": {"dims": [],
                                               "description": "at initialisation"},
        "conditioning_trace_init": {"dims": [], "description": "at initialisation"},
        "conditioning_lambda_min_over_trace_init": {"dims": [],
                                                    "description": "at initialisation"},
        "conditioning_pl_bound_ratio_init": {"dims": [], "description": "at initialisation"},
        "conditioning_kernel_bound_ratio_init": {"dims": [],
                                                 "description": "at initialisation"},
    },
    "code": ["metrics/conditioning", "metrics/ntk"],
    "cost": 90.0,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    import numpy as np
    import xarray as xr

    from ..metrics.conditioning import conditioning

    x, y = job.train_points(data, settings["n_points"])
    values = conditioning(model, job.initial_model(model), x, y, loss=job.run.loss,
                          chunk_size=settings["chunk_size"])
    return xr.Dataset({f"conditioning_{name}": ((), np.float64(value))
                       for name, value in values.items()})
