"""Empirical NTK metrics (workflow_src.metrics.ntk) against an explicit per-example autograd
loop on tiny float64 networks, numpy.linalg.eigvalsh, kernels with known summaries and
sklearn's KernelRidge."""

import copy
import math

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.kernel_ridge import KernelRidge

from workflow_src.metrics.ntk import (
    EXPECTED_SIGN,
    kernel_regression_accuracy,
    kernel_regression_predictions,
    kernel_summaries,
    ntk_gram,
    ntk_metrics,
)
from workflow_src.nets.models import ACTIVATIONS, BREAKPOINTS, ModelSpec, build_model

N_CLASSES = 3
# Hidden-weight scale per activation so that random inputs reach every linear piece.
SCALE = {"relu": 1.0, "relu6": 10.0, "hard_tanh": 2.0, "hard_sigmoid": 10.0, "tanh": 2.0}
SCALARS = ["ntk_trace", "ntk_effective_rank", "ntk_condition_number", "ntk_target_alignment",
           "ntk_kernel_regression_test_acc"]
VARIABLES = ["ntk_top_eigenvalues", *SCALARS]


def make_net(activation="tanh", bias=True, depth=2, input_shape=(3,), seed=0, scale=None):
    spec = ModelSpec(input_shape=input_shape, n_classes=N_CLASSES, width=4, depth=depth,
                     activation=activation, bias=bias)
    model = build_model(spec, seed=seed).double()
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(SCALE[activation] if scale is None else scale)
    return model


def points(n, input_shape=(3,), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *input_shape), generator=g, dtype=torch.float64)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return x, y


def explicit_jacobians(model, x):
    """G[k, i] = ∂f_k(x_i)/∂θ flattened, by one autograd.grad per point and class."""
    params = list(model.parameters())
    G = np.zeros((N_CLASSES, x.shape[0], sum(p.numel() for p in params)))
    for i in range(x.shape[0]):
        for k in range(N_CLASSES):
            out = model(x[i:i + 1])[0, k]
            grads = torch.autograd.grad(out, params, allow_unused=True)
            G[k, i] = torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                                 for p, g in zip(params, grads)]).numpy()
    return G


def explicit_gram(model, x, x2=None):
    G = explicit_jacobians(model, x)
    G2 = G if x2 is None else explicit_jacobians(model, x2)
    return sum(G[k] @ G2[k].T for k in range(N_CLASSES))


# --- the Gram matrix ------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gram_matches_explicit_loop(activation, bias):
    for depth, shape in ((1, (3,)), (2, (1, 2, 2))):
        model = make_net(activation, bias, depth, shape, seed=depth)
        x, _ = points(7, shape, seed=depth)
        # every linear piece of the activation is reached, so the check covers each slope
        z = torch.cat([layer_z.flatten() for layer_z in model.preactivations(x)]).detach()
        edges = [-math.inf, *BREAKPOINTS[activation], math.inf]
        for lo, hi in zip(edges[:-1], edges[1:]):
            assert ((z > lo) & (z < hi)).any(), (lo, hi)
        expected = explicit_gram(model, x)
        theta = ntk_gram(model, x, chunk_size=3)
        assert theta.shape == (7, 7) and theta.dtype == np.float64
        np.testing.assert_allclose(theta, expected, rtol=1e-12, atol=1e-12)
        # the cross kernel (test x train) is the same contraction between two point sets
        x2, _ = points(5, shape, seed=10 + depth)
        np.testing.assert_allclose(ntk_gram(model, x2, x, chunk_size=2),
                                   explicit_gram(model, x2, x), rtol=1e-12, atol=1e-12)


def test_gram_is_not_the_untraced_or_single_class_kernel():
    """The explicit comparison can tell the class trace from one class's kernel."""
    model = make_net("relu")
    x, _ = points(6)
    G = explicit_jacobians(model, x)
    theta = ntk_gram(model, x)
    assert not np.allclose(theta, G[0] @ G[0].T, rtol=1e-6)
    assert not np.allclose(theta, sum(G[k] @ G[k].T for k in range(2)), rtol=1e-6)


