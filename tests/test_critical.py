"""Critical sample ratio by LASS (Arpit et al. 2017, §4.1, Algorithm 1) against an exhaustive
grid search of the box on a 2-D toy problem, on hand-built linear networks whose answer is
known in closed form, and on a float32 image network for the box, the pixel range, the
decision and the seeding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workflow_src.metrics.critical import (
    ALPHA,
    BETA,
    RADIUS,
    ascent_sign,
    critical_sample_metrics,
    langevin_adversarial_search,
)
from workflow_src.nets.models import ModelSpec, build_model

# --- 2-D toy problem and its exhaustive reference ------------------------------------------

RADII = (0.05, 0.1, 0.2, 0.4)
GRID_HALF_WIDTH = 1.1 * max(RADII)
GRID_N = 401
GRID_STEP = 2 * GRID_HALF_WIDTH / (GRID_N - 1)
TOY_ITERATIONS = 200


def toy_model(seed=0):
    """A float64 relu MLP on R² with 2 classes, its first layer sharpened so that the
    decision boundary bends within the boxes searched."""
    model = build_model(ModelSpec((2,), 2, width=16, depth=2, activation="relu"), seed).double()
    with torch.no_grad():
        model.hidden[0].weight.mul_(2.0)
    return model


def near_boundary_points(model, n, seed):
    """n points at ℓ∞ distance uniform in [0, 0.6] from random points of the decision
    boundary (found by bisection between points of different classes)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(8 * n, 2, generator=g, dtype=torch.float64) * 4 - 2
    b = torch.rand(8 * n, 2, generator=g, dtype=torch.float64) * 4 - 2
    with torch.no_grad():
        ca, cb = model(a).argmax(1), model(b).argmax(1)
    keep = ca != cb
    a, b, ca = a[keep][:n], b[keep][:n], ca[keep][:n]
    assert len(a) == n
    lo = torch.zeros(n, 1, dtype=torch.float64)
    hi = torch.ones(n, 1, dtype=torch.float64)
    for _ in range(60):
        mid = (lo + hi) / 2
        with torch.no_grad():
            same = (model(a + mid * (b - a)).argmax(1) == ca)[:, None]
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    on_boundary = a + lo * (b - a)
    direction = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1
    direction = direction / direction.abs().amax(1, keepdim=True)
    return on_boundary + direction * 0.6 * torch.rand(n, 1, generator=g, dtype=torch.float64)


def grid_flip_distance(model, x):
    """Per point, min ‖g − x‖_∞ over the points g of a GRID_N × GRID_N grid of the box of
    half-width GRID_HALF_WIDTH around x whose class differs from x's (inf if none)."""
    s = torch.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_N, dtype=torch.float64)
    offsets = torch.stack(torch.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2)
    radius = offsets.abs().amax(1)
    out = []
    with torch.no_grad():
        for xi, yi in zip(x, model(x).argmax(1)):
            flip = model(xi + offsets).argmax(1) != yi
            out.append(radius[flip].min().item() if flip.any() else np.inf)
    return np.array(out)


@pytest.fixture(scope="module")
def toy():
    """The toy network, 40 points, their grid flip distances and LASS at every radius
    (α = r/25, β = r/10, 200 iterations)."""
    model = toy_model(0)
    x = near_boundary_points(model, 40, seed=0)
    distance = grid_flip_distance(model, x)
    lass = {r: critical_sample_metrics(model, x, alpha=r / 25, beta=r / 10, radius=r,
                                       max_iterations=TOY_ITERATIONS, seed=1, chunk_size=len(x))
            for r in RADII}
    return model, x, distance, lass


def clearly_critical(distance, r):
    return distance < 0.8 * r


def clearly_not_critical(distance, r):
    """No flip in the box: none on the grid within r plus two grid steps (a flip region
    that slips between grid points is narrower than a step)."""
    return distance > r + 2 * GRID_STEP


@pytest.mark.parametrize("r", RADII)
def test_lass_agrees_with_exhaustive_grid_search(toy, r):
    _, _, distance, lass = toy
    critical = lass[r]["critical"].values == 1
    sure, never = clearly_critical(distance, r), clearly_not_critical(distance, r)
    # The test has teeth: both kinds occur, and there are points whose nearest flip lies
    # just outside the box (a box clipped too loosely would report them).
    assert sure.sum() >= 5 and never.sum() >= 3
    if r < max(RADII):
        assert (never & (distance < 2 * r)).sum() >= 1
    np.testing.assert_array_equal(critical[sure], True)
    np.testing.assert_array_equal(critical[never], False)  # must hold exactly


