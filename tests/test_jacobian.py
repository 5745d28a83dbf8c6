"""Jacobian norms (Novak §3.1, STUDY.md §4) against autograd loops and finite differences."""

import itertools

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from workflow_src.metrics.jacobian import jacobian_norms, pointwise_metrics
from workflow_src.models import ACTIVATIONS, BREAKPOINTS, ModelSpec, build_model

N_CLASSES = 5
# Weight scale per activation so that random inputs reach every linear piece.
SCALE = {"relu": 1.0, "relu6": 10.0, "hard_tanh": 2.0, "hard_sigmoid": 10.0, "tanh": 2.0}
SHAPES = [(1, 3, 4), (12,)]
CASES = list(itertools.product(sorted(ACTIVATIONS), [1, 2, 3], SHAPES))
CASE_IDS = [f"{a}-depth{d}-{'x'.join(map(str, s))}" for a, d, s in CASES]


def make_net(activation, depth, input_shape, seed=0, bias=True):
    spec = ModelSpec(input_shape, N_CLASSES, width=8, depth=depth, activation=activation, bias=bias)
    model = build_model(spec, seed).double()
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(SCALE[activation])
            if layer.bias is not None:
                layer.bias.mul_(SCALE[activation])
    return model


def points(input_shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, *input_shape, generator=g, dtype=torch.float64)


def away_from_breakpoints(model, x, margin=1e-3):
    """The points of x whose every pre-activation is further than margin from a breakpoint,
    so a finite-difference stencil of step 1e-6 stays inside one linear piece."""
    breaks = BREAKPOINTS[model.spec.activation]
    if not breaks:
        return x
    with torch.no_grad():
        z = torch.cat(model.preactivations(x), dim=1)  # (B, depth * width)
    dist = torch.stack([(z - b).abs() for b in breaks]).amin(dim=(0, 2))
    return x[dist > margin]


def reference_norms(model, x):
    """‖∂softmax(f)/∂x‖_F and ‖∂f/∂x‖_F one point at a time with autograd."""
    soft, logit = [], []
    for xi in x:
        jf = jacobian(lambda v: model(v.unsqueeze(0)).squeeze(0), xi)  # (n, *input_shape)
        js = jacobian(lambda v: torch.softmax(model(v.unsqueeze(0)), -1).squeeze(0), xi)
        logit.append(jf.norm())
        soft.append(js.norm())
    return torch.stack(soft), torch.stack(logit)


def finite_difference_norms(model, x, step=1e-6):
    """The same norms from central differences along every input coordinate."""
    soft, logit = [], []
    with torch.no_grad():
        for xi in x:
            flat = xi.reshape(-1)
            e = torch.eye(flat.numel(), dtype=flat.dtype) * step  # (d, d)
            plus = model((flat + e).reshape(-1, *xi.shape))  # (d, n)
            minus = model((flat - e).reshape(-1, *xi.shape))
            jf = (plus - minus) / (2 * step)
            js = (torch.softmax(plus, -1) - torch.softmax(minus, -1)) / (2 * step)
            logit.append(jf.norm())
            soft.append(js.norm())
    return torch.stack(soft), torch.stack(logit)


