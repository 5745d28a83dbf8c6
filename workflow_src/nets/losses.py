"""The training losses (RunSpec.loss, the grid axis ``loss_function``).

With logits f(x) in R^K for a point x of class y (K classes) and a batch of B points:

- ``cross_entropy`` (the default): -log softmax(f(x))_y per point, in nats; the batch's loss
  is the mean over its B points (torch's ``F.cross_entropy``).
- ``squared``: 1/2 ||f(x) - e_y||^2 per point, e_y the one-hot target, the squared
  differences summed over the K classes (no 1/K); the batch's loss is the mean over its B
  points: L = (1/B) sum_i 1/2 ||f(x_i) - e_{y_i}||^2. The logits are compared with the
  targets directly (no softmax), as in the squared-loss analyses of over-parameterised
  networks (Liu, Zhu & Belkin 2022), whose sum-over-points loss is B times this one.

Both are computed in at least float32 (under bfloat16 autocast the logits are bfloat16;
the difference and its square are taken in float32, as autocast does for cross-entropy),
and in float64 when the network is float64. The learning curve's and the network record's
``train_loss`` (and ``test_loss``) are the loss the network was trained with, in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..runtable import LOSSES

__all__ = ["LOSSES", "per_point_loss", "batch_loss"]


def per_point_loss(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of every point: logits (..., K), integer labels y (...) -> (...)."""
    if kind == "cross_entropy":
        flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="none")
        return flat.view(y.shape)
    if kind == "squared":
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
        return 0.5 * (logits - target).square().sum(-1)
    raise ValueError(f"loss {kind!r} is not one of {LOSSES}")


def batch_loss(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean loss over a batch: logits (B, K), y (B,) -> a scalar. Cross-entropy is
    exactly ``F.cross_entropy(logits, y)``, as the networks trained before squared loss."""
    if kind == "cross_entropy":
        return F.cross_entropy(logits, y)
    return per_point_loss(kind, logits, y).mean()
