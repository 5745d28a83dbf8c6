"""Novak et al. 2018 (§4.1): the Jacobian-norm profile and exact transitions along ellipses
through three anchors of each kind, on the trained and the initial weights
(metrics/per_run.py, metrics/trajectories.py)."""

from __future__ import annotations

METRIC = {
    "name": "ellipses",
    "order": 30,
    "description": "Ellipses through three anchors, per kind random / different_class / "
                   "same_class (Novak §4.1).",
    "section": "ellipses",
    "switch": "per_kind",
    "settings": {
        "per_kind": {"type": "integer", "minimum": 0, "default": 8,
                     "description": "Ellipses of each kind per network (0 disables)."},
        "n_positions": {"type": "integer", "minimum": 3, "default": 256,
                        "description": "Equally spaced angles at which the Jacobian norm is "
                                       "profiled."},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "Seeds the choice of anchor points."},
        "at_initialization": {"type": "boolean", "default": True,
                              "description": "Also measure the same ellipses on each "
                                             "network's initial weights (ellipse_*_init), the "
                                             "control for what training changed."},
    },
    "needs": ["weights", "initial_weights", "training_data"],
    "variables": {
        "ellipse_jacobian_norm": {"dims": ["ellipse", "position"],
                                  "units": "Frobenius norm of d softmax / d input (input in "
                                           "pixel/255 units)",
                                  "description": "||J||_F at each angle of each ellipse"},
        "ellipse_transitions": {"dims": ["ellipse"],
                                "units": "count of breakpoint crossings around the ellipse",
                                "description": "exact transitions around each ellipse"},
        "ellipse_jacobian_norm_init": {"dims": ["ellipse", "position"],
                                       "units": "as ellipse_jacobian_norm, at the network's "
                                                "initial weights",
                                       "description": "the same at the initial weights"},
        "ellipse_transitions_init": {"dims": ["ellipse"],
                                     "units": "as ellipse_transitions, at the network's "
                                              "initial weights",
                                     "description": "the same at the initial weights"},
    },
    "code": ["metrics/per_run", "metrics/transitions", "metrics/mlp_walk",
             "metrics/mlp_walk_batched", "metrics/trajectories", "metrics/jacobian",
             "metrics/cnn_walk", "metrics/bounds"],
    "cost": 1.0,
    "snapshots": False,
    "measure": "measure",
}


def measure(model, data, settings, job):
    from ..metrics.per_run import ellipse_metrics

    train_x, _ = job.train_points(data)  # (N, C, H, W)
    # Anchors come from the *clean* classes: "same class" means the same true class.
    train_y = job.tensor(data["y_train_clean"].values)
    initial = job.initial_model(model) if settings["at_initialization"] else None
    return ellipse_metrics(model, train_x, train_y, settings["per_kind"],
                           settings["n_positions"], settings["seed"], job.chunk_size,
                           initial_model=initial)
