"""Loss-Hessian metrics (workflow_src.metrics.hessian; PyHessian, arXiv 1912.07145) against the
dense Hessian of tiny float64 networks, finite differences of the gradient, and dense
symmetric matrices with known spectra. The top eigenvalue is Lanczos's (scipy's eigsh):
checked against numpy's eigvalsh, the Krylov space's Ritz values computed densely, and
the hard budget of Hessian-vector products."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch.autograd.functional import hessian
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from workflow_src.metrics import hessian as hessian_module
from workflow_src.metrics.hessian import (
    LossHessian,
    hessian_metrics,
    hutchinson_trace,
    top_eigenvalue,
)
from workflow_src.nets.models import ACTIVATIONS, BREAKPOINTS, ModelSpec, build_model

N_CLASSES = 3
# Hidden-weight scale per activation so that random inputs reach every linear piece.
SCALE = {"relu": 1.0, "relu6": 10.0, "hard_tanh": 2.0, "hard_sigmoid": 10.0, "tanh": 2.0}
# Derivative of each piecewise-linear activation on the piece a pre-activation lies on.
SLOPE = {
    "relu": lambda z: (z > 0).double(),
    "relu6": lambda z: ((z > 0) & (z < 6)).double(),
    "hard_tanh": lambda z: ((z > -1) & (z < 1)).double(),
    "hard_sigmoid": lambda z: ((z > -3) & (z < 3)).double() / 6,
}
VARIABLES = ["hessian_top_eigenvalue", "hessian_top_residual", "hessian_top_iterations",
             "hessian_top_converged", "hessian_trace", "hessian_trace_stderr"]
# A tanh network (make_net("tanh", seed=NEGATIVE_SEED, scale=3.0)) whose most negative
# Hessian eigenvalue has the largest magnitude; the test checks that it still does.
NEGATIVE_SEED = 25
# make_net("tanh", seed=BALANCED_SEED, scale=2.0): λ_min ≈ −λ_max (within 0.1 %), where power
# iteration (this module before Lanczos) stopped after 10 products 2e-3 below λ_max and
# called it converged.
BALANCED_SEED = 42


def make_net(activation, depth=2, input_shape=(4,), width=4, bias=True, seed=0, scale=None):
    spec = ModelSpec(input_shape, N_CLASSES, width=width, depth=depth, activation=activation,
                     bias=bias)
    model = build_model(spec, seed).double()
    s = SCALE[activation] if scale is None else scale
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(s)
            if layer.bias is not None:
                layer.bias.mul_(s)
    return model


def make_data(input_shape=(4,), n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, *input_shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return x, y


def breakpoint_distance(model, x):
    """The smallest distance of any pre-activation from a breakpoint (inf for tanh)."""
    breaks = BREAKPOINTS[model.spec.activation]
    if not breaks:
        return math.inf
    with torch.no_grad():
        z = torch.cat(model.preactivations(x), dim=1)
    return float(torch.stack([(z - b).abs() for b in breaks]).min())


def reference_loss(model, x, y):
    """(L as a function of the flat parameter vector, the model's own vector).

    Written out layer by layer with F.cross_entropy, independent of the module under test.
    Each piecewise-linear activation is frozen to the affine piece every pre-activation lies
    on at the model's weights: the same function near them (no pre-activation sits on a
    breakpoint), so its Hessian there is the network's, and autograd differentiates only
    affine maps, tanh and the loss.
    """
    activation = model.spec.activation
    layers = [*model.hidden, model.readout]
    w0 = parameters_to_vector(model.parameters()).detach().clone()
    with torch.no_grad():
        z0 = model.preactivations(x)

    def loss(w):
        h, i = x.flatten(start_dim=1), 0
        for k, layer in enumerate(layers):
            n_out, n_in = layer.weight.shape
            weight = w[i:i + n_out * n_in].reshape(n_out, n_in)
            i += n_out * n_in
            z = h @ weight.T
            if layer.bias is not None:
                z = z + w[i:i + n_out]
                i += n_out
            if k == len(layers) - 1:
                h = z
            elif activation == "tanh":
                h = torch.tanh(z)
            else:
                slope = SLOPE[activation](z0[k])
                h = slope * z + (model.activation(z0[k]) - slope * z0[k])
        assert i == w.numel()
        return F.cross_entropy(h, y)

    return loss, w0


def dense_hessian(model, x, y):
    loss, w0 = reference_loss(model, x, y)
    assert torch.allclose(loss(w0), F.cross_entropy(model(x), y), rtol=1e-14, atol=0)
    return hessian(loss, w0, vectorize=True)


def parameter_slices(model):
    """Name -> slice of the flat parameter vector."""
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = slice(i, i + p.numel())
        i += p.numel()
    return out


def random_orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def dense_symmetric(eigenvalues, seed=0):
    q = random_orthogonal(len(eigenvalues), seed)
    return torch.from_numpy((q * np.asarray(eigenvalues, dtype=float)) @ q.T)


def matrix_hvp(a):
    """(dim,) or (k, dim) -> the product(s) with the symmetric matrix a."""
    return lambda v: v @ a


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- Hessian-vector products -------------------------------------------------------------

HVP_CASES = [(a, bias, depth, shape) for a in sorted(ACTIVATIONS) for bias, depth, shape in
             [(True, 2, (4,)), (False, 1, (1, 2, 2))]]


@pytest.mark.parametrize("activation,bias,depth,input_shape", HVP_CASES,
                         ids=[f"{a}-bias{b}-depth{d}" for a, b, d, _ in HVP_CASES])
def test_hvp_matches_dense_hessian(activation, bias, depth, input_shape):
    model = make_net(activation, depth=depth, input_shape=input_shape, bias=bias, seed=3)
    x, y = make_data(input_shape, n=10, seed=4)
    assert breakpoint_distance(model, x) > 1e-6
    h = dense_hessian(model, x, y)
    # Chunks of 3, 3, 3 and 1 points: the size weighting must give the full-set mean.
    hvp = LossHessian(model, x, y, chunk_size=3)
    assert hvp.dim == h.shape[0]
    v = torch.randn(4, hvp.dim, generator=gen(5), dtype=torch.float64)
    scale = h.abs().max()
    torch.testing.assert_close(hvp(v), v @ h, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(hvp(v[0]), h @ v[0], rtol=0, atol=1e-12 * scale)
    # Even with zero second derivative of the activation (relu, hard_tanh, ...), the
    # Hessian couples the first hidden layer's weights with the readout's.
    s = parameter_slices(model)
    assert h[s["hidden.0.weight"], s["readout.weight"]].abs().max() > 1e-3 * scale


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hvp_matches_finite_differences_of_the_gradient(activation):
    model = make_net(activation, seed=6)
    x, y = make_data(n=20, seed=7)
    assert breakpoint_distance(model, x) > 1e-4
    step = 1e-6
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=gen(8),
                    dtype=torch.float64)
    v /= v.norm()
    w0 = parameters_to_vector(model.parameters()).detach()

    def gradient(w):
        net = copy.deepcopy(model)
        vector_to_parameters(w, net.parameters())
        # The stencil must stay inside the linear pieces of w0 for the difference to be
        # a second derivative.
        assert breakpoint_distance(net, x) > 1e-6
        loss = F.cross_entropy(net(x), y)
        return parameters_to_vector(torch.autograd.grad(loss, list(net.parameters())))

    fd = (gradient(w0 + step * v) - gradient(w0 - step * v)) / (2 * step)
    hv = LossHessian(model, x, y, chunk_size=7)(v)
    assert hv.norm() > 1e-3
    torch.testing.assert_close(hv, fd, rtol=0, atol=1e-6 * float(hv.norm()))


# --- Top eigenvalue ----------------------------------------------------------------------

def krylov_ritz_top(a, v0, m):
    """The largest Ritz value of the symmetric a on K_m(a, v0) = span{v0, a v0, ...,
    a^{m−1} v0}, densely: an orthonormal basis by QR (re-orthogonalised once), then the
    largest eigenvalue of Qᵀ a Q."""
    vectors, v = [], v0 / np.linalg.norm(v0)
    for _ in range(m):
        vectors.append(v)
        v = a @ v
        v = v / np.linalg.norm(v)
    q = np.linalg.qr(np.linalg.qr(np.stack(vectors, axis=1))[0])[0]
    return float(np.linalg.eigvalsh(q.T @ a @ q)[-1])


def counted(hvp):
    """hvp, and a list that grows by one for every vector it multiplies."""
    calls = []

    def wrapped(v):
        calls.append(1)
        return hvp(v)

    return wrapped, calls


def assert_residual_bounds_the_error(result, eigenvalues):
    """For a symmetric H some eigenvalue lies within ‖Hu − λu‖ = residual·|λ| of λ."""
    distance = np.min(np.abs(np.asarray(eigenvalues) - result.eigenvalue))
    assert distance <= result.residual * abs(result.eigenvalue) * (1 + 1e-6) + 1e-15


@pytest.mark.parametrize("activation", ["relu", "tanh", "hard_tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_top_eigenvalue_matches_eigvalsh(activation, bias):
    model = make_net(activation, bias=bias, seed=11)
    x, y = make_data(n=15, seed=12)
    eig = np.linalg.eigvalsh(dense_hessian(model, x, y).numpy())
    out = hessian_metrics(model, x, y, n_iterations=200, tolerance=1e-10, n_probes=2)
    assert out["hessian_top_converged"] == 1.0
    assert 2 <= out["hessian_top_iterations"] <= 200
    assert float(out["hessian_top_eigenvalue"]) == pytest.approx(eig[-1], rel=1e-9)
    assert 0 <= float(out["hessian_top_residual"]) <= 1e-10


def test_balanced_spectrum_where_power_iteration_stopped_short():
    """λ_min ≈ −λ_max: at the default settings (100 products, tolerance 1e-4) power
    iteration ended 2e-3 low, flagged converged; Lanczos separates the two ends."""
    model = make_net("tanh", seed=BALANCED_SEED, scale=2.0)
    x, y = make_data(n=12, seed=BALANCED_SEED)
    eig = np.linalg.eigvalsh(dense_hessian(model, x, y).numpy())
    assert -eig[0] == pytest.approx(eig[-1], rel=1e-3)  # the case under test
    out = hessian_metrics(model, x, y, n_iterations=100, tolerance=1e-4, n_probes=2)
    assert float(out["hessian_top_eigenvalue"]) == pytest.approx(eig[-1], rel=1e-9)
    assert out["hessian_top_converged"] == 1.0 and out["hessian_top_residual"] <= 1e-4


def test_negative_dominant_eigenvalue_of_a_network():
    model = make_net("tanh", seed=NEGATIVE_SEED, scale=3.0)
    x, y = make_data(n=12, seed=NEGATIVE_SEED)
    eig = np.linalg.eigvalsh(dense_hessian(model, x, y).numpy())
    assert -eig[0] > 1.5 * eig[-1] > 0  # the case under test: λ_min dominates
    out = hessian_metrics(model, x, y, n_iterations=200, tolerance=1e-12, n_probes=2)
    assert out["hessian_top_converged"] == 1.0
    assert float(out["hessian_top_eigenvalue"]) == pytest.approx(eig[-1], rel=1e-9)


def saturated_net(seed, margin):
    """A tanh network whose readout is scaled until every training point is classified,
    with the labels it predicts, by at least ``margin`` nats: near-certain points, whose
    Hessian is ~e^-margin."""
    model = make_net("tanh", seed=seed, scale=1.0)
    x, _ = make_data(n=12, seed=seed)
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
        factor = margin / float((top2[:, 0] - top2[:, 1]).min())
        model.readout.weight.mul_(factor)
        model.readout.bias.mul_(factor)
        y = model(x).argmax(dim=1)
    return model, x, y


def near_certain_hessian(model, x, y):
    """The dense Hessian of mean log(1 + Σ_{k≠y} e^{f_k − f_y}) (tanh networks, every point
    classified as y): the cross-entropy without cancellation at near-certain points."""
    layers = [*model.hidden, model.readout]
    w0 = parameters_to_vector(model.parameters()).detach().clone()

    def loss(w):
        h, i = x, 0
        for k, layer in enumerate(layers):
            n_out, n_in = layer.weight.shape
            z = h @ w[i:i + n_out * n_in].reshape(n_out, n_in).T + w[i + n_out * n_in:
                                                                   i + n_out * (n_in + 1)]
            i += n_out * (n_in + 1)
            h = z if k == len(layers) - 1 else torch.tanh(z)
        d = (h - h.gather(1, y[:, None])).scatter(1, y[:, None], -math.inf)
        return torch.log1p(torch.exp(d).sum(1)).mean()

    return hessian(loss, w0)


@pytest.mark.parametrize("margin", [45.0, 60.0])
def test_near_certain_points_far_below_arpack_absolute_floor(margin):
    """λ_max ~ 1e-13 and ~1e-19, below ARPACK's ε^{2/3} ≈ 4e-11 floor. Against the dense
    matrix of the module's own products Lanczos is exact; against the independent loss the
    products themselves are off by up to 2e-4 (jacobian.cross_entropy's f_max − f_y term,
    whose second derivative is 0 but cancels between two large terms)."""
    model, x, y = saturated_net(seed=0, margin=margin)
    exact = np.linalg.eigvalsh(near_certain_hessian(model, x, y).numpy())
    assert exact[-1] < 4e-11  # the case under test
    products = LossHessian(model, x, y)
    own = np.linalg.eigvalsh(products(torch.eye(products.dim, dtype=torch.float64)).numpy())
    out = hessian_metrics(model, x, y, n_iterations=100, tolerance=1e-6, n_probes=2)
    assert out["hessian_top_converged"] == 1.0 and out["hessian_top_residual"] <= 1e-6
    assert float(out["hessian_top_eigenvalue"]) == pytest.approx(own[-1], rel=1e-9)
    assert float(out["hessian_top_eigenvalue"]) == pytest.approx(exact[-1], rel=1e-3)


def test_large_norm_network_with_saturated_units():
    """hard_tanh hidden weights × 50: most units sit on a flat piece (derivative 0)."""
    model = make_net("hard_tanh", seed=5, scale=50.0)
    x, y = make_data(n=15, seed=6)
    with torch.no_grad():
        z = torch.cat(model.preactivations(x), dim=1)
    assert (z.abs() > 1).double().mean() > 0.8  # the case under test
    assert breakpoint_distance(model, x) > 1e-6
    eig = np.linalg.eigvalsh(dense_hessian(model, x, y).numpy())
    out = hessian_metrics(model, x, y, n_iterations=200, tolerance=1e-10, n_probes=2)
    assert out["hessian_top_converged"] == 1.0
    assert float(out["hessian_top_eigenvalue"]) == pytest.approx(eig[-1], rel=1e-9)


@pytest.mark.parametrize("eigenvalues,top", [
    ([-10.0, 4.0, 3.0, 1.0, 0.5, 0.0, -1.0, -2.0], 4.0),  # λ_min dominates
    ([-5.0, -4.0, -3.0, -1.0, -0.5], -0.5),  # negative definite: the least negative
    ([7.0, -6.0, 2.0, 1.0, -1.0, 0.1], 7.0),  # λ_max dominates
    ([-1.0, 1.0 - 1e-9, 0.5, 0.0, -0.5], 1.0 - 1e-9),  # λ_min ≈ −λ_max
    ([3.0, 3.0, 1.0, -2.0, 0.0], 3.0),  # a repeated top eigenvalue
    (list(np.linspace(-1.0, 0.99, 199)) + [1.0], 1.0),  # 200-d: ARPACK restarts
])
@pytest.mark.parametrize("scale", [1.0, 1e-20])  # 1e-20: far below ARPACK's absolute floor
def test_top_eigenvalue_of_dense_matrices(eigenvalues, top, scale):
    a = dense_symmetric(np.asarray(eigenvalues) * scale, seed=1)
    hvp, calls = counted(matrix_hvp(a))
    result = top_eigenvalue(hvp, a.shape[0], 400, 1e-10, gen())
    assert result.converged and result.residual <= 1e-10
    assert result.eigenvalue == pytest.approx(top * scale, rel=1e-9, abs=1e-12 * scale)
    assert len(calls) == result.products + 1 <= 401  # + the residual's product
    assert_residual_bounds_the_error(result, np.asarray(eigenvalues) * scale)


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 10, 21])
def test_a_budget_too_small_keeps_the_krylov_space_best_ritz_value(budget):
    """The budget is a hard limit; when it ends the iteration the answer is the largest Ritz
    value of the Krylov space of the vectors multiplied, K_budget(H, v0), marked unconverged."""
    eigenvalues = np.concatenate([np.linspace(-1.0, 0.97, 299), [1.0]])
    a = dense_symmetric(eigenvalues, seed=3)
    hvp, calls = counted(matrix_hvp(a))
    result = top_eigenvalue(hvp, 300, budget, 1e-12, gen(4))
    assert not result.converged and result.products == budget == len(calls) - 1
    v0 = torch.randn(300, generator=gen(4), dtype=torch.float64).numpy()  # the start vector
    assert result.eigenvalue == pytest.approx(krylov_ritz_top(a.numpy(), v0, budget),
                                              rel=1e-10)
    assert result.eigenvalue < 1.0
    assert_residual_bounds_the_error(result, eigenvalues)


def test_arpack_no_convergence_keeps_its_best_ritz_value(monkeypatch):
    """eigsh giving up (here after one restart cycle) is no crash: the value is the Ritz
    value of the vectors it multiplied, marked unconverged."""
    eigenvalues = np.concatenate([np.linspace(-1.0, 0.999, 299), [1.0]])
    a = dense_symmetric(eigenvalues, seed=3)
    real = hessian_module.eigsh
    monkeypatch.setattr(hessian_module, "eigsh",
                        lambda *args, **kwargs: real(*args, **{**kwargs, "maxiter": 1}))
    result = top_eigenvalue(matrix_hvp(a), 300, 1000, 1e-12, gen(4))
    assert not result.converged and 21 <= result.products < 1000  # ARPACK stopped it
    v0 = torch.randn(300, generator=gen(4), dtype=torch.float64).numpy()
    assert krylov_ritz_top(a.numpy(), v0, 21) <= result.eigenvalue * (1 + 1e-12) < 1.0
    assert_residual_bounds_the_error(result, eigenvalues)


def test_a_zero_hessian_is_no_crash():
    """ARPACK refuses a start vector whose image is 0 (ArpackError); the record answers."""
    result = top_eigenvalue(matrix_hvp(torch.zeros(5, 5, dtype=torch.float64)), 5, 50, 1e-4,
                            gen())
    assert result.eigenvalue == 0.0 and result.residual == 0.0 and not result.converged


# --- Hutchinson trace --------------------------------------------------------------------

def test_hutchinson_routine_on_a_dense_matrix():
    a = dense_symmetric([3.0, -2.0, 1.5, 0.5, 4.0, -1.0], seed=2)
    probes = []

    def hvp(v):
        probes.append(v.clone())
        return v @ a

    n = 4000
    est = hutchinson_trace(hvp, a.shape[0], n, gen(3), block=7)
    v = torch.cat(probes)
    assert v.shape == (n, a.shape[0])
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    np.testing.assert_allclose(est.samples, ((v @ a) * v).sum(1).numpy(), rtol=0, atol=1e-12)
    assert est.trace == pytest.approx(est.samples.mean(), rel=1e-14)
    assert est.stderr == pytest.approx(est.samples.std(ddof=1) / math.sqrt(n), rel=1e-14)
    # E[vᵀAv] = tr A and Var[vᵀAv] = 2 Σ_{i≠j} A_ij² for Rademacher v.
    off = a - torch.diag(torch.diag(a))
    sd = math.sqrt(2 * float((off ** 2).sum()) / n)
    assert abs(est.trace - float(torch.trace(a))) < 4 * sd
    assert est.stderr == pytest.approx(sd, rel=0.1)
    # The block size does not change the probes.
    same = hutchinson_trace(matrix_hvp(a), a.shape[0], n, gen(3), block=1)
    np.testing.assert_array_equal(same.samples, est.samples)
    other = hutchinson_trace(matrix_hvp(a), a.shape[0], n, gen(4), block=7)
    assert not np.array_equal(other.samples, est.samples)


def test_hutchinson_is_exact_for_a_diagonal_matrix():
    a = torch.diag(torch.tensor([2.0, -1.0, 0.25, 3.0], dtype=torch.float64))
    est = hutchinson_trace(matrix_hvp(a), 4, 50, gen())
    np.testing.assert_array_equal(est.samples, np.full(50, 4.25))
    assert est.trace == 4.25 and est.stderr == 0.0
    assert math.isnan(hutchinson_trace(matrix_hvp(a), 4, 1, gen()).stderr)


def test_hessian_trace_matches_dense_trace():
    model = make_net("relu", seed=13)
    x, y = make_data(n=16, seed=14)
    h = dense_hessian(model, x, y)
    out = hessian_metrics(model, x, y, n_iterations=5, n_probes=2000, seed=15)
    stderr = float(out["hessian_trace_stderr"])
    off = h - torch.diag(torch.diag(h))
    expected_sd = math.sqrt(2 * float((off ** 2).sum()) / 2000)
    assert stderr == pytest.approx(expected_sd, rel=0.15)
    assert abs(float(out["hessian_trace"]) - float(torch.trace(h))) < 4 * stderr


# --- The metric store --------------------------------------------------------------------

def test_chunking_does_not_change_the_metrics():
    model = make_net("hard_tanh", seed=16)
    x, y = make_data(n=10, seed=17)
    kw = dict(n_iterations=500, tolerance=1e-10, n_probes=20, seed=3)
    whole = hessian_metrics(model, x, y, chunk_size=4096, **kw)
    chunked = hessian_metrics(model, x, y, chunk_size=3, **kw)
    assert whole["hessian_top_converged"] == 1.0
    for name in VARIABLES:
        assert float(chunked[name]) == pytest.approx(float(whole[name]), rel=1e-10, abs=1e-12)


def test_deterministic_for_a_seed():
    model = make_net("tanh", seed=18)
    x, y = make_data(n=12, seed=19)
    kw = dict(n_iterations=200, tolerance=1e-8, n_probes=10)
    first = hessian_metrics(model, x, y, seed=5, **kw)
    xr.testing.assert_identical(first, hessian_metrics(model, x, y, seed=5, **kw))
    other = hessian_metrics(model, x, y, seed=6, **kw)
    assert float(other["hessian_trace"]) != float(first["hessian_trace"])
    assert float(other["hessian_top_eigenvalue"]) == pytest.approx(
        float(first["hessian_top_eigenvalue"]), rel=1e-6)


def test_convergence_flag_and_iteration_count():
    model = make_net("relu", seed=20)
    x, y = make_data(n=12, seed=21)
    kw = dict(n_probes=2)
    loose = hessian_metrics(model, x, y, n_iterations=1000, tolerance=1e-4, **kw)
    assert loose["hessian_top_converged"] == 1.0
    assert 2 <= loose["hessian_top_iterations"] < 1000
    tight = hessian_metrics(model, x, y, n_iterations=1000, tolerance=1e-14, **kw)
    assert tight["hessian_top_iterations"] >= loose["hessian_top_iterations"]
    for budget in (1, 5):  # stopped by the budget: unconverged, whatever the residual
        short = hessian_metrics(model, x, y, n_iterations=budget, tolerance=1e-4, **kw)
        assert short["hessian_top_iterations"] == budget
        assert short["hessian_top_converged"] == 0.0
        assert float(short["hessian_top_eigenvalue"]) <= float(loose["hessian_top_eigenvalue"])


def test_unconverged_when_the_residual_misses_the_tolerance(monkeypatch):
    """ARPACK's word is not enough: the residual from the extra product must pass too."""
    model = make_net("relu", seed=20)
    x, y = make_data(n=12, seed=21)
    real = hessian_module.eigsh
    monkeypatch.setattr(hessian_module, "eigsh",  # ARPACK believed at a tolerance of 0.5
                        lambda *args, **kwargs: real(*args, **{**kwargs, "tol": 0.5}))
    out = hessian_metrics(model, x, y, n_iterations=3, tolerance=1e-12, n_probes=2)
    assert float(out["hessian_top_residual"]) > 1e-12
    assert out["hessian_top_converged"] == 0.0