def test_larger_radius_never_gives_smaller_csr(toy):
    """Against the grid: at every radius the LASS CSR lies between the fraction of clearly
    critical points and the fraction not clearly non-critical; since 0.8 · 2r > r + 2 steps,
    the upper end at r is at most the lower end at 2r, so the CSR cannot decrease."""
    _, _, distance, lass = toy
    csr = [float(lass[r]["critical_sample_ratio"]) for r in RADII]
    for r, value in zip(RADII, csr):
        lower = clearly_critical(distance, r).mean()
        upper = 1 - clearly_not_critical(distance, r).mean()
        assert lower <= value <= upper, (r, lower, value, upper)
    for small, large in zip(RADII[:-1], RADII[1:]):
        assert 1 - clearly_not_critical(distance, small).mean() <= clearly_critical(distance, large).mean()
    assert all(a <= b for a, b in zip(csr[:-1], csr[1:]))
    assert csr[0] < csr[-1]


def test_toy_dataset_layout(toy):
    _, x, _, lass = toy
    ds = lass[0.1]
    assert set(ds.data_vars) == {"critical", "critical_steps", "critical_sample_ratio"}
    assert ds["critical"].dims == ("point",) and ds["critical_steps"].dims == ("point",)
    assert ds["critical_sample_ratio"].dims == ()
    assert all(ds[v].dtype == np.float64 for v in ds.data_vars)
    np.testing.assert_array_equal(ds["point"].values, np.arange(len(x)))
    assert float(ds["critical_sample_ratio"]) == pytest.approx(ds["critical"].values.mean())
    crit = ds["critical"].values == 1
    assert crit.any() and (~crit).any()
    assert np.isnan(ds["critical_steps"].values[~crit]).all()
    steps = ds["critical_steps"].values[crit]
    assert (steps >= 1).all() and (steps <= TOY_ITERATIONS).all()
    assert (steps == np.round(steps)).all()
    assert ds.attrs["radius"] == 0.1 and ds.attrs["max_iterations"] == TOY_ITERATIONS
    assert ds.attrs["seed"] == 1 and ds.attrs["alpha"] == pytest.approx(0.1 / 25)
    for key in ("paper", "algorithm", "input_units", "beta", "pixel_range", "decision"):
        assert key in ds.attrs
    assert "1706.05394" in ds.attrs["paper"]


# --- Hand-built networks with a known answer ------------------------------------------------

def linear_net(readout_weight, readout_bias, dtype=torch.float64):
    """Logits = A x + c exactly on x ∈ (−10, 10)²: one relu layer h = x + 10 (every unit
    active), then readout A h + (c − 10 A·1)."""
    A = torch.as_tensor(readout_weight, dtype=torch.float64)
    c = torch.as_tensor(readout_bias, dtype=torch.float64)
    model = build_model(ModelSpec((2,), A.shape[0], width=2, depth=1, activation="relu"), 0)
    model = model.double()
    with torch.no_grad():
        model.hidden[0].weight.copy_(torch.eye(2, dtype=torch.float64))
        model.hidden[0].bias.fill_(10.0)
        model.readout.weight.copy_(A)
        model.readout.bias.copy_(c - 10 * A.sum(1))
    return model.to(dtype)


def sign_net():
    """Class 0 where x₀ > 0, class 1 where x₀ < 0 (logits x₀, −x₀)."""
    return linear_net([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])


def test_critical_steps_next_to_the_boundary():
    model = sign_net()
    x = torch.tensor([[0.01, 0.3], [0.5, 0.0], [-0.018, 1.0]], dtype=torch.float64)
    # α larger than the distance to the boundary: one step crosses it (noise-free).
    ds = critical_sample_metrics(model, x, alpha=0.05, beta=0.0, radius=0.1, max_iterations=10)
    np.testing.assert_array_equal(ds["critical"].values, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(ds["critical_steps"].values, [1.0, np.nan, 1.0])
    assert float(ds["critical_sample_ratio"]) == pytest.approx(2 / 3)
    # α = 0.004 < 0.01: x₀ = 0.006, 0.002, −0.002, the third step crosses; from −0.018
    # (class 1, so the ascent moves x₀ up) the fifth, to 0.002.
    ds = critical_sample_metrics(model, x, alpha=0.004, beta=0.0, radius=0.1, max_iterations=10)
    np.testing.assert_array_equal(ds["critical_steps"].values, [3.0, np.nan, 5.0])
    # Too few iterations to get there: not critical, NaN.
    ds = critical_sample_metrics(model, x, alpha=0.004, beta=0.0, radius=0.1, max_iterations=2)
    np.testing.assert_array_equal(ds["critical"].values, [0.0, 0.0, 0.0])
    assert np.isnan(ds["critical_steps"].values).all()


def test_radius_clips_the_search():
    """A flip 0.01 away is out of reach for r < 0.01 however large α and β are."""
    model = sign_net()
    x = torch.tensor([[0.01, 0.3]], dtype=torch.float64)
    far = critical_sample_metrics(model, x, alpha=1.0, beta=1.0, radius=0.009, max_iterations=50)
    near = critical_sample_metrics(model, x, alpha=1.0, beta=1.0, radius=0.011, max_iterations=50)
    assert far["critical"].values[0] == 0.0 and near["critical"].values[0] == 1.0


def test_radius_zero_gives_csr_zero():
    model = sign_net()
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.rand(20, generator=g, dtype=torch.float64) * 2e-3 - 1e-3,
                     torch.rand(20, generator=g, dtype=torch.float64)], 1)
    ds = critical_sample_metrics(model, x, alpha=0.01, beta=0.01, radius=0.0, max_iterations=20)
    assert float(ds["critical_sample_ratio"]) == 0.0
    assert np.isnan(ds["critical_steps"].values).all()
    # The same points at a tiny positive radius are all critical: they hug the boundary.
    ds = critical_sample_metrics(model, x, alpha=0.01, beta=0.01, radius=2e-3, max_iterations=20)
    assert float(ds["critical_sample_ratio"]) == 1.0


