"""Keskar et al. 2017 (arXiv 1609.04836, §2.2.2): the sharpness phi(epsilon, A) of the
training loss in the full space and a random subspace, solved with L-BFGS-B
(metrics/sharpness.py); one scalar variable per box size."""

from __future__ import annotations

METRIC = {
    "name": "sharpness",
    "order": 80,
    "description": "Keskar et al. 2017 (arXiv 1609.04836, §2.2.2) sharpness phi(epsilon, A) of "
                   "the training loss, in the full space (A = I) and a random subspace, the "
                   "box solved with L-BFGS-B.",
    "section": "sharpness",
    "switch": "enabled",
    "settings": {
        "enabled": {"type": "boolean", "default": False, "hash": False,
                    "description": "Measure Keskar's sharpness (in the shard's measure job)."},
        "epsilons": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                     "minItems": 1, "default": [0.001, 0.0005],
                     "description": "Box sizes epsilon (the paper: 1e-3 and 5e-4)."},
        "subspace_dim": {"type": "integer", "minimum": 1, "default": 100,
                         "description": "Dimension p of the random subspace A (the paper: "
                                        "100)."},
        "max_iterations": {"type": "integer", "minimum": 1, "default": 10,
                           "description": "L-BFGS-B iterations per box (the paper: 10)."},
        # Without restarts (the default), the single run from z = 0 it always was: the
        # setting enters the store's name only when used, so earlier stores keep theirs.
        "restarts": {"type": "integer", "minimum": 0, "default": 0, "hash": {"omit": 0},
                     "description": "More L-BFGS-B runs per box, each from a seeded uniform "
                                    "point in it (0, the paper's single run from z = 0, is "
                                    "the default); the sharpness is the best over all runs, "
                                    "and sharpness_<full|subspace>_restart_gain how much it "
                                    "beat the run from z = 0."},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "Seeds the metric's random draws."},
    },
    "needs": ["weights", "training_data"],
    # <A> is full or subspace, <ε> the box size as epsilon_name writes it (eps0p001).
    "variables": {
        "sharpness_full_eps*": {"dims": [], "sign": 1,
                                "converged_by": "sharpness_full_converged_eps*",
                                "units": "Keskar phi: 100 (max loss in the box - loss) / "
                                         "(1 + loss)",
                                "description": "phi(epsilon, I)"},
        "sharpness_subspace_eps*": {"dims": [], "sign": 1,
                                    "converged_by": "sharpness_subspace_converged_eps*",
                                    "units": "Keskar phi: 100 (max loss in the box - loss) / "
                                             "(1 + loss)",
                                    "description": "phi(epsilon, A), A random n x p"},
        "sharpness_full_evaluations_eps*": {
            "dims": [], "units": "L-BFGS-B (loss, gradient) evaluations",
            "description": "evaluations over all runs"},
        "sharpness_subspace_evaluations_eps*": {
            "dims": [], "units": "L-BFGS-B (loss, gradient) evaluations",
            "description": "evaluations over all runs"},
        "sharpness_full_iterations_eps*": {
            "dims": [], "units": "L-BFGS-B iterations of the run that found phi",
            "description": "iterations of that run"},
        "sharpness_subspace_iterations_eps*": {
            "dims": [], "units": "L-BFGS-B iterations of the run that found phi",
            "description": "iterations of that run"},
        "sharpness_full_status_eps*": {
            "dims": [], "units": "L-BFGS-B stop of that run: 0 its convergence test, 1 "
                                 "iteration budget, 2 other",
            "description": "how that run stopped"},
        "sharpness_subspace_status_eps*": {
            "dims": [], "units": "L-BFGS-B stop of that run: 0 its convergence test, 1 "
                                 "iteration budget, 2 other",
            "description": "how that run stopped"},
        "sharpness_full_converged_eps*": {
            "dims": [], "units": "1 that run stopped on L-BFGS-B's convergence test, 0 not",
            "description": "status 0"},
        "sharpness_subspace_converged_eps*": {
            "dims": [], "units": "1 that run stopped on L-BFGS-B's convergence test, 0 not",
            "description": "status 0"},
        "sharpness_full_restart_gain_eps*": {
            "dims": [], "units": "phi minus the phi of the run from z = 0 (Keskar phi units)",
            "description": "what the restarts added"},
        "sharpness_subspace_restart_gain_eps*": {
            "dims": [], "units": "phi minus the phi of the run from z = 0 (Keskar phi units)",
            "description": "what the restarts added"},
    },
    "code": ["metrics/sharpness", "metrics/jacobian"],
    "cost": 5.7,
    "snapshots": True,
    "measure": "measure",
}


def epsilon_name(epsilon: float) -> str:
    """The suffix naming one box size as an identifier (the statistics' formulas need
    one): 0.001 -> 'eps0p001', 0.0005 -> 'eps0p0005', 1e-05 -> 'eps1em05'."""
    return "eps" + f"{epsilon:g}".replace(".", "p").replace("-", "m").replace("+", "")


def measure(model, data, settings, job):
    """One scalar variable per box size (sharpness_full_eps0p001, ...), so that each is an
    indicator of its own in the network table."""
    import xarray as xr

    from ..metrics.sharpness import sharpness_metrics

    x, y = job.train_points(data)
    out = sharpness_metrics(model, x, y, epsilons=tuple(settings["epsilons"]),
                            subspace_dim=settings["subspace_dim"],
                            max_iterations=settings["max_iterations"], seed=settings["seed"],
                            chunk_size=job.chunk_size, restarts=settings.get("restarts", 0))
    flat = {}
    for name, da in out.data_vars.items():
        if "epsilon" not in da.dims:
            flat[name] = da
            continue
        for epsilon in da["epsilon"].values:
            flat[f"{name}_{epsilon_name(float(epsilon))}"] = da.sel(epsilon=epsilon, drop=True)
    return job.without_attrs(xr.Dataset(flat))
