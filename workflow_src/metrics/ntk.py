"""Empirical neural tangent kernel of a network on its training points, and its summaries.

After Jacot, Gabriel & Hongler 2018 ("Neural Tangent Kernel", arXiv 1806.07572, eq. (1)
and §4) for the kernel, Novak, Sohl-Dickstein & Schoenholz 2022 ("Fast Finite Width Neural
Tangent Kernel", arXiv 2206.08720, §3, "Jacobian contraction") for how it is computed,
Cristianini, Shawe-Taylor, Elisseeff & Kandola 2002 ("On Kernel-Target Alignment", NeurIPS,
definition 1) for the alignment and Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli 2020
("Deep learning versus kernel learning", arXiv 2010.15110, §3-4) for using the empirical
kernel's spectrum, alignment and kernel-regression accuracy as probes of a trained network.

For a network with logits f(x) ∈ R^K and parameters θ ∈ R^P, J(x) = ∂f(x)/∂θ is K × P and
the empirical NTK is the K × K block Θ(x, x′) = J(x) J(x′)ᵀ. Stored here is its trace over
classes, the n × n "logit-traced" kernel

    Θ_tr[i, j] = Σ_k ⟨∂f_k(x_i)/∂θ, ∂f_k(x_j)/∂θ⟩            (Novak 2022, eq. (3) traced)

on the first ``n_points`` training points, at the trained weights and (variables suffixed
``_init``) at the initial weights. With λ_1 ≥ … ≥ λ_n its eigenvalues (numpy.linalg.eigvalsh)
and Y the n × K one-hot training labels (the labels trained on, possibly corrupted):

    ntk_top_eigenvalues        λ_1 … λ_top_k, dimension ``eigen``; NaN past λ_n if top_k > n
    ntk_trace                  tr Θ_tr = Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖² (the diagonal's sum)
    ntk_effective_rank         (Σλ)² / Σλ² = tr(Θ)² / ‖Θ‖_F²  (computed this second way,
                               an identity for symmetric Θ; 1 ≤ it ≤ n); NaN if Θ = 0
    ntk_condition_number       λ_1 / λ_n. λ_n is clipped at 0, and, as numerical zero, every
                               eigenvalue ≤ n·ε·λ_1 (ε float64's machine epsilon; numpy's
                               matrix_rank tolerance) counts as 0: then the value is +inf (a
                               kernel singular to working precision, e.g. n > P, or dead
                               units). NaN if λ_1 ≤ 0 (Θ = 0).
    ntk_target_alignment       ⟨Θ, YYᵀ⟩_F / (‖Θ‖_F ‖YYᵀ‖_F), uncentred (Cristianini's A(K, yyᵀ)
                               with one-hot Y; the centred variant of Cortes, Mohri &
                               Rostamizadeh 2012 is not used); NaN if Θ = 0
    ntk_kernel_regression_test_acc
                               test accuracy of kernel ridge regression on the one-hot
                               targets: α = (Θ + r·tr(Θ)/n·I)⁻¹ Y, r = ``ridge`` (a ridge
                               relative to the mean eigenvalue, so scale-free), predictions
                               Θ(x_test, x_train) α, class = argmax (first on ties). Equals
                               sklearn KernelRidge(kernel="precomputed", alpha=r·tr(Θ)/n).
                               NaN if tr Θ = 0.

Computation (Jacobian contraction): J of a chunk of points comes from
torch.func.vmap(jacrev(functional_call)) over the points, one tensor (chunk, K, *shape) per
parameter tensor, and a block of Θ_tr is Σ_tensors einsum("akp,bkp->ab") of two such chunks.
The outer loop computes each chunk's Jacobian once; the inner loop recomputes the other
chunk's Jacobian (only the blocks on and above the diagonal for the train × train kernel,
mirrored below), so

    peak memory ≈ 2 · chunk_size · K · P float64 values (two Jacobian chunks)
                  + n · (n + n_test) for the kernels, plus one chunk's vmap(jacrev) graph
                  (≈ chunk_size · K · Σ_l width_l activations),

at the cost of computing each Jacobian chunk up to ⌈n / chunk_size⌉ times. The
NTK-vector-product route (cheaper when P ≫ nK, Novak 2022 §3.2) is not implemented. The
kernel is made exactly symmetric as (Θ + Θᵀ)/2.

Test points: all of x_test unless ``n_test_points`` says how many of the first to use; the
test-train kernel costs ⌈n_test / chunk_size⌉ · ⌈n / chunk_size⌉ Jacobian chunks.

Everything is computed in float64 on float64 deep copies of the networks (the workflow
trains in float32); the models passed in are left as they are.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from torch.func import functional_call, jacrev, vmap

JACOT = "Jacot, Gabriel & Hongler 2018, Neural Tangent Kernel, arXiv 1806.07572"
NOVAK = ("Novak, Sohl-Dickstein & Schoenholz 2022, Fast Finite Width Neural Tangent Kernel, "
         "arXiv 2206.08720")
CRISTIANINI = ("Cristianini, Shawe-Taylor, Elisseeff & Kandola 2002, On Kernel-Target "
               "Alignment, NeurIPS")
FORT = ("Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli 2020, Deep learning versus kernel "
        "learning, arXiv 2010.15110")

# +1: a larger value is expected to mean a larger generalization gap; -1: a smaller gap.
# The same sign holds for each variable's ``_init`` twin.
EXPECTED_SIGN: dict[str, int] = {
    # +1 is the hypothesis under test, not a finding: a larger kernel (larger trace, larger
    # top eigenvalue) is a faster-moving, sharper function in parameter space (its nonzero
    # eigenvalues are those of the Gauss-Newton part JᵀJ of the squared-loss Hessian), and
    # sharpness is expected to go with a larger gap.
    "ntk_top_eigenvalues": +1,
    "ntk_trace": +1,
    # -1: a kernel spread over many directions (high effective rank) is taken to mean the
    # network keeps a rich set of features; the opposite hypothesis (a kernel compressed
    # onto few, label-aligned directions generalizes better; Fort et al. 2020 §4, Baratin
    # et al. 2021, arXiv 2008.00938) would give +1. The sign is the hypothesis under test.
    "ntk_effective_rank": -1,
    # +1: an ill-conditioned kernel fits its small-eigenvalue directions (where noise and
    # corrupted labels sit) only slowly and with large coefficients. Hypothesis, as above.
    "ntk_condition_number": +1,
    # -1: a kernel aligned with the labels is one whose kernel regression already fits them
    # with small norm (Cristianini et al. 2002, generalization bound via alignment).
    "ntk_target_alignment": -1,
    # -1: the network's own tangent kernel predicting the test set well.
    "ntk_kernel_regression_test_acc": -1,
}

_ATTRS = {
    "ntk_top_eigenvalues": {
        "definition": "largest eigenvalues of the n x n logit-traced empirical NTK "
                      "sum_k <df_k(x_i)/dtheta, df_k(x_j)/dtheta>, descending; NaN past n",
        "reference": f"{JACOT}, eq. (1); {FORT}, §3"},
    "ntk_trace": {
        "definition": "trace of the logit-traced NTK: sum_i sum_k ||df_k(x_i)/dtheta||^2",
        "reference": f"{JACOT}, eq. (1); {FORT}, §3"},
    "ntk_effective_rank": {
        "definition": "(sum lambda)^2 / sum lambda^2 = tr(K)^2 / ||K||_F^2; NaN if K = 0",
        "reference": f"{FORT}, §3 (kernel spectrum)"},
    "ntk_condition_number": {
        "definition": "lambda_max / lambda_min; lambda_min clipped at 0 and eigenvalues <= "
                      "n * eps * lambda_max counted as 0, giving +inf; NaN if lambda_max <= 0",
        "reference": f"{JACOT}, §5 (convergence along kernel eigendirections)"},
    "ntk_target_alignment": {
        "definition": "<K, YY^T>_F / (||K||_F ||YY^T||_F), Y one-hot training labels as "
                      "trained on, uncentred; NaN if K = 0",
        "reference": f"{CRISTIANINI}, definition 1; {FORT}, §4"},
    "ntk_kernel_regression_test_acc": {
        "definition": "test accuracy of argmax K(x_test, X) (K + ridge tr(K)/n I)^-1 Y, "
                      "Y one-hot training labels; NaN if tr K = 0",
        "reference": f"{FORT}, §4 (kernel regression with the empirical NTK); {JACOT}, §5"},
}


def _as_float64(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).double()


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Jacobians:
    """Per-point parameter Jacobians of a float64 network, a chunk at a time."""

    def __init__(self, model64: torch.nn.Module):
        self.model = model64
        self.params = {name: p.detach() for name, p in model64.named_parameters()}
        self.device = _device(model64)

        def logits(params, x):
            return functional_call(self.model, params, (x.unsqueeze(0),)).squeeze(0)

        self._jac = vmap(jacrev(logits), in_dims=(None, 0))

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, *input_shape) -> {name: (B, K, *param.shape)}."""
        x = x.detach().to(device=self.device, dtype=torch.float64)
        with torch.enable_grad():
            return self._jac(self.params, x)