def test_chunking_gives_the_same_matrix():
    model = make_net("hard_tanh", depth=2)
    x, _ = points(8)
    x2, _ = points(5, seed=3)
    full = ntk_gram(model, x, chunk_size=8)
    for chunk in (1, 3, 100):
        np.testing.assert_allclose(ntk_gram(model, x, chunk_size=chunk), full,
                                   rtol=1e-13, atol=1e-14)
    cross = ntk_gram(model, x2, x, chunk_size=100)
    for chunk in (1, 3):
        np.testing.assert_allclose(ntk_gram(model, x2, x, chunk_size=chunk), cross,
                                   rtol=1e-13, atol=1e-14)
    # the symmetric kernel's diagonal block of the cross kernel is the kernel itself
    np.testing.assert_allclose(ntk_gram(model, x, x, chunk_size=3), full,
                               rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError):
        ntk_gram(model, x, chunk_size=0)


def test_symmetric_psd_and_trace_is_sum_of_squared_gradients():
    model = make_net("tanh", depth=2)
    x, _ = points(8)
    theta = ntk_gram(model, x, chunk_size=3)
    np.testing.assert_array_equal(theta, theta.T)
    eig = np.linalg.eigvalsh(theta)
    assert eig.min() >= -1e-12 * eig.max()
    G = explicit_jacobians(model, x)
    np.testing.assert_allclose(np.trace(theta), float((G ** 2).sum()), rtol=1e-12)
    np.testing.assert_allclose(np.diag(theta), (G ** 2).sum(axis=(0, 2)), rtol=1e-12)


def test_gram_float32_model_computed_in_float64_and_left_untouched():
    model64 = make_net("relu6")
    model32 = copy.deepcopy(model64).float()
    before = {k: v.clone() for k, v in model32.state_dict().items()}
    x, _ = points(5)
    theta = ntk_gram(model32, x.float())
    assert theta.dtype == np.float64
    # the float64 copy of the float32 weights on the float32 inputs, exactly
    expected = explicit_gram(copy.deepcopy(model32).double(), x.float().double())
    np.testing.assert_allclose(theta, expected, rtol=1e-12, atol=1e-12)
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    for k, v in model32.state_dict().items():
        assert torch.equal(v, before[k])


# --- spectral summaries and alignment -------------------------------------------------------

def test_summaries_against_eigvalsh_by_hand():
    model = make_net("tanh")
    x, y = points(8)
    theta = explicit_gram(model, x)
    s = kernel_summaries(ntk_gram(model, x), y, N_CLASSES, top_k=5)
    lam = np.sort(np.linalg.eigvalsh(theta))[::-1]
    np.testing.assert_allclose(s["top_eigenvalues"], lam[:5], rtol=1e-10)
    assert np.all(np.diff(s["top_eigenvalues"]) <= 0)
    np.testing.assert_allclose(s["trace"], lam.sum(), rtol=1e-10)
    np.testing.assert_allclose(s["effective_rank"], lam.sum() ** 2 / (lam ** 2).sum(),
                               rtol=1e-10)
    np.testing.assert_allclose(s["condition_number"], lam[0] / lam[-1], rtol=1e-8)
    Y = np.eye(N_CLASSES)[y.numpy()]
    yy = Y @ Y.T
    np.testing.assert_allclose(
        s["target_alignment"],
        (theta * yy).sum() / (np.linalg.norm(theta) * np.linalg.norm(yy)), rtol=1e-10)
    # more eigenvalues asked for than there are: NaN past n
    wide = kernel_summaries(theta, y, N_CLASSES, top_k=10)
    np.testing.assert_allclose(wide["top_eigenvalues"][:8], lam, rtol=1e-10)
    assert np.isnan(wide["top_eigenvalues"][8:]).all()


