"""Critical sample ratio (Arpit et al. 2017, "A Closer Look at Memorization in Deep Networks",
arXiv 1706.05394, §4.1 and Algorithm 1, "Langevin Adversarial Sample Search", LASS).

A point x with predicted class ŷ(x) = argmax_k f_k(x) is *critical* at radius r if some x̂
in the ℓ∞ box ‖x̂ − x‖_∞ ≤ r is classified differently; the critical sample ratio (CSR) is
the fraction of critical points. LASS searches the box from x̂₀ = x:

    x̂_t = clip_box( x̂_{t−1} + α · sign(∇_x̂ ℓ(f(x̂_{t−1}), ŷ(x))) + β · η_t ),  η_t ~ N(0, I)

for t = 1 … max_iterations, ℓ the cross-entropy of the *original* prediction ŷ(x) (ascent
on it: away from ŷ), and stops at the first t with argmax f(x̂_t) ≠ ŷ(x). The point is then
critical with ``critical_steps`` = t. LASS only ever reports a point whose class it has seen
change at a point inside the box, so it can miss critical points (CSR is a lower bound on
the true fraction) but never reports a non-critical one.

Units and constants
-------------------
Inputs are images with pixel values in [0, 1] (pixel/255 units, as everywhere in this
workflow); α, β and r are in the same units. The paper's constants α = 0.25, β = 0.2,
r = 0.3 are in 8-bit pixel units (values in [0, 255]): the reference implementation that
accompanies the paper's method ("Code from Devansh Arpit", as adapted by X. Ma in
xingjunm/dimensionality-driven-learning, lass_tf.py) defaults to a = 0.25/255, b = 0.2/255,
r = 0.3/255 with the note "elements of X in [0,1] for using default params a,b,r; otherwise
scale accordingly", and its caller (callback_util.py) passes 0.25/s, 0.2/s, 0.3/s with
s = 255 / (max X − min X). The defaults here are therefore ``ALPHA = 0.25/255``,
``BETA = 0.2/255``, ``RADIUS = 0.3/255`` (≈ 9.8e-4, 7.8e-4, 1.18e-3 in pixel/255 units),
and ``MAX_ITERATIONS = 100`` (that code's iter_max). These were read from that code, not
from the paper's text; the paper's own wording of the units could not be checked here.

Choices that differ from, or are not fixed by, the paper
--------------------------------------------------------
* Valid pixel range. The paper (and its code, clip_min = −inf, clip_max = +inf) clips only
  to the box; so does the default here (``pixel_range=None``). With ``pixel_range=(0, 1)``
  the search set is the box ∩ [0, 1]^d, i.e. only valid images count.
* Stopping. Each point stops when its own class changes, or after ``max_iterations``.
  The reference code also stops the whole batch once fewer than 20 new critical points
  appear in an iteration; that makes a point's result depend on the other points of its
  batch and is not done here.
* Gradient. sign(∇ℓ) only needs the direction of ∇ℓ = Σ_k (σ_k − δ_kŷ) ∇f_k. It is formed
  as the backward pass of the logit-space vector c = w − e_ŷ, with w the softmax of the
  logits over the classes k ≠ ŷ (computed in float64): c = (σ − e_ŷ) / (1 − σ_ŷ), a positive
  multiple of the true coefficient vector. Autograd of a float32 cross-entropy instead
  forms σ_ŷ − 1, which rounds to 0 at a confident point and leaves only Σ_{k≠ŷ} σ_k ∇f_k, a
  vector that can point the wrong way (and underflows to 0 beyond ~100 nats of margin).
* Noise. Each point's η_t is the t-th ``standard_normal(d)`` draw of its own numpy
  generator ``default_rng([seed, point index])`` (index into x), so the draws, and hence
  the results, do not depend on chunk_size or on which other points are still searching.
* Precision. The search runs in the model's own dtype (float32 in the workflow): x̂ is
  stored in that dtype and the box bounds are rounded inward to it, so every x̂ visited
  lies in the box exactly (‖x̂ − x‖_∞ ≤ r in exact arithmetic, not up to rounding). The
  decision argmax f(x̂) ≠ ŷ(x) is taken on the model's own logits at that very x̂, with
  nothing recomputed in another precision: a reported flip is a flip of the network as
  it is deployed. (The step α·sign + β·η is added in float64 and rounded once.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import xarray as xr

ALPHA = 0.25 / 255  # the paper's α = 0.25 (8-bit pixel units) in pixel/255 units
BETA = 0.2 / 255  # the paper's β = 0.2
RADIUS = 0.3 / 255  # the paper's r = 0.3
MAX_ITERATIONS = 100  # iter_max of the reference code

PAPER = ("Arpit et al. 2017, A Closer Look at Memorization in Deep Networks, "
         "arXiv 1706.05394, §4.1")
ALGORITHM = ("Langevin Adversarial Sample Search (LASS), Algorithm 1: "
             "x <- clip_box(x + alpha*sign(grad CE(f(x), argmax f(x0))) + beta*N(0, I)), "
             "stop at the first class change")
INPUT_UNITS = ("pixel/255: inputs in [0, 1]; alpha, beta, radius in the same units "
               "(the paper's 0.25, 0.2, 0.3 are 8-bit pixel units, divided by 255)")

# observer(point indices (b,), iteration t, x̂ of those points after step t (b, *shape))
Observer = Callable[[torch.Tensor, int, torch.Tensor], None]


@dataclass
class SearchResult:
    """LASS outcome per point: ``critical`` (P,) bool, ``steps`` (P,) int64 (the iteration
    at which the class changed, 0 where it never did), ``x_hat`` (P, *shape) the last point
    visited (the one that changed class, for critical points) in the model's dtype, and
    ``predicted`` (P,) ŷ(x)."""

    critical: torch.Tensor
    steps: torch.Tensor
    x_hat: torch.Tensor
    predicted: torch.Tensor


def _inward(bound: torch.Tensor, x64: torch.Tensor, radius: float, lower: bool) -> torch.Tensor:
    """A box bound rounded to x's dtype, moved one ulp inward where rounding left the box."""
    if lower:
        outside = (x64 - bound.double()) > radius
        return torch.where(outside, torch.nextafter(bound, torch.full_like(bound, np.inf)), bound)
    outside = (bound.double() - x64) > radius
    return torch.where(outside, torch.nextafter(bound, torch.full_like(bound, -np.inf)), bound)


