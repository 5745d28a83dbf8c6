"""PAC-Bayes flatness and sharpness (Jiang et al. 2020, arXiv 1912.02178;
workflow_src.metrics.pac_bayes) against known crossings, closed forms and hand-computed
margins, in float64."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from workflow_src.metrics import pac_bayes as P
from workflow_src.nets.models import ModelSpec, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _linear_net(W):
    """No hidden layer, no bias, 2 classes: logits W x, W (2, d) the only parameters."""
    W = torch.tensor(W, dtype=torch.float64)
    spec = ModelSpec((W.shape[1],), 2, width=1, depth=0, activation="relu", bias=False)
    model = build_model(spec, 0).double()
    with torch.no_grad():
        model.readout.weight.copy_(W)
    return model


# ----------------------------------------------------------------------------- bisection


def test_bisection_finds_known_crossing_within_tolerance():
    calls = []

    def deviation(s):
        calls.append(s)
        return s / 4  # crosses 0.1 at s = 0.4

    found = P.bisect_scale(deviation, target=0.1, tolerance=0.01, search_max=2.0, steps=15)
    assert found.converged and not found.saturated
    assert abs(found.scale / 4 - 0.1) <= 0.01
    assert found.deviation == found.scale / 4
    assert calls[0] == 2.0  # the interval's end is checked first
    assert found.evaluations == len(calls) == found.steps + 1
    # 1, 0.5, 0.25, 0.375: the 4th midpoint is the first within 0.01 of the target
    assert found.steps == 4 and found.scale == 0.375


def test_bisection_without_tolerance_uses_whole_budget_and_brackets_the_crossing():
    found = P.bisect_scale(lambda s: s / 4, target=0.1, tolerance=0.0, search_max=2.0,
                           steps=15)
    assert not found.converged and not found.saturated and found.steps == 15
    assert math.isnan(found.deviation)
    assert abs(found.scale - 0.4) <= 2.0 * 2.0 ** -16


def test_bisection_never_reaching_target_returns_interval_end_flagged():
    found = P.bisect_scale(lambda s: s / 100, target=0.1, tolerance=0.01, search_max=2.0,
                           steps=15)
    assert found.scale == 2.0 and found.saturated and not found.converged
    assert found.steps == 0 and found.evaluations == 1
    # reaching exactly the target at the end is a converged answer, not saturation
    at_end = P.bisect_scale(lambda s: s / 20, search_max=2.0)
    assert at_end.scale == 2.0 and at_end.converged and not at_end.saturated


def test_bisection_always_above_target_shrinks_towards_zero():
    found = P.bisect_scale(lambda s: 0.5, search_max=2.0, steps=15)
    assert not found.converged and not found.saturated
    assert 0 < found.scale <= 2.0 * 2.0 ** -15


def test_bisection_finds_largest_side_of_a_step():
    """A step deviation: 0 below 0.7, exactly 0.1 on [0.7, 0.9), 0.5 above."""
    dev = lambda s: 0.0 if s < 0.7 else (0.1 if s < 0.9 else 0.5)  # noqa: E731
    found = P.bisect_scale(dev, steps=15)
    assert found.converged and 0.7 <= found.scale < 0.9


# ----------------------------------------------------------------------------- noise


def test_noise_standard_deviation_is_sigma_not_sigma_squared():
    """The public-implementation bug: randn * σ² instead of randn * σ."""
    n = 200_000
    w = torch.cat([torch.zeros(n), torch.full((n,), 3.0)]).double()
    sigma, eps = 0.5, 0.2
    gen = torch.Generator().manual_seed(0)
    plain = P.gaussian_perturbation(w, sigma, gen)
    assert abs(plain.std().item() - sigma) < 0.005  # σ² = 0.25 would fail
    assert abs(plain.mean().item()) < 0.005
    mag = P.gaussian_perturbation(w, sigma, gen, magnitude_eps=eps)
    assert abs(mag[:n].std().item() - eps) < 0.003
    expected = math.sqrt(sigma**2 * 9.0 + eps**2)
    assert abs(mag[n:].std().item() - expected) / expected < 0.01
    # and the formula itself
    torch.testing.assert_close(P.noise_std(w, sigma, eps)[[0, -1]],
                               torch.tensor([eps, expected], dtype=torch.float64))


# The linear classifier of logits (w0 x, w1 x), all points x > 0 with label 0 and
# w0 − w1 = c > 0: under u every point is right iff c + u0 − u1 > 0, so
# E acc(w + u) = Φ(c / sd), sd = std(u0 − u1) = sqrt(2) σ (plain) or
# sqrt(σ² (w0² + w1²) + 2ε²) (magnitude-aware). σ′ solves 1 − Φ(c / sd) = 0.1.
X_1D = torch.linspace(0.5, 2.0, 8, dtype=torch.float64).reshape(-1, 1)
Y_1D = torch.zeros(8, dtype=torch.long)


@pytest.mark.parametrize("magnitude", [False, True])
def test_sigma_matches_gaussian_closed_form(magnitude):
    w0, w1, eps = 0.6, 0.1, 0.05
    c = w0 - w1
    model = _linear_net([[w0], [w1]])
    n_draws = 2000
    obj = P.TrainingObjective(model, X_1D, Y_1D)
    dev = P.sigma_deviation(obj, n_draws, seed=3, magnitude_eps=eps if magnitude else None)
    found = P.bisect_scale(dev, target=0.1, tolerance=0.01, search_max=2.0, steps=15)
    assert found.converged

    def sigma_for(flip_probability):  # σ with 1 − Φ(c / sd(σ)) = flip_probability
        sd = c / norm.ppf(1 - flip_probability)
        if not magnitude:
            return sd / math.sqrt(2)
        return math.sqrt((sd**2 - 2 * eps**2) / (w0**2 + w1**2))

    se = math.sqrt(0.1 * 0.9 / n_draws)  # Monte-Carlo error of the mean accuracy
    lo, hi = sigma_for(0.09 - 3 * se), sigma_for(0.11 + 3 * se)
    assert lo <= found.scale <= hi, (lo, found.scale, hi)
    # the σ² bug would have found sqrt of the right value
    assert not (lo <= math.sqrt(found.scale) <= hi)


def test_sigma_with_ten_draws_is_exact_for_the_draws_made():
    """With common random numbers and 10 draws the deviation is (flips)/10: σ′ lies where
    exactly one of the 10 draws flips the classifier, computable from the same draws."""
    w0, w1, seed = 0.6, 0.1, 5
    model = _linear_net([[w0], [w1]])
    ds = P.pac_bayes_metrics(model, X_1D, Y_1D, seed=seed, n_draws=10)
    gen = torch.Generator().manual_seed(seed * 4 + 0)  # the plain-σ stream
    z = torch.stack([torch.randn(2, generator=gen, dtype=torch.float64) for _ in range(10)])
    d = z[:, 1] - z[:, 0]  # the draw flips iff σ d ≥ c
    thresholds = np.sort(((w0 - w1) / d[d > 0]).numpy())
    sigma = float(ds["pac_bayes_sigma"])
    assert thresholds[0] <= sigma < thresholds[1]


# ----------------------------------------------------------------------------- ascent


def test_projected_ascent_reaches_the_maximising_corner_of_a_linear_loss():
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(50, generator=gen, dtype=torch.float64)
    h = torch.rand(50, generator=gen, dtype=torch.float64) + 0.1
    start = (2 * torch.rand(50, generator=gen, dtype=torch.float64) - 1) * h
    seen = []

    def fun(u):
        seen.append(u.clone())
        return float(g @ u), g.clone()

    found = P.projected_ascent(fun, h, start, steps=20)
    torch.testing.assert_close(found.u, torch.sign(g) * h, rtol=0, atol=0)
    assert found.value == pytest.approx(float((g.abs() * h).sum()), rel=1e-14)
    assert found.value > found.start_value == pytest.approx(float(g @ start))
    assert len(seen) == 21 and all((u.abs() <= h).all() for u in seen)
    assert all(b >= a for a, b in zip(found.values, found.values[1:]))


def test_projected_ascent_increases_a_nonconvex_loss_and_stays_in_the_box():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(30, generator=gen, dtype=torch.float64)
    h = torch.full((30,), 0.7, dtype=torch.float64)
    start = torch.zeros(30, dtype=torch.float64) + 5.0  # outside: clipped onto the box
    seen = []

    def fun(u):  # Σ sin(3 a_i u_i) + ‖u‖²/4
        seen.append(u.clone())
        return float(torch.sin(3 * a * u).sum() + (u * u).sum() / 4), \
            3 * a * torch.cos(3 * a * u) + u / 2

    found = P.projected_ascent(fun, h, start, steps=20)
    assert all((u.abs() <= h).all() for u in seen)
    torch.testing.assert_close(seen[0], h)
    assert found.value > found.start_value + 1.0
    assert found.value == max(found.values)


# ----------------------------------------------------------------------------- α′

# 20 points x_i = (1, t_i), t_i = 0.5 + i, all of label 0, and W = [[3, 1], [−1, 1]]:
# margin f_0 − f_1 = 4 for every point. Every gradient sign of the loss is the same
# everywhere in weight space (∂L/∂W_0 < 0, ∂L/∂W_1 > 0 componentwise, x > 0), so the
# ascent ends at the corner u_0 = −h_0, u_1 = +h_1, which lowers margin i by
# (h_0 + h_1) · x_i. Plain: 2α(1 + t_i), so point i flips once α > 2 / (1 + t_i).
# Magnitude-aware: α(|W_0| + |W_1|)·x_i + 2ε(1 + t_i) = α(4 + 2 t_i) + 2ε(1 + t_i).
# A deviation of 0.1 is 2 flips of 20: α′ lies between the 2nd and 3rd smallest thresholds.
T_BOX = 0.5 + torch.arange(20, dtype=torch.float64)
X_BOX = torch.stack([torch.ones(20, dtype=torch.float64), T_BOX], dim=1)
Y_BOX = torch.zeros(20, dtype=torch.long)
W_BOX = [[3.0, 1.0], [-1.0, 1.0]]


@pytest.mark.parametrize("magnitude", [False, True])
def test_alpha_is_between_the_hand_computed_flip_thresholds(magnitude):
    eps = 1e-3
    model = _linear_net(W_BOX)
    obj = P.TrainingObjective(model, X_BOX, Y_BOX)
    assert obj.accuracy(obj.weights()) == 1.0
    dev = P.alpha_deviation(obj, ascent_steps=20, seed=0,
                            magnitude_eps=eps if magnitude else None)
    found = P.bisect_scale(dev, target=0.1, tolerance=0.01, search_max=2.0, steps=15)
    t = T_BOX.numpy()
    if magnitude:
        thresholds = np.sort((4 - 2 * eps * (1 + t)) / (4 + 2 * t))
    else:
        thresholds = np.sort(4 / (2 * (1 + t)))
    assert found.converged and found.deviation == pytest.approx(0.1)
    assert thresholds[1] < found.scale <= thresholds[2], (thresholds[:3], found.scale)
    # one more flip per threshold crossed: the deviation is the hand count
    for k, a in enumerate([thresholds[0] * 0.99, (thresholds[3] + thresholds[4]) / 2]):
        assert dev(a) == pytest.approx([0.0, 0.2][k])


# ----------------------------------------------------------------------------- end to end


def _fitted_mlp():
    spec = ModelSpec((4,), 3, width=8, depth=1, activation="relu")
    model = build_model(spec, 7)
    x = torch.randn(48, 4, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the network fits exactly
    return model, x, y


def test_metrics_dataset_deterministic_chunk_free_and_consistent():
    model, x, y = _fitted_mlp()
    before = copy.deepcopy(model.state_dict())
    ds = P.pac_bayes_metrics(model, x, y, seed=0)
    again = P.pac_bayes_metrics(model, x, y, seed=0)
    chunked = P.pac_bayes_metrics(model, x, y, seed=0, chunk_size=7)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the caller's network is untouched
    assert set(EXPECTED := P.EXPECTED_SIGN) <= set(ds.data_vars)
    assert {f"pac_bayes_{k}_{v}" for k in ("sigma", "mag_sigma", "alpha", "mag_alpha")
            for v in ("steps", *P.FLAGS)} | set(EXPECTED) == set(ds.data_vars)
    for name in ds.data_vars:
        assert ds[name].dtype == np.float64 and ds[name].ndim == 0
        assert float(ds[name]) == float(again[name])  # determinism
        np.testing.assert_allclose(float(chunked[name]), float(ds[name]), rtol=1e-12)
    for measure, scale in (("flatness", "sigma"), ("mag_flatness", "mag_sigma"),
                           ("sharpness", "alpha"), ("mag_sharpness", "mag_alpha")):
        s = float(ds[f"pac_bayes_{scale}"])
        assert 0 < s <= 2.0
        assert float(ds[f"pac_bayes_{measure}"]) == 1.0 / s**2
        assert 0 <= float(ds[f"pac_bayes_{scale}_steps"]) <= 15
        assert ds[f"pac_bayes_{measure}"].attrs["expected_sign"] == +1
        assert ds[f"pac_bayes_{scale}"].attrs["expected_sign"] == -1
    assert ds.attrs["accuracy_at_weights"] == 1.0
    assert "1912.02178" in ds.attrs["paper"]
    other = P.pac_bayes_metrics(model, x, y, seed=1)
    assert any(float(other[n]) != float(ds[n]) for n in ("pac_bayes_sigma", "pac_bayes_alpha",
                                                         "pac_bayes_mag_sigma"))


@pytest.mark.parametrize("settings, converged, saturated", [
    ({}, 1.0, 0.0),  # the defaults reach the target
    ({"bisection_steps": 1, "tolerance": 1e-9}, 0.0, 0.0),  # the budget ends the bisection
    ({"search_max": 1e-6}, 0.0, 1.0),  # the target lies beyond the searched interval
])
def test_each_searchs_outcome_is_a_variable_per_network(settings, converged, saturated):
    """converged, saturated and deviation_at_scale of every search, as scalar variables
    (they aggregate over networks), equal to the bisection's own result; each measure names
    its search's convergence variable in attrs["converged_by"]."""
    model, x, y = _fitted_mlp()
    ds = P.pac_bayes_metrics(model, x, y, seed=0, **settings)
    objective = P.TrainingObjective(model, x, y)
    search = {"target": 0.1, "tolerance": settings.get("tolerance", 0.01),
              "search_max": settings.get("search_max", 2.0),
              "steps": settings.get("bisection_steps", 15)}
    found = P.bisect_scale(P.alpha_deviation(objective, 20, 0), **search)
    assert float(ds["pac_bayes_alpha_converged"]) == float(found.converged) == converged
    assert float(ds["pac_bayes_alpha_saturated"]) == float(found.saturated) == saturated
    np.testing.assert_array_equal(float(ds["pac_bayes_alpha_deviation_at_scale"]),
                                  found.deviation)  # NaN when the budget ended
    for measure, flag in P.CONVERGED_BY.items():
        assert ds[measure].attrs["converged_by"] == flag
        assert ds[flag].ndim == 0 and float(ds[flag]) in (0.0, 1.0)
        scale = flag.removesuffix("_converged")
        assert float(ds[flag]) == ds[scale].attrs["converged"]