def test_known_kernels():
    n = 6
    y = np.array([0, 1, 2, 0, 1, 1])
    ident = kernel_summaries(np.eye(n), y, N_CLASSES, top_k=3)
    assert ident["effective_rank"] == pytest.approx(n, rel=1e-14)
    assert ident["condition_number"] == pytest.approx(1.0, rel=1e-14)
    assert ident["trace"] == pytest.approx(n)
    np.testing.assert_allclose(ident["top_eigenvalues"], 1.0, rtol=1e-14)
    # identity vs YY^T: <I, YY^T> = n, ||I|| = sqrt(n), ||YY^T|| = sqrt(sum n_c^2) = sqrt(14)
    assert ident["target_alignment"] == pytest.approx(n / math.sqrt(n * 14), rel=1e-14)

    Y = np.eye(N_CLASSES)[y]
    target = kernel_summaries(2.5 * Y @ Y.T, y, N_CLASSES, top_k=3)
    assert target["target_alignment"] == pytest.approx(1.0, rel=1e-14)
    # rank 3 < n: singular, condition number +inf; eigenvalues 2.5 * class sizes (3, 2, 1)
    assert target["condition_number"] == np.inf
    np.testing.assert_allclose(target["top_eigenvalues"], [7.5, 5.0, 2.5], rtol=1e-12)
    assert target["effective_rank"] == pytest.approx(15.0 ** 2 / (7.5**2 + 5**2 + 2.5**2))

    # diagonal spectrum: condition number lambda_max / lambda_min; a zero eigenvalue -> inf
    d = kernel_summaries(np.diag([4.0, 2.0, 0.5]), [0, 1, 2], N_CLASSES, top_k=3)
    assert d["condition_number"] == pytest.approx(8.0)
    assert kernel_summaries(np.diag([4.0, 2.0, 0.0]), [0, 1, 2], N_CLASSES,
                            top_k=3)["condition_number"] == np.inf
    # an eigenvalue > 0 but below n * eps * lambda_max is numerical zero: inf; above: finite
    assert kernel_summaries(np.diag([4.0, 2.0, 1e-17]), [0, 1, 2], N_CLASSES,
                            top_k=3)["condition_number"] == np.inf
    assert kernel_summaries(np.diag([4.0, 2.0, 1e-13]), [0, 1, 2], N_CLASSES,
                            top_k=3)["condition_number"] == pytest.approx(4e13)
    zero = kernel_summaries(np.zeros((3, 3)), [0, 1, 2], N_CLASSES, top_k=2)
    assert np.isnan(zero["effective_rank"]) and np.isnan(zero["condition_number"])
    assert np.isnan(zero["target_alignment"]) and zero["trace"] == 0.0


# --- kernel regression ----------------------------------------------------------------------

def test_kernel_regression_known_answer():
    y_train = np.array([0, 1, 2, 0, 1, 2])
    y_test = np.array([2, 0, 1, 1])
    Y, Yt = np.eye(N_CLASSES)[y_train], np.eye(N_CLASSES)[y_test]
    theta, theta_test = Y @ Y.T, Yt @ Y.T  # the label kernel: every class recovered
    assert kernel_regression_accuracy(theta, theta_test, y_train, y_test, N_CLASSES,
                                      1e-6) == 1.0
    # predictions: Yt Y^T (Y Y^T + r I)^-1 Y = Yt * 2 / (2 + r) for classes of size 2
    # (mu = r tr/n = r, tr = n), in closed form
    r = 0.3
    pred = kernel_regression_predictions(theta, theta_test, y_train, N_CLASSES, r)
    np.testing.assert_allclose(pred, Yt * 2 / (2 + r), rtol=1e-13)
    # the wrong labels on the test side: every prediction wrong
    assert kernel_regression_accuracy(theta, theta_test, y_train, (y_test + 1) % 3,
                                      N_CLASSES, 1e-6) == 0.0
    assert np.isnan(kernel_regression_accuracy(np.zeros((6, 6)), theta_test, y_train, y_test,
                                               N_CLASSES, 1e-6))


@pytest.mark.parametrize("ridge", [1e-6, 0.1, 3.0])
def test_kernel_regression_matches_sklearn(ridge):
    model = make_net("relu")
    x, y = points(8)
    xt, yt = points(6, seed=5)
    theta, theta_test = explicit_gram(model, x), explicit_gram(model, xt, x)
    Y = np.eye(N_CLASSES)[y.numpy()]
    krr = KernelRidge(kernel="precomputed", alpha=ridge * np.trace(theta) / 8).fit(theta, Y)
    expected = krr.predict(theta_test)
    pred = kernel_regression_predictions(ntk_gram(model, x), ntk_gram(model, xt, x), y,
                                         N_CLASSES, ridge)
    np.testing.assert_allclose(pred, expected, rtol=1e-8, atol=1e-10)
    acc = kernel_regression_accuracy(theta, theta_test, y, yt, N_CLASSES, ridge)
    assert acc == np.mean(expected.argmax(1) == yt.numpy())


# --- ntk_metrics ----------------------------------------------------------------------------

