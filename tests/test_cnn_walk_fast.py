"""The exact CNN walk's bookkeeping in seconds, beside tests/test_cnn_walk.py (whose
dense-sampling tests and walks of trained WRNs take over ten minutes): where the polygon
closes (workflow_src/metrics/cnn_walk.py: the last vertex -> first segment and the join at
the first vertex, on a hand-built network with known crossings), and which walk's count
each point and each member of a shard stores (per_run.translation_metrics, measure_shard;
the walk itself stood in for by a stub that names what it was given).

HandNet's unit 0 is x0 / 2 (a ReLU), so along these polygons, which move x0 only, the count
is the number of times x0 crosses 0; its max-pool windows never change argmax here (the
second window's column 2 is 0.5 throughout, the first's tied zeros keep column 0)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_cnn_metrics import images, make_cnn
from test_cnn_walk import HandNet, sampled

from workflow_src.metrics import per_run
from workflow_src.metrics.cnn_walk import exact_transitions_cnn_polygon
from workflow_src.metrics.trajectories import translation_polygon

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


# --- which walk each point and member stores ------------------------------------------------

def stub_walk(monkeypatch):
    """Replace the walk by one whose count for each polygon is a fingerprint of the network
    and the polygon it was given (float64 both, as the real walk needs); returns its calls."""
    calls = []

    def walk(model, polygons):
        assert all(p.dtype == torch.float64 for p in (*model.parameters(), *polygons))
        weights = float(sum(p.detach().sum() for p in model.parameters()))
        calls.append(polygons)
        return [SimpleNamespace(count=weights + float(p.sum())) for p in polygons]

    monkeypatch.setattr(per_run, "exact_transitions_cnn_polygons", walk)
    return calls


def fingerprint(model, image):
    weights = float(sum(p.double().sum() for p in model.parameters()))
    return weights + float(translation_polygon(image.double()).sum())


def test_each_point_stores_its_own_walk_only_when_exact_cnn_is_on(monkeypatch):
    calls = stub_walk(monkeypatch)
    model = make_cnn("wrn", 1, 10, True, seed=4, dtype=torch.float32)
    x = images(3, seed=12, dtype=torch.float32)
    on = per_run.translation_metrics(model, x, 8, 2, 4, exact_cnn=True)
    assert len(calls) == 1 and len(calls[0]) == 3  # every point's polygon in one batched walk
    np.testing.assert_array_equal(on["transitions_exact"].values,
                                  [fingerprint(model, image) for image in x])
    assert "transitions_exact is exact" in on.attrs["note"]
    off = per_run.translation_metrics(model, x, 8, 2, 4)
    assert len(calls) == 1 and np.isnan(off["transitions_exact"].values).all()
    assert "measure.transitions.exact_cnn: true" in off.attrs["note"]
    np.testing.assert_array_equal(off["transitions_sampled"].values,
                                  on["transitions_sampled"].values)
    lrn = per_run.translation_metrics(make_cnn("alexnet_small", seed=4, dtype=torch.float32),
                                      x[:1], 8, 2, 4, exact_cnn=True)
    assert len(calls) == 1 and np.isnan(lrn["transitions_exact"].values).all()


def test_each_member_of_a_shard_stores_its_own_walk(monkeypatch, cnn_shard):
    from workflow_src import integrity
    from workflow_src.jobs.measure_shard import measure_shard
    from workflow_src.nets.models import load_model

    stub_walk(monkeypatch)
    results, runs, stores = cnn_shard
    settings = {"translation": {"n_points": 2, "k_sampled": 8, "jacobian_positions": 2,
                                "exact_cnn": True}}
    measured = measure_shard(settings, "c" * 12, runs, stores, results, torch.device("cpu"),
                             8, lambda *a: None)["translation"]
    assert measured["run_id"].values.tolist() == [run.id for run in runs]
    for i, run in enumerate(runs):
        model = load_model(results / "runs" / run.id / "model.pt")
        x = torch.as_tensor(integrity.open_store(stores[run.data.id])["x_test"].values[:2])
        np.testing.assert_array_equal(measured["transitions_exact"].values[i],
                                      [fingerprint(model, image) for image in x])
