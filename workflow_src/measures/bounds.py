"""Novak et al. 2018 (appendix): the measured ||d softmax_y / d x||_2 at each test point
against the bounds from its loss (metrics/bounds.py, metrics/per_run.py); computed from the
Jacobian's per-point loss and logit-Jacobian norm of the same network."""

from __future__ import annotations

METRIC = {
    "name": "bounds",
    "order": 40,
    "description": "Per-point loss bounds on the true class's Jacobian norm (Novak et al. "
                   "2018, appendix).",
    "section": None,
    "switch": None,
    "settings": {
        "n_points": {"from": "measure.n_points", "at_most": ["data.n_test"]},
    },
    "needs": ["weights", "test_points", "metric:jacobian"],
    "variables": {
        "jacobian_norm_true_class": {"dims": ["point"], "sign": 1,
                                     "units": "2-norm of d softmax_y / d input (input in "
                                              "pixel/255 units)",
                                     "description": "||d softmax_y / d x||_2, y the label"},
        "bound_lower": {"dims": ["point"], "units": "lower bound on jacobian_norm_true_class",
                        "description": "lower bound from the loss"},
        "bound_upper": {"dims": ["point"], "units": "upper bound",
                        "description": "upper bound from the loss"},
        "bound_approx": {"dims": ["point"], "units": "approximation of jacobian_norm",
                         "description": "||J||_F with the mass spread evenly"},
        "within_bounds": {"dims": ["point"], "units": "1 inside, 0 outside",
                          "description": "whether the measured norm lies within the bounds"},
        "bound_M": {"dims": [], "sign": 1,
                    "units": "mean squared norm of one logit's input gradient",
                    "description": "M = mean ||df/dx||_F^2 / n_classes"},
        "n_classes": {"dims": [], "units": "classes of the dataset",
                      "description": "number of classes"},
    },
    "code": ["metrics/bounds", "metrics/per_run", "metrics/jacobian"],
    "cost": 0.05,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    """Needs the member's Jacobian result (job.measured["jacobian"])."""
    from ..metrics.per_run import bound_metrics

    x, y = job.test_points(data, settings["n_points"])
    jac = job.measured["jacobian"]
    return bound_metrics(model, x, y, jac["loss"].values, jac["logit_jacobian_norm"].values,
                         int(data.attrs["n_classes"]), job.chunk_size)