def _contract(ja: dict[str, torch.Tensor], jb: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_tensors Σ_k Σ_p ja[a, k, p] jb[b, k, p]: (A, B)."""
    out = None
    for name, a in ja.items():
        b = jb[name]
        block = torch.einsum("akp,bkp->ab", a.flatten(start_dim=2), b.flatten(start_dim=2))
        out = block if out is None else out + block
    return out


def ntk_gram(model: torch.nn.Module, x: torch.Tensor, x2: torch.Tensor | None = None,
             chunk_size: int = 64) -> np.ndarray:
    """The logit-traced empirical NTK Θ_tr[i, j] = Σ_k ⟨∂f_k(x_i)/∂θ, ∂f_k(x2_j)/∂θ⟩.

    float64 (len(x), len(x2)) numpy array, computed on a float64 copy of ``model``. With x2
    None it is the symmetric (len(x), len(x)) kernel of x (only blocks on and above the
    diagonal computed, then (Θ + Θᵀ)/2). Memory: two Jacobian chunks, 2·chunk_size·K·P.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    jac = Jacobians(_as_float64(model))
    symmetric = x2 is None
    other = x if symmetric else x2
    n, m = int(x.shape[0]), int(other.shape[0])
    gram = torch.zeros((n, m), dtype=torch.float64, device=jac.device)
    for i in range(0, n, chunk_size):
        ja = jac(x[i:i + chunk_size])
        for j in range(i if symmetric else 0, m, chunk_size):
            jb = ja if symmetric and j == i else jac(other[j:j + chunk_size])
            block = _contract(ja, jb)
            gram[i:i + chunk_size, j:j + chunk_size] = block
            if symmetric and j != i:
                gram[j:j + chunk_size, i:i + chunk_size] = block.T
    if symmetric:
        gram = (gram + gram.T) / 2
    return gram.cpu().numpy()


def _one_hot(y, n_classes: int) -> np.ndarray:
    y = np.asarray(torch.as_tensor(y).cpu(), dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {y.min()}..{y.max()}")
    return np.eye(n_classes, dtype=np.float64)[y]


def kernel_summaries(theta: np.ndarray, y, n_classes: int, top_k: int) -> dict:
    """Spectral summaries and target alignment of a symmetric n × n kernel (module docstring).

    Returns {"top_eigenvalues": (top_k,), "trace", "effective_rank", "condition_number",
    "target_alignment"}, all float64.
    """
    theta = np.asarray(theta, dtype=np.float64)
    n = theta.shape[0]
    if theta.shape != (n, n) or n == 0:
        raise ValueError(f"need a non-empty square kernel, got shape {theta.shape}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    eig = np.linalg.eigvalsh(theta)[::-1]  # descending
    top = np.full(top_k, np.nan)
    top[:min(top_k, n)] = eig[:top_k]
    trace = float(np.trace(theta))
    frob2 = float(np.sum(theta * theta))
    lam_max = float(eig[0])
    if lam_max <= 0:
        condition = np.nan
    else:
        lam_min = max(float(eig[-1]), 0.0)
        zero = n * np.finfo(np.float64).eps * lam_max
        condition = np.inf if lam_min <= zero else lam_max / lam_min
    yy = (lambda Y: Y @ Y.T)(_one_hot(y, n_classes))
    if frob2 > 0:
        effective_rank = trace**2 / frob2
        alignment = float(np.sum(theta * yy)) / (np.sqrt(frob2) * np.linalg.norm(yy))
    else:
        effective_rank = alignment = np.nan
    return {"top_eigenvalues": top, "trace": trace, "effective_rank": effective_rank,
            "condition_number": condition, "target_alignment": alignment}


def kernel_regression_predictions(theta: np.ndarray, theta_test: np.ndarray, y_train,
                                  n_classes: int, ridge: float) -> np.ndarray:
    """Θ_test (Θ + ridge·tr(Θ)/n·I)⁻¹ Y for one-hot Y: (n_test, n_classes) float64.

    theta: (n, n) train kernel; theta_test: (n_test, n) test-train kernel.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    theta = np.asarray(theta, dtype=np.float64)
    n = theta.shape[0]
    Y = _one_hot(y_train, n_classes)
    alpha = np.linalg.solve(theta + ridge * np.trace(theta) / n * np.eye(n), Y)
    return np.asarray(theta_test, dtype=np.float64) @ alpha


def kernel_regression_accuracy(theta: np.ndarray, theta_test: np.ndarray, y_train, y_test,
                               n_classes: int, ridge: float) -> float:
    """Fraction of test points whose argmax kernel-regression prediction is their label."""
    if np.trace(theta) <= 0:
        return np.nan
    y_test = np.asarray(torch.as_tensor(y_test).cpu(), dtype=np.int64)
    if y_test.size == 0:
        return np.nan
    pred = kernel_regression_predictions(theta, theta_test, y_train, n_classes, ridge)
    return float(np.mean(pred.argmax(axis=1) == y_test))


def _n_classes(model: torch.nn.Module, x: torch.Tensor) -> int:
    spec = getattr(model, "spec", None)
    if spec is not None:
        return int(spec.n_classes)
    with torch.no_grad():
        return int(model(x[:1].to(device=_device(model), dtype=next(model.parameters()).dtype))
                   .shape[1])


def _one_network(model, x_train, y_train, x_test, y_test, n_classes, top_k, ridge,
                 chunk_size) -> dict:
    theta = ntk_gram(model, x_train, chunk_size=chunk_size)
    theta_test = ntk_gram(model, x_test, x_train, chunk_size=chunk_size)
    s = kernel_summaries(theta, y_train, n_classes, top_k)
    return {
        "ntk_top_eigenvalues": s["top_eigenvalues"],
        "ntk_trace": s["trace"],
        "ntk_effective_rank": s["effective_rank"],
        "ntk_condition_number": s["condition_number"],
        "ntk_target_alignment": s["target_alignment"],
        "ntk_kernel_regression_test_acc": kernel_regression_accuracy(
            theta, theta_test, y_train, y_test, n_classes, ridge),
    }


def ntk_metrics(model: torch.nn.Module, initial_model: torch.nn.Module, x_train: torch.Tensor,
                y_train, x_test: torch.Tensor, y_test, n_points: int = 200, top_k: int = 10,
                ridge: float = 1e-6, chunk_size: int = 64,
                n_test_points: int | None = None) -> xr.Dataset:
    """NTK summaries of the module docstring at the trained and (``_init``) initial weights.

    The first min(n_points, N) training points (y_train: the labels trained on) and the
    first n_test_points test points (all if None). Variables: ntk_top_eigenvalues(eigen)
    and the scalars ntk_trace, ntk_effective_rank, ntk_condition_number,
    ntk_target_alignment, ntk_kernel_regression_test_acc, each with an ``_init`` twin; all
    float64.
    """
    spec, init_spec = getattr(model, "spec", None), getattr(initial_model, "spec", None)
    if spec != init_spec:
        raise ValueError(f"initial model {init_spec} is not the architecture of {spec}")
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points}")
    y_train, y_test = torch.as_tensor(y_train), torch.as_tensor(y_test)
    if x_train.shape[0] == 0 or x_train.shape[0] != y_train.shape[0]:
        raise ValueError(f"need as many labels as training points, at least one: got "
                         f"{x_train.shape[0]} points and {y_train.shape[0]} labels")
    if x_test.shape[0] != y_test.shape[0]:
        raise ValueError(f"{x_test.shape[0]} test points but {y_test.shape[0]} labels")
    x_train, y_train = x_train[:n_points], y_train[:n_points]
    if n_test_points is not None:
        x_test, y_test = x_test[:n_test_points], y_test[:n_test_points]
    n_classes = _n_classes(model, x_train)
    common = (x_train, y_train, x_test, y_test, n_classes, top_k, ridge, chunk_size)
    trained = _one_network(model, *common)
    initial = (trained if initial_model is model
               else _one_network(initial_model, *common))

    data = {}
    for suffix, values in (("", trained), ("_init", initial)):
        for name, value in values.items():
            attrs = {**_ATTRS[name], "expected_sign": EXPECTED_SIGN[name],
                     "weights": "initial" if suffix else "trained"}
            if name == "ntk_top_eigenvalues":
                data[name + suffix] = xr.DataArray(np.asarray(value, dtype=np.float64),
                                                   dims=("eigen",), attrs=attrs)
            else:
                data[name + suffix] = xr.DataArray(np.float64(value), attrs=attrs)
    n_parameters = sum(p.numel() for p in model.parameters())
    return xr.Dataset(
        data,
        coords={"eigen": np.arange(top_k)},
        attrs={"n_points": int(x_train.shape[0]), "n_test_points": int(x_test.shape[0]),
               "n_parameters": int(n_parameters), "n_classes": n_classes,
               "top_k": int(top_k), "ridge": float(ridge), "chunk_size": int(chunk_size),
               "kernel": "logit-traced empirical NTK sum_k J_k(x) J_k(x')^T, float64",
               "method": "Jacobian contraction, torch.func vmap(jacrev(functional_call)) "
                         "per chunk; peak memory ~ 2 * chunk_size * n_classes * n_parameters "
                         "float64",
               "labels": "training labels as trained on (possibly corrupted), one-hot",
               "precision": "float64 copies of the networks",
               "paper": f"{JACOT}; {NOVAK}; {CRISTIANINI}; {FORT}"},
    )