@pytest.mark.parametrize("activation,depth,input_shape", CASES, ids=CASE_IDS)
def test_jacobian_norms_match_autograd_reference(activation, depth, input_shape):
    model = make_net(activation, depth, input_shape, seed=depth)
    x = points(input_shape, 7, seed=10 + depth)
    soft, logit = jacobian_norms(model, x, chunk_size=4)
    assert soft.shape == (7,) and logit.shape == (7,)
    assert soft.dtype == torch.float64
    ref_soft, ref_logit = reference_norms(model, x)
    torch.testing.assert_close(soft, ref_soft, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(logit, ref_logit, rtol=1e-10, atol=1e-14)
    assert (logit > 0).any() and (soft > 0).any()


@pytest.mark.parametrize("activation,depth,input_shape", CASES, ids=CASE_IDS)
def test_jacobian_norms_match_finite_differences(activation, depth, input_shape):
    model = make_net(activation, depth, input_shape, seed=100 + depth)
    x = away_from_breakpoints(model, points(input_shape, 12, seed=20 + depth))
    assert x.shape[0] >= 6
    soft, logit = jacobian_norms(model, x)
    fd_soft, fd_logit = finite_difference_norms(model, x)
    torch.testing.assert_close(soft, fd_soft, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(logit, fd_logit, rtol=1e-5, atol=1e-9)


def test_piecewise_networks_visit_several_pieces():
    """The scaled test networks exercise every linear piece, so the comparisons above are
    not against a network that is affine everywhere."""
    for activation in ("relu", "relu6", "hard_tanh", "hard_sigmoid"):
        model = make_net(activation, 2, (12,), seed=102)
        with torch.no_grad():
            z = torch.cat(model.preactivations(points((12,), 12, seed=22)), dim=1)
        piece = sum((z > b).long() for b in BREAKPOINTS[activation])
        assert set(piece.unique().tolist()) == set(range(len(BREAKPOINTS[activation]) + 1))


def test_logit_jacobian_of_an_all_active_relu_network_is_the_weight_product():
    model = make_net("relu", 1, (12,), seed=3)
    with torch.no_grad():
        model.hidden[0].bias.fill_(100.0)  # every unit active at every test point
    x = points((12,), 5, seed=4)
    expected = (model.readout.weight @ model.hidden[0].weight).norm()
    _, logit = jacobian_norms(model, x)
    torch.testing.assert_close(logit, expected.expand(5), rtol=1e-12, atol=0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_chunk_size_does_not_change_the_result(activation):
    model = make_net(activation, 2, (1, 3, 4), seed=5)
    x = points((1, 3, 4), 10, seed=6)
    results = [jacobian_norms(model, x, chunk_size=c) for c in (1, 3, 100)]
    for soft, logit in results[1:]:
        torch.testing.assert_close(soft, results[0][0], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(logit, results[0][1], rtol=1e-12, atol=1e-15)


def test_pointwise_metrics_loss_and_correct_per_point():
    model = make_net("hard_tanh", 2, (1, 3, 4), seed=7)
    x = points((1, 3, 4), 11, seed=8)
    with torch.no_grad():
        logits = model(x).numpy()
    y = np.arange(11) % N_CLASSES
    y[:3] = logits[:3].argmax(1)  # guarantee some correct points
    out = pointwise_metrics(model, x, torch.as_tensor(y), chunk_size=3)
    # Cross-entropy by hand: log Σ exp f − f_y, with the max subtracted for stability.
    top = logits.max(1, keepdims=True)
    expected_loss = (np.log(np.exp(logits - top).sum(1)) + top[:, 0]) - logits[np.arange(11), y]
    np.testing.assert_allclose(out["loss"], expected_loss, rtol=1e-12)
    np.testing.assert_array_equal(out["correct"], logits.argmax(1) == y)
    assert out["correct"][:3].all() and not out["correct"].all()
    ref_soft, ref_logit = reference_norms(model, x)
    np.testing.assert_allclose(out["jacobian_norm"], ref_soft.numpy(), rtol=1e-10)
    np.testing.assert_allclose(out["logit_jacobian_norm"], ref_logit.numpy(), rtol=1e-10)
    assert all(v.shape == (11,) for v in out.values())


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_softmax_jacobian_bounded_by_logit_jacobian_times_softmax_derivative(activation):
    """‖J_σ‖_F = ‖(diag σ − σσᵀ) J_f‖_F ≤ ‖diag σ − σσᵀ‖₂ ‖J_f‖_F ≤ ½ ‖J_f‖_F."""
    model = make_net(activation, 3, (12,), seed=9)
    x = points((12,), 20, seed=10)
    soft, logit = jacobian_norms(model, x)
    with torch.no_grad():
        s = torch.softmax(model(x), -1).numpy()
    spectral = np.array([np.linalg.eigvalsh(np.diag(si) - np.outer(si, si)).max() for si in s])
    assert np.all(soft.numpy() <= logit.numpy() * spectral * (1 + 1e-12))
    assert np.all(spectral <= 0.5 + 1e-12)