def test_ntk_metrics_dataset():
    model, init = make_net("tanh", seed=0), make_net("tanh", seed=1)
    x, y = points(8)
    xt, yt = points(6, seed=5)
    ds = ntk_metrics(model, init, x, y, xt, yt, n_points=7, top_k=4, ridge=0.01,
                     chunk_size=3)
    assert isinstance(ds, xr.Dataset)
    assert set(ds.data_vars) == {v + s for v in VARIABLES for s in ("", "_init")}
    assert ds["ntk_top_eigenvalues"].dims == ("eigen",) and ds.sizes["eigen"] == 4
    assert ds["ntk_top_eigenvalues_init"].dims == ("eigen",)
    for name in SCALARS:
        for s in ("", "_init"):
            assert ds[name + s].dims == () and ds[name + s].dtype == np.float64
            assert ds[name + s].attrs["expected_sign"] == EXPECTED_SIGN[name]
            assert "reference" in ds[name + s].attrs
    assert set(EXPECTED_SIGN) == set(VARIABLES)
    assert ds.attrs["n_points"] == 7 and ds.attrs["n_test_points"] == 6

    # the first n_points training points, by hand
    theta, theta_test = explicit_gram(model, x[:7]), explicit_gram(model, xt, x[:7])
    lam = np.sort(np.linalg.eigvalsh(theta))[::-1]
    np.testing.assert_allclose(ds["ntk_top_eigenvalues"].values, lam[:4], rtol=1e-10)
    np.testing.assert_allclose(float(ds["ntk_trace"]), np.trace(theta), rtol=1e-12)
    np.testing.assert_allclose(float(ds["ntk_effective_rank"]),
                               lam.sum() ** 2 / (lam ** 2).sum(), rtol=1e-10)
    np.testing.assert_allclose(float(ds["ntk_condition_number"]), lam[0] / lam[-1],
                               rtol=1e-8)
    Y = np.eye(N_CLASSES)[y[:7].numpy()]
    np.testing.assert_allclose(
        float(ds["ntk_target_alignment"]),
        (theta * (Y @ Y.T)).sum() / (np.linalg.norm(theta) * np.linalg.norm(Y @ Y.T)),
        rtol=1e-10)
    krr = KernelRidge(kernel="precomputed", alpha=0.01 * np.trace(theta) / 7).fit(theta, Y)
    assert float(ds["ntk_kernel_regression_test_acc"]) == np.mean(
        krr.predict(theta_test).argmax(1) == yt.numpy())

    # the _init variables are those of the initial network ...
    init_alone = ntk_metrics(init, init, x, y, xt, yt, n_points=7, top_k=4, ridge=0.01)
    for name in VARIABLES:
        np.testing.assert_allclose(ds[name + "_init"].values, init_alone[name].values,
                                   rtol=1e-10)
    # ... which differ from the trained network's
    assert not np.isclose(float(ds["ntk_trace"]), float(ds["ntk_trace_init"]), rtol=1e-6)
    # n_test_points takes the first test points
    few = ntk_metrics(model, init, x, y, xt, yt, n_points=7, top_k=4, ridge=0.01,
                      n_test_points=2)
    assert few.attrs["n_test_points"] == 2
    assert float(few["ntk_kernel_regression_test_acc"]) == np.mean(
        krr.predict(theta_test[:2]).argmax(1) == yt[:2].numpy())


def test_init_equals_trained_when_initial_model_is_model():
    model = make_net("hard_sigmoid", bias=False, depth=1, input_shape=(1, 2, 2))
    x, y = points(6, (1, 2, 2))
    xt, yt = points(5, (1, 2, 2), seed=2)
    ds = ntk_metrics(model, model, x, y, xt, yt, top_k=3)
    twin = ntk_metrics(model, copy.deepcopy(model), x, y, xt, yt, top_k=3)
    for name in VARIABLES:
        np.testing.assert_array_equal(ds[name].values, ds[name + "_init"].values)
        np.testing.assert_allclose(twin[name + "_init"].values, twin[name].values,
                                   rtol=1e-12)
    assert ds.attrs["n_points"] == 6  # n_points=200 > N: all of them


def test_ntk_metrics_rejects_bad_input():
    model = make_net("relu")
    x, y = points(5)
    with pytest.raises(ValueError):
        ntk_metrics(model, make_net("tanh"), x, y, x, y)
    with pytest.raises(ValueError):
        ntk_metrics(model, model, x, y[:4], x, y)
    with pytest.raises(ValueError):
        ntk_metrics(model, model, x, y, x, y[:3])
    with pytest.raises(ValueError):
        ntk_metrics(model, model, x, y + 3, x, y)
