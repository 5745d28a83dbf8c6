"""Jacobian norms (Novak §3.1, docs/science.md §4) against autograd loops and finite differences,
including the float32 network as the workflow runs it at points it is very sure of."""

import copy
import itertools
from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from workflow_src.metrics.jacobian import jacobian_norms, pointwise_metrics, true_class_jacobian_norm
from workflow_src.nets.models import ACTIVATIONS, BREAKPOINTS, ModelSpec, build_model

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


# --- Confident points: the float32 network as the workflow runs it, against float64 ---------

# 1 − max softmax at the built points. In float32 σ_top rounds to 1 from ~6e-8 on, in float64
# from ~1e-16 on: the last two catch σ − σ² even when it is evaluated in float64.
CONFIDENCES = (1e-3, 1e-6, 1e-9, 1e-12, 1e-15, 1e-30)
RTOL = 1e-4  # what the float32 logits and logit Jacobian allow (their own error is ~1e-6)
DIM = 12


def readout_scale_for(logits: np.ndarray, target: float) -> float:
    """c with 1 − max softmax(c f) = target, by bisection on log c; f (n,) with one top class.

    1 − max σ(c f) = s / (1 + s) with s = Σ_{k≠top} e^{−c (f_top − f_k)}, decreasing in c.
    """
    margins = logits.max() - logits
    margins = margins[margins > 0]

    def rest(c):
        s = np.exp(-c * margins).sum()
        return s / (1 + s)

    low, high = 1e-6, 1e6
    for _ in range(200):
        mid = np.sqrt(low * high)
        low, high = (mid, high) if rest(mid) > target else (low, mid)
    return low


def confident_case(activation, target, seed=0, hidden_scale=1.0, input_scale=1.0):
    """A float32 network and one point x (1, DIM) at which 1 − max σ ≈ target: a small random
    network whose readout (weights and bias) is scaled until the point is that sure.

    hidden_scale multiplies the hidden weights and biases (saturating units); input_scale
    multiplies the point and divides the first layer's weights (huge inputs, same logits).
    """
    spec = ModelSpec((DIM,), N_CLASSES, width=16, depth=2, activation=activation)
    model = build_model(spec, seed)  # float32, as trained
    x = torch.randn(1, DIM, generator=torch.Generator().manual_seed(seed + 1)) * input_scale
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(hidden_scale)
            layer.bias.mul_(hidden_scale)
        model.hidden[0].weight.div_(input_scale)
        c = readout_scale_for(model(x)[0].double().numpy(), target)
        model.readout.weight.mul_(c)
        model.readout.bias.mul_(c)
    return model.eval(), x


