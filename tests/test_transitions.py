"""Transitions (Novak §3.2): the exact region walk against dense sampling and closed forms."""

import math

import numpy as np
import pytest
import torch

from workflow_src.metrics.trajectories import ellipse_points, polygon_points
from workflow_src.metrics.transitions import (
    _Walker,
    activation_codes,
    exact_transitions_ellipse,
    exact_transitions_polygon,
    sampled_transitions,
    sampled_transitions_polygon,
)
from workflow_src.nets.models import BREAKPOINTS, ModelSpec, build_model

PIECEWISE = ["relu", "relu6", "hard_tanh", "hard_sigmoid"]
# Weight scale per activation so that random inputs cross every breakpoint often.
SCALE = {"relu": 1.0, "relu6": 10.0, "hard_tanh": 2.0, "hard_sigmoid": 10.0}
DIM = 8


def make_net(activation, depth=2, bias=True, seed=0, width=8):
    model = build_model(ModelSpec((DIM,), 3, width, depth, activation, bias), seed).double()
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(SCALE.get(activation, 1.0))
            if layer.bias is not None:
                layer.bias.mul_(SCALE.get(activation, 1.0))
    return model


def randn(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(*shape, generator=generator, dtype=torch.float64)


def ellipse_path(c, a, b):
    return lambda s: ellipse_points(c, a, b, 2 * math.pi * s)


def polygon_path(vertices):
    return lambda s: polygon_points(vertices, s)


def test_codes_count_breakpoints_strictly_below():
    model = make_net("relu6", depth=1, width=DIM)
    with torch.no_grad():
        model.hidden[0].weight.copy_(torch.eye(DIM))
        model.hidden[0].bias.zero_()
    x = torch.tensor([[-1.0, 0.0, 0.5, 6.0, 6.5, 3.0, -7.0, 100.0]], dtype=torch.float64)
    assert activation_codes(model, x).tolist() == [[0, 0, 1, 1, 2, 1, 0, 2]]


def test_tanh_is_refused():
    model = make_net("tanh")
    z = randn(3, DIM, seed=1)
    for call in (
        lambda: activation_codes(model, z),
        lambda: sampled_transitions(model, polygon_path(z), 16),
        lambda: exact_transitions_polygon(model, z),
        lambda: exact_transitions_ellipse(model, *z),
    ):
        with pytest.raises(ValueError, match="smooth"):
            call()


@pytest.mark.parametrize("activation", PIECEWISE)
def test_region_pass_equals_jvp_off_breakpoints(activation):
    model = make_net(activation, depth=3)
    z, dirs = randn(DIM, seed=2), randn(2, DIM, seed=3)
    walker = _Walker(model, torch.float64, atol=1e-9)
    pre, tan, _ = walker.region(*walker.first_layer(z, dirs), torch.eye(2, dtype=torch.float64))
    for i in range(2):
        ref_pre, ref_tan = torch.func.jvp(model.preactivations, (z[None],), (dirs[i][None],))
        torch.testing.assert_close(pre, torch.cat(ref_pre, dim=1)[0])
        # autograd's hardsigmoid slope is 1/6 rounded to float32, hence the tolerance
        torch.testing.assert_close(tan[i], torch.cat(ref_tan, dim=1)[0], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("activation", PIECEWISE)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_exact_is_the_limit_of_sampling(activation, depth, bias):
    model = make_net(activation, depth, bias, seed=depth)
    vertices, (c, a, b) = randn(5, DIM, seed=10 + depth), randn(3, DIM, seed=20 + depth)
    for exact, path in (
        (exact_transitions_polygon(model, vertices), polygon_path(vertices)),
        (exact_transitions_ellipse(model, c, a, b), ellipse_path(c, a, b)),
    ):
        assert exact.count > 0 and len(exact.crossings) == exact.count
        for k in (2**4, 2**8, 2**12):
            assert sampled_transitions(model, path, k) <= exact.count
        assert sampled_transitions(model, path, 2**16) == exact.count


def test_crossings_are_where_codes_change():
    model = make_net("relu6", depth=2)
    vertices = randn(5, DIM, seed=14)
    s, n = np.unique(exact_transitions_polygon(model, vertices).crossings, return_counts=True)
    path = polygon_path(vertices)
    before = activation_codes(model, path(torch.from_numpy(s - 1e-9) % 1))  # (len(s), U)
    after = activation_codes(model, path(torch.from_numpy(s + 1e-9) % 1))
    assert ((before != after).sum(dim=1).numpy() == n).all()


def test_sampled_does_not_depend_on_chunking():
    model = make_net("hard_tanh")
    vertices = randn(4, DIM, seed=4)
    path = polygon_path(vertices)
    counts = {sampled_transitions(model, path, 999, chunk) for chunk in (1, 7, 4096)}
    assert len(counts) == 1


@pytest.mark.parametrize("activation", PIECEWISE)
@pytest.mark.parametrize("depth, bias", [(1, True), (2, False), (3, True)])
def test_polygon_sampler_equals_sampling_the_points(activation, depth, bias):
    """Interpolating the first layer's pre-activations between vertices counts what
    sampling the polygon's points does, chunk boundaries and the closing pair included."""
    model = make_net(activation, depth=depth, bias=bias, seed=depth)
    for seed, n_vertices in ((20, 3), (21, 7)):
        vertices = randn(n_vertices, DIM, seed=seed)
        for k, chunk in ((64, 4096), (999, 37)):
            assert (sampled_transitions_polygon(model, vertices, k, chunk)
                    == sampled_transitions(model, polygon_path(vertices), k, chunk)), (seed, k)


def test_polygon_sampler_on_translated_images_of_a_float32_network():
    """As the workflow calls it: image-shaped vertices (the cyclic shifts of an image), a
    784-input network with large weights copied to float64."""
    from workflow_src.metrics.trajectories import translation_polygon

    model = build_model(ModelSpec((1, 28, 28), 10, 32, 2, "relu", True), 3)
    with torch.no_grad():
        model.hidden[0].weight.mul_(20)
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0))
    vertices = translation_polygon(image).double()
    model64 = model.double()
    expected = sampled_transitions(model64, polygon_path(vertices), 2048)
    assert expected > 0
    assert sampled_transitions_polygon(model64, vertices, 2048) == expected


