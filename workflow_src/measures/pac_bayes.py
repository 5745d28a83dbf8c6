"""Jiang et al. 2020 (arXiv 1912.02178, Algorithms 1 and 2): PAC-Bayes flatness and
sharpness, plain and magnitude-aware, by bisection on the change of training accuracy
(metrics/pac_bayes.py). The searches perturb the network's weights: the measuring job gives
each metric its own copy of the network (measure_shard), so nothing leaks to the next."""

from __future__ import annotations

METRIC = {
    "name": "pac_bayes",
    "order": 90,
    "description": "PAC-Bayes flatness (sigma', weight noise) and sharpness (alpha', worst case "
                   "in a box), plain and magnitude-aware (Jiang et al. 2020, Algorithms 1 and "
                   "2), by bisection on the change of training accuracy.",
    "section": "pac_bayes",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure the four PAC-Bayes measures (in the shard's "
                                   "measure job)."},
        "target_deviation": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                             "default": 0.1,
                             "description": "Change of training accuracy (fraction) the scale "
                                            "is searched for (Jiang: 0.1)."},
        "tolerance": {"type": "number", "exclusiveMinimum": 0, "default": 0.01,
                      "description": "Accepted distance from target_deviation (fraction)."},
        "bisection_steps": {"type": "integer", "minimum": 1, "default": 15,
                            "description": "Most bisection midpoints per search."},
        "n_draws": {"type": "integer", "minimum": 1, "default": 10,
                    "description": "Monte Carlo weight-noise draws per evaluation of sigma."},
        "ascent_steps": {"type": "integer", "minimum": 1, "default": 20,
                         "description": "Projected sign-gradient ascent steps per evaluation "
                                        "of alpha."},
        "magnitude_eps": {"type": "number", "minimum": 0, "default": 0.001,
                          "description": "epsilon of the magnitude-aware noise sqrt(sigma^2 "
                                         "w^2 + epsilon^2)."},
        "search_max": {"type": "number", "exclusiveMinimum": 0, "default": 2.0,
                       "description": "Upper end of the searched interval of sigma and alpha."},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "Seeds the metric's random draws."},
    },
    "needs": ["weights", "training_data"],
    "variables": {
        "pac_bayes_flatness": {"dims": [], "sign": 1, "units": "1 / sigma'^2 (weight noise)",
                               "converged_by": "pac_bayes_sigma_converged",
                               "description": "pacbayes.flatness"},
        "pac_bayes_mag_flatness": {"dims": [], "sign": 1,
                                   "units": "1 / sigma'^2 (magnitude-aware weight noise)",
                                   "converged_by": "pac_bayes_mag_sigma_converged",
                                   "description": "pacbayes.mag.flatness"},
        "pac_bayes_sharpness": {"dims": [], "sign": 1,
                                "units": "1 / alpha'^2 (worst case in a box)",
                                "converged_by": "pac_bayes_alpha_converged",
                                "description": "pacbayes.sharpness"},
        "pac_bayes_mag_sharpness": {"dims": [], "sign": 1,
                                    "units": "1 / alpha'^2 (magnitude-aware box)",
                                    "converged_by": "pac_bayes_mag_alpha_converged",
                                    "description": "pacbayes.mag.sharpness"},
        # The scales themselves: the same rankings reversed, kept as values, not scored.
        "pac_bayes_sigma": {"dims": [], "description": "sigma' (weight noise)"},
        "pac_bayes_mag_sigma": {"dims": [], "description": "sigma'_mag"},
        "pac_bayes_alpha": {"dims": [], "description": "alpha' (box)"},
        "pac_bayes_mag_alpha": {"dims": [], "description": "alpha'_mag"},
        # Each search's _steps, _converged, _saturated and _deviation_at_scale.
        "pac_bayes_sigma_*": {"dims": [], "description": "the search of sigma'"},
        "pac_bayes_mag_sigma_*": {"dims": [], "description": "the search of sigma'_mag"},
        "pac_bayes_alpha_*": {"dims": [], "description": "the search of alpha'"},
        "pac_bayes_mag_alpha_*": {"dims": [], "description": "the search of alpha'_mag"},
    },
    "code": ["metrics/pac_bayes", "metrics/sharpness", "metrics/jacobian"],
    "cost": 25.0,
    "snapshots": True,
    "measure": "measure",
}


def measure(model, data, settings, job):
    from ..metrics.pac_bayes import pac_bayes_metrics

    x, y = job.train_points(data)
    options = {k: v for k, v in settings.items() if k != "seed"}
    return job.without_attrs(pac_bayes_metrics(model, x, y, seed=settings["seed"],
                                               chunk_size=job.chunk_size, **options))
