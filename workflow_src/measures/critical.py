"""Arpit et al. 2017 (arXiv 1706.05394, Algorithm 1, LASS): the critical sample ratio at test
points (metrics/critical.py). The settings are in grey levels; the network sees pixel/255."""

from __future__ import annotations

METRIC = {
    "name": "critical",
    "order": 60,
    "description": "Critical sample ratio at test points (Arpit et al. 2017, arXiv 1706.05394, "
                   "Algorithm 1 LASS). Step sizes and box radius are in grey levels (1 = 1/255 "
                   "of the network's input range).",
    "section": "critical",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure the critical sample ratio (in the shard's measure "
                                   "job)."},
        "n_points": {"type": "integer", "minimum": 1, "default": 100,
                     "at_most": ["measure.n_points", "data.n_test"],
                     "description": "Test points searched (the first ones; capped at "
                                    "measure.n_points)."},
        "alpha": {"type": "number", "exclusiveMinimum": 0, "default": 0.25,
                  "description": "Step of the sign-gradient ascent, in grey levels (Arpit's "
                                 "code: 0.25)."},
        "beta": {"type": "number", "minimum": 0, "default": 0.2,
                 "description": "Standard deviation of the Langevin noise per step, in grey "
                                "levels (Arpit's code: 0.2)."},
        "radius": {"type": "number", "exclusiveMinimum": 0, "default": 0.3,
                   "description": "Half-width of the box around each point, in grey levels "
                                  "(Arpit's code: 0.3)."},
        "max_iterations": {"type": "integer", "minimum": 1, "default": 100,
                           "description": "Ascent steps per point before it counts as not "
                                          "critical (Arpit's code: 100)."},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "Seeds the metric's random draws."},
    },
    "needs": ["weights", "test_points"],
    "variables": {
        "critical": {"dims": ["point"],
                     "units": "1 critical (LASS changed the class inside the box), 0 not",
                     "description": "whether LASS found another class in the point's box"},
        "critical_steps": {"dims": ["point"],
                           "units": "ascent steps until the class changed (NaN if it did not)",
                           "description": "steps of the search"},
        "critical_sample_ratio": {"dims": [], "sign": 1,
                                  "units": "fraction of searched test points that are critical",
                                  "description": "Arpit's critical sample ratio"},
    },
    "code": ["metrics/critical"],
    "cost": 0.4,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    import numpy as np

    from ..metrics.critical import critical_sample_metrics

    x, _ = job.test_points(data, settings["n_points"])
    out = critical_sample_metrics(model, x, alpha=settings["alpha"] / 255.0,
                                  beta=settings["beta"] / 255.0,
                                  radius=settings["radius"] / 255.0,
                                  max_iterations=settings["max_iterations"],
                                  seed=settings["seed"], chunk_size=job.chunk_size)
    return job.without_attrs(out).assign_coords(point=np.arange(x.shape[0]))
