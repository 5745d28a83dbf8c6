"""Conditioning of the training problem: the PL ratio of the training loss and the full
tangent kernel's spectrum on a fixed subset of training points, after Liu, Zhu & Belkin 2022
("Loss landscapes and optimization in over-parameterized non-linear systems and neural
networks", arXiv 2003.00307, ACHA; §3-4, definitions 2-3 and theorem 4).

Notation. x_1 … x_n the first ``n_points`` training points, f_i = f(x_i; w) ∈ R^K the
logits, F ∈ R^{nK} their stacking (point-major: row i·K + k is f_k(x_i)), J = ∂F/∂w the
nK × P Jacobian over all P parameters, and

    K(w) = J Jᵀ                     the full nK × nK tangent kernel (not traced over
                                    classes; metrics/ntk.py stores the n × n trace).

The training loss actually used, always the mean over the n points (sum over classes):

    squared         L = (1/n) Σ_i ½‖f_i − y_i‖²          y_i = onehot(label_i), r_i = f_i − y_i
    cross_entropy   L = (1/n) Σ_i −log softmax(f_i)_{label_i},  r_i = softmax(f_i) − y_i

so in both cases ∇L = (1/n) Jᵀ r (r ∈ R^{nK} the stacked output residuals, the gradient of
the summed per-point losses with respect to F) and

    ‖∇L‖² = rᵀ K r / n²  ≥  λ_min(K) ‖r‖² / n².

For the squared loss ‖r‖² = 2nL, hence the PL inequality with L* = 0 (the infimum of the
squared loss on an interpolating network; for cross-entropy L* = 0 is the infimum, never
attained):

    ½‖∇L‖² / L  ≥  λ_min(K) / n           (mean loss; for the summed loss Σ_i ½‖f_i − y_i‖²
                                            it reads ½‖∇L_sum‖²/L_sum ≥ λ_min(K))

with equality when r is an eigenvector of K for λ_min. For cross-entropy ‖r‖² ≠ 2nL and the
PL ratio has no such lower bound; the kernel bound ‖∇L‖² ≥ λ_min‖r‖²/n² still holds.

Values (every one a float64 scalar), at the weights w and, suffixed ``_init``, at the
initial weights w_0:

    loss                 L as above
    grad_norm_sq         ‖∇L‖², by a vector-Jacobian product (1/n) Jᵀ r through autograd
    pl_ratio             ½‖∇L‖² / L (NaN if L = 0)
    lambda_min, lambda_max   extreme eigenvalues of K (numpy.linalg.eigvalsh; λ_min as
                         computed, it may be ~−1e-13·λ_max when K is singular)
    condition_number     λ_max / λ_min; +inf when λ_min ≤ nK·ε·λ_max (ε float64's machine
                         epsilon; numpy's matrix_rank tolerance): K singular to working
                         precision, always when P < nK; NaN if λ_max ≤ 0
    trace                tr K = Σ_i Σ_k ‖∂f_k(x_i)/∂w‖²
    lambda_min_over_trace    λ_min / tr K (scale-free; ≤ 1/(nK))
    pl_bound_ratio       pl_ratio / (λ_min / n): ≥ 1 for the squared loss (equality: r an
                         eigenvector for λ_min); for cross-entropy no bound; NaN where λ_min
                         is numerically 0 (the bound is vacuous) or L = 0
    kernel_bound_ratio   n²‖∇L‖² / (λ_min ‖r‖²): ≥ 1 for both losses; NaN as above
    kernel_change        ‖K(w) − K(w_0)‖_F / ‖K(w_0)‖_F (not suffixed; 0 at w_0)

Computation: a float64 copy of each network in eval mode (batch norm uses its running
statistics, so every point's logits are its own); J a chunk of points at a time by
torch.func.vmap(jacrev) (metrics/ntk.py's Jacobians), K's blocks from the chunks (kept when
all of J fits in ``max_jacobian_bytes``, else each recomputed), symmetrised as (K + Kᵀ)/2.
Cross-entropy's loss and residual are computed without cancellation at near-certain points:
ℓ_i = log1p(Σ_{k≠y} e^{f_k − f_y}) when f_y is the largest logit, and r_{i,y} = −Σ_{k≠y} p_k,
so L and ∇L stay positive and accurate where 1 − p_y rounds to 0. Memory: K (nK)² float64
numbers plus two Jacobian chunks, 2·chunk_size·K·P.
"""

