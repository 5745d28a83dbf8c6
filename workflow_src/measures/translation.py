"""Novak et al. 2018 (§3.2, §4.1): transitions and the mean Jacobian norm along each test
point's translation trajectory (metrics/per_run.py, metrics/transitions.py,
metrics/cnn_walk.py)."""

from __future__ import annotations

METRIC = {
    "name": "translation",
    "order": 20,
    "description": "Transitions along each test point's translation trajectory (Novak §3.2).",
    "section": "transitions",
    "switch": "n_points",
    "settings": {
        "n_points": {"type": "integer", "minimum": 0, "default": 100,
                     "at_most": ["measure.n_points", "data.n_test"],
                     "description": "Test points whose trajectory is walked (the first ones; "
                                    "capped at measure.n_points; 0 disables)."},
        "k_sampled": {"type": "integer", "minimum": 2, "default": 4096,
                      "description": "Points of the sampled estimator per trajectory (the "
                                     "paper used 2^20)."},
        "jacobian_positions": {"type": "integer", "minimum": 1, "default": 56,
                               "description": "Equally spaced points of each trajectory at "
                                              "which ‖J‖_F is averaged "
                                              "(trajectory_jacobian_norm)."},
        # Only when on: the translation stores of studies without CNN walks keep their names.
        "exact_cnn": {"type": "boolean", "default": False, "hash": {"omit": False},
                      "description": "Also walk piecewise-linear CNNs (inception_small, wrn) "
                                     "exactly along the translation polygon "
                                     "(transitions_exact); ~40 min (wrn) to ~40 h "
                                     "(inception_small) per point on 28 x 28 inputs, so off "
                                     "by default and their transitions_exact is NaN. MLPs are "
                                     "always walked; alexnet_small (smooth LRN) never."},
    },
    "needs": ["weights", "test_points"],
    "variables": {
        "transitions_exact": {"dims": ["point"], "sign": 1,
                              "units": "count of breakpoint crossings along the translation "
                                       "trajectory",
                              "description": "exact transitions along the closed polygon"},
        "transitions_sampled": {"dims": ["point"], "sign": 1,
                                "units": "count, sampled estimator along the translation "
                                         "trajectory",
                                "description": "the paper's estimator with k_sampled points"},
        "trajectory_jacobian_norm": {"dims": ["point"], "sign": 1,
                                     "units": "mean Frobenius norm of d softmax / d input "
                                              "along the trajectory",
                                     "description": "||J||_F averaged along the polygon"},
    },
    "code": ["metrics/per_run", "metrics/transitions", "metrics/mlp_walk",
             "metrics/mlp_walk_batched", "metrics/trajectories", "metrics/jacobian",
             "metrics/cnn_walk", "metrics/bounds"],
    "cost": 0.5,
    "snapshots": False,
    "measure": "measure",
}


def measure(model, data, settings, job):
    from ..metrics.per_run import translation_metrics

    x, _ = job.test_points(data, settings["n_points"])
    return translation_metrics(model, x, settings["k_sampled"], settings["jacobian_positions"],
                               job.chunk_size, exact_cnn=settings.get("exact_cnn", False))
