"""Trajectories of Novak §4.1: ellipses through anchors, translation polygons, anchor choice."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from workflow_src.metrics.trajectories import (
    choose_anchors,
    draw_ellipses,
    ellipse_from_anchors,
    ellipse_points,
    polygon_points,
    translation_polygon,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_ellipse_passes_through_its_anchors():
    p = torch.randn(3, 2, 4, 4, generator=gen(0), dtype=torch.float64)
    c, a, b = ellipse_from_anchors(*p)
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    torch.testing.assert_close(ellipse_points(c, a, b, angles), p, rtol=0, atol=1e-14)


def test_ellipse_points_match_a_loop():
    c, a, b = torch.randn(3, 5, generator=gen(1), dtype=torch.float64)
    angles = torch.rand(7, generator=gen(2), dtype=torch.float64) * 2 * math.pi
    expected = torch.stack([c + a * math.cos(t) + b * math.sin(t) for t in angles.tolist()])
    torch.testing.assert_close(ellipse_points(c, a, b, angles), expected)


def test_translation_polygon_is_every_cyclic_shift():
    image = torch.arange(2 * 3 * 5, dtype=torch.float64).reshape(2, 3, 5)
    vertices = translation_polygon(image)
    assert vertices.shape == (5, 2, 3, 5)
    for i in range(5):
        assert torch.equal(vertices[i][..., i:], image[..., : 5 - i])
        assert torch.equal(vertices[i][..., :i], image[..., 5 - i :])
    fewer = translation_polygon(image, W=2)  # shifts 0 and 2 of 5
    assert torch.equal(fewer[1], torch.roll(image, 2, dims=-1))


def test_polygon_points_walk_the_closed_chain():
    vertices = torch.randn(4, 1, 2, 3, generator=gen(3), dtype=torch.float64)
    s = torch.tensor([0.0, 0.25, 0.5, 0.75, 0.125, 0.875, 0.99], dtype=torch.float64)
    points = polygon_points(vertices, s)
    assert points.shape == (7, 1, 2, 3)
    torch.testing.assert_close(points[:4], vertices)
    torch.testing.assert_close(points[4], (vertices[0] + vertices[1]) / 2)
    torch.testing.assert_close(points[5], (vertices[3] + vertices[0]) / 2)  # closing segment
    torch.testing.assert_close(points[6], 0.04 * vertices[3] + 0.96 * vertices[0])


def toy_training_set():
    x = torch.randn(60, 1, 3, 3, generator=gen(4))
    y = torch.arange(60) % 5
    y[y == 4] = 3  # class 3 has twice the points, class 4 none
    return x, y


@pytest.mark.parametrize("kind", ["random", "different_class", "same_class"])
def test_anchors_have_the_requested_kind(kind):
    x, y = toy_training_set()
    mean, std = x.mean(0), x.std(0)
    anchors = choose_anchors(kind, x, y, 40, gen(5), mean, std)
    assert anchors.shape == (40, 3, 1, 3, 3)
    again = choose_anchors(kind, x, y, 40, gen(5), mean, std)
    assert torch.equal(anchors, again)  # reproducible from the generator alone
    if kind == "random":
        flat = anchors.reshape(-1, 1, 3, 3)
        assert (flat.mean(0) - mean).abs().max() < 0.5 and (flat.std(0) / std - 1).abs().max() < 0.3
        return
    # Each anchor is a training point; recover its index to read its label.
    index = (anchors.reshape(40, 3, 1, -1) == x.reshape(1, 1, 60, -1)).all(-1).float().argmax(-1)
    assert torch.equal(x[index], anchors)
    labels = y[index]  # (40, 3)
    distinct = torch.tensor([len(set(row.tolist())) for row in labels])
    if kind == "different_class":
        assert (distinct == 3).all()
    else:
        assert (distinct == 1).all() and (index.sort(1).values.diff(dim=1) > 0).all()


def test_unknown_anchor_kind_is_refused():
    x, y = toy_training_set()
    with pytest.raises(ValueError, match="anchor kind"):
        choose_anchors("between", x, y, 1, gen(0), 0.0, 1.0)



def test_draw_ellipses_kind_major_through_anchors_of_their_kind():
    train_x = torch.rand(30, 1, 4, 5, generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64)
    train_y = torch.arange(30) % 3
    kinds, ellipses = draw_ellipses(train_x, train_y, per_kind=2, seed=0)
    assert kinds == ["random"] * 2 + ["different_class"] * 2 + ["same_class"] * 2
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    for kind, (c, a, b) in zip(kinds, ellipses):
        anchors = ellipse_points(c, a, b, angles)  # (3, 1, 4, 5)
        found = [torch.nonzero((train_x - p).abs().flatten(1).amax(1) < 1e-12).flatten()
                 for p in anchors]
        if kind == "random":  # off the data: no anchor is a training point
            assert all(len(f) == 0 for f in found)
            continue
        labels = {int(train_y[f[0]]) for f in found}
        assert all(len(f) == 1 for f in found)
        assert len(labels) == (3 if kind == "different_class" else 1)
    again = draw_ellipses(train_x, train_y, per_kind=2, seed=0)[1]
    assert all(torch.equal(u, v) for e, f in zip(ellipses, again) for u, v in zip(e, f))


def test_random_anchors_follow_per_pixel_statistics():
    """Per-pixel means in [-4, 6] and stds in [0.05, 3], far from the global mean (~1) and
    std (~3) and from N(0, 1): 3 x 1500 anchors per pixel put each anchor pixel's sample
    mean within 5 sd (5 std / sqrt(4500) ~ 0.07 std) of the training pixel's mean."""
    rng = np.random.default_rng(0)
    n_pixels = 2 * 3 * 4
    pixel_mean = rng.permutation(np.linspace(-4.0, 6.0, n_pixels)).reshape(2, 3, 4)
    pixel_std = rng.permutation(np.geomspace(0.05, 3.0, n_pixels)).reshape(2, 3, 4)
    train_x = pixel_mean + pixel_std * rng.standard_normal((400, 2, 3, 4))
    train_y = torch.arange(400) % 4
    # The statistics the anchors must have, from the data in float64 (torch.std is ddof=1).
    expected_mean, expected_std = train_x.mean(axis=0), train_x.std(axis=0, ddof=1)
    per_kind = 1500
    kinds, ellipses = draw_ellipses(torch.from_numpy(train_x), train_y, per_kind, seed=1)
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    anchors = np.stack([ellipse_points(c, a, b, angles).numpy()
                        for kind, (c, a, b) in zip(kinds, ellipses) if kind == "random"])
    samples = anchors.reshape(3 * per_kind, 2, 3, 4)
    m = len(samples)
    assert np.all(np.abs(samples.mean(0) - expected_mean) < 5 * expected_std / math.sqrt(m))
    assert np.all(np.abs(samples.std(0, ddof=1) / expected_std - 1) < 5 / math.sqrt(2 * m))
    z = ((samples - expected_mean) / expected_std).ravel()  # Gaussian, pixel by pixel
    assert stats.kstest(z, "norm").pvalue > 1e-4
