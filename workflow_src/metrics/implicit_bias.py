"""Implicit bias of gradient descent on separable data: the normalized margin of a network
and, for a linear classifier, its angle to the hard-margin multiclass SVM.

Notation. x_1 … x_n the training points (flattened), y_i their labels as trained on, f(x; θ)
∈ R^K the logits, θ every parameter (weights and biases) and

    q_i(θ) = f_{y_i}(x_i; θ) − max_{j≠y_i} f_j(x_i; θ)       the margin of point i
    γ(θ)   = min_i q_i(θ)                                     the margin (> 0: all correct)
    γ̄(θ)   = γ(θ) / ‖θ‖₂^L                                    the normalized margin

with L = depth + 1 the number of linear layers. For a bias-free ReLU network (or any
depth-0 classifier) f(cθ) = c^L f(θ) for c > 0: f is L-homogeneous and γ̄ is scale-free. Lyu
& Li (ICLR 2020, "Gradient descent maximizes the margin of homogeneous neural networks",
Theorem 4.1) prove that once gradient flow or descent on an exponential-type loss reaches
γ > 0, γ̄ increases (for flow; a smoothed version of it for descent). Biases: θ includes
them. A depth-0 classifier with biases is still 1-homogeneous in (W, b) (it is a linear
classifier on the augmented inputs (x, 1)); a deeper network with biases, or an activation
other than ReLU, is not homogeneous, and ``homogeneous`` says so: γ̄ is then reported with
the same formula but is not scale-free.

Linear classifier (Soudry, Hoffer, Nacson, Gunasekar & Srebro, JMLR 2018, "The implicit
bias of gradient descent on separable data", Theorem 3 and, for K classes, Theorem 7): on
linearly separable data, gradient descent on the cross-entropy with a small enough step
gives W(t)/‖W(t)‖ → Ŵ/‖Ŵ‖, at a rate 1/log t, where

    Ŵ = argmin ‖W‖_F  s.t.  w_{y_i}ᵀ x̃_i ≥ w_kᵀ x̃_i + 1   for every i and k ≠ y_i,

the multiclass hard-margin SVM (Crammer & Singer's, without slack), x̃_i = (x_i, 1) when the
classifier has biases (the bias is then a weight on a constant input and is penalised like
the others) and x̃_i = x_i without. For K = 2 it is (−u/2, u/2) with u the binary hard-margin
SVM through the origin of the augmented inputs. The solver is scikit-learn's LinearSVC
(liblinear), with a C large enough to give the hard margin (any C above the hard-margin
problem's largest dual variable does) and no separate intercept; this
module writes no solver. Separability is checked, not assumed: the SVM's training accuracy
and its smallest functional margin (1 at the hard-margin solution: some constraint is
active, none violated) are returned, and the angle is NaN when the SVM does not separate
the points.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np


def point_margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) margins q_i = f_{y_i} − max_{j≠y_i} f_j of logits (n, K), labels (n,)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] < 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"need logits (n, K >= 2) and n labels; got {logits.shape} and "
                         f"{labels.shape}")
    rows = np.arange(len(labels))
    own = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    return own - others.max(axis=1)


def augmented(x: np.ndarray, bias: bool) -> np.ndarray:
    """Inputs flattened to (n, d), with a column of ones appended when ``bias``."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.hstack([flat, np.ones((len(flat), 1))]) if bias else flat


def angle(a: np.ndarray, b: np.ndarray) -> float:
    """The angle (radians, in [0, π]) between two arrays taken as vectors; NaN if either is 0."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    # arctan2 of |a×b| and a·b (via the projection's residual): accurate near 0 and π,
    # where arccos of a rounded cosine is not.
    ua, ub = a / na, b / nb
    return float(2 * np.arctan2(np.linalg.norm(ua - ub), np.linalg.norm(ua + ub)))


_SVM_CACHE: dict = {}


def svm_direction(x: np.ndarray, labels: np.ndarray, n_classes: int, bias: bool,
                  C: float = 1e3, tol: float = 1e-8, max_iter: int = 1_000_000) -> dict:
    """The multiclass hard-margin SVM Ŵ (n_classes, d [+1]) of the module doc, from
    scikit-learn's LinearSVC with a large ``C``, with its training accuracy, its smallest
    functional margin min_i q_i(Ŵ) (≈ 1 when the large C gives the hard margin) and
    whether liblinear converged. Cached by the data's bytes and the settings (one solve per
    process for the many networks and snapshots that share a training set)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    features = augmented(x, bias)
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    if not np.array_equal(present, np.arange(n_classes)):
        raise ValueError(f"the SVM needs points of every one of the {n_classes} classes (every "
                         f"class's constraints enter it); the points have classes "
                         f"{present.tolist()}: use more training points (n_points)")
    key = (hashlib.sha256(features.tobytes() + labels.tobytes()).hexdigest(), n_classes,
           bias, C, tol, max_iter)
    if key in _SVM_CACHE:
        return _SVM_CACHE[key]
    binary = n_classes == 2
    solver = LinearSVC(C=C, loss="hinge" if binary else "squared_hinge", dual=True,
                       fit_intercept=False, tol=tol, max_iter=max_iter,
                       multi_class="ovr" if binary else "crammer_singer")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        solver.fit(features, labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    weights = np.zeros((n_classes, features.shape[1]))
    if binary:  # coef_ (1, d): the direction from class 0 to class 1
        weights[0], weights[1] = -solver.coef_[0] / 2, solver.coef_[0] / 2
    else:
        weights[:] = solver.coef_
    margins = point_margins(features @ weights.T, labels)
    result = {"weights": weights, "train_acc": float(np.mean(margins > 0)),
              "functional_margin": float(margins.min()), "converged": converged}
    _SVM_CACHE[key] = result
    return result