def crossings_of_first_layer_polygon(model, vertices):
    """Reference for one hidden layer: each pre-activation is affine along the whole chain,
    so a unit crosses breakpoint p once per sign change of (pre - p) around the vertices;
    a vertex on p is skipped, so touching p there counts 0 and passing through counts 1."""
    pre = model.preactivations(vertices)[0]  # (V, U)
    total = 0
    for p in BREAKPOINTS[model.spec.activation]:
        for unit in (pre - p).T.tolist():
            signs = [v > 0 for v in unit if abs(v) > 1e-9]
            total += sum(x != y for x, y in zip(signs, signs[1:] + signs[:1]))
    return total


def onto_breakpoint(model, point, unit, p):
    """The point moved along the unit's weight row until its pre-activation equals p."""
    w, bias = model.hidden[0].weight[unit], model.hidden[0].bias[unit]
    return point - ((w @ point + bias - p) / (w @ w)) * w


@pytest.mark.parametrize("activation", PIECEWISE)
@pytest.mark.parametrize("through", [True, False])
def test_polygon_with_vertices_on_breakpoints(activation, through):
    """Vertex 1 lies on a breakpoint of unit 0 and the chain either passes through it or
    turns back there (a touch); the start point, vertex 0, lies on a breakpoint of unit 1."""
    model = make_net(activation, depth=1)
    p = BREAKPOINTS[activation][-1]
    vertices, w = randn(6, DIM, seed=5), model.hidden[0].weight[0].detach()
    with torch.no_grad():
        vertices[0] = onto_breakpoint(model, vertices[0], unit=1, p=p)
        vertices[1] = onto_breakpoint(model, vertices[1], unit=0, p=p)
        sideways = vertices[3] - (vertices[3] @ w) / (w @ w) * w  # leaves unit 0 unchanged
        beyond = 2 * vertices[1] - vertices[0] if through else vertices[0]
        vertices[2] = beyond + sideways
    pre = model.preactivations(vertices)[0] - p  # (V, U)
    assert abs(pre[1, 0]) < 1e-12 and abs(pre[0, 1]) < 1e-12
    assert (pre[0, 0] * pre[2, 0] < 0) == through
    expected = crossings_of_first_layer_polygon(model, vertices)
    for shift in range(len(vertices)):
        assert exact_transitions_polygon(model, vertices.roll(shift, 0)).count == expected


