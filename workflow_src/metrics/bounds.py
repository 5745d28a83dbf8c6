"""Per-point bounds linking the Jacobian norm to the cross-entropy loss (Novak et al. 2018,
arXiv 1802.08760, appendix on the Jacobian and the cross-entropy loss).

With p = sigma_y = e^{-loss} and J_y = d sigma_y / dx = p * sum_j (delta_yj - sigma_j) df_j/dx:
if the rows df_j/dx are orthogonal with equal squared norm M, then
||J_y||^2 = M p^2 ((1 - p)^2 + sum_{j != y} sigma_j^2), and sum_{j != y} sigma_j^2 lies between
(1 - p)^2 / (n - 1) (mass spread evenly) and (1 - p)^2 (mass on one class), which gives the
bounds. With the mass spread evenly, ||J||_F = sqrt(M) ||diag(sigma) - sigma sigma^T||_F is
the approximation. The formulas accept numpy arrays, xarray objects or floats.

Both take the loss, not p, and form 1 - p as -expm1(-loss): at a confident point (loss
below ~1e-8) 1 - exp(-loss) loses its digits in float64, and 1 - p from a stored p is 0
once p rounds to 1.

Numpy only: rule plot_bounds imports this module in an environment without torch.
"""

from __future__ import annotations

import numpy as np


def bound_M(logit_jacobian_norm, n: int):
    """M = (1/n) mean over points of ||df/dx||_F^2: the mean squared norm of one logit's
    gradient. ``logit_jacobian_norm`` holds per-point Frobenius norms (not squared)."""
    return np.mean(np.square(np.asarray(logit_jacobian_norm, dtype=np.float64))) / n


def _bounds(p, one_minus_p, M, n: int):
    core = p * one_minus_p
    return np.sqrt(n * M / (n - 1)) * core, np.sqrt(2 * M) * core


def _approx(p, one_minus_p, M, n: int):
    return np.sqrt(M) / (n - 1) * one_minus_p * np.sqrt(n**2 * p**2 + n - 2)


def bounds_from_loss(loss, M, n: int):
    """(lower, upper) on ||J_y||_2: sqrt(n M / (n - 1)) p (1 - p) and sqrt(2 M) p (1 - p),
    with p = e^{-loss} and 1 - p = -expm1(-loss); loss in nats."""
    return _bounds(np.exp(-loss), -np.expm1(-loss), M, n)


def approx_from_loss(loss, M, n: int):
    """||J||_F ~ sqrt(M) / (n - 1) (1 - p) sqrt(n^2 p^2 + n - 2), the remaining mass 1 - p
    spread evenly over the other n - 1 classes (exact for orthogonal equal-norm rows)."""
    return _approx(np.exp(-loss), -np.expm1(-loss), M, n)
