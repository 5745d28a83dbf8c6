"""Eigenlearning: the test MSE of kernel regression predicted from the kernel's spectrum.

After Simon, Dickens, Karkada & DeWeese 2021 ("The eigenlearning framework: a conservation
law perspective on kernel regression and wide neural networks", arXiv 2110.03922),
numpy only (no torch): the kernel comes from metrics/ntk.py.

The domain is a pool of M points with the uniform measure μ. With K the M × M kernel,
u_i its unit eigenvectors and K/M's eigenvalues λ_1 ≥ … ≥ λ_M (clipped at 0), the kernel
operator's eigenfunctions, orthonormal under μ, are φ_i(x_j) = √M u_ij, and a target
y: pool → R^C (the one-hot labels, C classes) has coefficients v_ik = ⟨φ_i, y_k⟩_μ =
u_iᵀ Y[:, k] / √M. The C outputs are C separate regressions with one kernel, so their
MSEs add: v_i² = Σ_k v_ik² (then Σ_i v_i² = E_μ‖y‖², 1 for one-hot targets), and the MSE
is Σ_k E_μ (f̂_k − y_k)², a squared distance between vectors of C scores.

Kernel ridge regression on n points X drawn from μ, f̂(x) = K(x, X) (K(X, X) + δ I)⁻¹ Y,
has, by the framework,

    κ > 0 solving  Σ_i λ_i / (λ_i + κ) + δ / κ = n           (the "effective ridge")
    L_i = λ_i / (λ_i + κ)                      (learnabilities; Σ L_i = n − δ/κ)
    E₀ = n / (n − Σ_i L_i²)                                   (the overfitting coefficient)
    test MSE  = E₀ (Σ_i (1 − L_i)² v_i² + ε²)                 (over μ)
    train MSE = (δ / (n κ))² · test MSE

with ε² the variance of label noise independent of x. Here ε² = 0: the pool's labels (as
trained on, corrupted ones included) are a deterministic function of the point, so any
corruption is part of the target, in the v_i.

κ is found by Brent's method on log κ, on a function that decreases strictly in κ, in a
bracket found in closed form: at κ_hi = (Σλ + δ) / n the left side is at most n; at
κ_lo = δ / n (δ > 0) or λ_{n+1} / (2n) (δ = 0, which needs at least n + 1 positive
eigenvalues, else no κ > 0 exists and ValueError says so) it exceeds n.

**Held-out points.** μ includes the training points; the measurement (``measured_mse``) is
on the pool's M − n points not trained on (n drawn without replacement). Splitting μ's
average accordingly, the predicted held-out MSE is (M · test MSE − n · train MSE) / (M − n)
(``heldout_mse``); tests/test_eigenlearning.py checks it against the average measured MSE.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

SIMON = ("Simon, Dickens, Karkada & DeWeese 2021, The eigenlearning framework: a conservation "
         "law perspective on kernel regression and wide neural networks, arXiv 2110.03922")


def spectrum(kernel, targets) -> tuple[np.ndarray, np.ndarray]:
    """λ_i (eigenvalues of K/M, descending, clipped at 0) and v_i² = Σ_k v_ik² of the
    targets (M × C, or M for one output) in K's eigenbasis, normalised under the uniform
    measure on the M points (module docstring)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    m = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape != (m, m) or m < 2:
        raise ValueError(f"need a square kernel on at least 2 points, got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("the kernel has NaN or infinite entries")
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.shape[0] != m:
        raise ValueError(f"{y.shape[0]} targets for a kernel on {m} points")
    eigenvalues, vectors = np.linalg.eigh((kernel + kernel.T) / (2 * m))
    order = np.argsort(eigenvalues)[::-1]
    lam = np.clip(eigenvalues[order], 0.0, None)
    coefficients = vectors[:, order].T @ y / np.sqrt(m)  # v_ik
    return lam, np.sum(coefficients**2, axis=1)


def solve_kappa(lam, n: int, ridge: float) -> float:
    """The κ > 0 of Σ λ_i/(λ_i + κ) + δ/κ = n (δ = ``ridge``), relative precision ~1e-15."""
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues must be finite and >= 0")
    if ridge < 0 or not np.isfinite(ridge):
        raise ValueError(f"ridge must be finite and >= 0, got {ridge}")
    if n < 1:
        raise ValueError(f"n must be >= 1 training point, got {n}")
    positive = np.sort(lam[lam > 0])[::-1]
    if ridge == 0 and positive.size <= n:
        raise ValueError(
            f"with ridge 0, n = {n} training points need more than n positive eigenvalues "
            f"(the kernel has {positive.size}): no κ > 0 solves the equation; use fewer "
            "training points or a ridge > 0")

    def excess(log_kappa):
        kappa = np.exp(log_kappa)
        return float(np.sum(positive / (positive + kappa)) + ridge / kappa - n)

    hi = (positive.sum() + ridge) / n
    lo = ridge / n if ridge > 0 else positive[n] / (2 * n)
    lo = min(lo, hi)
    if excess(np.log(hi)) >= 0:  # only if the kernel is 0 and all of n comes from δ/κ
        return float(hi)
    return float(np.exp(brentq(excess, np.log(lo), np.log(hi), xtol=1e-15, rtol=1e-15,
                               maxiter=500)))


def predict(lam, v2, n: int, ridge: float, noise: float = 0.0) -> dict:
    """Eigenlearning's κ, learnabilities L (per eigenvalue), E₀, and test (over μ) and train
    MSE for n training points and ridge δ; ``noise`` is ε², the label-noise variance."""
    lam, v2 = np.asarray(lam, dtype=np.float64), np.asarray(v2, dtype=np.float64)
    if lam.shape != v2.shape:
        raise ValueError(f"{lam.shape} eigenvalues but {v2.shape} target coefficients")
    kappa = solve_kappa(lam, n, ridge)
    learnability = lam / (lam + kappa)
    e0 = n / (n - float(np.sum(learnability**2)))
    test = e0 * (float(np.sum((1 - learnability) ** 2 * v2)) + noise)
    return {"kappa": kappa, "learnabilities": learnability, "e0": e0, "test_mse": test,
            "train_mse": (ridge / (n * kappa)) ** 2 * test}


def heldout_mse(prediction: dict, n: int, m: int) -> float:
    """The predicted MSE on the pool's m − n points not trained on (module docstring)."""
    if not 1 <= n < m:
        raise ValueError(f"need 1 <= n < M held-out split, got n = {n}, M = {m}")
    return (m * prediction["test_mse"] - n * prediction["train_mse"]) / (m - n)


def kernel_regression_mse(kernel, targets, train, ridge: float) -> float:
    """Σ_k mean (f̂_k − y_k)² over the points not in ``train`` of kernel ridge regression
    f̂ = K(·, X)(K(X, X) + δ I)⁻¹ Y fitted on the points ``train`` (indices)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    train = np.asarray(train)
    test = np.setdiff1d(np.arange(kernel.shape[0]), train)
    if test.size == 0:
        raise ValueError("no held-out points: train on fewer points than the pool")
    k_train = kernel[np.ix_(train, train)] + ridge * np.eye(train.size)
    if ridge > 0:
        alpha = np.linalg.solve(k_train, y[train])
    else:
        alpha = np.linalg.lstsq(k_train, y[train], rcond=None)[0]
    residual = kernel[np.ix_(test, train)] @ alpha - y[test]
    return float(np.mean(np.sum(residual**2, axis=1)))


def measured_mse(kernel, targets, n: int, ridge: float, draws: int,
                 seed: int = 0) -> tuple[float, float]:
    """Mean and standard error, over ``draws`` training sets of n pool points drawn without
    replacement (numpy Generator(seed)), of kernel_regression_mse on the rest."""
    m = np.asarray(kernel).shape[0]
    if not 1 <= n < m:
        raise ValueError(f"need 1 <= n < M to hold points out, got n = {n}, M = {m}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    rng = np.random.default_rng(seed)
    values = np.array([kernel_regression_mse(kernel, targets, rng.choice(m, n, replace=False),
                                             ridge) for _ in range(draws)])
    se = float(values.std(ddof=1) / np.sqrt(draws)) if draws > 1 else np.nan
    return float(values.mean()), se


def eigenlearning(kernel, targets, n: int, relative_ridge: float, draws: int, seed: int = 0,
                  top_k: int = 10) -> dict:
    """Prediction and measurement for one kernel on its pool: δ = relative_ridge · tr(K)/M
    (the mean diagonal, Σλ_i, so the ridge is scale-free), the first top_k learnabilities
    (NaN past M). All NaN for a kernel that is 0 (tr K = 0: a network whose outputs do not
    depend on its parameters there, e.g. dead units) or not finite (a diverged network)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    m = kernel.shape[0]
    if not np.all(np.isfinite(kernel)) or np.trace(kernel) <= 0:
        return {key: np.nan for key in ("predicted_mse", "measured_mse", "measured_mse_se",
                                        "kappa", "e0", "ridge")} | {
            "learnabilities": np.full(top_k, np.nan)}
    lam, v2 = spectrum(kernel, targets)
    ridge = relative_ridge * float(np.trace(kernel)) / m
    out = predict(lam, v2, n, ridge)
    mean, se = measured_mse(kernel, targets, n, ridge, draws, seed)
    top = np.full(top_k, np.nan)
    top[:min(top_k, m)] = out["learnabilities"][:top_k]
    return {"predicted_mse": heldout_mse(out, n, m), "measured_mse": mean,
            "measured_mse_se": se, "kappa": out["kappa"], "e0": out["e0"],
            "learnabilities": top, "ridge": ridge}
