"""Implicit bias (metrics/implicit_bias.py, measures/implicit_bias.py): margins against a loop,
the SVM direction against closed forms, the normalized margin's homogeneity, and gradient
descent on a separable toy turning towards the SVM."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_presets import presets_dir, small, small_run  # noqa: F401 (fixtures)

from workflow_src.measures.implicit_bias import implicit_bias
from workflow_src.metrics.implicit_bias import angle, point_margins, svm_direction
from workflow_src.nets.models import ModelSpec, build_model



@pytest.fixture(autouse=True)
def float64_by_default():
    """This module's tensors are float64; the default is put back after each test (set at
    import time it leaked into every test collected with this file)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

# Class k at angle 2πk/3 on the unit circle: by the rotation and reflection symmetry of the
# problem, the multiclass hard-margin SVM (no bias) is w_k = c x_k with c (1 − cos 120°) = 1.
THREE = np.array([[math.cos(2 * math.pi * k / 3), math.sin(2 * math.pi * k / 3)]
                  for k in range(3)])


def model_of(depth, n_classes=2, input_dim=2, bias=True, activation="relu", width=5, seed=0):
    spec = ModelSpec(input_shape=(1, 1, input_dim), n_classes=n_classes, width=width,
                     depth=depth, activation=activation, bias=bias)
    return build_model(spec, seed).double()


def set_linear(model, weights):
    """A depth-0 model's readout set to ``weights`` (K, d [+1 bias column])."""
    with torch.no_grad():
        d = model.readout.weight.shape[1]
        model.readout.weight.copy_(torch.tensor(weights[:, :d]))
        if model.readout.bias is not None:
            model.readout.bias.copy_(torch.tensor(weights[:, d]))


def test_point_margins_equal_a_loop():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((30, 4)), rng.integers(0, 4, 30)
    logits[0] = [1e300, 1e300, -1e300, 0]  # a tie at a huge value: margin 0
    labels[0] = 0
    expected = [logits[i, labels[i]] - max(logits[i, j] for j in range(4) if j != labels[i])
                for i in range(30)]
    assert point_margins(logits, labels) == pytest.approx(expected, rel=1e-15, abs=0)
    with pytest.raises(ValueError, match="logits"):
        point_margins(logits[:, :1], labels)


@pytest.mark.parametrize("x, y, bias, expected", [
    # Two points a class, symmetric: u ∝ (1, 1) with u·(1, 2) = 1, W = (−u/2, u/2).
    (np.array([[1, 2], [2, 1], [-1, -2], [-2, -1.0]]), [1, 1, 0, 0], False,
     np.array([[-1 / 6, -1 / 6], [1 / 6, 1 / 6]])),
    # 1-D with a bias: augmented (3, 1) against (1, 1); both constraints active give
    # u = (1, −2), KKT multipliers (1.5, 3.5) >= 0.
    (np.array([[3.0], [1.0]]), [1, 0], True, np.array([[-0.5, 1.0], [0.5, -1.0]])),
    # Three classes (Crammer–Singer), module constant THREE: c = 2/3.
    (THREE, [0, 1, 2], False, 2 / 3 * THREE),
])
def test_svm_direction_equals_the_closed_form(x, y, bias, expected):
    svm = svm_direction(x, np.array(y), len(expected), bias)
    assert svm["weights"] == pytest.approx(expected, abs=1e-5)
    assert angle(svm["weights"], expected) < 1e-5
    assert svm["train_acc"] == 1.0 and svm["converged"]
    assert svm["functional_margin"] == pytest.approx(1.0, abs=1e-5)


def test_angle_is_accurate_near_zero_and_pi_and_nan_for_zero():
    a = np.array([1.0, 0.0])
    for t in (1e-9, 1e-3, 1.0, math.pi - 1e-7):
        assert angle(a, [math.cos(t), math.sin(t)]) == pytest.approx(t, rel=1e-9)
    assert math.isnan(angle(a, [0.0, 0.0]))


def test_not_separable_points_give_no_angle():
    x = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1.0]])  # XOR through the origin
    y = torch.tensor([0, 0, 1, 1])
    out = implicit_bias(model_of(0, bias=False), torch.tensor(x), y)
    assert out["svm_train_acc"] < 1 and math.isnan(out["svm_angle"])
    assert out["svm_functional_margin"] < 1


