"""PAC-Bayes flatness and sharpness (Jiang, Neyshabur, Mobahi, Krishnan, Bengio 2020,
"Fantastic Generalization Measures and Where to Find Them", arXiv 1912.02178: the
sharpness-based measures pacbayes.sharpness, pacbayes.flatness, pacbayes.mag.sharpness and
pacbayes.mag.flatness, found by the search of its Algorithms 1 and 2; equation numbers are
not cited here, the definitions below are this project's).

With acc(w) the training accuracy (labels as trained on) at the trained weights w ∈ R^n and
ε_mag = ``magnitude_eps`` (1e-3):

    σ′       the largest σ with |E_u acc(w + u) − acc(w)| ≤ d = ``target_deviation`` (0.1),
             u ~ N(0, σ² I)                                   (σ is a standard deviation)
    σ′_mag   the same with u_i ~ N(0, σ² w_i² + ε_mag²) independently
    α′       the largest α with |acc(w + u*) − acc(w)| ≤ d, u* the worst perturbation in the
             box |u_i| ≤ α found by projected gradient ASCENT of the training loss
    α′_mag   the same in the box |u_i| ≤ α |w_i| + ε_mag

    pac_bayes_flatness       = 1 / σ′²            pac_bayes_mag_flatness  = 1 / σ′_mag²
    pac_bayes_sharpness      = 1 / α′²            pac_bayes_mag_sharpness = 1 / α′_mag²

Choices (all recorded in the Dataset's attrs):

* Search (``bisect_scale``). The scale is searched on [0, s_max], s_max = ``search_max``
  (2.0). First the deviation at s_max is evaluated: if it is within ``tolerance`` (0.01) of
  the target, s_max is returned; if it is below target − tolerance, the target is not
  reached within the interval and s_max is returned with ``saturated`` set (the measure is
  then an upper bound 1/s_max²). Otherwise up to ``bisection_steps`` (15) midpoints of the
  bracket [lo, hi] = [0, s_max] are evaluated: a midpoint with |deviation − target| ≤
  tolerance is returned at once (``converged``); a deviation above the target moves hi
  down, one below moves lo up. If the budget ends first, the midpoint of the final bracket
  (width s_max 2^-steps) is returned, not converged. ``steps`` counts the midpoints
  evaluated (the check at s_max is one more evaluation, always made).
* Expectation over noise. The mean accuracy over ``n_draws`` (10) draws. Common random
  numbers: every evaluation of the deviation restarts its own torch.Generator from the
  same seed, so the draws are z_k ~ N(0, I) scaled by the standard deviation (σ, or
  sqrt(σ² w_i² + ε²)): the estimated deviation is then a deterministic function of σ,
  and the search is deterministic for a seed.
* Worst case in the box (``projected_ascent``). From a uniform random start in the box
  (again restarted from the same seed at every α), ``ascent_steps`` (20) steps of
  projected sign-gradient ascent of the mean cross-entropy, u ← clip(u + η h ⊙ sign ∇L,
  −h, h), h the box half-widths and η = 2.5 / ascent_steps (the PGD step rule of Madry et
  al. 2018: the iterate can cross the whole box, width 2h, within the budget). The point
  kept is the evaluated one with the largest loss (the start included, so the loss never
  decreases); the accuracy is measured there.
* The deviation is the absolute change |acc(w + u) − acc(w)| in both searches, as in
  Jiang's algorithms; it is a fraction in [0, 1].

Precision: a float64 copy of the network (``sharpness.TrainingLoss``, whose loss is
``jacobian.cross_entropy``), flat
parameter vector in ``model.parameters()`` order; loss and accuracy over chunks of
``chunk_size`` points, so neither depends on the chunking. The caller's network is left as
it is. Every search starts from the trained weights (``TrainingLoss.weights``), and every
evaluation puts them back after it, so the four searches do not depend on their order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import xarray as xr

from .sharpness import TrainingLoss

PAPER = ("Jiang, Neyshabur, Mobahi, Krishnan, Bengio 2020, Fantastic Generalization "
         "Measures and Where to Find Them, arXiv 1912.02178")

# +1: a larger value is expected to mean a larger generalization gap; -1: a smaller gap.
EXPECTED_SIGN: dict[str, int] = {
    "pac_bayes_flatness": +1,
    "pac_bayes_mag_flatness": +1,
    "pac_bayes_sharpness": +1,
    "pac_bayes_mag_sharpness": +1,
    "pac_bayes_sigma": -1,  # a flatter minimum tolerates more noise
    "pac_bayes_mag_sigma": -1,
    "pac_bayes_alpha": -1,
    "pac_bayes_mag_alpha": -1,
}

_ATTRS: dict[str, dict[str, str]] = {
    "pac_bayes_flatness": {"definition": "1 / sigma'^2", "reference": f"{PAPER}, pacbayes.flatness, "
                           "Algorithm 1"},
    "pac_bayes_mag_flatness": {"definition": "1 / sigma'_mag^2", "reference": f"{PAPER}, "
                               "pacbayes.mag.flatness, Algorithm 1"},
    "pac_bayes_sharpness": {"definition": "1 / alpha'^2", "reference": f"{PAPER}, pacbayes.sharpness, "
                            "Algorithm 2"},
    "pac_bayes_mag_sharpness": {"definition": "1 / alpha'_mag^2", "reference": f"{PAPER}, "
                                "pacbayes.mag.sharpness, Algorithm 2"},
    "pac_bayes_sigma": {"definition": "largest sigma: |E acc(w+u) - acc(w)| <= target, "
                        "u ~ N(0, sigma^2 I)", "reference": f"{PAPER}, Algorithm 1"},
    "pac_bayes_mag_sigma": {"definition": "largest sigma: |E acc(w+u) - acc(w)| <= target, "
                            "u_i ~ N(0, sigma^2 w_i^2 + eps^2)",
                            "reference": f"{PAPER}, Algorithm 1"},
    "pac_bayes_alpha": {"definition": "largest alpha: |acc(w+u*) - acc(w)| <= target, u* the "
                        "loss ascent in |u_i| <= alpha", "reference": f"{PAPER}, Algorithm 2"},
    "pac_bayes_mag_alpha": {"definition": "largest alpha: |acc(w+u*) - acc(w)| <= target, u* "
                            "the loss ascent in |u_i| <= alpha |w_i| + eps",
                            "reference": f"{PAPER}, Algorithm 2"},
}

# Indicator -> the variable that says (1.0 / 0.0) whether its search converged; kept in step
# with aggregate.CONVERGED_BY, which marks the indicator in metrics.zarr for the summary.
CONVERGED_BY = {"pac_bayes_flatness": "pac_bayes_sigma_converged",
                "pac_bayes_mag_flatness": "pac_bayes_mag_sigma_converged",
                "pac_bayes_sharpness": "pac_bayes_alpha_converged",
                "pac_bayes_mag_sharpness": "pac_bayes_mag_alpha_converged"}
# What each search's result says besides its scale, as a variable <scale>_<flag> per network.
FLAGS = {"converged": "1 if |deviation(scale) - target| <= tolerance, else 0",
         "saturated": "1 if the target was not reached within [0, search_max] (the scale is "
                      "search_max, a lower bound), else 0",
         "deviation_at_scale": "the deviation at the scale (NaN if the bisection budget "
                               "ended: not evaluated)"}

# Sub-streams of the seed, one per search (seed * 4 + stream is injective).
_STREAMS = {"sigma": 0, "mag_sigma": 1, "alpha": 2, "mag_alpha": 3}


# ----------------------------------------------------------------------------- search


@dataclass(frozen=True)
class BisectionResult:
    scale: float  # the σ′ or α′ found
    deviation: float  # deviation at ``scale`` (NaN if the budget ended: not evaluated)
    steps: int  # bracket midpoints evaluated (0 if s_max was accepted or saturated)
    evaluations: int  # deviation evaluations in all: steps + 1 (the check at s_max)
    converged: bool  # |deviation(scale) − target| ≤ tolerance
    saturated: bool  # deviation(s_max) < target − tolerance: scale = s_max, a lower bound


def bisect_scale(deviation: Callable[[float], float], target: float = 0.1,
                 tolerance: float = 0.01, search_max: float = 2.0, steps: int = 15
                 ) -> BisectionResult:
    """Largest scale s in [0, search_max] with deviation(s) ≈ target, deviation increasing
    (in expectation) in s; the rule of the module docstring."""
    if not search_max > 0 or tolerance < 0 or steps < 0:
        raise ValueError(f"need search_max > 0, tolerance >= 0, steps >= 0; got {search_max}, "
                         f"{tolerance}, {steps}")
    d_end = float(deviation(search_max))
    if abs(d_end - target) <= tolerance:
        return BisectionResult(float(search_max), d_end, 0, 1, True, False)
    if d_end < target:
        return BisectionResult(float(search_max), d_end, 0, 1, False, True)
    lo, hi = 0.0, float(search_max)
    for k in range(1, steps + 1):
        mid = 0.5 * (lo + hi)
        d = float(deviation(mid))
        if abs(d - target) <= tolerance:
            return BisectionResult(mid, d, k, k + 1, True, False)
        if d > target:
            hi = mid
        else:
            lo = mid
    return BisectionResult(0.5 * (lo + hi), math.nan, steps, steps + 1, False, False)


# ----------------------------------------------------------------------------- noise


def noise_std(w: torch.Tensor, sigma: float, magnitude_eps: float | None = None
              ) -> torch.Tensor:
    """Per-coordinate standard deviation: σ (plain) or sqrt(σ² w_i² + ε²) (magnitude-aware).

    σ is a standard deviation: the draws are std · N(0, 1), never σ² · N(0, 1).
    """
    if magnitude_eps is None:
        return torch.full_like(w, float(sigma))
    return torch.sqrt(float(sigma) ** 2 * w * w + float(magnitude_eps) ** 2)


def gaussian_perturbation(w: torch.Tensor, sigma: float, generator: torch.Generator,
                          magnitude_eps: float | None = None) -> torch.Tensor:
    """One draw u with u_i ~ N(0, noise_std(w, σ)_i²), from ``generator``."""
    z = torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device)
    return z * noise_std(w, sigma, magnitude_eps)


def box_half_widths(w: torch.Tensor, alpha: float, magnitude_eps: float | None = None
                    ) -> torch.Tensor:
    """α (plain) or α |w_i| + ε (magnitude-aware) for every coordinate."""
    if magnitude_eps is None:
        return torch.full_like(w, float(alpha))
    return float(alpha) * w.abs() + float(magnitude_eps)


# ----------------------------------------------------------------------------- ascent


@dataclass(frozen=True)
class AscentResult:
    u: torch.Tensor  # the evaluated point with the largest value (in the box)
    value: float  # fun at u, ≥ start_value
    start_value: float
    values: tuple[float, ...]  # fun at every evaluated iterate, start first


def projected_ascent(fun: Callable[[torch.Tensor], "tuple[float, torch.Tensor]"],
                     half_widths: torch.Tensor, start: torch.Tensor, steps: int = 20
                     ) -> AscentResult:
    """Projected sign-gradient ascent of fun(u) -> (value, ∇) in |u_i| ≤ half_widths_i.

    u ← clip(u + (2.5 / steps) h ⊙ sign ∇fun(u), −h, h) for ``steps`` steps from ``start``
    (clipped onto the box); steps + 1 evaluations. Returns the best evaluated point.
    """
    h = torch.as_tensor(half_widths, dtype=torch.float64)
    if (h < 0).any() or not torch.isfinite(h).all():
        raise ValueError("half-widths must be finite and non-negative")
    step = (2.5 / steps if steps > 0 else 0.0) * h
    u = torch.maximum(torch.minimum(torch.as_tensor(start, dtype=torch.float64).to(h.device),
                                    h), -h)
    values: list[float] = []
    best_u, best = u, -math.inf
    for k in range(steps + 1):
        value, grad = fun(u)
        value = float(value)
        values.append(value)
        if value > best:
            best_u, best = u, value
        if k == steps:
            break
        u = torch.maximum(torch.minimum(u + step * torch.sign(grad), h), -h)
    return AscentResult(best_u.clone(), best, values[0], tuple(values))


# ----------------------------------------------------------------------------- network


class TrainingObjective(TrainingLoss):
    """``TrainingLoss`` (mean cross-entropy and gradient at a flat float64 w) plus the
    training accuracy at w, both over chunks of ``chunk_size`` points."""

    @torch.no_grad()
    def accuracy(self, w: torch.Tensor) -> float:
        correct = 0
        with self.evaluated_at(w) as model:
            for start in range(0, self.n_points, self.chunk_size):
                logits = model(self.x[start:start + self.chunk_size])
                correct += int((logits.argmax(dim=1)
                                == self.y[start:start + self.chunk_size]).sum())
        return correct / self.n_points


def _generator(device: torch.device, seed: int, stream: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) * 4 + _STREAMS[stream])


def sigma_deviation(objective: TrainingObjective, n_draws: int, seed: int,
                    magnitude_eps: float | None = None) -> Callable[[float], float]:
    """σ ↦ |mean over n_draws of acc(w + u) − acc(w)|, u ~ N(0, noise_std²), common draws."""
    w = objective.weights()
    base = objective.accuracy(w)
    stream = "sigma" if magnitude_eps is None else "mag_sigma"

    def deviation(sigma: float) -> float:
        gen = _generator(w.device, seed, stream)
        accs = [objective.accuracy(w + gaussian_perturbation(w, sigma, gen, magnitude_eps))
                for _ in range(n_draws)]
        return abs(float(np.mean(accs)) - base)

    return deviation


def alpha_deviation(objective: TrainingObjective, ascent_steps: int, seed: int,
                    magnitude_eps: float | None = None) -> Callable[[float], float]:
    """α ↦ |acc(w + u*) − acc(w)|, u* the projected loss ascent in the box of half-width α."""
    w = objective.weights()
    base = objective.accuracy(w)
    stream = "alpha" if magnitude_eps is None else "mag_alpha"

    def deviation(alpha: float) -> float:
        h = box_half_widths(w, alpha, magnitude_eps)
        gen = _generator(w.device, seed, stream)
        start = (2 * torch.rand(w.shape, generator=gen, dtype=w.dtype, device=w.device) - 1) * h
        found = projected_ascent(lambda u: objective(w + u), h, start, ascent_steps)
        return abs(objective.accuracy(w + found.u) - base)

    return deviation


def pac_bayes_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                      target_deviation: float = 0.1, tolerance: float = 0.01,
                      bisection_steps: int = 15, n_draws: int = 10, ascent_steps: int = 20,
                      magnitude_eps: float = 1e-3, search_max: float = 2.0, seed: int = 0,
                      chunk_size: int = 4096) -> xr.Dataset:
    """The four PAC-Bayes measures of the module docstring, with σ′, α′, their search steps
    and ``FLAGS`` (pac_bayes_<sigma|mag_sigma|alpha|mag_alpha>_<flag>), as scalar float64
    variables (the flags also as attrs of the measure and the scale). x, y: the training set,
    labels as trained on."""
    objective = TrainingObjective(model, x, y, chunk_size)
    w = objective.weights()
    search = dict(target=target_deviation, tolerance=tolerance, search_max=search_max,
                  steps=bisection_steps)
    found = {
        "sigma": bisect_scale(sigma_deviation(objective, n_draws, seed), **search),
        "mag_sigma": bisect_scale(sigma_deviation(objective, n_draws, seed, magnitude_eps),
                                  **search),
        "alpha": bisect_scale(alpha_deviation(objective, ascent_steps, seed), **search),
        "mag_alpha": bisect_scale(alpha_deviation(objective, ascent_steps, seed,
                                                  magnitude_eps), **search),
    }
    measure = {"sigma": "flatness", "mag_sigma": "mag_flatness", "alpha": "sharpness",
               "mag_alpha": "mag_sharpness"}
    variables = {}
    saturated = []
    for key, result in found.items():
        flags = {"converged": int(result.converged), "saturated": int(result.saturated),
                 "deviation_at_scale": float(result.deviation)}
        m = f"pac_bayes_{measure[key]}"
        s = f"pac_bayes_{key}"
        variables[m] = xr.DataArray(np.float64(1.0 / result.scale ** 2),
                                    attrs={**_ATTRS[m], **flags, "expected_sign": EXPECTED_SIGN[m],
                                           "converged_by": CONVERGED_BY[m]})
        variables[s] = xr.DataArray(np.float64(result.scale),
                                    attrs={**_ATTRS[s], **flags, "expected_sign": EXPECTED_SIGN[s]})
        variables[f"{s}_steps"] = xr.DataArray(
            np.float64(result.steps),
            attrs={"definition": f"bisection midpoints evaluated for {s} (plus 1 evaluation "
                                 "at search_max)"})
        for flag, definition in FLAGS.items():  # per network, so they aggregate
            variables[f"{s}_{flag}"] = xr.DataArray(np.float64(flags[flag]),
                                                    attrs={"definition": definition})
        if result.saturated:
            saturated.append(s)
    attrs = {
        "paper": PAPER,
        "equation": "sigma' / alpha' by bisection on the training-accuracy deviation "
                    "(Algorithms 1, 2); measures 1/sigma'^2, 1/alpha'^2",
        "accuracy_labels": "training labels as trained on (possibly corrupted)",
        "deviation": "|acc(w + u) - acc(w)| (fraction); for sigma the mean over draws",
        "target_deviation": float(target_deviation),
        "tolerance": float(tolerance),
        "search_interval": f"[0, {float(search_max)}]",
        "bisection_steps": int(bisection_steps),
        "bisection_rule": "check search_max first (accept if within tolerance, saturated if "
                          "below); then accept the first bracket midpoint with "
                          "|deviation - target| <= tolerance, else the final bracket midpoint",
        "n_draws": int(n_draws),
        "noise": "u = std * N(0, I), std = sigma (plain) or sqrt(sigma^2 w^2 + eps^2) (mag); "
                 "common random numbers (generator reseeded at every evaluation)",
        "ascent": f"{int(ascent_steps)} steps projected sign-gradient ascent of the mean "
                  f"cross-entropy, step 2.5 h / steps, uniform random start in the box, best "
                  f"loss kept",
        "ascent_steps": int(ascent_steps),
        "magnitude_eps": float(magnitude_eps),
        "seed": int(seed),
        "n_parameters": objective.n_parameters,
        "n_points": objective.n_points,
        "accuracy_at_weights": objective.accuracy(w),
        "precision": "float64 copy of the network",
    }
    if saturated:
        attrs["note"] = (f"target deviation not reached within [0, {search_max}] for "
                         f"{', '.join(saturated)}: the scale is search_max, a lower bound")
    return xr.Dataset(variables, attrs=attrs)
