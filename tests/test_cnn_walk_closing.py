"""The exact CNN walk where its polygon closes (workflow_src/metrics/cnn_walk.py): the last
vertex -> first segment and the join at the first vertex. A fast check (hand-built network,
known crossings) beside tests/test_cnn_walk.py, whose dense-sampling tests take minutes.

HandNet's unit 0 is x0 / 2 (a ReLU), so along these polygons, which move x0 only, the count
is the number of times x0 crosses 0; its max-pool windows never change argmax here (the
second window's column 2 is 0.5 throughout, the first's tied zeros keep column 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cnn_walk import HandNet, sampled

from workflow_src.metrics.cnn_walk import exact_transitions_cnn_polygon

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def polygon(*x0):
    """Vertices (V, 1, 1, 3) with first inputs x0 and the others fixed at (-1, 1)."""
    return torch.tensor([[[[x, -1.0, 1.0]]] for x in x0], dtype=torch.float64)


@pytest.mark.parametrize("x0, where", [
    # one crossing inside the middle segment (t = 2/3), one on the closing segment (t = 1/2)
    ((1.0, 2.0, -1.0), [(1 + 2 / 3) / 3, (2 + 1 / 2) / 3]),
    # the first vertex on the breakpoint: the closing segment arrives below it, the first
    # segment leaves above it: one crossing there (s = 0), the other at t = 1/2 of b -> a
    ((0.0, 1.0, -1.0), [0.0, (1 + 1 / 2) / 3]),
    # the same, the closing vertex repeated (a zero-length closing segment is skipped)
    ((0.0, 1.0, -1.0, 0.0), [0.0, (1 + 1 / 2) / 4]),
    # touching the breakpoint at the first vertex and turning back is no crossing
    ((0.0, -1.0, -0.5), []),
    # a crossing on the closing segment just before the first vertex (t = 20/21)
    ((0.5, -1.0, -10.0), [(0 + 1 / 3) / 3, (2 + 20 / 21) / 3]),
], ids=["inside", "at_the_first_vertex", "closing_vertex_repeated", "touching",
        "near_the_first_vertex"])
def test_the_closing_segment_and_vertex_count_each_crossing_once(x0, where):
    model, vertices = HandNet(), polygon(*x0)
    walk = exact_transitions_cnn_polygon(model, vertices)
    assert walk.count == len(where) == sampled(model, vertices, 1200)
    np.testing.assert_allclose(walk.crossings, where, rtol=0, atol=1e-12)


def test_where_the_polygon_starts_does_not_change_the_count():
    """Every rotation of a polygon with crossings on every kind of segment and at a vertex."""
    x0 = (0.0, 1.0, -1.0, 2.0, -0.5)
    counts = {exact_transitions_cnn_polygon(HandNet(), polygon(*(x0[i:] + x0[:i]))).count
              for i in range(len(x0))}
    assert counts == {4}
