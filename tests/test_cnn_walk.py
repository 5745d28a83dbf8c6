"""The exact transition walk of piecewise-linear CNNs (workflow_src/metrics/cnn_walk.py)
against dense sampled counts of the CNNs' activation codes, a hand-built network with known
crossings, and its wiring into per_run.translation_metrics."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from workflow_src.nets.cnns import _CodedNet
from workflow_src.metrics.cnn_walk import (
    _Region,
    _Walker,
    exact_transitions_cnn_polygon,
    exact_transitions_cnn_polygons,
)
from workflow_src.metrics.per_run import translation_metrics
from workflow_src.metrics.trajectories import polygon_points, translation_polygon
from workflow_src.metrics.transitions import sampled_transitions

from test_cnn_metrics import images, make_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sampled(model, vertices, k):
    """transitions._sampled_count of the CNN's activation codes at k points of the polygon."""
    return sampled_transitions(model, lambda s: polygon_points(vertices, s), k,
                               chunk_size=1024, codes=model.activation_codes)


def small_polygon(image, n_vertices=4, radius=0.08, seed=0):
    """A closed polygon of n_vertices points around an image (C, H, W): few regions, so that
    dense sampling resolves every crossing in a few seconds."""
    g = torch.Generator().manual_seed(seed)
    return image + radius * torch.randn(n_vertices, *image.shape, generator=g,
                                        dtype=image.dtype)


CASES = [  # (architecture, width, depth, batch_norm, activation)
    ("wrn", 1, 10, True, "relu"),
    ("wrn", 1, 10, True, "hard_tanh"),
    ("inception_small", 0, 0, True, "relu"),
    ("inception_small", 0, 0, False, "hard_tanh"),
]


# (radius, k) per architecture: the inception's pass is ~10x the WRN's, so a smaller polygon
# sampled less densely. small (make test-fast): 26-250 crossings, seconds; at the
# inception's small radius no unit crosses twice between coarse samples, so the large size
# (marked slow: 10-30 s each) is where coarse sampling misses close pairs.
SIZES = {"small": {"wrn": (0.02, 2 ** 12), "inception_small": (0.00015, 2 ** 8)},
         "large": {"wrn": (0.04, 2 ** 14), "inception_small": (0.004, 2 ** 11)}}


@pytest.mark.parametrize("size", ["small", pytest.param("large", marks=pytest.mark.slow)])
@pytest.mark.parametrize("arch,width,depth,bn,activation", CASES,
                         ids=[f"{c[0]}_{c[4]}{'_bn' if c[3] else ''}" for c in CASES])
def test_exact_count_bounds_and_equals_dense_sampling(arch, width, depth, bn, activation, size):
    model = make_cnn(arch, width, depth, bn, seed=2, activation=activation)
    radius, k = SIZES[size][arch]
    vertices = small_polygon(images(1, seed=3)[0], radius=radius)
    walk = exact_transitions_cnn_polygon(model, vertices)
    assert walk.count > 10
    assert len(walk.crossings) == walk.count
    assert np.all((walk.crossings >= 0) & (walk.crossings < 1))
    for coarse in (8, 64):
        assert sampled(model, vertices, coarse) <= walk.count
    # Dense sampling: the codes at k points, their changes between neighbours (the closing
    # pair included) being what transitions._sampled_count sums.
    s = torch.arange(k, dtype=torch.float64) / k
    codes = torch.cat([model.activation_codes(polygon_points(vertices, s[i:i + 1024]))
                       for i in range(0, k, 1024)])  # (k, U)
    changes = (codes != codes.roll(-1, 0)).sum(1).numpy()  # between sample i and i + 1
    assert changes.sum() == walk.count
    # Every crossing lies where dense sampling sees a change: between the samples around it.
    expected = np.repeat(np.arange(k), changes)  # one entry per change
    got = np.floor(walk.crossings * k).astype(int)
    # a crossing exactly on a sample (a vertex, s = i / V) shows between samples i - 1 and i
    on_sample = np.isclose(walk.crossings * k, np.round(walk.crossings * k), rtol=0,
                           atol=1e-6)
    got = np.where(on_sample, (np.round(walk.crossings * k).astype(int) - 1) % k, got)
    np.testing.assert_array_equal(np.sort(got), expected)


