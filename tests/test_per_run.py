"""The per-run metric stores (workflow_src.metrics.per_run) and their merge in the aggregate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workflow_src.jobs.aggregate import build_metrics
from workflow_src.metrics.per_run import bound_metrics, ellipse_metrics, translation_metrics
from workflow_src.nets.models import ModelSpec, build_model
from workflow_src.runtable import HYPERPARAMETERS


def _net(activation="relu", width=12, depth=2, seed=0):
    spec = ModelSpec(input_shape=(1, 4, 5), n_classes=3, width=width, depth=depth,
                     activation=activation)
    return build_model(spec, seed).double()


def _images(n, seed=0):
    return torch.rand(n, 1, 4, 5, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)


def _softmax_jacobian_norm(model, x):
    """Slow reference: autograd Jacobian of softmax(model(x)) at one point."""
    jac = torch.autograd.functional.jacobian(
        lambda z: torch.softmax(model(z.unsqueeze(0)).squeeze(0), -1), x)
    return float(jac.norm())


def test_translation_store_sampled_never_exceeds_exact():
    model = _net()
    model.hidden[0].weight.data *= 20  # many crossings along the shifts
    out = translation_metrics(model, _images(4), k_sampled=64, jacobian_positions=5,
                              chunk_size=3)
    exact, sampled = out["transitions_exact"].values, out["transitions_sampled"].values
    assert out["transitions_exact"].dims == ("point",) and exact.shape == (4,)
    assert (sampled <= exact).all() and exact.sum() > 0


def test_translation_jacobian_is_mean_over_trajectory_points():
    model, x = _net(), _images(1)
    out = translation_metrics(model, x, k_sampled=8, jacobian_positions=5, chunk_size=2)
    # 5 positions on a 5-vertex polygon (width 5): exactly the 5 shifted images.
    reference = np.mean([_softmax_jacobian_norm(model, torch.roll(x[0], i, dims=-1))
                         for i in range(5)])
    assert float(out["trajectory_jacobian_norm"][0]) == pytest.approx(reference, rel=1e-10)


def test_smooth_activation_stores_nan_transitions_with_a_note():
    out = translation_metrics(_net("tanh"), _images(2), 16, 4, 8)
    assert np.isnan(out["transitions_exact"]).all() and np.isnan(out["transitions_sampled"]).all()
    assert np.isfinite(out["trajectory_jacobian_norm"]).all()
    assert "tanh" in out.attrs["note"]


def test_ellipse_store_shape_kinds_and_anchor_profile():
    model = _net()
    train_x = _images(30, seed=1)
    train_y = torch.arange(30) % 3
    out = ellipse_metrics(model, train_x, train_y, per_kind=2, n_positions=12, seed=0,
                          chunk_size=5)
    assert out["ellipse_jacobian_norm"].shape == (6, 12)
    assert list(out["ellipse_kind"].values) == ["random"] * 2 + ["different_class"] * 2 + [
        "same_class"] * 2
    assert (out["ellipse_transitions"].values >= 0).all()
    np.testing.assert_allclose(out["angle"].values, np.arange(12) * 2 * math.pi / 12)
    # Angle 0 of a same_class ellipse is its first anchor, a training point of the data.
    profile_at_zero = float(out["ellipse_jacobian_norm"][4, 0])
    assert any(profile_at_zero == pytest.approx(_softmax_jacobian_norm(model, x), rel=1e-6)
               for x in train_x)


def test_ellipses_at_initialization_use_the_same_ellipses():
    train_x, train_y = _images(30, seed=1), torch.arange(30) % 3
    model, other = _net(), _net(seed=5)
    plain = ellipse_metrics(model, train_x, train_y, per_kind=2, n_positions=8, seed=0,
                            chunk_size=5)
    assert "ellipse_transitions_init" not in plain and not plain.attrs["at_initialization"]
    # The network itself as its own "initial" weights: the control repeats the measurement.
    same = ellipse_metrics(model, train_x, train_y, per_kind=2, n_positions=8, seed=0,
                           chunk_size=5, initial_model=model)
    np.testing.assert_array_equal(same["ellipse_transitions_init"], plain["ellipse_transitions"])
    np.testing.assert_array_equal(same["ellipse_jacobian_norm_init"],
                                  plain["ellipse_jacobian_norm"])
    # Other weights along the same ellipses: the trained variables are untouched.
    control = ellipse_metrics(model, train_x, train_y, per_kind=2, n_positions=8, seed=0,
                              chunk_size=5, initial_model=other)
    np.testing.assert_array_equal(control["ellipse_transitions"], plain["ellipse_transitions"])
    alone = ellipse_metrics(other, train_x, train_y, per_kind=2, n_positions=8, seed=0,
                            chunk_size=5)
    np.testing.assert_array_equal(control["ellipse_transitions_init"],
                                  alone["ellipse_transitions"])
    assert not np.array_equal(control["ellipse_jacobian_norm_init"],
                              plain["ellipse_jacobian_norm"])


def test_bound_store_against_direct_formulas():
    model, x = _net(), _images(6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y, reduction="none").numpy()
    logit_norms = np.array([float(torch.autograd.functional.jacobian(
        lambda z: model(z.unsqueeze(0)).squeeze(0), xi).norm()) for xi in x])
    out = bound_metrics(model, x, y, loss, logit_norms, n_classes=3, chunk_size=4)
    M = np.mean(logit_norms**2) / 3
    p = np.exp(-loss)
    assert float(out["bound_M"]) == pytest.approx(M)
    np.testing.assert_allclose(out["bound_lower"], np.sqrt(3 * M / 2) * p * (1 - p))
    np.testing.assert_allclose(out["bound_upper"], np.sqrt(2 * M) * p * (1 - p))
    measured = out["jacobian_norm_true_class"].values
    inside = (measured >= out["bound_lower"].values) & (measured <= out["bound_upper"].values)
    np.testing.assert_array_equal(out["within_bounds"].values, inside.astype(float))


def test_aggregate_pads_shorter_metrics_and_marks_indicators():
    import xarray as xr

    def jac_store(n):
        return xr.Dataset({"loss": ("point", np.ones(n)), "correct": ("point", np.ones(n, bool)),
                           "jacobian_norm": ("point", np.arange(n, dtype=float)),
                           "logit_jacobian_norm": ("point", np.ones(n))},
                          coords={"point": np.arange(n)},
                          attrs={"dataset": "digits", "source": "s", "source_sha256": "x"})

    def trans_store(n):
        return xr.Dataset({"transitions_exact": ("point", np.full(n, 3.0))},
                          coords={"point": np.arange(n)})

    runs = {f"r{i}": {h: i for h in HYPERPARAMETERS} for i in range(2)}
    summaries = [{"train_acc": 1.0, "test_acc": 0.5, "gap": 0.5, "steps": 10,
                  "status": "converged"}] * 2
    def shard(run_id, store):  # as a one-member shard's measuring job writes it
        return store.expand_dims("run").assign_coords(run_id=("run", [run_id]))

    ds = build_metrics(runs, summaries, [[shard("r0", jac_store(4)), shard("r0", trans_store(2))],
                                         [shard("r1", jac_store(3)), shard("r1", trans_store(3))]],
                       "v")
    assert dict(ds.sizes) == {"run": 2, "point": 4}
    assert np.isnan(ds["transitions_exact"].values[0, 2:]).all()
    assert np.isnan(ds["jacobian_norm"].values[1, 3]) and np.isnan(ds["correct"].values[1, 3])
    assert ds["transitions_exact"].attrs["role"] == "indicator"
    assert "role" not in ds["loss"].attrs


def test_sampled_estimator_runs_in_float64_for_float32_networks():
    from workflow_src.metrics.trajectories import polygon_points, translation_polygon
    from workflow_src.metrics.transitions import sampled_transitions

    model32 = _net().float()
    model32.hidden[0].weight.data *= 20
    x = _images(2).float()
    out = translation_metrics(model32, x, k_sampled=512, jacobian_positions=4, chunk_size=8)
    model64 = _net().double()
    model64.load_state_dict(model32.state_dict())
    for i, image in enumerate(x):
        vertices = translation_polygon(image)
        expected = sampled_transitions(model64, lambda s: polygon_points(vertices, s), 512)
        assert out["transitions_sampled"].values[i] == expected


def _near_breakpoint_float32_net(image, width=16, eps=1e-5, seed=0):
    """A float32 one-layer relu net whose units stay within ~eps of 0 along the translation
    polygon of ``image`` (1, 4, 5): each weight row is constant along the image's width
    (so shifts leave that part unchanged) plus eps noise, and the bias centres the unit.
    Returns the net and the exact count by hand from the vertices (one hidden layer is
    affine along each segment: one crossing per sign change), in float64."""
    rng = np.random.default_rng(seed)
    rows = rng.uniform(0.5, 1.5, (width, 1, 4, 1)) * np.ones((1, 1, 1, 5))
    weight = (rows + eps * rng.standard_normal((width, 1, 4, 5))).reshape(width, -1)
    weight = weight.astype(np.float32).astype(np.float64)
    shifts = np.stack([np.roll(image.numpy().astype(np.float64), i, axis=-1).ravel()
                       for i in range(image.shape[-1])])  # (W, d) the polygon's vertices
    bias = (-(shifts @ weight.T).mean(axis=0)).astype(np.float32).astype(np.float64)
    model = build_model(ModelSpec((1, 4, 5), 3, width, 1, "relu"), seed)  # float32
    with torch.no_grad():
        model.hidden[0].weight.copy_(torch.from_numpy(weight))
        model.hidden[0].bias.copy_(torch.from_numpy(bias))
    on = shifts @ weight.T + bias > 0  # (W, U)
    return model, int((on != np.roll(on, -1, axis=0)).sum())


# With pixels in multiples of 1/8 and k = 2^12, every sample (1 - t) v_i + t v_{i+1}
# (t a multiple of 2^-12) is exact in float32, so only the model's arithmetic can round
# ("dyadic"); generic pixels would also round float32 points by ~1e-7, which is why
# translation_metrics samples a float64 polygon.
@pytest.mark.parametrize("pixels", ["dyadic", "generic"])
def test_translation_sampled_equals_exact_near_breakpoints_for_float32_networks(pixels):
    """At k = 2^12 a unit's pre-activation moves ~eps * 5 / k ~ 1e-8 between samples:
    float64 sampling resolves every crossing, float32 rounding (~1e-7) flips units back
    and forth around them, so only a float64 estimator gives sampled == exact here."""
    x = torch.rand(2, 1, 4, 5, generator=torch.Generator().manual_seed(0))  # float32
    if pixels == "dyadic":
        x = torch.round(8 * x) / 8
    for image in x:
        model, expected = _near_breakpoint_float32_net(image)
        out = translation_metrics(model, image[None], k_sampled=2**12, jacobian_positions=4,
                                  chunk_size=64)
        assert expected > 0 and out["transitions_exact"].values[0] == expected
        assert out["transitions_sampled"].values[0] == expected


def test_tanh_ellipses_store_nan_transitions_with_a_note():
    train_x, train_y = _images(30, seed=1), torch.arange(30) % 3
    model, initial = _net("tanh"), _net("tanh", seed=3)
    out = ellipse_metrics(model, train_x, train_y, per_kind=2, n_positions=6, seed=0,
                          chunk_size=5, initial_model=initial)
    for suffix in ("", "_init"):
        assert out[f"ellipse_transitions{suffix}"].dims == ("ellipse",)
        assert np.isnan(out[f"ellipse_transitions{suffix}"].values).all()
        profile = out[f"ellipse_jacobian_norm{suffix}"].values
        assert profile.shape == (6, 6) and np.isfinite(profile).all() and (profile > 0).all()
    assert "tanh" in out.attrs["note"] and "NaN" in out.attrs["note"]
    relu = ellipse_metrics(_net(), train_x, train_y, per_kind=2, n_positions=6, seed=0,
                           chunk_size=5)
    assert "note" not in relu.attrs and np.isfinite(relu["ellipse_transitions"]).all()
