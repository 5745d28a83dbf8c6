"""Norms and margins of a trained network (Neyshabur et al. 2017, arXiv 1706.08947; Jiang et
al. 2020, arXiv 1912.02178): metrics/norms.py, in float64, on the training set with the
labels trained on."""

from __future__ import annotations

METRIC = {
    "name": "norms",
    "order": 50,
    "description": "Norms and margins (Neyshabur et al. 2017, arXiv 1706.08947; Jiang et al. "
                   "2020, arXiv 1912.02178): Frobenius, spectral, path norm, distance from "
                   "initialisation, parameters, 10th-percentile margin on the training set, "
                   "norms over squared margin.",
    "section": "norms",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": True, "hash": False,
                    "description": "Measure the norms and margins (in the shard's measure "
                                   "job)."},
    },
    "needs": ["weights", "initial_weights", "training_data"],
    "variables": {
        "n_parameters": {"dims": [], "sign": 1, "units": "count (weights and biases)",
                         "description": "trainable parameters (Jiang (20))"},
        "frobenius_sum": {"dims": [], "sign": 1,
                          "units": "sum over layers of ||W||_F^2 (weights only)",
                          "description": "Jiang (42)"},
        "spectral_product": {"dims": [], "sign": 1,
                             "units": "product over layers of ||W||_2^2 (weights only)",
                             "description": "Jiang (32); NaN for CNNs"},
        "path_norm": {"dims": [], "sign": 1,
                      "units": "l2 path norm: sum of outputs of the squared-weight linear "
                               "network on ones",
                      "description": "Jiang (44); NaN for CNNs"},
        "distance_from_init": {"dims": [], "sign": 1, "units": "||w - w0||_2 over all parameters",
                               "description": "cf. Jiang (40)"},
        "margin": {"dims": [], "sign": -1,
                   "units": "10th percentile over training points of f_y - max_{j!=y} f_j "
                            "(logits)",
                   "description": "Jiang (22), labels as trained on"},
        "frobenius_over_margin": {"dims": [], "sign": 1,
                                  "units": "frobenius_sum / margin^2 (NaN if margin <= 0)",
                                  "description": "Jiang (42) normalised as (43)"},
        "spectral_over_margin": {"dims": [], "sign": 1,
                                 "units": "spectral_product / margin^2 (NaN if margin <= 0)",
                                 "description": "Jiang (31)"},
        "path_over_margin": {"dims": [], "sign": 1,
                             "units": "path_norm / margin^2 (NaN if margin <= 0)",
                             "description": "Jiang (43)"},
    },
    "code": ["metrics/norms"],
    "cost": 0.06,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    from ..metrics.norms import norm_metrics

    x, y = job.train_points(data)
    return job.without_attrs(norm_metrics(model, job.initial_model(model), x, y,
                                          job.chunk_size))