@pytest.mark.parametrize("radius, k", [(0.02, 2 ** 11),
                                       pytest.param(0.04, 2 ** 13, marks=pytest.mark.slow)])
def test_dense_sampled_estimator_agrees_with_the_codes_counted_here(radius, k):
    """The dense count above is the sampled estimator's (per_run's path for CNNs)."""
    model = make_cnn("wrn", 1, 10, True, seed=2, activation="hard_tanh")
    vertices = small_polygon(images(1, seed=3)[0], radius=radius)
    walk = exact_transitions_cnn_polygon(model, vertices)
    assert sampled(model, vertices, k) == walk.count


@pytest.mark.slow
def test_full_translation_polygon_of_a_wrn_matches_dense_sampling():
    model = make_cnn("wrn", 1, 10, True, seed=5, activation="relu")
    vertices = translation_polygon(images(1, seed=6)[0])
    walk = exact_transitions_cnn_polygon(model, vertices, batch_size=8)
    dense = sampled(model, vertices, 2 ** 14)
    coarse = sampled(model, vertices, 512)
    assert coarse <= dense <= walk.count
    # the walk is the k -> infinity limit; 2^14 samples miss at most a few close pairs
    assert walk.count - dense <= 0.002 * walk.count
    assert walk.evaluations >= 2 * walk.count / 10


@pytest.mark.parametrize("radius", [0.02, pytest.param(0.05, marks=pytest.mark.slow)])
def test_batched_walk_takes_the_same_decisions_as_one_polygon_at_a_time(radius):
    model = make_cnn("wrn", 1, 10, True, seed=7, activation="hard_tanh")
    polygons = [small_polygon(image, 3, radius, seed=i) for i, image in
                enumerate(images(2, seed=8))]
    together = exact_transitions_cnn_polygons(model, polygons, batch_size=5)
    for walk, vertices in zip(together, polygons):
        alone = exact_transitions_cnn_polygon(model, vertices, batch_size=1)
        assert walk.count == alone.count and walk.evaluations == alone.evaluations
        np.testing.assert_allclose(walk.crossings, alone.crossings, rtol=0, atol=1e-12)


def test_dual_pass_equals_torch_func_jvp_off_the_breakpoints():
    """At a generic point the one-sided pass is the network's own forward and JVP, and its
    codes are ``activation_codes``."""
    model = make_cnn("inception_small", bn=True, seed=9)
    x, d = images(2, seed=10), images(2, seed=11) - 0.5
    walker = _Walker(model, torch.float64, 1e-9)
    with torch.no_grad(), fwAD.dual_level(), walker._dual_modules(_Region()):
        primal, tangent = fwAD.unpack_dual(walker.model(fwAD.make_dual(x, d)))
    ref_out, ref_tan = torch.func.jvp(model, (x,), (d,))
    torch.testing.assert_close(primal, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tangent, ref_tan, rtol=1e-10, atol=1e-10)
    region = walker.region(x, d)
    assert len(region.units) == 1 + 2 * 8 + 2 and len(region.pools) == 2
    assert torch.equal(region.execution_codes(), model.activation_codes(x))