def test_ellipse_against_closed_form_with_a_tangency():
    """One hidden layer: pre = e + alpha cos + beta sin along the whole ellipse, so a unit
    crosses p twice when |p - e| < R and never otherwise; unit 0 is made to touch p."""
    model = make_net("hard_sigmoid", depth=1)
    c, a, b = randn(3, DIM, seed=6)
    layer = model.hidden[0]
    with torch.no_grad():
        alpha, beta = layer.weight @ a, layer.weight @ b  # (U,)
        layer.bias[0] = 3.0 - torch.hypot(alpha[0], beta[0]) - layer.weight[0] @ c  # max = 3
    e = layer.weight @ c + layer.bias
    amplitude = torch.hypot(alpha, beta)
    assert abs(e[0] + amplitude[0] - 3.0) < 1e-12
    expected = sum(
        2 * int((p - e[u]).abs() < amplitude[u] - 1e-9) for u in range(len(e)) for p in (-3.0, 3.0)
    )
    assert exact_transitions_ellipse(model, c, a, b).count == expected


def rotated_ellipse(c, a, b, theta0):
    """The same ellipse started at theta0: z'(theta) = z(theta + theta0)."""
    cos, sin = math.cos(theta0), math.sin(theta0)
    return c, cos * a + sin * b, -sin * a + cos * b