from __future__ import annotations

import numpy as np
import torch

from ..nets.models import float64_copy
from .ntk import Jacobians

LIU = ("Liu, Zhu & Belkin 2022, Loss landscapes and optimization in over-parameterized "
       "non-linear systems and neural networks, arXiv 2003.00307")
LOSSES = ("cross_entropy", "squared")
SPECTRUM = ("lambda_min", "lambda_max", "condition_number", "trace", "lambda_min_over_trace")
AT_WEIGHTS = ("loss", "grad_norm_sq", "pl_ratio", *SPECTRUM, "pl_bound_ratio",
              "kernel_bound_ratio")
MAX_JACOBIAN_BYTES = 2 ** 30


def tangent_kernel(model64: torch.nn.Module, x: torch.Tensor, chunk_size: int = 16,
                   max_jacobian_bytes: int = MAX_JACOBIAN_BYTES) -> np.ndarray:
    """K = J Jᵀ, (nK, nK) float64, rows point-major (i·K + k), of a float64 network."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    jac = Jacobians(model64)
    n = int(x.shape[0])
    starts = list(range(0, n, chunk_size))
    n_params = sum(p.numel() for p in jac.params.values())
    with torch.no_grad():
        n_classes = int(model64(x[:1]).shape[1])
    cache = {} if n * n_classes * n_params * 8 <= max_jacobian_bytes else None

    def rows(start):  # (chunk · K, P), point-major
        if cache is not None and start in cache:
            return cache[start]
        parts = jac(x[start:start + chunk_size])
        out = torch.cat([p.flatten(start_dim=2) for p in parts.values()], dim=2)
        out = out.reshape(-1, out.shape[-1])
        if cache is not None:
            cache[start] = out
        return out

    blocks = {}
    for a, start_a in enumerate(starts):
        ja = rows(start_a)
        for start_b in starts[a:]:
            blocks[start_a, start_b] = (ja @ rows(start_b).T).cpu().numpy()
    kernel = np.zeros((n * n_classes, n * n_classes))
    for (start_a, start_b), block in blocks.items():
        ra, rb = start_a * n_classes, start_b * n_classes
        kernel[ra:ra + block.shape[0], rb:rb + block.shape[1]] = block
        kernel[rb:rb + block.shape[1], ra:ra + block.shape[0]] = block.T
    return (kernel + kernel.T) / 2


def loss_and_residual(logits: torch.Tensor, targets: torch.Tensor, loss: str):
    """(L, r): the mean loss over the n points and the (n, K) residual ∂(Σ_i ℓ_i)/∂f_i.

    squared: targets (n, K) real (one-hot in training); cross_entropy: targets (n,) labels."""
    if loss == "squared":
        if targets.shape != logits.shape:
            raise ValueError(f"squared loss: targets must be (n, K) = {tuple(logits.shape)}, "
                             f"got {tuple(targets.shape)}")
        residual = logits - targets.to(logits.dtype)
        return float(0.5 * (residual ** 2).sum() / logits.shape[0]), residual
    if loss != "cross_entropy":
        raise ValueError(f"unknown loss {loss!r}: choose from {list(LOSSES)}")
    labels = targets.long().reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"cross_entropy: need one label per point, got {labels.shape[0]} "
                         f"labels for {logits.shape[0]} points")
    rows = torch.arange(logits.shape[0], device=logits.device)
    relative = logits - logits[rows, labels].unsqueeze(1)  # f_k − f_y, 0 at k = y
    others = torch.ones_like(relative, dtype=torch.bool)
    others[rows, labels] = False
    top = relative.max(dim=1).values  # ≥ 0; 0 where y holds the largest logit
    # ℓ = log Σ_k e^{f_k − f_y} = top + log(e^{−top} + Σ_{k≠y} e^{rel_k − top}), without
    # forming 1 + tiny when top = 0.
    tail = torch.where(others, torch.exp(relative - top.unsqueeze(1)), 0.0).sum(dim=1)
    per_point = torch.where(top > 0, top + torch.log(torch.exp(-top) + tail), torch.log1p(tail))
    probs = torch.softmax(logits, dim=1)
    residual = torch.where(others, probs, 0.0)
    residual[rows, labels] = -residual.sum(dim=1)  # p_y − 1 = −Σ_{k≠y} p_k
    return float(per_point.mean()), residual


def spectrum(kernel: np.ndarray) -> dict:
    """The module doc's spectrum values of a symmetric PSD kernel."""
    eigenvalues = np.linalg.eigvalsh(kernel)
    lo, hi = float(eigenvalues[0]), float(eigenvalues[-1])
    trace = float(np.trace(kernel))
    if hi <= 0:
        condition = np.nan
    elif lo <= kernel.shape[0] * np.finfo(np.float64).eps * hi:
        condition = np.inf
    else:
        condition = hi / lo
    return {"lambda_min": lo, "lambda_max": hi, "condition_number": condition,
            "trace": trace, "lambda_min_over_trace": lo / trace if trace > 0 else np.nan}