class HandNet(_CodedNet):
    """1 x 1 x 3 input -> conv 1x1 (weight 1, bias 0.5) -> batch norm (running mean 0.5,
    running std 2: the pre-activation is x / 2) -> relu -> max-pool 3x3 stride 2 pad 1
    (two windows: columns {0, 1} at positions 4, 5 and columns {1, 2} at positions 3, 4)
    -> linear."""

    def __init__(self, activation="relu"):
        super().__init__()
        self.spec = SimpleNamespace(activation=activation, architecture="hand")
        self.conv = nn.Conv2d(1, 1, 1)
        self.bn = nn.BatchNorm2d(1, affine=False)
        self.act = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.readout = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(0.5)
            self.bn.running_mean.fill_(0.5)
            self.bn.running_var.fill_(4.0 - self.bn.eps)
        self.double().eval()

    def _forward(self, x):
        return self.readout(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


def test_hand_built_network_has_its_known_crossings():
    """a = (1, -1, 2) -> b = (-1, 2, -2) -> a. On a -> b, x(t) = a + t (b - a): unit 0
    (1 - 2t) and unit 2 (2 - 4t) cross 0 together at t = 1/2, unit 1 (3t - 1) at 1/3; the
    first window's max moves from column 0 to column 1 where 3t - 1 = 1 - 2t (t = 2/5), the
    second's from column 2 to column 1 where 3t - 1 = 2 - 4t (t = 3/7). The way back crosses
    at 1 - t. s = t / 2 on the first segment, (1 + t) / 2 on the second."""
    model = HandNet()
    a = torch.tensor([[[1.0, -1.0, 2.0]]], dtype=torch.float64)
    b = torch.tensor([[[-1.0, 2.0, -2.0]]], dtype=torch.float64)
    vertices = torch.stack([a, b])
    walk = exact_transitions_cnn_polygon(model, vertices)
    ts = np.array([1 / 3, 2 / 5, 3 / 7, 1 / 2, 1 / 2])
    expected = np.sort(np.concatenate([ts / 2, (2 - ts) / 2]))
    assert walk.count == 10
    np.testing.assert_allclose(walk.crossings, expected, rtol=0, atol=1e-12)
    assert walk.evaluations == 2 * 2 * 5  # five regions on each segment (two events at 1/2)
    assert sampled(model, vertices, 4096) == 10
    # the pool codes at a and b (positions within each 3 x 3 window, row-major)
    assert model.activation_codes(a[None])[0, 3:].tolist() == [4, 4]
    assert model.activation_codes(b[None])[0, 3:].tolist() == [5, 3]


def test_ties_in_a_window_and_crossings_at_vertices():
    """With the hand-built network (pre-activation x / 2, windows over columns {0, 1} and
    {1, 2}): a = (-1, -1, 1) -> b = (1, -1, 1) moves unit 0 only, across 0 at t = 1/2; the
    first window's entries are tied at 0 (dead units) before, so its argmax is the first
    position (4, column 0) and stays there: 1 crossing each way. b -> c = (1, -1, -1) kills
    unit 2 at t = 1/2, and the second window's argmax moves from column 2 (position 4) to the
    first of its tied zeros (column 1, position 3): 2 events at once, each way."""
    model = HandNet()
    a, b, c, d = (torch.tensor([[row]], dtype=torch.float64) for row in
                  ([-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, -1.0, -1.0], [0.0, -1.0, 1.0]))
    cases = [
        ([a, b], 2, [0.25, 0.75]),
        ([a, b, c, b], 6, [1 / 8, 3 / 8, 3 / 8, 5 / 8, 5 / 8, 7 / 8]),
        # unit 0 on its breakpoint exactly at the vertex d: arriving 0, leaving 1, counted
        # there (s = 1/3); back across at t = 1/2 of b -> a
        ([a, d, b], 2, [1 / 3, 5 / 6]),
        # unit 0 only touches 0 at the vertex d and turns back: no crossing
        ([a, d], 0, []),
    ]
    for vertices, count, where in cases:
        vertices = torch.stack(vertices)
        walk = exact_transitions_cnn_polygon(model, vertices)
        assert walk.count == count == sampled(model, vertices, 1200)
        np.testing.assert_allclose(walk.crossings, where, rtol=0, atol=1e-12)
    # repeated vertices (zero-length segments) are skipped
    walk = exact_transitions_cnn_polygon(model, torch.stack([a, a, b, b, c, b]))
    assert walk.count == 6


def test_smooth_networks_are_refused():
    alexnet = make_cnn("alexnet_small", seed=0)
    vertices = translation_polygon(images(1)[0])
    with pytest.raises(ValueError, match="local response normalisation"):
        exact_transitions_cnn_polygon(alexnet, vertices)
    tanh = make_cnn("wrn", 1, 10, True, activation="tanh")
    with pytest.raises(ValueError, match="smooth"):
        exact_transitions_cnn_polygon(tanh, vertices)
    with pytest.raises(ValueError, match="smooth"):
        exact_transitions_cnn_polygon(HandNet("tanh"), vertices[:, :, :1, :3])


@pytest.mark.slow
def test_translation_metrics_store_the_exact_count_for_a_wrn_when_switched_on():
    model = make_cnn("wrn", 1, 10, True, seed=4, activation="relu", dtype=torch.float32)
    before = copy.deepcopy(model.state_dict())
    x = images(1, seed=12, dtype=torch.float32)
    out = translation_metrics(model, x, k_sampled=64, jacobian_positions=2, chunk_size=4,
                              exact_cnn=True)
    exact, sampled_count = out["transitions_exact"].values, out["transitions_sampled"].values
    assert np.isfinite(exact).all() and (exact >= sampled_count).all() and exact[0] > 0
    # the very count the walk gives on the float64 copy
    walked = exact_transitions_cnn_polygon(copy.deepcopy(model).double(),
                                           translation_polygon(x[0]).double())
    assert exact[0] == walked.count
    note = out.attrs["note"]
    assert "wrn" in note and "transitions_exact is exact" in note
    assert "ellipse_transitions" in note and "NaN" in note
    # off (the default), the same network keeps NaN and the note names the switch
    off = translation_metrics(model, x, k_sampled=64, jacobian_positions=2, chunk_size=4)
    assert np.isnan(off["transitions_exact"].values).all()
    np.testing.assert_array_equal(off["transitions_sampled"].values, sampled_count)
    assert "measure.transitions.exact_cnn: true" in off.attrs["note"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert next(model.parameters()).dtype == torch.float32


def test_translation_metrics_keep_nan_for_alexnet_with_the_lrn_note():
    model = make_cnn("alexnet_small", seed=4, dtype=torch.float32)
    out = translation_metrics(model, images(1, seed=13, dtype=torch.float32), k_sampled=16,
                              jacobian_positions=2, chunk_size=4, exact_cnn=True)
    assert np.isnan(out["transitions_exact"].values).all()
    assert (out["transitions_sampled"].values > 0).all()
    note = out.attrs["note"]
    assert "alexnet_small" in note and "NaN" in note and "transitions_exact" in note
    assert "LRN" in note and "smooth" in note and "not linear regions" in note


@pytest.mark.slow
def test_a_shard_measured_with_exact_cnn_stores_each_members_walk(cnn_shard):
    """measure.transitions.exact_cnn reaches the walk through measure_shard: a trained WRN
    member's transitions_exact is its own walk's count (off, it is NaN: test_cnn_metrics).
    One point per member: a walk of a trained 8 x 8 WRN-10-1 takes ~10 s here."""
    from workflow_src import integrity
    from workflow_src.jobs.measure_shard import measure_shard
    from workflow_src.nets.models import load_model

    results, runs, stores = cnn_shard
    settings = {"jacobian": {"n_points": 1},
                "translation": {"n_points": 1, "k_sampled": 24, "jacobian_positions": 3,
                                "exact_cnn": True}}
    measured = measure_shard(settings, "c" * 12, runs, stores, results, torch.device("cpu"),
                             8, lambda *a: None)
    exact = measured["translation"]["transitions_exact"].values  # (member, point)
    assert exact.shape == (2, 1) and (exact > 0).all()
    assert (exact >= measured["translation"]["transitions_sampled"].values).all()
    last = runs[-1]  # the walk of the second member (not the first's, repeated)
    model = load_model(results / "runs" / last.id / "model.pt")
    image = torch.as_tensor(integrity.open_store(stores[last.data.id])["x_test"].values[0])
    walk = exact_transitions_cnn_polygon(copy.deepcopy(model).double(),
                                         translation_polygon(image).double())
    assert exact[-1, 0] == walk.count != exact[0, 0]
    assert "transitions_exact is exact" in measured["translation"].attrs["note"]