def _box(x: torch.Tensor, radius: float, pixel_range) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds (lo, hi) in x's dtype with x − r ≤ lo, hi ≤ x + r exactly, ∩ pixel_range."""
    x64 = x.double()
    lo = _inward((x64 - radius).to(x.dtype), x64, radius, lower=True)
    hi = _inward((x64 + radius).to(x.dtype), x64, radius, lower=False)
    if pixel_range is not None:
        lo = lo.clamp(min=float(pixel_range[0]))
        hi = hi.clamp(max=float(pixel_range[1]))
    return lo, hi


def _with_graph(model, x: torch.Tensor):
    """(leaf, logits): a fresh leaf copy of x and the model's logits at it, with a graph."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        return leaf, model(leaf)


def _ascent_sign_at(leaf: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                    rows: torch.Tensor) -> torch.Tensor:
    """sign(∇ CE(f, y)) at the given rows of a batch already run forward; (len(rows), ...).

    Backpropagates c = softmax_{k≠y}(f) − e_y (float64, then the model's dtype), a positive
    multiple of ∂CE/∂f = σ − e_y that keeps its digits when σ_y rounds to 1; the other
    rows get c = 0.
    """
    f = logits.detach()[rows].double()
    target = y[:, None]
    w = torch.softmax(f.scatter(1, target, -np.inf), dim=1)  # 0 at y, sums to 1 elsewhere
    c = torch.zeros_like(logits)
    c[rows] = w.scatter(1, target, -1.0).to(logits.dtype)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(logits, leaf, grad_outputs=c)
    return torch.sign(grad[rows])


def ascent_sign(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign(∇_x CE(f(x), y)) for every point: x (b, ...), y (b,) -> (b, ...) in x's dtype."""
    leaf, logits = _with_graph(model, x)
    return _ascent_sign_at(leaf, logits, y, torch.arange(x.shape[0], device=x.device))


def _check(alpha, beta, radius, max_iterations, chunk_size, pixel_range):
    if not (alpha >= 0 and beta >= 0 and radius >= 0):
        raise ValueError(f"alpha, beta, radius must be >= 0, got {alpha}, {beta}, {radius}")
    if int(max_iterations) != max_iterations or max_iterations < 0:
        raise ValueError(f"max_iterations must be a non-negative integer, got {max_iterations}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if pixel_range is not None and not pixel_range[0] <= pixel_range[1]:
        raise ValueError(f"pixel_range must be (low, high) with low <= high, got {pixel_range}")


def langevin_adversarial_search(model, x: torch.Tensor, alpha: float = ALPHA,
                                beta: float = BETA, radius: float = RADIUS,
                                max_iterations: int = MAX_ITERATIONS, seed: int = 0,
                                chunk_size: int = 512, pixel_range=None,
                                observer: Observer | None = None) -> SearchResult:
    """LASS (see the module docstring) on every point of x (P, *input_shape).

    The points of a chunk advance together, one batched forward and backward pass per
    iteration over those still searching; a point leaves its chunk as soon as its class
    changes. ``observer``, if given, sees every x̂ visited (for testing).
    """
    _check(alpha, beta, radius, max_iterations, chunk_size, pixel_range)
    param = next(model.parameters())
    x = x.detach().to(device=param.device, dtype=param.dtype)
    if pixel_range is not None and x.numel() and (
            x.min() < pixel_range[0] or x.max() > pixel_range[1]):
        raise ValueError(f"points lie outside pixel_range {pixel_range}")
    n_points = x.shape[0]
    d = int(np.prod(x.shape[1:]))
    critical = torch.zeros(n_points, dtype=torch.bool, device=x.device)
    steps = torch.zeros(n_points, dtype=torch.int64, device=x.device)
    x_hat = x.clone()
    predicted = torch.empty(n_points, dtype=torch.int64, device=x.device)
    for start in range(0, n_points, chunk_size):
        stop = min(start + chunk_size, n_points)
        xc = x[start:stop]
        # One forward pass per iteration: the logits at x̂_t give both the decision at step
        # t and the gradient for step t + 1 (rows of points that left are given c = 0).
        leaf, logits = _with_graph(model, xc)
        y = logits.detach().argmax(dim=1)
        predicted[start:stop] = y
        lo, hi = _box(xc, radius, pixel_range)
        current = xc.clone()
        rngs = [np.random.default_rng([seed, i]) for i in range(start, stop)]
        active = torch.arange(stop - start, device=x.device)  # chunk rows still searching
        rows = active  # their rows in (leaf, logits)
        for t in range(1, max_iterations + 1):
            if active.numel() == 0:
                break
            xa = current[active]
            step = alpha * _ascent_sign_at(leaf, logits, y[active], rows).double()
            if beta:
                eta = np.stack([rngs[i].standard_normal(d) for i in active.tolist()])
                step = step + beta * torch.from_numpy(eta).to(x.device).reshape(xa.shape)
            new = (xa.double() + step).to(x.dtype)
            new = torch.minimum(torch.maximum(new, lo[active]), hi[active])
            current[active] = new
            if observer is not None:
                observer(active + start, t, new.clone())
            leaf, logits = _with_graph(model, new)
            flipped = logits.detach().argmax(dim=1) != y[active]
            done = active[flipped]
            critical[start + done] = True
            steps[start + done] = t
            rows = torch.nonzero(~flipped).squeeze(1)
            active = active[rows]
        del leaf, logits
        x_hat[start:stop] = current
    return SearchResult(critical=critical.cpu(), steps=steps.cpu(), x_hat=x_hat.cpu(),
                        predicted=predicted.cpu())


def critical_sample_metrics(model, x: torch.Tensor, alpha: float = ALPHA, beta: float = BETA,
                            radius: float = RADIUS, max_iterations: int = MAX_ITERATIONS,
                            seed: int = 0, chunk_size: int = 512,
                            pixel_range=None) -> xr.Dataset:
    """Critical points and the critical sample ratio of x (P, *input_shape) under LASS.

    Variables: ``critical`` (point; 1.0 / 0.0), ``critical_steps`` (point; the iteration at
    which the class changed, NaN where it did not) and ``critical_sample_ratio`` (scalar,
    the mean of ``critical``; NaN for no points), all float64.
    """
    result = langevin_adversarial_search(model, x, alpha, beta, radius, max_iterations, seed,
                                         chunk_size, pixel_range)
    critical = result.critical.numpy().astype(np.float64)
    steps = np.where(result.critical.numpy(), result.steps.numpy().astype(np.float64), np.nan)
    ratio = float(critical.mean()) if len(critical) else np.nan
    return xr.Dataset(
        {"critical": ("point", critical),
         "critical_steps": ("point", steps),
         "critical_sample_ratio": ((), ratio)},
        coords={"point": np.arange(len(critical))},
        attrs={"paper": PAPER, "algorithm": ALGORITHM, "alpha": float(alpha),
               "beta": float(beta), "radius": float(radius),
               "max_iterations": int(max_iterations), "seed": int(seed),
               "input_units": INPUT_UNITS,
               "pixel_range": ("none (box only, as in the paper)" if pixel_range is None
                               else f"[{float(pixel_range[0])}, {float(pixel_range[1])}]"),
               "noise": "eta ~ N(0, I) per point from numpy default_rng([seed, point])",
               "decision": "argmax of the model's own logits, in its dtype, at the x visited"},
    )
