"""Hessian of the training loss with respect to all parameters: top eigenvalue and trace.

L(w) = (1/N) Σ_i −log σ_{y_i}(f(x_i; w)) over an evaluation set (the labels the network was
trained on), w every parameter of the network flattened into one vector. H = ∇²L(w) is
never formed: both quantities come from exact Hessian-vector products, as in PyHessian
(Yao, Gholami, Keutzer & Mahoney 2020, arXiv 1912.07145):

* top eigenvalue: the largest ALGEBRAIC eigenvalue λ_max (PyHessian's Algorithm 1 is power
  iteration; this is Lanczos instead, see below);
* trace: Hutchinson's estimator tr(H) ≈ (1/m) Σ_i v_iᵀ H v_i with Rademacher v_i (their
  Algorithm 2), reported with its standard error.

Why Lanczos. Power iteration converges to the eigenvalue of largest MAGNITUDE, which for an
indefinite Hessian (any network away from a minimum) can be the most negative one, and when
λ_min ≈ −λ_max its Rayleigh quotient moves so little per step that a relative-change rule
stops on an estimate below λ_max and calls it converged (tests/test_hessian.py: a
55-parameter tanh network, 2e-3 low after 10 products). Lanczos builds the Krylov space
span{v, Hv, H²v, ...} and takes the largest Ritz value in it, which separates both ends of
the spectrum at once; ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``,
which='LA', k = 1) does so in the memory of ``LANCZOS_VECTORS`` vectors.

Budget and honesty. ``n_iterations`` is a hard budget of Hessian-vector products for the
Lanczos iteration: the operator refuses the next product, and the answer is then the largest
Ritz value of the vectors it multiplied (``_RitzRecord``), marked unconverged. Whatever
stopped it, one more exact product at the unit Ritz vector u gives the stored eigenvalue
λ = uᵀHu and the relative residual ‖Hu − λu‖/|λ| (for a symmetric H some eigenvalue lies
within ‖Hu − λu‖ of λ). ``hessian_top_converged`` is 1 when ARPACK converged (its estimate
of that residual ≤ tolerance) and the residual computed from the extra product is ≤
``tolerance`` too. ARPACK's test is absolute for |θ| < ε^{2/3} ≈ 4e-11, so it sees H scaled by
‖Hv₁‖/‖v₁‖ of its first vector (a saturated network's Hessian can be 1e-20).

Hessian-vector products: double backward (the gradient with create_graph=True, then the
gradient of gᵀv), in a float64 copy of the network and with the float64 loss of
``jacobian.cross_entropy``. The evaluation set is processed ``chunk_size`` points at a time,
each chunk's summed loss divided by N, so the products are those of the full-set mean's
Hessian whatever the chunking, with memory bounded by one chunk's double-backward graph.
Piecewise-linear activations (relu, hard_tanh, ...) have zero second derivative almost
everywhere, but H is still non-zero: the loss's curvature in the logits and the products of
weights across layers make it so. PyTorch has no double backward for hardsigmoid
(aten::hardsigmoid_backward, torch 2.15), so in the copy every nn.Hardsigmoid is replaced by
relu6(z + 3) / 6, the same function to the last bit and with the same derivative
(1/6 strictly inside (−3, 3), else 0), built from ops that have one. Likewise, PyTorch's
double backward of batch norm fails ("Expected a proper Tensor but got None") for a layer
with a shift β but no scale γ (cnns.ShiftBatchNorm2d: inception_small with batch norm), so
in the copy such a layer gets a constant unit scale (a buffer, not a parameter): the same
function to the last bit, and the same parameters in the same order.

Determinism: Lanczos's start vector v0 ~ N(0, I) (and the seed of the generator ARPACK
draws a fresh vector from when the Krylov space is invariant) and the Rademacher probes come
from two CPU ``torch.Generator`` objects, each seeded with ``seed`` (so the trace's probes do
not depend on the eigenvalue's products).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh
from torch import nn

from .jacobian import cross_entropy

PAPER = ("Yao, Gholami, Keutzer & Mahoney 2020, PyHessian: Neural Networks Through the Lens "
         "of the Hessian, arXiv 1912.07145")
TOP_METHOD = ("implicitly restarted Lanczos (ARPACK, scipy.sparse.linalg.eigsh, which='LA', "
              "k=1) on exact Hessian-vector products; eigenvalue u^T H u and residual "
              "||Hu - lambda u|| / |lambda| from one more product at its unit Ritz vector u")
TRACE_METHOD = ("Hutchinson estimator with Rademacher probes (PyHessian Algorithm 2); "
                "stderr = std(ddof=1) / sqrt(n_probes)")
LOSS = "mean cross-entropy (nats) over the evaluation set, labels as given"
PROBE_BLOCK = 10  # Rademacher probes per pass over the evaluation set
# Lanczos vectors ARPACK keeps (its ncv): scipy's default for one eigenvalue,
# min(dim, max(2k + 1, 20)). Memory: about 3 × 20 float64 vectors of the parameters' size
# (ARPACK's basis and work space, and the _RitzRecord's Q and HQ).
LANCZOS_VECTORS = 20

HVP = Callable[[torch.Tensor], torch.Tensor]
# Indicator -> the variable that says (1.0 / 0.0) whether its search converged; kept in step
# with aggregate.CONVERGED_BY, which marks the indicator in metrics.zarr for the summary.
CONVERGED_BY = {"hessian_top_eigenvalue": "hessian_top_converged"}


class _Hardsigmoid(nn.Module):
    """nn.Hardsigmoid as relu6(z + 3) / 6 (PyTorch's own formula), twice differentiable."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu6(z + 3) / 6


def _with_double_backward(model: nn.Module) -> nn.Module:
    """Replace, in place, every submodule whose backward has no derivative in PyTorch."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Hardsigmoid):
                setattr(module, name, _Hardsigmoid())
        if (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is None
                and module.bias is not None):
            # weight=None with a bias breaks batch_norm's double backward; a unit weight
            # buffer gives the same values and leaves the parameters (and their order) alone.
            del module._parameters["weight"]
            module.register_buffer("weight", torch.ones_like(module.bias), persistent=False)
    return model


class LossHessian:
    """v ↦ Hv for H the Hessian of the mean cross-entropy of ``model`` on (x, y).

    Works in a float64 deep copy of the model (the model itself is untouched). Called with
    one vector (dim,) or a block of vectors (k, dim) (one row each); a block shares each
    chunk's forward pass and first backward pass.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 chunk_size: int = 4096):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} points but {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError("the evaluation set is empty")
        self.model = _with_double_backward(copy.deepcopy(model).double())
        self.params = list(self.model.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.device = self.params[0].device
        self.dtype = torch.float64
        self.dim = sum(p.numel() for p in self.params)
        self.x = x.detach().to(device=self.device, dtype=torch.float64)
        self.y = y.detach().to(device=self.device, dtype=torch.long)
        self.n_points = int(x.shape[0])
        self.chunk_size = int(chunk_size)

    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([torch.zeros_like(p).reshape(-1) if t is None else t.reshape(-1)
                          for p, t in zip(self.params, tensors)])

    def _chunk_losses(self):
        """The summed loss of each chunk divided by N: their sum is the full-set mean."""
        for start in range(0, self.n_points, self.chunk_size):
            xc = self.x[start:start + self.chunk_size]
            yc = self.y[start:start + self.chunk_size]
            yield cross_entropy(self.model(xc), yc).sum() / self.n_points

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        block = v.reshape(-1, self.dim).to(device=self.device, dtype=self.dtype)
        out = torch.zeros_like(block)
        with torch.enable_grad():
            for loss in self._chunk_losses():
                grads = torch.autograd.grad(loss, self.params, create_graph=True,
                                            allow_unused=True)
                g = self._flat(grads)
                if not g.requires_grad:  # the gradient is constant in w: H = 0 here
                    continue
                for k in range(block.shape[0]):
                    hv = torch.autograd.grad(g @ block[k], self.params,
                                             retain_graph=k + 1 < block.shape[0],
                                             allow_unused=True)
                    out[k] += self._flat(hv)
        return out.reshape(v.shape)


def _check(n: int, name: str) -> None:
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")


class _RitzRecord:
    """Rayleigh–Ritz over the vectors ARPACK has had multiplied, in bounded memory.

    ``ArpackNoConvergence`` carries only the converged Ritz pairs: none when k = 1 did not
    converge. So the operator keeps Q (m, dim), an orthonormal basis of (part of) the span of
    the vectors multiplied, and HQ (m, dim), both exact linear combinations of the products
    (no extra product). The top eigenvalue of Qᵀ(HQ) is a Ritz value: the Rayleigh quotient
    of a unit vector, so never above λ_max. Until ARPACK restarts, the record spans v0 and
    every Lanczos vector, K_{m}(H, v0) ⊇ ARPACK's own Krylov space K_{m−1}(H, Hv0), so its
    Ritz value is at least ARPACK's; past ``capacity`` vectors Q is cut to its top ``keep``
    Ritz vectors (a thick restart, as ARPACK's own), so the record's Ritz value never drops.
    """

    def __init__(self, dim: int, capacity: int, keep: int, dtype, device):
        self.capacity, self.keep = capacity, keep
        self.q = torch.empty(0, dim, dtype=dtype, device=device)
        self.hq = torch.empty(0, dim, dtype=dtype, device=device)

    def add(self, x: torch.Tensor, hx: torch.Tensor) -> None:
        size = x.norm()
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to rounding
            c = self.q @ x
            x, hx = x - c @ self.q, hx - c @ self.hq  # H(x − Qᵀc) = Hx − (HQ)ᵀc
        norm = x.norm()
        if not norm > 1e-10 * size:  # already in the span (or x = 0)
            return
        self.q = torch.cat([self.q, (x / norm)[None]])
        self.hq = torch.cat([self.hq, (hx / norm)[None]])
        if self.q.shape[0] > self.capacity:
            s = self._ritz()[1][:, -self.keep:]  # (m, keep), the top Ritz vectors' coordinates
            self.q, self.hq = s.T @ self.q, s.T @ self.hq

    def _ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.q @ self.hq.T
        return torch.linalg.eigh(0.5 * (t + t.T))  # ascending values, (m,) and (m, m)

    def top(self) -> torch.Tensor:
        """The unit Ritz vector (dim,) of the largest Ritz value."""
        return self._ritz()[1][:, -1] @ self.q


class _BudgetSpent(Exception):
    """The operator was asked for a product beyond the budget."""


def lanczos_vectors(dim: int, max_products: int) -> int:
    """ARPACK's ncv for k = 1: LANCZOS_VECTORS, fewer when the budget or dim is smaller.

    ARPACK first multiplies the start vector (it uses Hv0 as its first Lanczos vector), so a
    first cycle of ncv vectors costs ncv + 1 products; ncv = 2 is ARPACK's least (k < ncv),
    and with a budget below 3 the operator stops it within its first cycle.
    """
    return min(dim, max(2, min(max_products - 1, LANCZOS_VECTORS)))


class _Operator:
    """x ↦ Hx / s for ARPACK, numpy float64 (dim,) both ways, at most ``budget`` products.

    s is ‖Hx₁‖/‖x₁‖ of the first vector multiplied, fixed from then on (so ARPACK sees one
    linear map): ARPACK's stopping test ‖r‖ ≤ tol·max(ε^{2/3}, |θ|) is absolute below
    ε^{2/3} ≈ 4e-11, and the Hessian of a saturated network (every point near-certain) can
    be far smaller, which would "converge" at once. Every product is recorded: the record
    holds one cycle of ncv Lanczos vectors and the start vector (_RitzRecord).
    """

    def __init__(self, hvp: HVP, dim: int, budget: int, ncv: int, dtype, device):
        self.hvp, self.budget, self.dtype, self.device = hvp, budget, dtype, device
        self.products, self.scale = 0, None
        self.record = _RitzRecord(dim, capacity=ncv + 1, keep=ncv // 2, dtype=dtype,
                                  device=device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.products == self.budget:
            raise _BudgetSpent
        xt = torch.from_numpy(np.array(x, dtype=np.float64).reshape(-1))
        xt = xt.to(device=self.device, dtype=self.dtype)
        hx = self.hvp(xt)
        self.products += 1
        if self.scale is None:
            ratio = float(hx.norm() / xt.norm()) if xt.norm() > 0 else 0.0
            self.scale = ratio if ratio > 0 and math.isfinite(ratio) else 1.0
        self.record.add(xt, hx)
        return (hx / self.scale).cpu().numpy().astype(np.float64)


class TopEigenvalue(NamedTuple):
    eigenvalue: float  # uᵀHu, u the unit Ritz vector of the largest Ritz value
    residual: float  # ‖Hu − λu‖ / |λ| (0 if Hu = 0, inf if λ = 0 otherwise)
    products: int  # Hessian-vector products of the Lanczos iteration (not the check's)
    converged: bool  # ARPACK converged within the budget and residual ≤ tolerance


def top_eigenvalue(hvp: HVP, dim: int, max_products: int, tolerance: float,
                   generator: torch.Generator, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> TopEigenvalue:
    """The largest algebraic eigenvalue of the symmetric H given by ``hvp`` ((dim,) -> (dim,)).

    Implicitly restarted Lanczos (ARPACK via scipy's eigsh, which='LA', k = 1, ncv =
    ``lanczos_vectors(dim, max_products)``) from v0 ~ N(0, I) drawn from ``generator``,
    stopped after ``max_products`` products if it has not converged (ARPACK's test: its
    residual estimate ≤ tolerance·|θ|). Then one more product at the Ritz vector u (ARPACK's,
    or the record's best when it stopped short) gives λ = uᵀHu and the residual.
    """
    if dim < 2:  # ARPACK's k < dim
        raise ValueError(f"Lanczos needs a Hessian of dimension >= 2, got {dim}")
    _check(max_products, "max_products")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    v0 = torch.randn(dim, generator=generator, dtype=torch.float64).numpy()
    # ARPACK draws a fresh vector when the Krylov space is invariant (H of low rank).
    rng = np.random.default_rng(int(torch.randint(2 ** 31, (1,), generator=generator)))
    ncv = lanczos_vectors(dim, max_products)
    op = _Operator(hvp, dim, max_products, ncv, dtype, device)
    try:  # each restart costs a product: the budget, not maxiter, ends the iteration
        _, vectors = eigsh(LinearOperator((dim, dim), matvec=op, dtype=np.float64), k=1,
                           which="LA", v0=v0, ncv=ncv, maxiter=max_products, tol=tolerance,
                           rng=rng)
        u, arpack_converged = torch.from_numpy(vectors[:, 0]).to(device, dtype), True
    except (_BudgetSpent, ArpackError):
        u, arpack_converged = op.record.top(), False
    u = u / u.norm()
    hu = hvp(u)
    eigenvalue = float(u @ hu)
    r = float((hu - eigenvalue * u).norm())
    residual = r / abs(eigenvalue) if eigenvalue != 0 else (0.0 if r == 0 else math.inf)
    return TopEigenvalue(eigenvalue, residual, op.products,
                         arpack_converged and residual <= tolerance)


class TraceEstimate(NamedTuple):
    trace: float  # mean of the samples
    stderr: float  # std(ddof=1) / sqrt(n); NaN for a single probe
    samples: np.ndarray  # v_iᵀ H v_i, (n_probes,) float64


def hutchinson_trace(hvp: HVP, dim: int, n_probes: int, generator: torch.Generator,
                     block: int = PROBE_BLOCK, dtype: torch.dtype = torch.float64,
                     device: torch.device | str = "cpu") -> TraceEstimate:
    """tr(H) ≈ mean of v_iᵀ H v_i over n_probes Rademacher v_i (entries ±1, equally likely).

    ``hvp`` maps a block (k, dim) of vectors to their products (k, dim); probes are drawn one
    at a time from ``generator`` in order, so the block size does not change them.
    """
    _check(n_probes, "n_probes")
    _check(block, "block")
    samples = []
    for start in range(0, n_probes, block):
        k = min(block, n_probes - start)
        probes = torch.stack([torch.randint(0, 2, (dim,), generator=generator) * 2 - 1
                              for _ in range(k)]).to(device=device, dtype=dtype)
        samples.extend((probes * hvp(probes)).sum(dim=1).tolist())
    s = np.asarray(samples, dtype=np.float64)
    stderr = float(s.std(ddof=1) / math.sqrt(n_probes)) if n_probes > 1 else math.nan
    return TraceEstimate(float(s.mean()), stderr, s)


def hessian_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    n_iterations: int = 100, tolerance: float = 1e-4, n_probes: int = 100,
                    seed: int = 0, chunk_size: int = 4096) -> xr.Dataset:
    """Top eigenvalue and trace of the Hessian of the mean cross-entropy of ``model`` on (x, y).

    n_iterations: the most Hessian-vector products of the Lanczos iteration (the residual
    check is one more); tolerance (> 0): the relative residual it must reach.
    Scalar float64 variables: hessian_top_eigenvalue (largest algebraic eigenvalue),
    hessian_top_residual (‖Hu − λu‖ / |λ|), hessian_top_iterations (Hessian-vector
    products of the Lanczos iteration), hessian_top_converged (1.0: ARPACK converged and
    the residual ≤ tolerance; 0.0), hessian_trace, hessian_trace_stderr.
    """
    hessian = LossHessian(model, x, y, chunk_size)
    kw = dict(dtype=hessian.dtype, device=hessian.device)
    top = top_eigenvalue(hessian, hessian.dim, n_iterations, tolerance,
                         torch.Generator().manual_seed(seed), **kw)
    trace = hutchinson_trace(hessian, hessian.dim, n_probes,
                             torch.Generator().manual_seed(seed), **kw)
    values = {
        "hessian_top_eigenvalue": top.eigenvalue,
        "hessian_top_residual": top.residual,
        "hessian_top_iterations": top.products,
        "hessian_top_converged": 1.0 if top.converged else 0.0,
        "hessian_trace": trace.trace,
        "hessian_trace_stderr": trace.stderr,
    }
    out = xr.Dataset(
        {name: xr.DataArray(np.float64(value)) for name, value in values.items()},
        attrs={"n_points": hessian.n_points, "n_parameters": hessian.dim,
               "n_iterations": int(n_iterations), "tolerance": float(tolerance),
               "n_probes": int(n_probes), "seed": int(seed),
               "lanczos_vectors": lanczos_vectors(hessian.dim, int(n_iterations)),
               "loss": LOSS, "top_method": TOP_METHOD, "trace_method": TRACE_METHOD,
               "paper": PAPER},
    )
    for name, flag in CONVERGED_BY.items():
        out[name].attrs["converged_by"] = flag
    return out
