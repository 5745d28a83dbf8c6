"""Per-point loss bounds (Novak appendix) on a network whose logit Jacobian rows are
orthogonal with equal squared norm M: f(x) = W x with W = sqrt(M) Q, Q orthonormal rows;
and the stored bounds at points the float32 network is very sure of, against 60-digit
decimal arithmetic."""

import subprocess
import sys
from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_jacobian import (CONFIDENCES, RTOL, autograd_reference, confident_case, exact_loss,
                           relative_error)
from torch import nn

from workflow_src.metrics.bounds import (
    approx_from_loss,
    bound_M,
    bounds_from_loss,
)
from workflow_src.metrics.jacobian import jacobian_norms, pointwise_metrics, true_class_jacobian_norm
from workflow_src.metrics.per_run import bound_metrics
from workflow_src.nets.models import ModelSpec, build_model

N_CLASSES, DIM, M_TRUE = 5, 12, 0.7


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def orthogonal_net():
    q, _ = torch.linalg.qr(torch.randn(DIM, N_CLASSES, generator=gen(0), dtype=torch.float64))
    layer = nn.Linear(DIM, N_CLASSES, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(M_TRUE**0.5 * q.T)  # (n, d), rows orthogonal, squared norm M
    return nn.Sequential(nn.Flatten(), layer)


def loss_and_norms(model, x, y):
    """p = e^{-loss}, ||J_y||_2, ||J||_F and ||df/dx||_F per point, as numpy arrays."""
    with torch.no_grad():
        p = torch.exp(-F.cross_entropy(model(x), y, reduction="none"))
    jy = true_class_jacobian_norm(model, x, y, chunk_size=7)
    softmax_norm, logit_norm = jacobian_norms(model, x, chunk_size=7)
    return tuple(t.numpy() for t in (p, jy, softmax_norm, logit_norm))


def test_true_class_jacobian_norm_matches_autograd():
    model = build_model(ModelSpec((2, 3, 3), 4, 8, 2, "relu6"), seed=1).double()
    x = torch.randn(10, 2, 3, 3, generator=gen(2), dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=gen(3))
    def probs(z):  # one example -> (n,)
        return torch.softmax(model(z[None])[0], dim=0)

    expected = torch.stack([
        torch.autograd.functional.jacobian(probs, xi)[yi].norm() for xi, yi in zip(x, y)
    ])
    torch.testing.assert_close(true_class_jacobian_norm(model, x, y, chunk_size=3), expected)


def test_M_is_the_squared_norm_of_one_logit_gradient(orthogonal_net):
    x = torch.randn(20, DIM, generator=gen(4), dtype=torch.float64)
    logit_norm = jacobian_norms(orthogonal_net, x)[1].numpy()
    assert bound_M(logit_norm, N_CLASSES) == pytest.approx(M_TRUE, rel=1e-12)


def test_bounds_hold_at_random_points(orthogonal_net):
    x = 3 * torch.randn(200, DIM, generator=gen(5), dtype=torch.float64)
    y = torch.randint(0, N_CLASSES, (200,), generator=gen(6))
    p, jy, _, logit_norm = loss_and_norms(orthogonal_net, x, y)
    lower, upper = bounds_from_loss(-np.log(p), bound_M(logit_norm, N_CLASSES), N_CLASSES)
    assert np.all(lower <= jy * (1 + 1e-12)) and np.all(jy <= upper * (1 + 1e-12))
    assert np.all(lower < upper)


def logits_to_input(model, logits):
    """x with f(x) = logits exactly: x = W^T logits / M for W W^T = M I."""
    w = model[1].weight.detach()  # (n, d)
    return logits @ w / M_TRUE


def test_even_spread_attains_the_lower_bound_and_the_approximation(orthogonal_net):
    """Logits (L, 0, ..., 0): the other classes share 1 - p evenly."""
    levels = torch.linspace(-4, 6, 11, dtype=torch.float64)
    logits = torch.zeros(11, N_CLASSES, dtype=torch.float64)
    logits[:, 2] = levels
    x, y = logits_to_input(orthogonal_net, logits), torch.full((11,), 2)
    p, jy, softmax_norm, _ = loss_and_norms(orthogonal_net, x, y)
    lower, _ = bounds_from_loss(-np.log(p), M_TRUE, N_CLASSES)
    np.testing.assert_allclose(jy, lower, rtol=1e-10)
    np.testing.assert_allclose(softmax_norm, approx_from_loss(-np.log(p), M_TRUE, N_CLASSES), rtol=1e-10)


def test_mass_on_one_other_class_approaches_the_upper_bound(orthogonal_net):
    # sigma = (p, 1 - p, ~e^-60, ...): the remaining mass sits on one class
    logits = torch.tensor([[1.0, 0.3, -60, -60, -60], [0.0, 2.0, -60, -60, -60]]).double()
    x, y = logits_to_input(orthogonal_net, logits), torch.zeros(2, dtype=torch.long)
    p, jy, _, _ = loss_and_norms(orthogonal_net, x, y)
    _, upper = bounds_from_loss(-np.log(p), M_TRUE, N_CLASSES)
    np.testing.assert_allclose(jy, upper, rtol=1e-12)


def test_formulas_by_hand():
    """n = 2, p = 1/2, M = 2: lower = upper = 2 * 1/4; the approximation is 2 p (1 - p) sqrt(M)."""
    lower, upper = bounds_from_loss(-np.log(0.5), 2.0, 2)
    assert lower == pytest.approx(0.5) and upper == pytest.approx(0.5)
    assert approx_from_loss(-np.log(0.5), 2.0, 2) == pytest.approx(2 * 0.25 * 2**0.5)
    assert bound_M(np.array([1.0, 3.0]), 2) == pytest.approx((1 + 9) / 2 / 2)


def exact_bounds(loss: float, M: float, n: int):
    """(lower, upper, approx) of the docstring's formulas in 60-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 60
        p = (-Decimal(loss)).exp()
        q, M, n = 1 - p, Decimal(M), Decimal(n)
        lower = (n * M / (n - 1)).sqrt() * p * q
        upper = (2 * M).sqrt() * p * q
        approx = M.sqrt() / (n - 1) * q * (n * n * p * p + n - 2).sqrt()
        return float(lower), float(upper), float(approx)


@pytest.mark.parametrize("loss", [1e-3, 1e-8, 1e-12, 1e-17, 1e-30, 0.7, 40.0])
def test_bound_formulas_keep_their_digits_at_small_losses(loss):
    """1 − e^{−loss} is 0 in float64 below loss ~1e-16; −expm1(−loss) is not."""
    got = (*bounds_from_loss(np.float64(loss), 0.3, 10), approx_from_loss(np.float64(loss), 0.3, 10))
    for value, expected in zip(got, exact_bounds(loss, 0.3, 10)):
        assert value == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_stored_bounds_at_confident_points(activation, confidence):
    """bound_metrics as the measure job runs it (loss and logit norm from the Jacobian
    metric's values) on the float32 network, against float64 autograd and decimal references."""
    model, x = confident_case(activation, confidence, seed=8)
    logits, jf, js = autograd_reference(model, x)
    assert jf.norm() > 0  # not a point where every unit is dead
    top = int(logits.argmax())
    for y in (top, (top + 1) % N_CLASSES):
        labels = torch.tensor([y])
        store = pointwise_metrics(model, x, labels)
        out = bound_metrics(model, x, labels, store["loss"], store["logit_jacobian_norm"],
                            N_CLASSES, chunk_size=4)
        M = float(jf.norm()) ** 2 / N_CLASSES  # one point: M = ||df/dx||_F^2 / n
        lower, upper, approx = exact_bounds(exact_loss(logits, y), M, N_CLASSES)
        errors = {
            "bound_M": relative_error(out["bound_M"], M),
            "bound_lower": relative_error(out["bound_lower"][0], lower),
            "bound_upper": relative_error(out["bound_upper"][0], upper),
            "bound_approx": relative_error(out["bound_approx"][0], approx),
            "jacobian_norm_true_class": relative_error(out["jacobian_norm_true_class"][0],
                                                       js[y].norm()),
        }
        assert max(errors.values()) < RTOL, (y, errors)
        assert all(out[v].dtype == np.float64 for v in errors)


def test_bounds_module_imports_without_torch():
    """Rule plot_bounds imports it in an environment without torch."""
    code = "import sys; sys.modules['torch'] = None; import workflow_src.metrics.bounds"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