def gradient_norm_sq(model64: torch.nn.Module, x: torch.Tensor, residual: torch.Tensor) -> float:
    """‖(1/n) Jᵀ r‖² by one vector-Jacobian product through the batched network."""
    params = [p for p in model64.parameters() if p.requires_grad]
    with torch.enable_grad():
        logits = model64(x)
        grads = torch.autograd.grad(logits, params, grad_outputs=residual / x.shape[0],
                                    allow_unused=True)
    return float(sum((g ** 2).sum() for g in grads if g is not None))


def at_weights(model64, x, targets, loss: str, chunk_size: int, kernel=None):
    """(values, K) for one float64 network: every AT_WEIGHTS value of the module doc."""
    with torch.no_grad():
        logits = model64(x)
    value, residual = loss_and_residual(logits, targets, loss)
    grad_sq = gradient_norm_sq(model64, x, residual)
    kernel = tangent_kernel(model64, x, chunk_size) if kernel is None else kernel
    out = {"loss": value, "grad_norm_sq": grad_sq,
           "pl_ratio": 0.5 * grad_sq / value if value > 0 else np.nan, **spectrum(kernel)}
    n = x.shape[0]
    vacuous = not np.isfinite(out["condition_number"])
    residual_sq = float((residual ** 2).sum())
    out["pl_bound_ratio"] = (np.nan if vacuous or value <= 0
                             else out["pl_ratio"] / (out["lambda_min"] / n))
    out["kernel_bound_ratio"] = (np.nan if vacuous or residual_sq <= 0
                                 else n ** 2 * grad_sq / (out["lambda_min"] * residual_sq))
    return out, kernel


def conditioning(model, initial_model, x: torch.Tensor, targets: torch.Tensor,
                 loss: str = "cross_entropy", chunk_size: int = 16) -> dict[str, float]:
    """The module doc's values at the network's weights and (``_init``) at initial_model's,
    and the kernel's relative change; models are copied to float64, left as they are."""
    if x.shape[0] < 1:
        raise ValueError("conditioning needs at least one training point")
    model64 = float64_copy(model)
    device = next(model64.parameters()).device
    x = x.to(device=device, dtype=torch.float64)
    targets = targets.to(device)
    if loss == "squared" and targets.dim() == 1:
        n_classes = model64(x[:1]).shape[1]
        targets = torch.nn.functional.one_hot(targets.long(), n_classes).double()
    now, kernel = at_weights(model64, x, targets, loss, chunk_size)
    init, kernel0 = at_weights(float64_copy(initial_model), x, targets, loss, chunk_size)
    out = {**now, **{f"{name}_init": value for name, value in init.items()}}
    norm0 = np.linalg.norm(kernel0)
    out["kernel_change"] = float(np.linalg.norm(kernel - kernel0) / norm0) if norm0 > 0 else np.nan
    return out
