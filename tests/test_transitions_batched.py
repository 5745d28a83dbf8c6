"""Batched exact walks (many paths of one network in lockstep) against the one-path walks,
path by path, and against dense sampling and closed forms in float64 (Novak §3.2)."""

import math

import numpy as np
import pytest
import torch
# The nets and helpers of the one-path walk's tests, so both walks see the same cases.
from test_transitions import (DIM, PIECEWISE, SCALE, crossings_of_first_layer_polygon,
                              make_net, onto_breakpoint, randn)

from workflow_src.metrics.trajectories import ellipse_points, polygon_points, translation_polygon
from workflow_src.metrics.transitions import (
    exact_transitions_ellipse,
    exact_transitions_ellipses,
    exact_transitions_polygon,
    exact_transitions_polygons,
    sampled_transitions,
)
from workflow_src.nets.models import BREAKPOINTS, ModelSpec, build_model

DENSE = 2**16  # samples per path for the dense-sampling reference


def assert_same_walks(batched, one_path):
    """Every path's count, passes and crossing positions equal its one-path walk's."""
    assert len(batched) == len(one_path)
    for n, (walk, reference) in enumerate(zip(batched, one_path)):
        assert walk.count == reference.count, f"path {n}"
        assert walk.evaluations == reference.evaluations, f"path {n}"
        assert walk.first_layer_evaluations == reference.first_layer_evaluations, f"path {n}"
        # the same crossings, up to matmul rounding of a batch against a single row
        np.testing.assert_allclose(walk.crossings, reference.crossings, rtol=0, atol=1e-12)


def walk_polygons(model, polygons):
    batched = exact_transitions_polygons(model, polygons)
    assert_same_walks(batched, [exact_transitions_polygon(model, v) for v in polygons])
    return batched


def walk_ellipses(model, c, a, b):
    batched = exact_transitions_ellipses(model, c, a, b)
    assert_same_walks(batched, [exact_transitions_ellipse(model, *e) for e in zip(c, a, b)])
    return batched


@pytest.mark.parametrize("activation", PIECEWISE)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_polygons_equal_the_one_path_walk_and_dense_sampling(activation, depth, bias):
    """Polygons of 2 to 12 vertices and very different sizes walk in one batch, so they need
    from 1 to hundreds of regions and leave the batch at different steps."""
    model = make_net(activation, depth, bias, seed=depth)
    polygons = [randn(n, DIM, seed=30 + n) for n in (2, 3, 5, 8, 12)]
    polygons.append(randn(DIM, seed=1) + 1e-7 * randn(4, DIM, seed=2))  # inside one region
    polygons.append(0.2 * randn(6, DIM, seed=3))
    walks = walk_polygons(model, polygons)
    assert walks[5].count == 0 and walks[5].evaluations == 2 * 4  # one region per segment
    assert len({w.evaluations for w in walks}) >= 4 and walks[4].count > 0
    path = lambda s: polygon_points(polygons[2], s)  # noqa: E731
    assert sampled_transitions(model, path, DENSE) == walks[2].count


@pytest.mark.parametrize("activation", PIECEWISE)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_ellipses_equal_the_one_path_walk_and_dense_sampling(activation, depth, bias):
    """Ellipses of amplitudes from 1e-7 (one region) to 3 walk in one batch."""
    model = make_net(activation, depth, bias, seed=depth)
    c, a, b = randn(3, 6, DIM, seed=40 + depth)
    amplitude = torch.tensor([1e-7, 0.05, 0.3, 1.0, 2.0, 3.0], dtype=torch.float64)[:, None]
    a, b = amplitude * a, amplitude * b
    walks = walk_ellipses(model, c, a, b)
    assert (walks[0].count, walks[0].evaluations) == (0, 3)
    assert len({w.evaluations for w in walks}) >= 3 and walks[-1].count > 0
    path = lambda s: ellipse_points(c[3], a[3], b[3], 2 * math.pi * s)  # noqa: E731
    assert sampled_transitions(model, path, DENSE) == walks[3].count


