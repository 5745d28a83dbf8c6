"""Sharpness of a minimum (Keskar et al. 2017, arXiv 1609.04836, §2.2.2, Metric 2.1).

With L(w) the training loss (mean cross-entropy over the training set, with the labels the
network was trained on) at the trained weights w ∈ R^n, a matrix A ∈ R^{n×p}, A⁺ its
pseudo-inverse and the box

    C_ε = { z ∈ R^p : |z_i| ≤ ε (|(A⁺w)_i| + 1) },

the sharpness is

    φ_{w,L}(ε, A) = 100 · (max_{z ∈ C_ε} L(w + A z) − L(w)) / (1 + L(w)).

Two choices of A are measured. ``full``: A = I_n, so A⁺w = w and the box has half-widths
ε(|w_i| + 1) (A is never formed). ``subspace``: p = ``subspace_dim`` (Keskar: 100) random
directions, A with entries i.i.d. standard normal N(0, 1) drawn from
``numpy.random.default_rng(seed)`` (Keskar only says "randomly generated"; the columns are
not normalised), A⁺ = ``torch.linalg.pinv(A)`` in float64. The scale of A matters: the "+1"
lets z_i move by ε whatever (A⁺w)_i is, and A z then moves w by ε‖A_{:,i}‖ ≈ ε√n along
column i. If the network has fewer than ``subspace_dim`` parameters, p = n.

The maximum is approximated as in the paper: L-BFGS-B (``scipy.optimize.minimize``) on
−L(w + A z) with its autograd gradient Aᵀ∇L, within the box, for ``max_iterations`` (10)
iterations.

Start point. The paper does not say where L-BFGS-B starts, and the authors did not release
their sharpness code (their README points to SciPy's L-BFGS-B; issues #3 and #7 of
keskarnitish/large-batch-training ask for it). We start at z = 0, the trained weights, as
the public reimplementation of Wen et al. 2018 (wenwei202/smoothout, measure_sharpness.py)
does in both variants. From z = 0 L-BFGS-B's first step is the projected steepest-ascent
step along Aᵀ∇L(w), so the gradient at the minimum is what it follows first; a random start
in the box would add noise from the start point to a 10-iteration estimate. ``restarts``
(default 0) adds runs from seeded uniform points in the box (``restart_points``): φ is the
best over all runs and ``_restart_gain`` says how much the best beat the run from z = 0.

Stopping. SciPy's default tolerances (gtol = 1e-5 on the projected gradient, ftol ≈ 2.2e-9
on the relative decrease) would stop a well-trained network at z = 0, whose every
|∂L/∂w_i| can be below 1e-5, and report 0. Both are set to 0 here, so L-BFGS-B runs its
``max_iterations`` iterations unless the line search fails, an iteration leaves the loss
unchanged, or the projected gradient is exactly 0 (a vertex of the box where the gradient
points out along every coordinate: common for small ε, where L is nearly linear). How the
run that found φ stopped is stored (``_status``, ``_iterations``): ``_converged`` is 1 only
when L-BFGS-B's own convergence test stopped it (a stationary point of the box problem);
the iteration budget or a failed line search leave it 0.

The value is never negative: every point evaluated lies in C_ε (z is clipped onto the box
before the loss is evaluated, against rounding at the bounds), the maximum is the largest
loss evaluated, and z = 0 is among the points evaluated, so max ≥ L(w).

Precision: a float64 copy of the network, and ``jacobian.cross_entropy`` (the careful
float64 per-point loss) summed over chunks of ``chunk_size`` points and divided by the
number of points, so the loss is the full-set mean whatever the chunking.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy
import scipy.optimize
import torch
import xarray as xr

from .jacobian import cross_entropy

PAPER = ("Keskar, Mudigere, Nocedal, Smelyanskiy, Tang 2017, On Large-Batch Training for "
         "Deep Learning: Generalization Gap and Sharp Minima, arXiv 1609.04836")
EQUATION = ("§2.2.2 Metric 2.1: phi(eps, A) = 100 (max_{z in C_eps} L(w + A z) - L(w)) / "
            "(1 + L(w)), C_eps = {z : |z_i| <= eps (|(A^+ w)_i| + 1)}")
START_POINT = ("z = 0 (the trained weights), as in the reimplementation wenwei202/smoothout; "
               "the paper and the authors' released code do not say")
RESTART_DISTRIBUTION = ("restart r starts at z = u_r * h (h the box's half-widths), u_r i.i.d. "
                        "uniform on [-1, 1]^p from numpy.random.default_rng([seed, 1, 0 full "
                        "| 1 subspace]); phi is the best over all runs")
SUBSPACE_DISTRIBUTION = ("A (n x p) with i.i.d. standard normal N(0, 1) entries from "
                         "numpy.random.default_rng(seed), columns not normalised; "
                         "A^+ = torch.linalg.pinv(A) in float64")

# Objective of the box problem: z (p,) -> (value, gradient (p,)), numpy float64.
BoxObjective = Callable[[np.ndarray], "tuple[float, np.ndarray]"]


class TrainingLoss:
    """L(w) and ∇L(w) for a flat float64 parameter vector w, over all of (x, y).

    Works on a float64 copy of the network (the caller's network is not touched); the
    parameters are flattened in ``model.parameters()`` order. The loss is Σ_i ℓ_i / N over
    chunks of ``chunk_size`` points, so it is the full-set mean for any chunking.

    ``weights()`` is always the trained w (kept from construction), and every evaluation
    at a perturbed vector loads it only for that evaluation (``evaluated_at``) and puts w
    back: searches run one after another (the PAC-Bayes σ′ then α′ searches) must each start
    from the trained network, never from the last perturbation the previous one loaded.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 chunk_size: int = 4096):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"need as many labels as points (> 0), got {x.shape[0]} and "
                             f"{y.shape[0]}")
        self.model = copy.deepcopy(model).double()
        self.params = list(self.model.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.device = self.params[0].device
        self.x = x.to(self.device, torch.float64)
        self.y = y.to(self.device, torch.long)
        self.chunk_size = chunk_size
        self.n_points = int(x.shape[0])
        self.n_parameters = sum(p.numel() for p in self.params)
        self._trained = torch.cat([p.detach().reshape(-1) for p in self.params]).clone()

    def weights(self) -> torch.Tensor:
        """The trained weights as one flat float64 vector (n,), a fresh copy."""
        return self._trained.clone()

    @torch.no_grad()
    def _load(self, w: torch.Tensor) -> None:
        start = 0
        for p in self.params:
            p.copy_(w[start:start + p.numel()].view_as(p))
            start += p.numel()

    @contextlib.contextmanager
    def evaluated_at(self, w: torch.Tensor):
        """The network with the flat vector w loaded, the trained weights back afterwards
        (also when the evaluation raises)."""
        w = torch.as_tensor(w, dtype=torch.float64, device=self.device)
        if w.shape != (self.n_parameters,):
            raise ValueError(f"expected a flat vector of {self.n_parameters}, got {w.shape}")
        self._load(w)
        try:
            yield self.model
        finally:
            self._load(self._trained)

    def __call__(self, w: torch.Tensor) -> tuple[float, torch.Tensor]:
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        grad = torch.zeros(self.n_parameters, dtype=torch.float64, device=self.device)
        with self.evaluated_at(w) as model:
            for start in range(0, self.n_points, self.chunk_size):
                xc = self.x[start:start + self.chunk_size]
                yc = self.y[start:start + self.chunk_size]
                with torch.enable_grad():
                    loss_sum = cross_entropy(model(xc), yc).sum()
                    parts = torch.autograd.grad(loss_sum, self.params)
                total += loss_sum.detach()
                grad += torch.cat([g.reshape(-1) for g in parts])
        return float(total / self.n_points), grad / self.n_points


def subspace_basis(n: int, p: int, seed: int) -> np.ndarray:
    """A ∈ R^{n×p}, entries i.i.d. N(0, 1) from ``numpy.random.default_rng(seed)``."""
    return np.random.default_rng(seed).standard_normal((n, p))


def box_half_widths(projected_weights: np.ndarray, epsilon: float) -> np.ndarray:
    """ε(|(A⁺w)_i| + 1) for every coordinate of z, given A⁺w (w itself for A = I)."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")
    return epsilon * (np.abs(np.asarray(projected_weights, dtype=np.float64)) + 1.0)


@dataclass(frozen=True)
class BoxMaximum:
    """What ``maximize_in_box`` found: the largest value evaluated and where, and how the
    L-BFGS-B run that evaluated it stopped."""

    value: float  # max over every evaluated z of every run (z = 0 included), ≥ start_value
    start_value: float  # the objective at z = 0
    z: np.ndarray  # where ``value`` was evaluated
    evaluations: int  # objective calls made by L-BFGS-B over all runs, z = 0 included
    iterations: int  # L-BFGS-B iterations of the run that found ``value``
    status: int  # scipy's status of that run: 0 its convergence test, 1 the iteration
    #   budget, 2 anything else (e.g. ABNORMAL_TERMINATION_IN_LNSRCH)
    message: str
    first_value: float  # the best value of the run from z = 0 (= value without restarts)


def _lbfgsb_run(fun: BoxObjective, h: np.ndarray, z0: np.ndarray,
                at_zero: tuple[float, np.ndarray], max_iterations: int) -> dict:
    """One L-BFGS-B run on −fun from z0 in the box |z_i| ≤ h_i: the best value of its
    calls (and at z = 0, ``at_zero`` = (value, gradient), reused), where, and how it
    stopped."""
    best = {"value": at_zero[0], "z": np.zeros_like(h)} if not z0.any() else \
        {"value": -np.inf, "z": z0}
    calls = [0]

    def objective(z):
        calls[0] += 1
        z = np.clip(np.asarray(z, dtype=np.float64), -h, h)
        if not z.any():  # z = 0 (the first run's first call): already evaluated
            return -at_zero[0], -at_zero[1]
        value, grad = fun(z)
        value = float(value)
        if value > best["value"]:
            best["value"], best["z"] = value, z.copy()
        return -value, -np.asarray(grad, dtype=np.float64)

    result = scipy.optimize.minimize(
        objective, z0, jac=True, method="L-BFGS-B", bounds=scipy.optimize.Bounds(-h, h),
        options={"maxiter": max_iterations, "ftol": 0.0, "gtol": 0.0})
    # A box of width 0 (ε = 0) fixes every variable: scipy returns without running L-BFGS-B
    # and without a status; its one point is the maximum (status 0).
    return {**best, "calls": calls[0], "iterations": int(result.get("nit", 0)),
            "status": int(result.get("status", 0)), "message": str(result.message)}


def maximize_in_box(fun: BoxObjective, half_widths: np.ndarray, max_iterations: int = 10,
                    starts: np.ndarray | None = None) -> BoxMaximum:
    """Approximate max of fun over the box |z_i| ≤ half_widths_i by L-BFGS-B from z = 0, and
    from z = u ⊙ half_widths for every row u ∈ [−1, 1]^p of ``starts`` (restarts).

    ``fun(z) -> (value, gradient)`` in float64; L-BFGS-B minimises −fun for at most
    ``max_iterations`` iterations per run with its tolerances set to 0 (see the module
    docstring). z is clipped onto the box before every call (L-BFGS-B stays inside it but
    for rounding), and the result is the best value of all calls of all runs, not
    L-BFGS-B's last iterate; the first run's best is kept as ``first_value``.
    """
    h = np.asarray(half_widths, dtype=np.float64)
    if (h < 0).any() or not np.isfinite(h).all():
        raise ValueError("half-widths must be finite and non-negative")
    start_value, start_grad = fun(np.zeros_like(h))
    at_zero = (float(start_value), np.asarray(start_grad, dtype=np.float64))
    points = [np.zeros_like(h)] + [np.clip(np.asarray(u, dtype=np.float64) * h, -h, h)
                                   for u in ([] if starts is None else starts)]
    runs = [_lbfgsb_run(fun, h, z0, at_zero, max_iterations) for z0 in points]
    best = max(runs, key=lambda run: run["value"])  # the first of equal values
    return BoxMaximum(value=max(best["value"], at_zero[0]), start_value=at_zero[0],
                      z=best["z"], evaluations=sum(run["calls"] for run in runs),
                      iterations=best["iterations"], status=best["status"],
                      message=best["message"], first_value=max(runs[0]["value"], at_zero[0]))


def sharpness_from_maximum(maximum: float, base: float) -> float:
    """φ = 100 (max − L(w)) / (1 + L(w)), floored at 0 (max < L(w) only by a failure)."""
    return 100.0 * max(maximum - base, 0.0) / (1.0 + base)


class SharpnessProblem:
    """max_{z ∈ C_ε} L(w + A z) for one network and one A (None: A = I_n).

    ``objective(z)`` is L(w + A z) with gradient Aᵀ∇L(w + A z) in numpy float64; L(w) and
    ∇L(w) are computed once and reused at z = 0 for every ε.
    """

    def __init__(self, loss: TrainingLoss, A: np.ndarray | None = None,
                 base: tuple[float, torch.Tensor] | None = None):
        self.loss = loss
        self.w = loss.weights()
        # base: (L(w), ∇_w L(w)) if the caller has them already
        self.base_value, base_grad = loss(self.w) if base is None else base
        # A and A⁺ live in torch on the network's device: numpy's BLAS threads would
        # compete with torch's for the same cores.
        if A is None:
            self.A = self.A_pinv = None
        else:
            self.A = torch.as_tensor(np.asarray(A, dtype=np.float64)).to(self.w.device)
            if self.A.ndim != 2 or self.A.shape[0] != self.w.numel():
                raise ValueError(f"A must be (n={self.w.numel()}, p), got {tuple(self.A.shape)}")
            self.A_pinv = torch.linalg.pinv(self.A)
        self.base_grad = self._to_z(base_grad)

    @property
    def dim(self) -> int:
        return self.w.numel() if self.A is None else self.A.shape[1]

    def _to_z(self, grad_w: torch.Tensor) -> np.ndarray:
        g = grad_w if self.A is None else self.A.T @ grad_w
        return g.cpu().numpy()

    def projected_weights(self) -> np.ndarray:
        """A⁺w (w itself for A = I), whose magnitudes set the box."""
        return (self.w if self.A_pinv is None else self.A_pinv @ self.w).cpu().numpy()

    def half_widths(self, epsilon: float) -> np.ndarray:
        return box_half_widths(self.projected_weights(), epsilon)

    def objective(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.asarray(z, dtype=np.float64)
        if not z.any():
            return self.base_value, self.base_grad.copy()
        zt = torch.from_numpy(z).to(self.w.device)
        step = zt if self.A is None else self.A @ zt
        value, grad = self.loss(self.w + step)
        return value, self._to_z(grad)

    def sharpness(self, epsilon: float, max_iterations: int = 10,
                  starts: np.ndarray | None = None) -> tuple[float, BoxMaximum]:
        """φ(ε, A) and the box maximum it came from; ``starts``: restart points u ∈
        [−1, 1]^p (rows), each run from z = u ⊙ the box's half-widths."""
        found = maximize_in_box(self.objective, self.half_widths(epsilon), max_iterations,
                                starts=starts)
        return sharpness_from_maximum(found.value, self.base_value), found


def restart_points(p: int, restarts: int, seed: int, stream: int) -> np.ndarray:
    """(restarts, p) points u with entries i.i.d. uniform on [−1, 1], from
    ``numpy.random.default_rng([seed, 1, stream])`` (stream 0: full space, 1: subspace;
    ``default_rng(seed)`` alone draws the subspace's A). A restart starts at z = u ⊙ h, h the
    box's half-widths, so one draw serves every ε, and more restarts keep the first ones."""
    return np.random.default_rng([seed, 1, stream]).uniform(-1.0, 1.0, (restarts, p))


# Indicator -> the variable that says (1.0 / 0.0) whether its search converged (both with dim
# epsilon; measure_shard names them <name>_eps<ε>); kept in step with aggregate.CONVERGED_BY.
CONVERGED_BY = {"sharpness_full": "sharpness_full_converged",
                "sharpness_subspace": "sharpness_subspace_converged"}


def sharpness_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                      epsilons=(1e-3, 5e-4), subspace_dim: int = 100,
                      max_iterations: int = 10, seed: int = 0, chunk_size: int = 4096,
                      restarts: int = 0) -> xr.Dataset:
    """Keskar's sharpness φ(ε, A) of a trained network, full space and random subspace.

    x, y: the training set with the labels the network was trained on (the loss is their
    mean cross-entropy). Variables (dim ``epsilon``, float64): ``sharpness_full``
    (A = I_n), ``sharpness_subspace`` (A random n × p, p = min(subspace_dim, n)), each the
    best over the run from z = 0 and ``restarts`` more (``restart_points``). For each A:
    ``_evaluations``, the (loss, gradient) evaluations over the training set that L-BFGS-B
    asked for at that ε over all runs, z = 0 included (computed once, shared by every ε);
    of the run that found φ, ``_iterations``, ``_status`` (scipy's: 0 its convergence test,
    1 the iteration budget, 2 anything else, e.g. ABNORMAL_TERMINATION_IN_LNSRCH) and
    ``_converged`` (1.0 if status 0); ``_restart_gain``, φ minus the first run's φ.
    """
    epsilons = np.asarray(epsilons, dtype=np.float64).reshape(-1)
    if (epsilons < 0).any():
        raise ValueError(f"epsilons must be non-negative, got {epsilons}")
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    loss = TrainingLoss(model, x, y, chunk_size)
    n = loss.n_parameters
    p = min(int(subspace_dim), n)
    base = loss(loss.weights())
    problems = {"full": SharpnessProblem(loss, base=base),
                "subspace": SharpnessProblem(loss, subspace_basis(n, p, seed), base=base)}
    variables = {}
    for stream, (name, problem) in enumerate(problems.items()):
        starts = restart_points(problem.dim, restarts, seed, stream) if restarts else None
        columns = {key: [] for key in ("", "evaluations", "iterations", "status",
                                       "converged", "restart_gain")}
        for eps in epsilons:
            phi, found = problem.sharpness(float(eps), max_iterations, starts)
            first = sharpness_from_maximum(found.first_value, problem.base_value)
            for key, value in (("", phi), ("evaluations", found.evaluations),
                               ("iterations", found.iterations), ("status", found.status),
                               ("converged", found.status == 0), ("restart_gain", phi - first)):
                columns[key].append(value)
        for key, column in columns.items():  # counts, codes, flags as float, like every
            variables[f"sharpness_{name}_{key}" if key else f"sharpness_{name}"] = (  # per-run
                "epsilon", np.asarray(column, dtype=np.float64))  # variable (NaN-paddable)
    out = xr.Dataset(variables, coords={"epsilon": epsilons},
                     attrs=_attrs(loss, problems["full"].base_value, max_iterations, restarts,
                                  subspace_dim, p, seed))
    for name, flag in CONVERGED_BY.items():
        out[name].attrs["converged_by"] = flag
    return out


