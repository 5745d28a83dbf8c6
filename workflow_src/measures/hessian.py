"""The training loss's Hessian (Keskar et al. 2017; Yao et al. 2020, PyHessian): its top
eigenvalue by Lanczos and its trace by Hutchinson, on the first training points with the
labels trained on (metrics/hessian.py)."""

from __future__ import annotations

METRIC = {
    "name": "hessian",
    "order": 70,
    "description": "Top eigenvalue (Lanczos, scipy's eigsh, on Hessian-vector products) and "
                   "trace (Hutchinson) of the training loss's Hessian, on a fixed evaluation "
                   "set of training points with the labels trained on.",
    "section": "hessian",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure the Hessian's top eigenvalue and trace (in the "
                                   "shard's measure job)."},
        "n_points": {"type": "integer", "minimum": 1, "default": 4096, "at_most": ["data.n_train"],
                     "description": "Training points of the evaluation set (the first ones; "
                                    "capped at data.n_train). PyHessian's maintainer advises "
                                    "~4096 or all; 128-point batches vary 10x."},
        "n_iterations": {"type": "integer", "minimum": 1, "default": 100,
                         "description": "Most Hessian-vector products of the Lanczos iteration "
                                        "(a hard budget; the residual check is one more). "
                                        "Stopped by it, the eigenvalue is the best Ritz value "
                                        "so far and hessian_top_converged is 0."},
        "tolerance": {"type": "number", "exclusiveMinimum": 0, "default": 0.0001,
                      "description": "Relative residual ||Hu - lambda u|| / |lambda| the "
                                     "Lanczos iteration must reach to count as converged."},
        "n_probes": {"type": "integer", "minimum": 1, "default": 100,
                     "description": "Rademacher probes of the Hutchinson trace estimate."},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "Seeds the metric's random draws."},
    },
    "needs": ["weights", "training_data"],
    "variables": {
        "hessian_top_eigenvalue": {"dims": [], "sign": 1,
                                   "converged_by": "hessian_top_converged",
                                   "units": "largest eigenvalue of the training loss's "
                                            "Hessian (nats)",
                                   "description": "Lanczos (ARPACK) on Hessian-vector products"},
        "hessian_top_residual": {"dims": [],
                                 "units": "||Hu - lambda u|| / |lambda| at the unit Ritz vector u",
                                 "description": "relative residual of the top eigenpair"},
        "hessian_top_iterations": {"dims": [],
                                   "units": "Hessian-vector products of the Lanczos iteration",
                                   "description": "products the iteration used"},
        "hessian_top_converged": {"dims": [],
                                  "units": "1 ARPACK converged and the residual is within "
                                           "tolerance, 0 not",
                                  "description": "whether the top eigenvalue converged"},
        "hessian_trace": {"dims": [], "sign": 1,
                          "units": "Hutchinson estimate of the Hessian's trace (nats)",
                          "description": "Rademacher probes"},
        "hessian_trace_stderr": {"dims": [], "units": "standard error of hessian_trace",
                                 "description": "std(ddof=1) / sqrt(n_probes)"},
    },
    "code": ["metrics/hessian", "metrics/jacobian"],
    "cost": 5.6,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    from ..metrics.hessian import hessian_metrics

    x, y = job.train_points(data, settings["n_points"])
    return job.without_attrs(hessian_metrics(
        model, x, y, n_iterations=settings["n_iterations"], tolerance=settings["tolerance"],
        n_probes=settings["n_probes"], seed=settings["seed"], chunk_size=job.chunk_size))
