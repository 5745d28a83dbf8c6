"""NTK eigenlearning: the test MSE of kernel regression with the network's empirical NTK,
predicted from the kernel's eigenvalues and the labels' coefficients in its eigenbasis
(Simon, Dickens, Karkada & DeWeese 2021, arXiv 2110.03922, eqs. (5)-(9)), and measured.

The kernel is metrics/ntk.py's logit-traced empirical NTK (ntk_gram, the same computation
as the ``ntk`` metric) on a pool of the first ``n_pool`` training points, at the trained and
(``_init``) the initial weights; the targets are the pool's one-hot labels as trained on.
metrics/eigenlearning.py holds the formulas: the predicted MSE of kernel ridge regression
on n = round(train_fraction · M) pool points, on the M − n pool points held out, against
the mean measured MSE over ``draws`` random training sets of n pool points (numpy
Generator(seed)), each tested on the rest of the pool. The ridge is ``ridge`` times the
kernel's mean diagonal. MSE: the squared distance between the vector of C kernel outputs and
the one-hot label, averaged over held-out points (the zero function scores 1).

Expected sign of eigenlearning_predicted_mse (trained kernel) +1, a hypothesis under test:
a network whose tangent kernel puts the labels it was trained on in modes it learns badly
(small learnabilities for the modes carrying most of Σv²; with corrupted labels, much of the
target sits in such modes) is a network whose function extrapolates poorly from the points it
fitted, so a larger predicted MSE should go with a larger gap. The ``_init`` twins and the
measurements are the control and the check, not indicators.
"""

from __future__ import annotations

METRIC = {
    "name": "eigenlearning",
    "order": 101,
    "description": "NTK eigenlearning (Simon et al. 2021, arXiv 2110.03922): the test MSE of "
                   "kernel regression with the empirical NTK on a pool of training points, "
                   "predicted from its spectrum and measured on held-out pool points, trained "
                   "and at initialisation (float64; ~7 s per network of the default study).",
    "section": "eigenlearning",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure NTK eigenlearning (in the shard's measure job)."},
        "n_pool": {"type": "integer", "minimum": 4, "default": 100,
                   "at_most": ["data.n_train"],
                   "description": "M: the pool, the first training points, on which the NTK "
                                  "is computed (cost ~M^2 x parameters)."},
        "train_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5,
                           "default": 0.25,
                           "description": "n / M: kernel regression trains on "
                                          "n = round(train_fraction M) pool points (at least "
                                          "1) and is tested on the rest."},
        "draws": {"type": "integer", "minimum": 2, "default": 20,
                  "description": "Random training sets whose held-out MSEs are averaged."},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "Seed of the training sets' draws (numpy Generator)."},
        "ridge": {"type": "number", "minimum": 0, "default": 1.0e-6,
                  "description": "Ridge δ of kernel regression, relative to the kernel's mean "
                                 "diagonal (0: ridgeless)."},
        "top_k": {"type": "integer", "minimum": 1, "default": 10,
                  "description": "Learnabilities of the top eigenmodes stored (dim "
                                 "eigenmode)."},
        "chunk_size": {"type": "integer", "minimum": 1, "default": 64, "hash": "default",
                       "description": "Points per Jacobian chunk: bounds memory (about 2 x "
                                      "chunk x classes x parameters floats), no effect on "
                                      "results."},
    },
    "needs": ["weights", "initial_weights", "training_data"],
    "variables": {
        "eigenlearning_predicted_mse": {
            "dims": [], "sign": 1,
            "units": "squared distance to the one-hot label (kernel regression, predicted)",
            "description": "E0 (sum_i (1 - L_i)^2 v_i^2) over the pool, as held-out MSE"},
        "eigenlearning_measured_mse": {
            "dims": [], "units": "squared distance to the one-hot label",
            "description": "mean held-out MSE of kernel regression over the draws"},
        "eigenlearning_measured_mse_se": {
            "dims": [], "description": "standard error of the mean over the draws"},
        "eigenlearning_kappa": {"dims": [], "description": "effective ridge kappa"},
        "eigenlearning_e0": {"dims": [], "description": "overfitting coefficient n/(n-sum L^2)"},
        "eigenlearning_learnabilities": {
            "dims": ["eigenmode"],
            "description": "L_i = lambda_i/(lambda_i + kappa) of the top modes; NaN past M"},
        "eigenlearning_n_train": {"dims": [], "description": "n, training points of the "
                                                             "kernel regression"},
        "eigenlearning_n_pool": {"dims": [], "description": "M, points of the pool"},
        "eigenlearning_predicted_mse_init": {"dims": [], "description": "at initialisation"},
        "eigenlearning_measured_mse_init": {"dims": [], "description": "at initialisation"},
        "eigenlearning_measured_mse_se_init": {"dims": [], "description": "at initialisation"},
        "eigenlearning_kappa_init": {"dims": [], "description": "at initialisation"},
        "eigenlearning_e0_init": {"dims": [], "description": "at initialisation"},
        "eigenlearning_learnabilities_init": {"dims": ["eigenmode"],
                                              "description": "at initialisation"},
    },
    "code": ["metrics/ntk", "metrics/eigenlearning"],
    "cost": 7.0,
    "snapshots": True,
    "measure": "measure",
}


def training_points(n_pool: int, train_fraction: float) -> int:
    """n = round(train_fraction · M), at least 1 and below M."""
    return min(max(1, round(train_fraction * n_pool)), n_pool - 1)


def measure(model, data, settings, job):
    import numpy as np
    import xarray as xr

    from ..metrics.eigenlearning import eigenlearning
    from ..metrics.ntk import ntk_gram

    x, y = job.train_points(data, settings["n_pool"])
    m = int(x.shape[0])
    if m < 4:
        raise ValueError(f"eigenlearning needs a pool of at least 4 training points, got {m}: "
                         "raise data.n_train or measure.eigenlearning.n_pool")
    n = training_points(m, settings["train_fraction"])
    n_classes = int(model.spec.n_classes)
    targets = np.eye(n_classes)[y.cpu().numpy().astype(np.int64)]
    out = {"eigenlearning_n_train": float(n), "eigenlearning_n_pool": float(m)}
    for suffix, net in (("", model), ("_init", job.initial_model(model))):
        kernel = ntk_gram(net, x, chunk_size=settings["chunk_size"])
        result = eigenlearning(kernel, targets, n, settings["ridge"], settings["draws"],
                               settings["seed"], settings["top_k"])
        for key in ("predicted_mse", "measured_mse", "measured_mse_se", "kappa", "e0",
                    "learnabilities"):
            out[f"eigenlearning_{key}{suffix}"] = result[key]
    variables = {name: xr.DataArray(np.asarray(value, dtype=np.float64),
                                    dims=("eigenmode",) if np.ndim(value) else ())
                 for name, value in out.items()}
    return job.without_attrs(xr.Dataset(variables,
                                        coords={"eigenmode": np.arange(settings["top_k"])}))