@pytest.mark.parametrize("seed", range(4))
def test_random_networks_and_translation_polygons(seed):
    """Random widths, depths and activations; paths as the workflow builds them: the
    translation polygons of small images (N, C, H, W), passed as one (N, V, C, H, W) tensor."""
    generator = torch.Generator().manual_seed(seed)
    activation = PIECEWISE[int(torch.randint(4, (1,), generator=generator))]
    depth, width = (int(v) for v in torch.randint(1, 4, (2,), generator=generator))
    width *= 4
    model = build_model(ModelSpec((1, 2, 4), 3, width, depth, activation), seed).double()
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(SCALE[activation])
            layer.bias.mul_(SCALE[activation])
    images = 3 * torch.rand(7, 1, 2, 4, generator=generator, dtype=torch.float64)
    polygons = torch.stack([translation_polygon(image) for image in images])  # (7, 4, 1, 2, 4)
    walks = walk_polygons(model, polygons)
    assert sum(w.count for w in walks) > 0
    path = lambda s: polygon_points(polygons[0], s)  # noqa: E731
    assert sampled_transitions(model, path, DENSE) == walks[0].count
    c, a, b = 3 * torch.rand(3, 5, 1, 2, 4, generator=generator, dtype=torch.float64)
    walk_ellipses(model, c, a, b)


def along_level_set(model, unit, direction):
    """direction with its component along the unit's weight row removed: moving along it
    keeps that first-layer pre-activation constant."""
    w = model.hidden[0].weight[unit]
    return direction - (direction @ w) / (w @ w) * w


