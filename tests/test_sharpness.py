"""Keskar's sharpness (Metric 2.1, arXiv 1609.04836 §2.2.2; workflow_src.metrics.sharpness)
against brute-force grid maxima, explicit formulas and its box, in float64."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from workflow_src.metrics import sharpness as S
from workflow_src.nets.models import ModelSpec, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# 12 scalar points, labels a noisy threshold: no network fits them exactly.
X1 = torch.linspace(-2, 2, 12, dtype=torch.float64).reshape(-1, 1)
Y1 = (X1[:, 0] > 0.3).long()
Y1[[2, 9]] = 1 - Y1[[2, 9]]


def _ce(logits, y):
    """Reference cross-entropy, batched over leading dims: (..., B, K), (B,) -> (..., B)."""
    picked = logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return torch.logsumexp(logits, -1) - picked


def _linear_net(w):
    """Input (1,), no hidden layer, no bias, 2 classes: exactly 2 weights, logits (w1 x, w2 x)."""
    spec = ModelSpec((1,), 2, width=1, depth=0, activation="relu", bias=False)
    model = build_model(spec, 0).double()
    with torch.no_grad():
        model.readout.weight.copy_(torch.tensor(w, dtype=torch.float64).reshape(2, 1))
    return model


def _linear_loss(W, x=X1, y=Y1):
    """Mean cross-entropy of the 2-weight linear model at each row of W (G, 2) -> (G,)."""
    return _ce(W[:, None, :] * x[None, :, :], y).mean(-1)


def _tanh_net(w):
    """Input (1,), one tanh unit, no bias, 2 classes: 3 weights (h, r1, r2), logits r tanh(h x)."""
    spec = ModelSpec((1,), 2, width=1, depth=1, activation="tanh", bias=False)
    model = build_model(spec, 0).double()
    with torch.no_grad():
        model.hidden[0].weight.fill_(w[0])
        model.readout.weight.copy_(torch.tensor(w[1:], dtype=torch.float64).reshape(2, 1))
    return model


def _tanh_loss(W):
    """Mean cross-entropy of the 3-weight tanh model at each row of W (G, 3) -> (G,)."""
    act = torch.tanh(W[:, :1] * X1[None, :, 0])  # (G, B)
    return _ce(W[:, None, 1:] * act[:, :, None], Y1).mean(-1)


def _grid(half_widths, points=201):
    """Every point of a points × points grid over the 2-D box, corners included: (G, 2)."""
    g = np.linspace(-1.0, 1.0, points)
    return np.stack(np.meshgrid(g * half_widths[0], g * half_widths[1], indexing="ij"),
                    -1).reshape(-1, 2)


def _data(n=40, seed=0, shape=(1, 4, 5), classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
    return x, torch.randint(classes, (n,), generator=g)


def _trained_net(seed=0, width=10, steps=150):
    """A small relu network fitted for a while to _data(): near, not at, a minimum."""
    spec = ModelSpec((1, 4, 5), 3, width=width, depth=2, activation="relu")
    model = build_model(spec, seed).double()
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()


def _reference_loss(model, w, x, y):
    """L at flat weights w with torch's own cross-entropy on a fresh copy of the network."""
    net = copy.deepcopy(model).double()
    torch.nn.utils.vector_to_parameters(torch.as_tensor(w, dtype=torch.float64), net.parameters())
    with torch.no_grad():
        return float(F.cross_entropy(net(x.double()), y))


# --- the maximum against a brute-force grid -------------------------------------------------

@pytest.mark.parametrize("w", [(0.7, -0.4), (-1.0, 1.2), (0.0, 0.0)])
@pytest.mark.parametrize("eps", [1e-3, 0.1, 0.5])
def test_two_weight_network_matches_the_grid_maximum(w, eps):
    """Full space, 10 iterations. The loss is convex in the 2 weights, so its maximum over
    the box is at a corner, which the 201 × 201 grid contains: the grid maximum is the true
    maximum, and L-BFGS-B must match it to 1e-3 of the increase, never exceed it."""
    model = _linear_net(w)
    assert sum(p.numel() for p in model.parameters()) == 2
    problem = S.SharpnessProblem(S.TrainingLoss(model, X1, Y1))
    w0 = torch.tensor(w, dtype=torch.float64)
    base = float(_linear_loss(w0[None])[0])
    assert problem.base_value == pytest.approx(base, rel=1e-14)
    h = problem.half_widths(eps)
    np.testing.assert_array_equal(h, eps * (np.abs(np.asarray(w)) + 1))
    grid = _linear_loss(w0[None] + torch.from_numpy(_grid(h))).numpy()
    corners = _linear_loss(w0[None] + torch.from_numpy(np.array(
        [[a * h[0], b * h[1]] for a in (-1, 1) for b in (-1, 1)]))).numpy()
    assert grid.max() == corners.max()  # convex: the true maximum is at a corner
    phi, found = problem.sharpness(eps, max_iterations=10)
    assert found.value - base == pytest.approx(grid.max() - base, rel=1e-3)
    assert found.value <= grid.max() + 1e-14 * (1 + base)
    assert phi == pytest.approx(100 * (grid.max() - base) / (1 + base), rel=1e-3)
    assert phi > 0


