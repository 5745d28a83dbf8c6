"""Bartlett, Foster & Telgarsky's spectral complexity of a trained MLP, an indicator for
gensens' measure.custom (docs/metrics.md, "Indicators you bring").

Bartlett, Foster & Telgarsky 2017, "Spectrally-normalized margin bounds for neural
networks" (NeurIPS 2017, arXiv 1706.08498), eq. (1.2): for a network x ↦ σ_L(A_L σ_{L−1}(…
σ_1(A_1 x))) with reference matrices M_i (here the initial weights, as in their experiments
and Jiang et al. 2020's "spec-init"), the spectral complexity is

    R_A = (Π_i ρ_i ‖A_i‖_σ) · (Σ_i ‖A_iᵀ − M_iᵀ‖_{2,1}^{2/3} / ‖A_i‖_σ^{2/3})^{3/2}

with ‖·‖_σ the spectral norm (largest singular value), ‖B‖_{2,1} = Σ_j ‖B_{:,j}‖_2 (the sum of
the Euclidean norms of B's columns, so ‖Aᵀ − Mᵀ‖_{2,1} sums the norms of the rows of A − M:
one row per output unit of a torch weight) and ρ_i the Lipschitz constant of the activation
after layer i (1 for ReLU, ReLU6, hard tanh and tanh, 1/6 for hard sigmoid, 1 for the linear
readout). Their Theorem 1.1 bounds the test error by the margin loss plus
Õ(‖X‖_F R_A / (γ n)): at a fixed dataset and margin, a larger R_A goes with a larger gap
(expected sign +1).

Conventions: weight matrices only (the bound's networks have no biases; gensens' norms
measure the same matrices), float64, MLPs only (a convolution's operator norm is not its
kernel's matrix norm: the function raises for other architectures).

    measure:
      custom:
        - callable: examples.indicators.spectral:spectral_complexity
"""

from __future__ import annotations

import torch

# gensens reads this literal without importing the module (the declaration of each function).
INDICATORS = {
    "spectral_complexity": {
        "description": "Bartlett et al. 2017's spectral complexity R_A (arXiv 1706.08498, eq. "
                       "1.2), reference matrices the initial weights, float64, MLPs only.",
        "cost": 0.1,
        "variables": {
            "spectral_complexity": {
                "dims": [], "sign": 1,
                "units": "prod_i rho_i ||A_i||_2 * (sum_i ||A_i - M_i||_{2,1}^{2/3} / "
                         "||A_i||_2^{2/3})^{3/2} (weights only, M_i initial)",
                "description": "Bartlett, Foster & Telgarsky 2017's R_A"},
            "spectral_complexity_distance": {
                "dims": [],
                "units": "(sum_i ||A_i - M_i||_{2,1}^{2/3} / ||A_i||_2^{2/3})^{3/2}",
                "description": "R_A's second factor: the distance from initialisation"},
        },
    },
}

LIPSCHITZ = {"relu": 1.0, "relu6": 1.0, "hard_tanh": 1.0, "tanh": 1.0, "hard_sigmoid": 1 / 6}


def weight_matrices(model) -> list[torch.Tensor]:
    """An MLP's weight matrices (out, in), input layer first, as float64 copies."""
    if getattr(model.spec, "architecture", "mlp") != "mlp":
        raise ValueError(f"spectral complexity is defined here for MLPs only, not "
                         f"{model.spec.architecture!r}: switch the entry off for this study")
    return [layer.weight.detach().to(torch.float64).clone()
            for layer in [*model.hidden, model.readout]]


def complexity(weights: list[torch.Tensor], initial: list[torch.Tensor],
               lipschitz: list[float]) -> tuple[float, float]:
    """(R_A, its distance factor) of the module doc for matrices A_i, M_i and constants ρ_i."""
    spectral = torch.stack([torch.linalg.matrix_norm(a, ord=2) for a in weights])
    if not bool(torch.all(spectral > 0)):
        raise ValueError("a weight matrix is zero: R_A divides by its spectral norm")
    rows = torch.stack([torch.linalg.vector_norm(a - m, dim=1).sum()
                        for a, m in zip(weights, initial)])
    distance = float(((rows / spectral) ** (2 / 3)).sum() ** 1.5)
    product = float(torch.prod(spectral * torch.tensor(lipschitz, dtype=torch.float64)))
    return product * distance, distance


def spectral_complexity(model, data, settings) -> dict:
    """gensens' custom indicator contract: R_A of the trained network, its initial weights
    as the reference matrices."""
    weights = weight_matrices(model)
    initial = weight_matrices(data.initial_model())
    rho = LIPSCHITZ[model.spec.activation]
    value, distance = complexity(weights, initial, [rho] * (len(weights) - 1) + [1.0])
    return {"spectral_complexity": value, "spectral_complexity_distance": distance}