@torch.no_grad()
def degenerate_polygons(model):
    """Polygons whose vertices or segments sit exactly on first-layer breakpoints (this
    zeroes half of unit 2's weights)."""
    p = BREAKPOINTS[model.spec.activation][-1]
    base = randn(6, DIM, seed=5)
    polygons = []
    for through in (True, False):  # vertex 1 on unit 0's breakpoint, passed or touched
        v = base.clone()
        v[0] = onto_breakpoint(model, v[0], unit=1, p=p)  # the start point on a breakpoint
        v[1] = onto_breakpoint(model, v[1], unit=0, p=p)
        v[2] = (2 * v[1] - v[0] if through else v[0]) + along_level_set(model, 0, v[3])
        polygons.append(v)
    repeated = polygons[0][[0, 1, 1, 1, 2, 3, 3, 4, 5, 0]]  # repeated vertices, one on p
    polygons.append(repeated)
    # Unit 2 constant, on its breakpoint, along segment 1 -> 2: its weights and the segment
    # use disjoint coordinates, so its slope there is exactly 0 (a slope that is 0 only up
    # to rounding has a sign that depends on the matmul's summation order).
    model.hidden[0].weight[2, DIM // 2:] = 0.0
    resting = base.clone()
    resting[1] = onto_breakpoint(model, resting[1], unit=2, p=p)
    resting[2] = resting[1]
    resting[2, DIM // 2:] += randn(DIM // 2, seed=6)
    polygons.append(resting)
    polygons.append(base[:1].repeat(3, 1))  # one point: no segment at all
    polygons.append(torch.stack([base[0], base[3]]))  # there and back along one segment
    return polygons


@pytest.mark.parametrize("activation", PIECEWISE)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_degenerate_polygons_in_one_batch(activation, depth):
    model = make_net(activation, depth)
    polygons = degenerate_polygons(model)
    pre = model.preactivations(torch.cat(polygons[:2]))[0] - BREAKPOINTS[activation][-1]
    assert pre[[1, 7], 0].abs().max() < 1e-12 and pre[[0, 6], 1].abs().max() < 1e-12
    resting = model.preactivations(polygons[3][1:3])[0][:, 2] - BREAKPOINTS[activation][-1]
    assert resting.abs().max() < 1e-12 and resting[0] == resting[1]
    walks = walk_polygons(model, polygons)
    assert (walks[4].count, walks[4].evaluations, walks[4].first_layer_evaluations) == (0, 0, 0)
    assert walks[2].count == walks[0].count  # repeated vertices change nothing
    if depth == 1:  # a touch at a vertex counts 0, a pass 1, a start on p as any vertex
        for n in (0, 1, 2, 5):
            assert walks[n].count == crossings_of_first_layer_polygon(model, polygons[n])
    # the same count from any start vertex, in one batch
    rolled = [polygons[0].roll(shift, 0) for shift in range(6)]
    assert {w.count for w in exact_transitions_polygons(model, rolled)} == {walks[0].count}


def rotated_ellipse(c, a, b, theta0):
    """The same ellipse started at theta0: z'(theta) = z(theta + theta0)."""
    cos, sin = math.cos(theta0), math.sin(theta0)
    return c, cos * a + sin * b, -sin * a + cos * b


@pytest.mark.parametrize("activation", PIECEWISE)
def test_degenerate_ellipses_in_one_batch(activation):
    """First-layer units tangent to their breakpoint from below and from above, a unit with
    zero weights resting on one, twin units crossing together, and starts exactly at a
    crossing, in one batch."""
    model = make_net(activation, depth=2)
    p = BREAKPOINTS[activation][-1]
    c, a, b = randn(3, 3, DIM, seed=7)
    layer = model.hidden[0]
    with torch.no_grad():  # unit 0 touches p from below on ellipse 0: max of e + R cos = p
        alpha, beta = layer.weight[0] @ a[0], layer.weight[0] @ b[0]
        layer.bias[0] = p - torch.hypot(alpha, beta) - layer.weight[0] @ c[0]
        alpha, beta = layer.weight[4] @ a[0], layer.weight[4] @ b[0]  # unit 4: min = p
        layer.bias[4] = p + torch.hypot(alpha, beta) - layer.weight[4] @ c[0]
        layer.weight[1], layer.bias[1] = 0.0, p  # constant, exactly on p
        layer.bias[2] = p - layer.weight[2] @ c[1]  # crosses p twice along ellipse 1
        layer.weight[3], layer.bias[3] = layer.weight[2], layer.bias[2]  # and its twin too
    walks = walk_ellipses(model, c, a, b)
    assert walks[1].count > 0 and len(set(walks[1].crossings.tolist())) < walks[1].count
    starts = [float(2 * math.pi * s) for s in walks[1].crossings[::5]]  # on a breakpoint
    rotated = [rotated_ellipse(c[1], a[1], b[1], theta0) for theta0 in starts]
    rc, ra, rb = (torch.stack(v) for v in zip(*rotated))
    assert {w.count for w in walk_ellipses(model, rc, ra, rb)} == {walks[1].count}
    path = lambda s: ellipse_points(c[2], a[2], b[2], 2 * math.pi * s)  # noqa: E731
    assert sampled_transitions(model, path, DENSE) == walks[2].count


def test_tangency_against_the_closed_form():
    """One hidden layer: a unit crosses p twice when |p - e| < R and never otherwise; on
    ellipse 0 unit 0 only touches 3 from below and unit 1 -3 from above, so they count 0."""
    model = make_net("hard_sigmoid", depth=1)
    c, a, b = randn(3, 4, DIM, seed=8)
    layer = model.hidden[0]
    with torch.no_grad():
        amplitude = torch.hypot(layer.weight @ a[0], layer.weight @ b[0])  # (U,)
        layer.bias[0] = 3.0 - amplitude[0] - layer.weight[0] @ c[0]
        layer.bias[1] = -3.0 + amplitude[1] - layer.weight[1] @ c[0]
    walks = walk_ellipses(model, c, a, b)
    for n, walk in enumerate(walks):
        e = layer.weight @ c[n] + layer.bias
        amplitude = torch.hypot(layer.weight @ a[n], layer.weight @ b[n])
        expected = sum(2 * int((p - e[u]).abs() < amplitude[u] - 1e-9)
                       for u in range(len(e)) for p in (-3.0, 3.0))
        assert walk.count == expected


def test_units_resting_on_a_breakpoint_behind_a_dead_layer():
    """Bias-free relu: where every first-layer unit is off, the second layer's
    pre-activations are exactly 0 with zero slope, in some polygons of the batch only."""
    model = make_net("relu", depth=2, bias=False)
    with torch.no_grad():
        model.hidden[0].weight.abs_()  # all off wherever every coordinate is negative
    polygons = randn(4, 6, DIM, seed=15)
    polygons[:2, ::2] = -polygons[:2, ::2].abs()
    assert (model.preactivations(polygons[0, :1])[1] == 0).all()
    walks = walk_polygons(model, polygons)
    for n in (0, 2):  # with and without the dead stretches
        path = lambda s, n=n: polygon_points(polygons[n], s)  # noqa: E731
        assert sampled_transitions(model, path, DENSE) == walks[n].count


def test_empty_batches_and_smooth_activations():
    model = make_net("relu")
    empty = torch.zeros(0, DIM, dtype=torch.float64)
    assert exact_transitions_polygons(model, []) == []
    assert exact_transitions_ellipses(model, empty, empty, empty) == []
    smooth = build_model(ModelSpec((DIM,), 3, 8, 2, "tanh"), 0).double()
    with pytest.raises(ValueError, match="smooth"):
        exact_transitions_polygons(smooth, [randn(3, DIM, seed=1)])
    with pytest.raises(ValueError, match="smooth"):
        exact_transitions_ellipses(smooth, *randn(3, 2, DIM, seed=1))
