"""Input-output Jacobian norms per point (Novak et al. 2018, arXiv 1802.08760, §3.1).

For logits f(x) in R^n and σ = softmax(f(x)), the metric is ‖J(x)‖_F with
J = ∂σ/∂xᵀ = (diag σ − σσᵀ) ∂f/∂xᵀ; for Δx ~ N(0, εI), E‖σ(x+Δx) − σ(x)‖² ≈ ε‖J‖_F².
The logit Jacobian ‖∂f/∂x‖_F is kept as well. Both come from one ``vmap(jacrev(f))`` per
chunk of points (n backward passes, batched), so memory is bounded by chunk × n × d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import jacrev, vmap


def _logit_jacobians(model, x: torch.Tensor) -> torch.Tensor:
    """(B, *input_shape) -> ∂f/∂x for every point, (B, n, d)."""
    def single(xi):  # one example, (*input_shape) -> (n,)
        return model(xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(single))(x)  # (B, n, *input_shape)
    return jac.flatten(start_dim=2)


def softmax_jacobian(logits: torch.Tensor, logit_jac: torch.Tensor) -> torch.Tensor:
    """Chain rule through the softmax: (B, n) logits, (B, n, d) -> (B, n, d)."""
    s = torch.softmax(logits, dim=-1)  # (B, n)
    ds_df = torch.diag_embed(s) - s[:, :, None] * s[:, None, :]  # (B, n, n)
    return ds_df @ logit_jac


def jacobian_norms(model, x: torch.Tensor, chunk_size: int = 256):
    """‖∂σ/∂x‖_F and ‖∂f/∂x‖_F at every point of x: two (B,) tensors."""
    softmax_norms, logit_norms = [], []
    for start in range(0, x.shape[0], chunk_size):
        xc = x[start:start + chunk_size]
        jf = _logit_jacobians(model, xc)  # (b, n, d)
        with torch.no_grad():
            js = softmax_jacobian(model(xc), jf)
        softmax_norms.append(js.flatten(1).norm(dim=1).detach())
        logit_norms.append(jf.flatten(1).norm(dim=1).detach())
    return torch.cat(softmax_norms), torch.cat(logit_norms)


def pointwise_metrics(model, x: torch.Tensor, y: torch.Tensor, chunk_size: int = 256) -> dict:
    """Loss, correctness and both Jacobian norms at every test point, as numpy arrays (B,)."""
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + chunk_size]) for i in range(0, x.shape[0], chunk_size)])
        loss = F.cross_entropy(logits, y, reduction="none")
        correct = logits.argmax(dim=1) == y
    softmax_norm, logit_norm = jacobian_norms(model, x, chunk_size)
    return {
        "loss": loss.cpu().numpy(),
        "correct": correct.cpu().numpy(),
        "jacobian_norm": softmax_norm.cpu().numpy(),
        "logit_jacobian_norm": logit_norm.cpu().numpy(),
    }