def test_store_layout_and_the_model_is_untouched():
    model = make_net("hard_sigmoid", seed=22).float()
    before = copy.deepcopy(model.state_dict())
    x, y = make_data(input_shape=(4,), n=11, seed=23)
    out = hessian_metrics(model, x.float(), y, n_iterations=50, n_probes=7, seed=2)
    assert sorted(out.data_vars) == sorted(VARIABLES)
    for name in VARIABLES:
        assert out[name].dims == () and out[name].dtype == np.float64
        assert np.isfinite(float(out[name]))
    assert {"n_points": 11, "n_iterations": 50, "tolerance": 1e-4, "n_probes": 7,
            "seed": 2}.items() <= out.attrs.items()
    assert "1912.07145" in out.attrs["paper"]
    assert "Lanczos" in out.attrs["top_method"] and "eigsh" in out.attrs["top_method"]
    assert out.attrs["lanczos_vectors"] == 20
    assert out["hessian_top_eigenvalue"].attrs["converged_by"] == "hessian_top_converged"
    assert "Hutchinson" in out.attrs["trace_method"]
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k])
    assert isinstance(model.activation, torch.nn.Hardsigmoid)
    # The float32 network is measured as its exact float64 copy.
    exact = hessian_metrics(model.double(), x.float().double(), y, n_iterations=50,
                            n_probes=7, seed=2)
    xr.testing.assert_identical(out, exact)


@pytest.mark.parametrize("kwargs", [dict(n_iterations=0), dict(n_probes=0),
                                    dict(chunk_size=0), dict(tolerance=-1.0),
                                    dict(tolerance=0.0)])
def test_invalid_settings_are_refused(kwargs):
    model = make_net("relu")
    x, y = make_data(n=4)
    with pytest.raises(ValueError):
        hessian_metrics(model, x, y, **kwargs)
