"""Input-output Jacobian norms and the loss per point (Novak et al. 2018, arXiv 1802.08760, §3.1).

For logits f(x) in R^n and σ = softmax(f(x)), the metric is ‖J(x)‖_F with
J = ∂σ/∂xᵀ = (diag σ − σσᵀ) ∂f/∂xᵀ; for Δx ~ N(0, εI), E‖σ(x+Δx) − σ(x)‖² ≈ ε‖J‖_F².
The logit Jacobian ‖∂f/∂x‖_F is kept as well. Both come from n batched backward passes per
chunk of points, so memory is bounded by chunk × n × d.

Precision: the network runs in its own dtype (float32 in the workflow), but every reduction
from the logits on (softmax, its derivative, the loss) runs in float64 in complementary
forms. At a point the network is sure of, 1 − max σ can be far below float32's (and even
float64's) resolution of 1, so σ_t − σ_t², 1 − σ_t and logsumexp(f) − f_t would round to 0:
the top class's diagonal term σ_t(1 − σ_t) is computed as σ_t Σ_{k≠t} σ_k instead, and the
loss as (f_max − f_y) + log1p(Σ_{k≠max} e^{f_k − f_max}), two non-negative terms.
"""

from __future__ import annotations

import torch


def _logit_jacobians(model, x: torch.Tensor) -> torch.Tensor:
    """(B, *input_shape) -> ∂f/∂x for every point, (B, n, d), in the model's dtype.

    One batched backward pass per logit: the points of a batch do not interact, so the
    gradient of Σ_b f_k(x_b) with respect to x_b is row k of point b's Jacobian. (Plain
    autograd rather than torch.func's vmap(jacrev): the same numbers, without the ~1.6 s
    that torch.func's first call spends importing torch._dynamo in every measuring job.)
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)  # (B, n)
        rows = [torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k + 1 < logits.shape[1])[0]
                for k in range(logits.shape[1])]
    return torch.stack(rows, dim=1).flatten(start_dim=2)  # (B, n, d)


def softmax_derivative(logits: torch.Tensor) -> torch.Tensor:
    """∂σ/∂f = diag σ − σσᵀ in float64: (B, n) logits -> (B, n, n).

    The diagonal σ_i (1 − σ_i) is formed as σ_i Σ_{k≠i} σ_k, a sum of small positive terms
    for the top class, never as σ_i − σ_i² (which is 0 once σ_i rounds to 1).
    """
    s = torch.softmax(logits.double(), dim=-1)  # (B, n)
    off_diagonal = 1 - torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)  # (n, n)
    rest = (s[:, None, :] * off_diagonal).sum(-1)  # (B, n): Σ_{k≠i} σ_k
    return torch.diag_embed(s * rest) - s[:, :, None] * s[:, None, :] * off_diagonal


def softmax_jacobian(logits: torch.Tensor, logit_jac: torch.Tensor) -> torch.Tensor:
    """Chain rule through the softmax in float64: (B, n) logits, (B, n, d) -> (B, n, d)."""
    return softmax_derivative(logits) @ logit_jac.double()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−log σ_y(f) in float64 nats: (B, n) logits, (B,) labels -> (B,).

    (f_max − f_y) + log1p(Σ_{k≠max} e^{f_k − f_max}): both terms are ≥ 0, so no digits
    cancel, and a confident correct point keeps its loss ≈ Σ_{k≠y} σ_k instead of 0.
    """
    f = logits.double()
    top = f.argmax(dim=1, keepdim=True)  # (B, 1)
    f_max = f.gather(1, top)
    others = torch.ones_like(f).scatter(1, top, 0.0)  # (B, n): 1 except at the top class
    rest = (torch.exp(f - f_max) * others).sum(1)  # Σ_{k≠max} e^{f_k − f_max} in [0, n − 1]
    return (f_max[:, 0] - f.gather(1, y[:, None])[:, 0]) + torch.log1p(rest)


def _chunks(model, x: torch.Tensor, chunk_size: int):
    """(start, logits (b, n), ∂f/∂x (b, n, d) in float64) for every chunk of x."""
    for start in range(0, x.shape[0], chunk_size):
        xc = x[start:start + chunk_size]
        logit_jac = _logit_jacobians(model, xc).detach().double()
        with torch.no_grad():
            logits = model(xc)
        yield start, logits, logit_jac


def jacobian_norms(model, x: torch.Tensor, chunk_size: int = 256):
    """‖∂σ/∂x‖_F and ‖∂f/∂x‖_F at every point of x: two float64 (B,) tensors."""
    softmax_norms, logit_norms = [], []
    for _, logits, logit_jac in _chunks(model, x, chunk_size):
        softmax_norms.append(softmax_jacobian(logits, logit_jac).flatten(1).norm(dim=1))
        logit_norms.append(logit_jac.flatten(1).norm(dim=1))
    return torch.cat(softmax_norms), torch.cat(logit_norms)


def true_class_jacobian_norm(model, x: torch.Tensor, y: torch.Tensor,
                             chunk_size: int = 256) -> torch.Tensor:
    """‖∂σ_y/∂x‖₂ at every point: x (B, ...), y (B,) labels -> float64 (B,).

    Row y of the same float64 chain rule as ``jacobian_norms`` (no autograd through a
    softmax, whose backward forms 1 − σ_y and loses it at confident points).
    """
    norms = []
    for start, logits, logit_jac in _chunks(model, x, chunk_size):
        yc = y[start:start + chunk_size]
        rows = softmax_derivative(logits)[torch.arange(len(yc)), yc]  # (b, n): ∂σ_y/∂f
        norms.append((rows[:, None, :] @ logit_jac)[:, 0].norm(dim=1))
    return torch.cat(norms)


def pointwise_metrics(model, x: torch.Tensor, y: torch.Tensor, chunk_size: int = 256) -> dict:
    """Loss (nats), correctness and both Jacobian norms at every test point, as numpy (B,);
    the three real-valued ones in float64."""
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + chunk_size]) for i in range(0, x.shape[0], chunk_size)])
    softmax_norm, logit_norm = jacobian_norms(model, x, chunk_size)
    return {
        "loss": cross_entropy(logits, y).cpu().numpy(),
        "correct": (logits.argmax(dim=1) == y).cpu().numpy(),
        "jacobian_norm": softmax_norm.cpu().numpy(),
        "logit_jacobian_norm": logit_norm.cpu().numpy(),
    }