def rows_with_top_from_the_others(jac: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """∂σ/∂x rows (n, d) with the top class's row replaced by −Σ of the others.

    Σ_i σ_i = 1, so the rows sum to 0 exactly. In float64 autograd (and in differences of
    σ_top itself) the top row is formed from 1 − σ_top, which keeps only ~16 + log10(1 − σ_top)
    digits; the other rows have no such term and are accurate at any confidence.
    """
    top = int(logits.argmax())
    others = torch.cat([jac[:top], jac[top + 1:]])
    jac = jac.clone()
    jac[top] = -others.sum(0)
    return jac


def autograd_reference(model32, x32):
    """(logits (n,), ∂f/∂x (n, d), ∂σ/∂x (n, d)) of a float64 copy of the network at the
    point x32 (1, d), from ``torch.autograd.functional.jacobian`` of the logits and softmax."""
    model = copy.deepcopy(model32).double()
    xi = x32[0].double()
    with torch.no_grad():
        logits = model(xi[None])[0]
    jf = jacobian(lambda v: model(v[None])[0], xi)
    js = jacobian(lambda v: torch.softmax(model(v[None])[0], -1), xi)
    return logits, jf, rows_with_top_from_the_others(js, logits)


def finite_difference_reference(model32, x32, step=1e-6):
    """The same (logits, ∂f/∂x, ∂σ/∂x) from central differences of the float64 copy."""
    model = copy.deepcopy(model32).double()
    xi = x32[0].double()
    e = torch.eye(DIM, dtype=torch.float64) * step  # (d, d)
    with torch.no_grad():
        logits = model(xi[None])[0]
        plus, minus = model(xi + e), model(xi - e)  # (d, n)
    jf = ((plus - minus) / (2 * step)).T
    js = ((torch.softmax(plus, -1) - torch.softmax(minus, -1)) / (2 * step)).T
    return logits, jf, rows_with_top_from_the_others(js, logits)


def exact_loss(logits: torch.Tensor, y: int) -> float:
    """−log σ_y = log Σ_k e^{f_k − f_y} in 60-digit decimal arithmetic from float64 logits."""
    with localcontext() as ctx:
        ctx.prec = 60
        f = [Decimal(float(v)) for v in logits]
        return float(sum((fk - f[y]).exp() for fk in f).ln())


def exact_rest(logits: torch.Tensor) -> float:
    """1 − max softmax in 60-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 60
        f = [Decimal(float(v)) for v in logits]
        total = sum((fk - max(f)).exp() for fk in f)
        return float(1 - 1 / total)


def relative_error(value, reference) -> float:
    value, reference = float(value), float(reference)
    return abs(value - reference) / abs(reference)


def assert_workflow_matches(model32, x32, reference):
    """Every per-point quantity of the workflow against ``reference`` at x32, both labels."""
    logits, jf, js = reference
    top = int(logits.argmax())
    for y in (top, (top + 1) % N_CLASSES):  # confident and right, confident and wrong
        labels = torch.tensor([y])
        out = pointwise_metrics(model32, x32, labels)
        assert out["loss"].dtype == out["jacobian_norm"].dtype == np.float64
        errors = {
            "jacobian_norm": relative_error(out["jacobian_norm"][0], js.norm()),
            "logit_jacobian_norm": relative_error(out["logit_jacobian_norm"][0], jf.norm()),
            "loss": relative_error(out["loss"][0], exact_loss(logits, y)),
            "true_class": relative_error(true_class_jacobian_norm(model32, x32, labels)[0],
                                         js[y].norm()),
        }
        assert max(errors.values()) < RTOL, (y, errors)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_confident_points_match_float64_autograd(activation, confidence):
    model, x = confident_case(activation, confidence, seed=3)
    reference = autograd_reference(model, x)
    assert exact_rest(reference[0]) == pytest.approx(confidence, rel=0.05)  # the case is built
    assert_workflow_matches(model, x, reference)


@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_confident_points_match_finite_differences(confidence):
    model, x = confident_case("relu", confidence, seed=4)
    assert away_from_breakpoints(copy.deepcopy(model).double(), x.double()).shape[0] == 1
    assert_workflow_matches(model, x, finite_difference_reference(model, x))


@pytest.mark.parametrize("activation", ["relu6", "hard_tanh", "hard_sigmoid", "tanh"])
@pytest.mark.parametrize("confidence", [1e-6, 1e-12])
def test_confident_points_with_saturated_hidden_units(activation, confidence):
    """Hidden weights × 8: most units sit on a flat piece (tanh: |z| > 3), some do not."""
    model, x = confident_case(activation, confidence, seed=5, hidden_scale=8.0)
    with torch.no_grad():
        z = torch.cat(model.preactivations(x), dim=1)[0]
    flat = {"relu6": (z < 0) | (z > 6), "hard_tanh": z.abs() > 1,
            "hard_sigmoid": z.abs() > 3, "tanh": z.abs() > 3}[activation]
    assert 0.5 <= flat.double().mean() < 1
    assert_workflow_matches(model, x, autograd_reference(model, x))


@pytest.mark.parametrize("input_scale", [1e3, 1e6])
def test_confident_points_with_huge_input_norms(input_scale):
    """‖x‖ ~ 3 input_scale, the first layer's weights divided by it: the same logits."""
    model, x = confident_case("relu", 1e-9, seed=6, input_scale=input_scale)
    assert x.norm() > input_scale
    assert_workflow_matches(model, x, autograd_reference(model, x))


def test_one_hot_softmax_gives_zero_not_nan():
    """Inputs so large that every σ_k, k ≠ top, underflows even in float64: the softmax
    Jacobian is 0 (as e^{−margin} is), the loss of the top class 0, of another its margin."""
    model, x = confident_case("relu", 1e-3, seed=6)
    x = x * 1e5
    logits, jf, _ = autograd_reference(model, x)
    top = int(logits.argmax())
    assert exact_rest(logits) < 1e-300
    out = pointwise_metrics(model, x, torch.tensor([top]))
    assert out["jacobian_norm"][0] == 0 and out["loss"][0] == 0
    assert relative_error(out["logit_jacobian_norm"][0], jf.norm()) < RTOL
    wrong = (top + 1) % N_CLASSES
    loss_wrong = pointwise_metrics(model, x, torch.tensor([wrong]))["loss"][0]
    assert relative_error(loss_wrong, exact_loss(logits, wrong)) < RTOL