def test_pixel_range_excludes_flips_outside_it():
    """With pixel_range (0, 1) the only flips (x₀ < 0) are outside the valid range; without
    it (the paper's choice, the default) they count."""
    model = sign_net()
    x = torch.tensor([[0.01, 0.5], [0.003, 0.0]], dtype=torch.float64)
    inside = critical_sample_metrics(model, x, alpha=0.01, beta=0.0, radius=0.05,
                                     max_iterations=20, pixel_range=(0.0, 1.0))
    box_only = critical_sample_metrics(model, x, alpha=0.01, beta=0.0, radius=0.05,
                                       max_iterations=20)
    np.testing.assert_array_equal(inside["critical"].values, [0.0, 0.0])
    np.testing.assert_array_equal(box_only["critical"].values, [1.0, 1.0])
    assert inside.attrs["pixel_range"] == "[0.0, 1.0]"
    assert box_only.attrs["pixel_range"].startswith("none")


def test_search_is_ascent_on_the_loss_of_a_confident_prediction():
    """float32, 3 classes, logits (50 x₀ + 80, 0, x₀): at x = 0 class 0 is 80 nats ahead,
    so σ₀ rounds to 1. The loss of class 0 grows as x₀ decreases; a float32 cross-entropy
    gradient keeps only σ₂ ∇f₂ = σ₂ e₀ (σ₀ − 1 = 0) and points the other way."""
    model = linear_net([[50.0, 0.0], [0.0, 0.0], [1.0, 0.0]], [80.0, 0.0, 0.0],
                       dtype=torch.float32)
    x = torch.zeros(1, 2)
    xr_ = x.clone().requires_grad_(True)
    naive = torch.autograd.grad(F.cross_entropy(model(xr_), torch.tensor([0])), xr_)[0]
    assert naive[0, 0] > 0  # the rounding this test is about does happen
    np.testing.assert_array_equal(ascent_sign(model, x, torch.tensor([0])).numpy(), [[-1.0, 0.0]])
    # x₀ = −0.3 t: class 0 loses its lead once 50 x₀ + 80 < 0, i.e. at t = 6 (x₀ = −1.8).
    ds = critical_sample_metrics(model, x, alpha=0.3, beta=0.0, radius=5.0, max_iterations=20)
    assert ds["critical_steps"].values[0] == 6.0


# --- A float32 image network: the box, the decision, seeds and chunks ----------------------

def image_model():
    model = build_model(ModelSpec((1, 3, 4), 5, width=16, depth=2, activation="relu"), 1)
    with torch.no_grad():
        model.hidden[0].weight.mul_(4.0)
        model.hidden[1].bias.zero_()
        model.readout.weight.mul_(10.0)
        model.readout.bias.zero_()
    return model  # float32, as trained


def image_points(n=12, seed=0):
    x = torch.rand(n, 1, 3, 4, generator=torch.Generator().manual_seed(seed))
    x[:, 0, 0, :2] = 0.0  # pixels at both ends of the valid range
    x[:, 0, 2, 3] = 1.0
    return x


