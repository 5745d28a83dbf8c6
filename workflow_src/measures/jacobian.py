"""Novak et al. 2018 (arXiv 1802.08760, §3): the loss, correctness and input-output
Jacobian norms of a network at the first measure.n_points test points
(metrics/jacobian.py)."""

from __future__ import annotations

METRIC = {
    "name": "jacobian",
    "order": 10,
    "description": "Loss, correctness and Jacobian norms at the first measure.n_points test "
                   "points (Novak et al. 2018, §3).",
    "section": None,
    "switch": None,
    "settings": {
        "n_points": {"from": "measure.n_points", "at_most": ["data.n_test"]},
    },
    "needs": ["weights", "test_points"],
    "variables": {
        "loss": {"dims": ["point"], "units": "nats (cross-entropy)",
                 "description": "cross-entropy of the test point's label"},
        "correct": {"dims": ["point"], "units": "1 correct, 0 misclassified",
                    "description": "whether the network classifies the test point correctly"},
        "jacobian_norm": {"dims": ["point"], "sign": 1,
                          "units": "Frobenius norm of d softmax / d input (input in pixel/255 "
                                   "units)",
                          "description": "||d softmax / d x||_F at the test point"},
        "logit_jacobian_norm": {"dims": ["point"], "sign": 1,
                                "units": "Frobenius norm of d logits / d input (input in "
                                         "pixel/255 units)",
                                "description": "||d logits / d x||_F at the test point"},
    },
    "code": ["metrics/jacobian"],
    "cost": 0.05,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    import numpy as np
    import xarray as xr

    from ..metrics.jacobian import pointwise_metrics

    n_points = settings["n_points"]
    x, y = job.test_points(data, n_points)
    values = pointwise_metrics(model, x, y, job.chunk_size)
    return xr.Dataset({name: ("point", array) for name, array in values.items()},
                      coords={"point": np.arange(n_points),
                              "test_index": ("point", data["test_index"].values[:n_points])})