def test_linear_model_at_the_svm_direction_has_angle_zero_and_the_svm_margin():
    x, y = torch.tensor(THREE), torch.tensor([0, 1, 2])
    model = model_of(0, n_classes=3, bias=False)
    set_linear(model, 7.0 * (2 / 3) * THREE)
    out = implicit_bias(model, x, y)
    assert out["svm_angle"] < 1e-5
    svm_margin = 1 / np.linalg.norm(2 / 3 * THREE)  # functional margin 1 / ||W||
    assert out["svm_normalized_margin"] == pytest.approx(svm_margin, rel=1e-5)
    assert out["normalized_margin"] == pytest.approx(svm_margin, rel=1e-5)
    assert out["layers"] == 1 and out["homogeneous"] == 1 and out["train_acc"] == 1


def test_linear_model_with_bias_angle_against_the_augmented_weights():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(2, 0.3, (6, 3)), rng.normal(-2, 0.3, (6, 3))])
    y = np.repeat([1, 0], 6)
    model = model_of(0, input_dim=3)
    out = implicit_bias(model, torch.tensor(x), torch.tensor(y))
    w = np.hstack([model.readout.weight.detach().numpy(),
                   model.readout.bias.detach().numpy()[:, None]])
    svm = svm_direction(x, y, 2, True)["weights"]
    cosine = (w * svm).sum() / np.linalg.norm(w) / np.linalg.norm(svm)
    assert out["svm_angle"] == pytest.approx(math.acos(cosine), rel=1e-9)
    assert out["norm"] == pytest.approx(np.linalg.norm(w), rel=1e-12)


def slow_margin(model, x, y):
    """min_i f_y − max_{j≠y} f_j, one point and one class at a time, layer by layer."""
    layers = [*model.hidden, model.readout]
    best = math.inf
    for xi, yi in zip(x, y.tolist()):
        h = xi.reshape(-1).detach()
        for layer in layers[:-1]:
            h = torch.relu(layer.weight @ h + (layer.bias if layer.bias is not None else 0))
        out = layers[-1].weight @ h + (layers[-1].bias if layers[-1].bias is not None else 0)
        out = out.detach()
        others = max(float(out[j]) for j in range(len(out)) if j != yi)
        best = min(best, float(out[yi]) - others)
    return best


@pytest.mark.parametrize("bias", [False, True])
def test_normalized_margin_of_a_relu_network(bias):
    torch.manual_seed(0)
    x, y = torch.randn(20, 1, 1, 4), torch.randint(0, 3, (20,))
    model = model_of(2, n_classes=3, input_dim=4, bias=bias)
    out = implicit_bias(model, x, y)
    margin = slow_margin(model, x, y)
    norm = math.sqrt(sum(float((p ** 2).sum()) for p in model.parameters()))
    assert out["margin"] == pytest.approx(margin, rel=1e-12)
    assert out["normalized_margin"] == pytest.approx(margin / norm ** 3, rel=1e-12)
    assert out["homogeneous"] == float(not bias) and math.isnan(out["svm_angle"])
    with torch.no_grad():  # every parameter times c: f times c^3 (without biases)
        for p in model.parameters():
            p.mul_(5.0)
    scaled = implicit_bias(model, x, y)
    if not bias:
        assert scaled["normalized_margin"] == pytest.approx(out["normalized_margin"],
                                                            rel=1e-10)
        assert scaled["margin"] == pytest.approx(125 * out["margin"], rel=1e-10)
    else:
        assert scaled["margin"] == pytest.approx(slow_margin(model, x, y), rel=1e-12)