@pytest.mark.parametrize("w,seed,eps", [((1.5, 0.8, -0.6), 0, 1.0), ((0.3, 2.0, -1.5), 1, 0.3)])
def test_nonconvex_subspace_matches_the_grid_maximum(w, seed, eps):
    """A tanh network (3 weights) in a random 2-D subspace, a box wide enough that the loss
    is far from linear (in the second case the maximum lies on an edge, between grid
    points). 10 iterations are enough here. The value L-BFGS-B reports is the loss at a
    point it evaluated inside the box, so it cannot exceed the true maximum; it may exceed
    the grid's by what lies between grid points."""
    model = _tanh_net(w)
    A = S.subspace_basis(3, 2, seed)
    problem = S.SharpnessProblem(S.TrainingLoss(model, X1, Y1), A)
    w0 = torch.tensor(w, dtype=torch.float64)
    base = float(_tanh_loss(w0[None])[0])
    assert problem.base_value == pytest.approx(base, rel=1e-14)
    h = problem.half_widths(eps)
    At = torch.from_numpy(A).T
    grid = _tanh_loss(w0[None] + torch.from_numpy(_grid(h)) @ At).numpy()
    found = S.maximize_in_box(problem.objective, h, max_iterations=10)
    assert found.value - base == pytest.approx(grid.max() - base, rel=1e-3)
    assert np.all(np.abs(found.z) <= h)
    at_z = float(_tanh_loss(w0[None] + torch.from_numpy(found.z)[None] @ At)[0])
    assert found.value == pytest.approx(at_z, rel=1e-13)
    assert found.value - grid.max() <= 1e-5 * (grid.max() - base)  # between grid points only


# --- the box --------------------------------------------------------------------------------

def test_every_point_evaluated_lies_in_the_box():
    """An objective that pulls hard out of the box along some coordinates and into it along
    others: every z L-BFGS-B asks for lies in the box, and some lie on its faces."""
    h = np.array([1e-3, 2.0, 0.5, 0.0, 3e-2])
    target = np.array([5.0, -7.0, 0.1, 1.0, -0.01])  # outside, outside, inside, fixed, inside
    seen = []

    def fun(z):
        seen.append(z.copy())
        d = z - target
        return -float(d @ d) + 30 * float(np.sin(z).sum()), -2 * d + 30 * np.cos(z)

    found = S.maximize_in_box(fun, h, max_iterations=10)
    points = np.stack(seen)
    assert len(points) > 3
    assert np.all(points >= -h) and np.all(points <= h)
    assert np.isclose(np.abs(points[:, 0]), h[0], rtol=0, atol=0).any()
    assert (points[:, 3] == 0).all()
    assert found.value == max(fun(p)[0] for p in points)


def test_metrics_use_the_box_of_A_pinv_w(monkeypatch):
    """sharpness_metrics hands L-BFGS-B the box ε(|w| + 1) for A = I and ε(|A⁺w| + 1) for the
    random A (A⁺ by numpy here), and every point it evaluates lies in that box."""
    model = _trained_net(steps=20)
    x, y = _data()
    w = _flat(model).numpy()
    n = w.size
    A = S.subspace_basis(n, 100, seed=3)
    A_pinv = np.linalg.pinv(A)
    calls = []
    original = S.maximize_in_box

    def recording(fun, half_widths, max_iterations, starts=None):
        points = []

        def wrapped(z):
            points.append(z.copy())
            return fun(z)

        calls.append((np.asarray(half_widths).copy(), points))
        return original(wrapped, half_widths, max_iterations, starts)

    monkeypatch.setattr(S, "maximize_in_box", recording)
    epsilons = (1e-3, 5e-4)
    S.sharpness_metrics(model, x, y, epsilons=epsilons, seed=3)
    assert len(calls) == 4  # full at both ε, then subspace at both ε
    expected = [eps * (np.abs(w) + 1) for eps in epsilons] + [
        eps * (np.abs(A_pinv @ w) + 1) for eps in epsilons]
    for (h, points), h_expected in zip(calls, expected):
        np.testing.assert_allclose(h, h_expected, rtol=1e-9, atol=0)
        pts = np.stack(points)
        assert len(pts) > 1
        assert np.all(np.abs(pts) <= h)


