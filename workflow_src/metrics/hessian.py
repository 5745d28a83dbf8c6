"""Hessian of the training loss with respect to all parameters: top eigenvalue and trace.

L(w) = (1/N) Σ_i −log σ_{y_i}(f(x_i; w)) over an evaluation set (the labels the network was
trained on), w every parameter of the network flattened into one vector. H = ∇²L(w) is
never formed: both quantities come from exact Hessian-vector products, as in PyHessian
(Yao, Gholami, Keutzer & Mahoney 2020, arXiv 1912.07145):

* top eigenvalue: power iteration on v ↦ Hv (their Algorithm 1), the estimate being the
  Rayleigh quotient vᵀHv of the unit iterate, stopped once its relative change falls below
  ``tolerance``;
* trace: Hutchinson's estimator tr(H) ≈ (1/m) Σ_i v_iᵀ H v_i with Rademacher v_i (their
  Algorithm 2), reported with its standard error.

Power iteration converges to the eigenvalue of largest MAGNITUDE, which for an indefinite
Hessian (any network away from a minimum) can be the most negative one. The quantity reported
is the largest ALGEBRAIC eigenvalue λ_max, so when the first power iteration ends on a
negative estimate λ̂ < 0 (then λ̂ ≈ λ_min, and every eigenvalue of H − λ̂I is ≈ ≥ 0) a second
power iteration runs on H − λ̂I, whose dominant eigenvalue is λ_max − λ̂ ≥ 0; its iterate v
then gives λ_max as the unshifted Rayleigh quotient vᵀHv (no cancellation between λ̂ and the
shifted estimate). Its stopping rule is the relative change of the shifted estimate
λ_max − λ̂ (the quantity that iteration estimates; it stays away from 0 even when λ_max ≈ 0).
A known limit of power iteration remains: when λ_min ≈ −λ_max the iterate's two dominant
components shrink relative to each other only slowly, the Rayleigh quotient moves little per
step, and the relative-change rule can stop early on an estimate below λ_max.

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

Determinism: the initial power-iteration vector and the Rademacher probes come from two CPU
``torch.Generator`` objects, each seeded with ``seed`` (so the trace's probes do not depend on
whether the second power iteration ran), and are moved to the network's device.
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
from torch import nn

from .jacobian import cross_entropy

PAPER = ("Yao, Gholami, Keutzer & Mahoney 2020, PyHessian: Neural Networks Through the Lens "
         "of the Hessian, arXiv 1912.07145")
TOP_METHOD = ("power iteration on exact Hessian-vector products (PyHessian Algorithm 1); "
              "if it ends on a negative eigenvalue, a second power iteration on H - lambda I "
              "gives the largest algebraic eigenvalue")
TRACE_METHOD = ("Hutchinson estimator with Rademacher probes (PyHessian Algorithm 2); "
                "stderr = std(ddof=1) / sqrt(n_probes)")
LOSS = "mean cross-entropy (nats) over the evaluation set, labels as given"
PROBE_BLOCK = 10  # Rademacher probes per pass over the evaluation set

HVP = Callable[[torch.Tensor], torch.Tensor]


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


class PowerIteration(NamedTuple):
    eigenvalue: float  # Rayleigh quotient vᵀHv of the last iterate (H unshifted)
    iterations: int  # Hessian-vector products used
    converged: bool  # the relative change of the (shifted) estimate fell below tolerance


def _check(n: int, name: str) -> None:
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")


def power_iteration(hvp: HVP, dim: int, n_iterations: int, tolerance: float,
                    generator: torch.Generator, shift: float = 0.0,
                    dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> PowerIteration:
    """Power iteration on H − shift·I, H given by ``hvp`` ((dim,) -> (dim,)).

    Finds the eigenvalue of H − shift·I of largest magnitude; returns the Rayleigh quotient
    of H itself (vᵀHv, v the unit iterate). Stops after iteration k ≥ 2 once
    |μ_k − μ_{k−1}| < tolerance·|μ_{k−1}| for the shifted estimates μ = vᵀHv − shift (strict,
    so tolerance 0 always runs all n_iterations). PyHessian adds 1e-6 to the denominator;
    that is scale-dependent and left out. If Hv − shift·v is exactly 0, v is an eigenvector
    and the iteration stops there, converged.
    """
    _check(n_iterations, "n_iterations")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    v = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    v = v / v.norm()
    previous = None
    for k in range(1, n_iterations + 1):
        hv = hvp(v)
        rayleigh = float(v @ hv)
        w = hv - shift * v if shift else hv
        mu = rayleigh - shift
        norm = w.norm()
        if norm == 0:
            return PowerIteration(rayleigh, k, True)
        v = w / norm
        if previous is not None and abs(mu - previous) < tolerance * abs(previous):
            return PowerIteration(rayleigh, k, True)
        previous = mu
    return PowerIteration(rayleigh, n_iterations, False)


class TopEigenvalue(NamedTuple):
    eigenvalue: float  # λ_max, the largest algebraic eigenvalue
    iterations: int  # Hessian-vector products over both power iterations
    converged: bool  # every power iteration that ran converged
    shift: float  # λ̂ < 0 of the first iteration if the second ran, else 0.0


def top_eigenvalue(hvp: HVP, dim: int, n_iterations: int, tolerance: float,
                   generator: torch.Generator, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> TopEigenvalue:
    """The largest algebraic eigenvalue of the symmetric H given by ``hvp``.

    Power iteration first; if its estimate is negative (the dominant eigenvalue is λ_min < 0),
    a second power iteration on H − λ̂I, with a fresh start vector from the same generator
    (the first iterate is near λ_min's eigenvector, nearly orthogonal to λ_max's). Each
    stage may use up to n_iterations products.
    """
    first = power_iteration(hvp, dim, n_iterations, tolerance, generator,
                            dtype=dtype, device=device)
    if first.eigenvalue >= 0:
        return TopEigenvalue(first.eigenvalue, first.iterations, first.converged, 0.0)
    shift = first.eigenvalue
    second = power_iteration(hvp, dim, n_iterations, tolerance, generator, shift=shift,
                             dtype=dtype, device=device)
    return TopEigenvalue(second.eigenvalue, first.iterations + second.iterations,
                         first.converged and second.converged, shift)


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

    Scalar float64 variables: hessian_top_eigenvalue (largest algebraic eigenvalue),
    hessian_top_iterations (Hessian-vector products used, both power iterations together),
    hessian_top_converged (1.0 / 0.0), hessian_trace, hessian_trace_stderr.
    """
    hessian = LossHessian(model, x, y, chunk_size)
    kw = dict(dtype=hessian.dtype, device=hessian.device)
    top = top_eigenvalue(hessian, hessian.dim, n_iterations, tolerance,
                         torch.Generator().manual_seed(seed), **kw)
    trace = hutchinson_trace(hessian, hessian.dim, n_probes,
                             torch.Generator().manual_seed(seed), **kw)
    values = {
        "hessian_top_eigenvalue": top.eigenvalue,
        "hessian_top_iterations": top.iterations,
        "hessian_top_converged": 1.0 if top.converged else 0.0,
        "hessian_trace": trace.trace,
        "hessian_trace_stderr": trace.stderr,
    }
    return xr.Dataset(
        {name: xr.DataArray(np.float64(value)) for name, value in values.items()},
        attrs={"n_points": hessian.n_points, "n_parameters": hessian.dim,
               "n_iterations": int(n_iterations), "tolerance": float(tolerance),
               "n_probes": int(n_probes), "seed": int(seed),
               "top_shift": float(top.shift), "loss": LOSS,
               "top_method": TOP_METHOD, "trace_method": TRACE_METHOD, "paper": PAPER},
    )
