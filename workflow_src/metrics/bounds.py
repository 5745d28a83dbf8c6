"""Per-point bounds linking the Jacobian norm to the cross-entropy loss (Novak et al. 2018,
arXiv 1802.08760, appendix on the Jacobian and the cross-entropy loss).

With p = sigma_y = e^{-loss} and J_y = d sigma_y / dx = p * sum_j (delta_yj - sigma_j) df_j/dx:
if the rows df_j/dx are orthogonal with equal squared norm M, then
||J_y||^2 = M p^2 ((1 - p)^2 + sum_{j != y} sigma_j^2), and sum_{j != y} sigma_j^2 lies between
(1 - p)^2 / (n - 1) (mass spread evenly) and (1 - p)^2 (mass on one class), which gives
``loss_bounds``. With the mass spread evenly, ||J||_F = sqrt(M) ||diag(sigma) - sigma sigma^T||_F
is ``jacobian_norm_approx``. The formulas accept numpy arrays, xarray objects or floats.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import grad, vmap


def bound_M(logit_jacobian_norm, n: int):
    """M = (1/n) mean over points of ||df/dx||_F^2: the mean squared norm of one logit's
    gradient. ``logit_jacobian_norm`` holds per-point Frobenius norms (not squared)."""
    return np.mean(np.square(logit_jacobian_norm)) / n


def loss_bounds(p, M, n: int):
    """(lower, upper) on ||J_y||_2: sqrt(n M / (n - 1)) p (1 - p) and sqrt(2 M) p (1 - p)."""
    core = p * (1 - p)
    return np.sqrt(n * M / (n - 1)) * core, np.sqrt(2 * M) * core


def jacobian_norm_approx(p, M, n: int):
    """||J||_F ~ sqrt(M) / (n - 1) (1 - p) sqrt(n^2 p^2 + n - 2), the remaining mass 1 - p
    spread evenly over the other n - 1 classes (exact for orthogonal equal-norm rows)."""
    return np.sqrt(M) / (n - 1) * (1 - p) * np.sqrt(n**2 * p**2 + n - 2)


def true_class_jacobian_norm(
    model, x: torch.Tensor, y: torch.Tensor, chunk_size: int = 256
) -> torch.Tensor:
    """||d sigma_y(f(x)) / dx||_2 at every point: x (B, ...), y (B,) labels -> (B,).

    One ``grad`` of the scalar sigma_y per example, lifted with ``vmap`` over chunks.
    """

    def true_prob(xi, yi):  # one example (...), label () -> sigma_y ()
        probs = torch.softmax(model(xi.unsqueeze(0)).squeeze(0), dim=-1)  # (n,)
        return torch.gather(probs, 0, yi.reshape(1)).squeeze(0)

    per_point = vmap(grad(true_prob))
    norms = []
    for start in range(0, x.shape[0], chunk_size):
        g = per_point(x[start : start + chunk_size], y[start : start + chunk_size])  # (b, ...)
        norms.append(g.flatten(1).norm(dim=1).detach())
    return torch.cat(norms)