def _attrs(loss: TrainingLoss, base_value: float, max_iterations: int, restarts: int,
           subspace_dim: int, p: int, seed: int) -> dict:
    attrs = {
        "paper": PAPER,
        "equation": EQUATION,
        "loss": "mean cross-entropy (nats) over the training set, labels as trained on",
        "optimizer": (f"scipy {scipy.__version__} minimize(method='L-BFGS-B') on -L(w + A z) "
                      "with autograd gradient, bounds C_eps"),
        "lbfgsb_options": f"maxiter={max_iterations}, ftol=0, gtol=0",
        "max_iterations": int(max_iterations),
        "start_point": START_POINT,
        "restarts": int(restarts),
        "restart_distribution": RESTART_DISTRIBUTION,
        "subspace_dim": p,
        "subspace_dim_requested": int(subspace_dim),
        "subspace_distribution": SUBSPACE_DISTRIBUTION,
        "seed": int(seed),
        "n_parameters": loss.n_parameters,
        "n_points": loss.n_points,
        "loss_at_weights": float(base_value),
    }
    if p < subspace_dim:
        attrs["note"] = (f"the network has n = {loss.n_parameters} < subspace_dim = "
                         f"{subspace_dim} parameters: the subspace uses p = n = "
                         f"{loss.n_parameters} random directions")
    return attrs