@pytest.mark.parametrize("activation", PIECEWISE)
def test_exact_count_does_not_depend_on_the_start(activation):
    model = make_net(activation, depth=3, seed=7)
    vertices, (c, a, b) = randn(5, DIM, seed=8), randn(3, DIM, seed=9)
    polygon = exact_transitions_polygon(model, vertices).count
    for i in range(1, 5):
        assert exact_transitions_polygon(model, vertices.roll(i, 0)).count == polygon
    ellipse = exact_transitions_ellipse(model, c, a, b)
    # Start at generic angles and exactly at a crossing (the start point on a breakpoint).
    starts = [0.3, 2.0, 5.5, 2 * math.pi * float(ellipse.crossings[len(ellipse.crossings) // 2])]
    for theta0 in starts:
        rotated = rotated_ellipse(c, a, b, theta0)
        assert exact_transitions_ellipse(model, *rotated).count == ellipse.count


def test_trajectory_inside_one_region_counts_zero():
    model = make_net("relu6", depth=3)
    c, a, b = randn(3, DIM, seed=11)
    a, b = 1e-7 * a, 1e-7 * b
    exact = exact_transitions_ellipse(model, c, a, b)
    assert (exact.count, exact.evaluations) == (0, 3)  # one region, one pass
    assert sampled_transitions(model, ellipse_path(c, a, b), 2**10) == 0
    assert exact_transitions_polygon(model, torch.stack([c, c + a, c + b])).count == 0


def test_units_resting_on_a_breakpoint_behind_a_dead_layer():
    """Bias-free relu: where every first-layer unit is off, the second layer's
    pre-activations are exactly 0 with zero slope; they take the lower piece, as
    ``activation_codes`` does, and count only when they leave 0 upwards."""
    model = make_net("relu", depth=2, bias=False)
    with torch.no_grad():
        model.hidden[0].weight.abs_()  # all off wherever every coordinate is negative
    vertices = randn(6, DIM, seed=15)
    vertices[::2] = -vertices[::2].abs()
    assert (model.preactivations(vertices[:1])[1] == 0).all()
    exact = exact_transitions_polygon(model, vertices)
    assert sampled_transitions(model, polygon_path(vertices), 2**16) == exact.count


def test_simultaneous_and_constant_units():
    """Two identical units cross together and both count; a unit with zero weights sitting
    on its breakpoint never crosses; a repeated vertex changes nothing."""
    model = make_net("hard_tanh", depth=2)
    vertices, (c, a, b) = randn(4, DIM, seed=12), randn(3, DIM, seed=13)
    before = exact_transitions_polygon(model, vertices)
    with torch.no_grad():
        first = model.hidden[0]
        pre = model.preactivations(vertices)[0]  # (V, U)
        u = int((pre.max(0).values - pre.min(0).values).argmax())  # surely crosses
        twin, constant = (u + 1) % first.out_features, (u + 2) % first.out_features
        first.weight[twin], first.bias[twin] = first.weight[u], first.bias[u]
        first.weight[constant], first.bias[constant] = 0.0, 1.0  # on hard_tanh's breakpoint 1
    for exact, path in (
        (exact_transitions_polygon(model, vertices), polygon_path(vertices)),
        (exact_transitions_ellipse(model, c, a, b), ellipse_path(c, a, b)),
    ):
        assert sampled_transitions(model, path, 2**16) == exact.count
        assert len(set(exact.crossings.tolist())) < exact.count  # some crossings coincide
    repeated = torch.cat([vertices[:2], vertices[1:]])
    after = exact_transitions_polygon(model, vertices)
    assert exact_transitions_polygon(model, repeated).count == after.count != before.count


def identity_relu_net():
    """One hidden relu layer with pre-activation = input coordinate: unit u is on iff z_u > 0."""
    model = make_net("relu", depth=1, width=DIM)
    with torch.no_grad():
        model.hidden[0].weight.copy_(torch.eye(DIM))
        model.hidden[0].bias.zero_()
    return model


@pytest.mark.parametrize("corner,k", [(0, 4), (3, 4), (0, 64)])
@pytest.mark.parametrize("chunk_size", [4096, 3, 1])
def test_sampled_counts_the_closing_pair(corner, k, chunk_size):
    """A square whose every unit is on only near one corner. With k = 4 the samples are the
    corners; corner 0 is z_0 and corner 3 is z_{k-1}. With k = 64 the on-region around
    corner 0 (~1e-3 / 4 of s wide) holds z_0 alone. Each unit then changes at the two pairs
    around that sample, one of them (z_{k-1}, z_0): 2 per unit, 2 * DIM in all, the count
    of the exact walk too."""
    vertices = -torch.ones(4, DIM, dtype=torch.float64)
    vertices[corner] = 1e-3
    path = polygon_path(vertices)
    on = (path(torch.arange(k, dtype=torch.float64) / k) > 0).all(dim=1)  # (k,)
    assert on.nonzero().flatten().tolist() == [0 if corner == 0 else k - 1]
    model = identity_relu_net()
    assert sampled_transitions(model, path, k, chunk_size) == 2 * DIM
    assert exact_transitions_polygon(model, vertices).count == 2 * DIM


def near_breakpoint_polygon(seed, eps=1e-5, n_vertices=5, width=16):
    """A one-layer relu net and a polygon around a point far from 0 on which every unit's
    pre-activation only varies by ~eps around 0: per sample at k = 2^14 it moves
    ~eps * n_vertices / k ~ 3e-9, far above float64 rounding (~1e-15 here) and far below
    float32 rounding (~1e-7), which would flip units back and forth near each crossing.
    Returns the model, the vertices and the exact count by hand: one hidden layer is
    affine along every segment, so each unit crosses once per sign change at the vertices."""
    model = make_net("relu", depth=1, width=width, seed=seed)
    base, offsets = randn(DIM, seed=seed), randn(n_vertices, DIM, seed=seed + 1)
    vertices = base + eps * offsets  # (V, DIM), |base| ~ 2
    layer = model.hidden[0]
    with torch.no_grad():
        layer.bias.copy_(-(vertices @ layer.weight.T).mean(dim=0))  # every unit crosses
        pre = (vertices @ layer.weight.T + layer.bias).numpy()  # (V, U)
    on = pre > 0
    assert np.abs(pre).min() > 1e-12 and np.abs(pre).max() < 1e-3
    return model, vertices, int((on != np.roll(on, -1, axis=0)).sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_is_exact_in_float64_at_large_k_near_breakpoints(seed):
    model, vertices, expected = near_breakpoint_polygon(seed)
    assert expected > 0
    assert exact_transitions_polygon(model, vertices).count == expected
    assert sampled_transitions(model, polygon_path(vertices), 2**14) == expected