def test_identity_A_is_the_full_space_and_the_formula():
    """A = I_n explicitly (pinv(I) = I, so A⁺w = w) gives the full-space box and value, and
    φ is 100 (L(w + z*) − L(w)) / (1 + L(w)) with L from torch's own cross-entropy."""
    model = _trained_net()
    x, y = _data()
    loss = S.TrainingLoss(model, x, y)
    full = S.SharpnessProblem(loss)
    explicit = S.SharpnessProblem(loss, np.eye(loss.n_parameters))
    w = _flat(model).numpy()
    eps = 1e-3
    np.testing.assert_allclose(explicit.projected_weights(), w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(explicit.half_widths(eps), eps * (np.abs(w) + 1), rtol=1e-12)
    np.testing.assert_array_equal(full.half_widths(eps), eps * (np.abs(w) + 1))
    phi_full, found = full.sharpness(eps)
    phi_explicit, _ = explicit.sharpness(eps)
    assert phi_full > 0
    assert phi_explicit == pytest.approx(phi_full, rel=1e-8)
    base = _reference_loss(model, w, x, y)
    peak = _reference_loss(model, w + found.z, x, y)
    assert phi_full == pytest.approx(100 * (peak - base) / (1 + base), rel=1e-10)


def test_subspace_basis_is_standard_normal_with_a_left_inverse():
    model = _trained_net()
    n, p = sum(q.numel() for q in model.parameters()), 100
    A = S.subspace_basis(n, p, seed=5)
    assert A.shape == (n, p) and A.dtype == np.float64
    assert abs(A.mean()) < 0.02 and abs(A.std() - 1) < 0.02  # 35,300 N(0, 1) draws
    np.testing.assert_array_equal(A, S.subspace_basis(n, p, seed=5))
    assert not np.array_equal(A, S.subspace_basis(n, p, seed=6))
    problem = S.SharpnessProblem(S.TrainingLoss(model, *_data()), A)
    np.testing.assert_allclose(problem.A_pinv.numpy() @ A, np.eye(p), atol=1e-12)
    w = _flat(model).numpy()
    np.testing.assert_allclose(problem.projected_weights(), np.linalg.pinv(A) @ w,
                               rtol=1e-9, atol=1e-12)


# --- values ---------------------------------------------------------------------------------

def test_zero_at_zero_epsilon_nonnegative_and_weakly_increasing():
    model = _trained_net()
    x, y = _data()
    epsilons = (0.0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
    out = S.sharpness_metrics(model, x, y, epsilons=epsilons)
    for name in ("sharpness_full", "sharpness_subspace"):
        values = out[name].values
        assert values[0] == 0.0
        assert (values >= 0).all()
        assert (np.diff(values) >= 0).all(), (name, values)
        assert values[-1] > values[1] > 0


def test_never_below_the_start_and_the_best_point_is_kept():
    """A gradient that lies (ascent promised, every step worse): the value stays L(w) and φ is
    0, not negative. A noisy objective: the value is the best of all evaluations, not
    L-BFGS-B's last iterate. φ's formula floors a maximum below L(w) at 0."""
    h = np.full(4, 0.1)
    liar = lambda z: (1.0 - float(z @ z), 2 * z + 1.0)  # noqa: E731
    found = S.maximize_in_box(liar, h)
    assert found.value == found.start_value == 1.0
    assert S.sharpness_from_maximum(found.value, 1.0) == 0.0

    rng = np.random.default_rng(0)
    seen = []

    def noisy(z):
        value = float(np.sin(3 * z).sum() + rng.normal(0, 0.05))
        seen.append(value)
        return value, 3 * np.cos(3 * z)

    found = S.maximize_in_box(noisy, np.full(3, 1.0))
    assert found.value == max(seen)
    assert S.sharpness_from_maximum(0.5, 1.0) == 0.0
    assert S.sharpness_from_maximum(1.5, 1.0) == pytest.approx(25.0)


def test_steeper_loss_is_sharper():
    """The 2-weight linear model at w = 0 on inputs x and on c·x (c = 3), i.e. its readout
    scaled by c: both have L(0) = log 2, and both boxes are |z_i| ≤ ε. The scaled loss is
    L(c z), so its maximum over the box is L's over the box c times larger; L is convex, so
    for a corner v of the small box L(c v) ≥ L(v) + (c − 1)(L(v) − L(0)): φ at least
    triples."""
    c, eps = 3.0, 0.1
    phis = []
    for scale in (1.0, c):
        problem = S.SharpnessProblem(S.TrainingLoss(_linear_net((0.0, 0.0)), scale * X1, Y1))
        assert problem.base_value == pytest.approx(math.log(2), rel=1e-14)
        phis.append(problem.sharpness(eps)[0])
    assert phis[0] > 0
    assert phis[1] >= c * phis[0] * (1 - 1e-6)


# --- the loss, the store, reproducibility ---------------------------------------------------

def test_chunking_does_not_change_the_loss():
    model = _trained_net()
    x, y = _data(n=10)  # chunks of 3: 3 + 3 + 3 + 1 points
    w = _flat(model)
    v3, g3 = S.TrainingLoss(model, x, y, chunk_size=3)(w)
    v_all, g_all = S.TrainingLoss(model, x, y, chunk_size=4096)(w)
    assert v3 == pytest.approx(v_all, rel=1e-14)
    assert v_all == pytest.approx(_reference_loss(model, w, x, y), rel=1e-13)
    torch.testing.assert_close(g3, g_all, rtol=1e-12, atol=1e-15)
    a = S.sharpness_metrics(model, x, y, chunk_size=3)
    b = S.sharpness_metrics(model, x, y, chunk_size=4096)
    for name in ("sharpness_full", "sharpness_subspace"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-8)
        assert (a[name].values > 0).all()


def test_deterministic_for_a_seed_and_leaves_the_network_alone():
    model = _trained_net()
    x, y = _data()
    before = [p.detach().clone() for p in model.parameters()]
    first = S.sharpness_metrics(model, x, y, seed=7)
    again = S.sharpness_metrics(model, x, y, seed=7)
    other = S.sharpness_metrics(model, x, y, seed=8)
    xr.testing.assert_identical(first, again)
    np.testing.assert_array_equal(first["sharpness_full"], other["sharpness_full"])
    assert not np.array_equal(first["sharpness_subspace"], other["sharpness_subspace"])
    for p, q in zip(model.parameters(), before):
        assert p.dtype == q.dtype and torch.equal(p.detach(), q)


def test_store_layout():
    model = _trained_net(steps=20)
    x, y = _data()
    out = S.sharpness_metrics(model, x, y, epsilons=(1e-3, 5e-4), max_iterations=10, seed=2)
    names = [f"sharpness_{a}{suffix}" for a in ("full", "subspace") for suffix in
             ("", "_evaluations", "_iterations", "_status", "_converged", "_restart_gain")]
    assert sorted(out.data_vars) == sorted(names)
    for name in names:
        assert out[name].dims == ("epsilon",) and out[name].dtype == np.float64
    np.testing.assert_array_equal(out["epsilon"].values, [1e-3, 5e-4])
    evaluations = out["sharpness_full_evaluations"].values
    assert (evaluations >= 2).all() and (evaluations == np.round(evaluations)).all()
    for a in ("full", "subspace"):
        status = out[f"sharpness_{a}_status"].values
        assert set(status) <= {0.0, 1.0, 2.0}
        np.testing.assert_array_equal(out[f"sharpness_{a}_converged"].values, status == 0)
        assert ((1 <= out[f"sharpness_{a}_iterations"]) & (out[f"sharpness_{a}_iterations"]
                                                          <= 10)).all()
        np.testing.assert_array_equal(out[f"sharpness_{a}_restart_gain"].values, 0.0)
        assert out[f"sharpness_{a}"].attrs["converged_by"] == f"sharpness_{a}_converged"
    assert out.attrs["restarts"] == 0 and "uniform" in out.attrs["restart_distribution"]
    attrs = out.attrs
    assert "1609.04836" in attrs["paper"] and "Metric 2.1" in attrs["equation"]
    assert attrs["max_iterations"] == 10 and attrs["seed"] == 2
    assert attrs["subspace_dim"] == 100 and "note" not in attrs
    assert "z = 0" in attrs["start_point"]
    assert "standard normal" in attrs["subspace_distribution"]
    assert attrs["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert attrs["loss_at_weights"] == pytest.approx(_reference_loss(model, _flat(model), x, y),
                                                     rel=1e-12)


def test_fewer_parameters_than_subspace_dim_uses_all_of_them():
    out = S.sharpness_metrics(_tanh_net((1.5, 0.8, -0.6)), X1, Y1, epsilons=(0.0, 0.1))
    assert out.attrs["subspace_dim"] == 3 and out.attrs["subspace_dim_requested"] == 100
    assert "p = n = 3" in out.attrs["note"]
    assert out["sharpness_subspace"].values[0] == 0.0
    assert out["sharpness_subspace"].values[1] > 0


# --- how L-BFGS-B stopped, and restarts -----------------------------------------------------

def test_status_says_why_lbfgsb_stopped():
    """0: its convergence test (here a vertex where the gradient points out of the box);
    1: the iteration budget; 2: anything else (here a gradient that lies, so the line search
    finds no ascent: ABNORMAL)."""
    c = np.array([1.0, -2.0, 0.5])
    vertex = S.maximize_in_box(lambda z: (float(c @ z), c), np.array([0.1, 0.2, 0.3]))
    assert vertex.status == 0 and "CONVERGENCE" in vertex.message
    np.testing.assert_array_equal(vertex.z, [0.1, -0.2, 0.3])
    a = np.diag([1.0, 100.0, 1e4])  # an ill-conditioned concave bowl, its top at z = 0.3
    bowl = lambda z: (-float((z - 0.3) @ a @ (z - 0.3)), -2 * a @ (z - 0.3))  # noqa: E731
    short = S.maximize_in_box(bowl, np.ones(3), max_iterations=2)
    assert short.status == 1 and short.iterations == 2 and "ITERATIONS" in short.message
    full = S.maximize_in_box(bowl, np.ones(3), max_iterations=100)
    assert full.status == 0 and 2 < full.iterations < 100
    assert full.value == pytest.approx(0.0, abs=1e-12) and short.value < full.value
    liar = S.maximize_in_box(lambda z: (1.0 - float(z @ z), 2 * z + 1.0), np.full(4, 0.1))
    assert liar.status == 2 and "ABNORMAL" in liar.message


def _bump(z):
    """1-D: a local maximum 0 at z = −0.2 (where L-BFGS-B from z = 0 goes) and the global
    one, ≈ 2, near z = 0.8."""
    peak = 3 * np.exp(-(z[0] - 0.8) ** 2 / 0.02)
    return (float(-(z[0] + 0.2) ** 2 + peak),
            np.array([-2 * (z[0] + 0.2) - peak * 2 * (z[0] - 0.8) / 0.02]))


def test_restarts_keep_the_best_run_and_the_first_runs_value():
    h = np.ones(1)
    alone = S.maximize_in_box(_bump, h, max_iterations=50)
    assert alone.z[0] == pytest.approx(-0.2, abs=1e-4) and alone.first_value == alone.value
    seen = []

    def recorded(z):
        seen.append(z.copy())
        return _bump(z)

    starts = np.array([[-0.5], [0.9], [1.0]])
    found = S.maximize_in_box(recorded, h, max_iterations=50, starts=starts)
    assert found.first_value == alone.value  # the run from z = 0 is unchanged
    assert found.value == max(_bump(z)[0] for z in seen) == pytest.approx(2.0, abs=0.05)
    assert found.z[0] == pytest.approx(0.8, abs=0.05) and found.status == 0
    assert {0.9, 1.0} <= {float(z[0]) for z in seen}  # the restarts' start points
    assert all(abs(z[0]) <= 1.0 for z in seen)
    assert found.evaluations == len(seen) > alone.evaluations


def test_restart_points_are_seeded_uniform_draws_that_grow_by_prefix():
    u = S.restart_points(1000, 5, seed=3, stream=0)
    assert u.shape == (5, 1000) and u.min() >= -1 and u.max() <= 1
    assert abs(u.mean()) < 0.02 and u.std() == pytest.approx(1 / math.sqrt(3), rel=0.02)
    np.testing.assert_array_equal(u[:2], S.restart_points(1000, 2, seed=3, stream=0))
    for other in (S.restart_points(1000, 5, seed=4, stream=0),
                  S.restart_points(1000, 5, seed=3, stream=1)):
        assert not np.array_equal(u, other)
    assert S.restart_points(7, 0, seed=3, stream=0).shape == (0, 7)


def test_metrics_with_restarts_are_the_best_over_runs_and_say_by_how_much():
    """A trained network whose subspace box (ε√n wide along each direction) has maxima that
    L-BFGS-B from z = 0 misses."""
    model = _trained_net(seed=2)
    x, y = _data()
    kw = dict(epsilons=(1e-3, 5e-4), seed=0)
    once = S.sharpness_metrics(model, x, y, **kw)
    np.testing.assert_array_equal(once["sharpness_subspace"],  # restarts=0 is the default
                                  S.sharpness_metrics(model, x, y, restarts=0, **kw)[
                                      "sharpness_subspace"])
    two = S.sharpness_metrics(model, x, y, restarts=2, **kw)
    three = S.sharpness_metrics(model, x, y, restarts=3, **kw)
    assert three.attrs["restarts"] == 3
    for a in ("full", "subspace"):
        phi, gain = three[f"sharpness_{a}"].values, three[f"sharpness_{a}_restart_gain"].values
        assert (phi >= two[f"sharpness_{a}"].values).all()  # the first 2 restarts are shared
        assert (gain >= 0).all()
        np.testing.assert_allclose(phi - gain, once[f"sharpness_{a}"].values, rtol=1e-12,
                                   atol=1e-15)
        assert (three[f"sharpness_{a}_evaluations"] > once[f"sharpness_{a}_evaluations"]).all()
    assert (three["sharpness_subspace_restart_gain"] > 0.5).all()  # the case under test
    xr.testing.assert_identical(three, S.sharpness_metrics(model, x, y, restarts=3, **kw))
    with pytest.raises(ValueError, match="restarts"):
        S.sharpness_metrics(model, x, y, restarts=-1, **kw)


# --- through the workflow's settings --------------------------------------------------------

def test_measure_shard_passes_restarts_and_flattens_the_status_per_epsilon():
    from workflow_src.jobs import measure_shard
    from workflow_src.measures import sharpness as declared

    model = _trained_net(seed=2, steps=20)
    x, y = _data()
    data = xr.Dataset({"x_train": (("n", "c", "h", "w"), x.numpy()),
                       "y_train": ("n", y.numpy())})
    job = measure_shard.MemberJob(torch.device("cpu"), 4096)
    settings = {"epsilons": [1e-3, 5e-4], "subspace_dim": 10, "max_iterations": 3, "seed": 1}
    kw = dict(epsilons=(1e-3, 5e-4), subspace_dim=10, max_iterations=3, seed=1)
    for restarts in (None, 2):  # None: a settings dict from before the key existed
        given = settings if restarts is None else {**settings, "restarts": restarts}
        out = declared.measure(model, data, given, job)
        alone = S.sharpness_metrics(model, x, y, restarts=restarts or 0, **kw)
        for name in alone.data_vars:
            for eps, suffix in ((1e-3, "eps0p001"), (5e-4, "eps0p0005")):
                assert out[f"{name}_{suffix}"].item() == alone[name].sel(epsilon=eps).item()
        assert {"sharpness_full_converged_eps0p001", "sharpness_subspace_status_eps0p0005",
                "sharpness_full_restart_gain_eps0p0005"} <= set(out.data_vars)


def test_restarts_enter_the_sharpness_store_name_only_when_used():
    """Stores measured before the setting existed (one run from z = 0) keep their names."""
    from test_store_identities import base_config, base_names, changed_stores

    from workflow_src.runtable import stable_hash

    settings = {k: v for k, v in base_config()["measure"]["sharpness"].items()
                if k not in ("enabled", "restarts")}
    assert base_config()["measure"]["sharpness"]["restarts"] == 0
    assert base_names()["sharpness"] == \
        f"results/shards/s/sharpness-{stable_hash(settings, 8)}.zarr"
    assert changed_stores(sharpness__restarts=2) == {"sharpness"}