@pytest.mark.parametrize("pixel_range", [None, (0.0, 1.0)])
def test_every_visited_point_stays_in_the_box(pixel_range):
    model, x = image_model(), image_points()
    r = 0.05  # not a float32 number: x ± r rounds outside the box for about half the pixels
    visits = []
    result = langevin_adversarial_search(
        model, x, alpha=r / 2, beta=r, radius=r, max_iterations=30, seed=0, chunk_size=5,
        pixel_range=pixel_range,
        observer=lambda idx, t, xh: visits.append((idx.clone(), t, xh.clone())))
    assert visits and all(xh.dtype == torch.float32 for _, _, xh in visits)
    last = {}
    for idx, t, xh in visits:
        dev = (xh.double() - x[idx].double()).abs()
        assert dev.max() <= r  # exactly, not up to rounding
        if pixel_range is not None:
            assert xh.min() >= 0.0 and xh.max() <= 1.0
        for i, row in zip(idx.tolist(), xh):
            last[i] = (t, row)
    # The clipping is active (some coordinates sit on the box's face) ...
    all_dev = torch.cat([(xh.double() - x[idx].double()).abs().flatten() for idx, _, xh in visits])
    assert (all_dev > r * (1 - 1e-6)).any()
    # ... and without pixel_range the search does leave [0, 1] (the paper's box only).
    all_x = torch.cat([xh.flatten() for _, _, xh in visits])
    assert (all_x.min() < 0 or all_x.max() > 1) == (pixel_range is None)
    # The returned x̂ is the last point visited; the decision is the model's own argmax there.
    assert sorted(last) == list(range(len(x)))
    for i, (t, row) in last.items():
        assert torch.equal(result.x_hat[i], row)
        assert t == (result.steps[i].item() if result.critical[i] else 30)
    with torch.no_grad():
        changed = model(result.x_hat).argmax(1) != model(x).argmax(1)
    np.testing.assert_array_equal(changed.numpy(), result.critical.numpy())
    assert result.critical.any() and not result.critical.all()


def test_chunking_does_not_change_anything():
    model, x = image_model(), image_points()
    kwargs = dict(alpha=0.0125, beta=0.025, radius=0.05, max_iterations=40, seed=3)
    runs = [langevin_adversarial_search(model, x, chunk_size=c, **kwargs) for c in (1, 3, len(x))]
    for run in runs[1:]:
        assert torch.equal(run.critical, runs[0].critical)
        assert torch.equal(run.steps, runs[0].steps)
        assert torch.equal(run.x_hat, runs[0].x_hat)
    assert runs[0].critical.any() and not runs[0].critical.all()
    assert len(set(runs[0].steps[runs[0].critical].tolist())) > 1  # points leave at different t
    datasets = [critical_sample_metrics(model, x, chunk_size=c, **kwargs) for c in (1, 3, len(x))]
    for ds in datasets[1:]:
        assert ds.identical(datasets[0])


def test_same_seed_same_result_other_seed_other_draws():
    model, x = image_model(), image_points()
    kwargs = dict(alpha=0.0125, beta=0.025, radius=0.05, max_iterations=40, chunk_size=4)
    a = langevin_adversarial_search(model, x, seed=0, **kwargs)
    b = langevin_adversarial_search(model, x, seed=0, **kwargs)
    c = langevin_adversarial_search(model, x, seed=1, **kwargs)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.steps, b.steps)
    assert torch.equal(a.critical, b.critical)
    assert not torch.equal(a.x_hat, c.x_hat)
    assert not torch.equal(a.steps, c.steps)


def test_noise_is_each_points_own_generator():
    """α = 0, one step, a box too large to clip: x̂ = x + β η with η the first draw of
    numpy's default_rng([seed, point index])."""
    model, x = image_model(), image_points(5)
    beta, seed = 0.01, 7
    result = langevin_adversarial_search(model, x, alpha=0.0, beta=beta, radius=10.0,
                                         max_iterations=1, seed=seed, chunk_size=2)
    for i in range(len(x)):
        eta = np.random.default_rng([seed, i]).standard_normal(12).reshape(1, 3, 4)
        expected = torch.from_numpy(x[i].double().numpy() + beta * eta).float()
        assert torch.equal(result.x_hat[i], expected)


def test_defaults_are_the_papers_constants_in_pixel_over_255_units():
    assert (ALPHA, BETA, RADIUS) == (0.25 / 255, 0.2 / 255, 0.3 / 255)
    model, x = image_model(), image_points(4)
    ds = critical_sample_metrics(model, x, max_iterations=5)
    assert ds.attrs["alpha"] == ALPHA and ds.attrs["radius"] == RADIUS
    assert "255" in ds.attrs["input_units"]


def test_rejects_bad_arguments():
    model, x = image_model(), image_points(2)
    with pytest.raises(ValueError):
        critical_sample_metrics(model, x, radius=-1.0)
    with pytest.raises(ValueError):
        critical_sample_metrics(model, x, chunk_size=0)
    with pytest.raises(ValueError):
        critical_sample_metrics(model, x * 2, pixel_range=(0.0, 1.0))