def _search(objective, key, magnitude_eps=1e-3):
    """One of the four searches of pac_bayes_metrics, on ``objective``, at its defaults."""
    search = dict(target=0.1, tolerance=0.01, search_max=2.0, steps=15)
    eps = magnitude_eps if key.startswith("mag_") else None
    if key.endswith("sigma"):
        deviation = P.sigma_deviation(objective, 10, 0, eps)
    else:
        deviation = P.alpha_deviation(objective, 20, 0, eps)
    return P.bisect_scale(deviation, **search).scale


@pytest.mark.parametrize("order", [("sigma", "mag_sigma", "alpha", "mag_alpha"),
                                   ("mag_alpha", "alpha", "mag_sigma", "sigma")])
def test_searches_start_from_the_trained_weights_whatever_ran_before(order):
    """Each search starts from (and leaves) the trained w: the same scales in any order,
    and after a perturbed vector was loaded into the objective's network by hand (the bug
    of searching σ′_mag around the last noise draw of the σ′ search)."""
    model, x, y = _fitted_mlp()
    ds = P.pac_bayes_metrics(model, x, y, seed=0)
    objective = P.TrainingObjective(model, x, y)
    trained = objective.weights()
    objective._load(trained + 0.5 * torch.randn(trained.shape, dtype=torch.float64))
    for key in order:
        assert _search(objective, key) == float(ds[f"pac_bayes_{key}"]), key
        assert torch.equal(objective.weights(), trained)
        assert torch.equal(torch.cat([p.detach().reshape(-1) for p in objective.params]),
                           trained)  # the trained weights are loaded again after each search
    assert ds.attrs["accuracy_at_weights"] == objective.accuracy(trained) == 1.0


def test_an_evaluation_that_raises_puts_the_trained_weights_back():
    model, x, y = _fitted_mlp()
    objective = P.TrainingObjective(model, x, y)
    trained = objective.weights()
    with pytest.raises(RuntimeError, match="inside"):
        with objective.evaluated_at(trained + 1.0):
            raise RuntimeError("inside the evaluation")
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in objective.params]), trained)