def test_gradient_descent_turns_towards_the_svm():
    """Soudry et al.: full-batch GD on the cross-entropy of separable points; the angle to
    the SVM falls, and the normalized margin rises but stays below the SVM's."""
    rng = np.random.default_rng(2)
    x = torch.tensor(np.vstack([rng.normal(1.5, 0.6, (10, 2)), rng.normal(-1.5, 0.6, (10, 2))]))
    y = torch.tensor(np.repeat([1, 0], 10))
    model = model_of(0, bias=False, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    record, step = {}, 0
    for checkpoint in (10, 1000, 20000):
        while step < checkpoint:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
        record[checkpoint] = implicit_bias(model, x, y)
    angles = [record[t]["svm_angle"] for t in record]
    margins = [record[t]["normalized_margin"] for t in record]
    # The rate is 1/log t: from t = 10 to 20,000 the angle falls by a quarter, not to 0.
    assert angles[0] > angles[1] > angles[2] and angles[2] < 0.8 * angles[0]
    # No linear classifier beats the SVM's normalized margin; along discrete GD the
    # normalized margin need not rise monotonically (here it peaks before t = 20,000).
    assert margins[0] < margins[2] and max(margins) <= record[20000]["svm_normalized_margin"]


def test_refusals_name_the_fix():
    with pytest.raises(ValueError, match="fully connected"):
        implicit_bias(torch.nn.Linear(2, 2), torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n_points"):
        svm_direction(THREE[:2], np.array([0, 1]), 3, False)


def snapshot_rows():
    """A snapshot table of a linear classifier whose angle is 0.7 / ln t and an MLP."""
    steps = np.array([10, 100, 1000, 10000])
    rows = []
    for run_id, depth, width in (("lin", 0, 0), ("mlp", 1, 16)):
        for t in steps:
            rows.append({"run_id": run_id, "depth": depth, "width": width, "seed": 0,
                         "step": t, "step_used": t, "source": "checkpoint", "train_acc": 1.0,
                         "implicit_bias_svm_angle": 0.7 / math.log(t) if depth == 0 else np.nan,
                         "implicit_bias_normalized_margin": 0.1 * math.log(t),
                         "implicit_bias_svm_normalized_margin": 1.0 if depth == 0 else np.nan,
                         "implicit_bias_svm_train_acc": 1.0})
    return pd.DataFrame(rows)


def test_figure_draws_both_panels_and_the_reference_recovers_c():
    from workflow_src.figures.implicit_bias import angle_reference, implicit_bias_chart

    table = snapshot_rows()
    reference = angle_reference(table)
    assert (reference["reference"] * np.log(reference["step_used"])).to_numpy() == \
        pytest.approx(0.7)
    spec = implicit_bias_chart(table, 200, 150).to_dict()
    assert len(spec["hconcat"]) == 2
    empty = implicit_bias_chart(table.iloc[:0], 200, 150).to_dict()
    assert "No implicit_bias" in str(empty)


def test_a_too_small_C_shows_in_the_functional_margin():
    """Soft margin: with C below the hard-margin duals (here 2/9 each) some slack is used,
    and the smallest functional margin falls below 1."""
    svm = svm_direction(THREE, np.array([0, 1, 2]), 3, False, C=0.01)
    assert svm["functional_margin"] < 0.5 and svm["train_acc"] == 1.0


@small("implicit_bias")
def test_small_variant_turns_towards_the_svm(small_run):
    """The preset's small variant (digits, 100 points, fixed budget of 2,000 gd steps): the
    snapshots come from kept checkpoints, the SVM separates the points with the hard margin,
    the linear classifier's angle to it falls, and the fitted MLP's normalized margin is
    positive at the end and larger than before it fitted."""
    table = pd.read_csv(small_run / "tables" / "snapshots.csv")
    assert set(table["source"]) <= {"checkpoint", "final"}
    assert (table["implicit_bias_svm_train_acc"] == 1).all()
    assert table["implicit_bias_svm_functional_margin"].to_numpy() == pytest.approx(1, abs=1e-4)
    linear = table[table["depth"] == 0].sort_values("step")
    angles = linear["implicit_bias_svm_angle"].to_numpy()
    assert np.all(np.diff(angles) < 0)
    mlp = table[table["depth"] == 1].sort_values("step")
    assert mlp["implicit_bias_normalized_margin"].iloc[-1] > 0
    networks = pd.read_csv(small_run / "stats" / "networks.csv")
    assert (networks["steps"] == 2000).all()  # the fixed budget, fitted or not
    assert (small_run / "figures" / "implicit_bias.png").read_bytes()[:4] == b"\x89PNG"
