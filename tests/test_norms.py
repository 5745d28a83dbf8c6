"""Norm- and margin-based indicators (Neyshabur et al. 2017; Jiang et al. 2020) against slow,
obvious float64 references on small random networks: numpy SVD, an explicit enumeration of
every path, a per-point margin loop and a hand-written linear-interpolation percentile."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from workflow_src.metrics.norms import EXPECTED_SIGN, norm_metrics
from workflow_src.nets.models import ACTIVATIONS, ModelSpec, build_model

N_CLASSES = 3
CASES = list(itertools.product(sorted(ACTIVATIONS), [1, 2, 3], [True, False]))
CASE_IDS = [f"{a}-depth{d}-{'bias' if b else 'nobias'}" for a, d, b in CASES]
SHAPES = [(1, 3, 3), (4,)]


def make_net(activation="relu", depth=2, input_shape=(1, 3, 3), bias=True, width=4, seed=0):
    spec = ModelSpec(input_shape, N_CLASSES, width=width, depth=depth, activation=activation,
                     bias=bias)
    return build_model(spec, seed).double()


def points(input_shape, n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *input_shape, generator=g, dtype=torch.float64).to(dtype)


def logits_of(model, x):
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double()).numpy()


def fitted_labels(model, x, wrong=0):
    """Labels the network gets right, except the first ``wrong`` points (its least likely
    class there): a margin distribution with a few negative values but a positive 10th
    percentile when wrong < 10% of the points."""
    f = logits_of(model, x)
    y = f.argmax(1)
    y[:wrong] = f[:wrong].argmin(1)
    return torch.as_tensor(y)


def weights(model):
    return [layer.weight.detach().double().numpy() for layer in [*model.hidden, model.readout]]


def biases(model):
    return [layer.bias.detach().double().numpy() for layer in [*model.hidden, model.readout]]


def percentile_by_hand(values, q):
    """Linear interpolation between order statistics at position q/100 · (n − 1)."""
    v = sorted(values)
    pos = q / 100 * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def margins_by_loop(model, x, y):
    model64 = copy.deepcopy(model).double()
    out = []
    with torch.no_grad():
        for xi, yi in zip(x, y.tolist()):
            f = model64(xi[None].double())[0].tolist()
            out.append(f[yi] - max(f[j] for j in range(len(f)) if j != yi))
    return out


def enumerated_path_norm(model):
    """Σ over every path of the product of its squared weights, by explicit enumeration.

    Layers l = 1 … L (L = depth + 1, the readout last) with unit counts s_0 = d, s_1 …, s_L =
    n_classes. A path from input coordinate j_0 is (j_0, j_1, …, j_L) and contributes
    Π_{l=1..L} W_l[j_l, j_{l−1}]². With biases, each bias b_l[j_l] is an edge from a unit of
    constant value 1 into unit j_l of layer l, so a path may also start there and then
    contributes b_l[j_l]² Π_{m=l+1..L} W_m[j_m, j_{m−1}]² (just b_L[k]² for the readout).
    """
    Ws = weights(model)
    sizes = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    total = 0.0
    for path in itertools.product(*(range(s) for s in sizes)):
        term = 1.0
        for layer, W in enumerate(Ws, start=1):
            term *= float(W[path[layer], path[layer - 1]]) ** 2
        total += term
    if model.spec.bias:
        for start, b in enumerate(biases(model), start=1):  # the bias into layer `start`
            for path in itertools.product(*(range(s) for s in sizes[start:])):
                term = float(b[path[0]]) ** 2
                for offset, W in enumerate(Ws[start:], start=1):
                    term *= float(W[path[offset], path[offset - 1]]) ** 2
                total += term
    return total


def n_parameters_by_hand(spec):
    d, w, n, b = spec.input_dim, spec.width, spec.n_classes, int(spec.bias)
    return (d * w + b * w) + (spec.depth - 1) * (w * w + b * w) + (w * n + b * n)


# ---------------------------------------------------------------- structure

def test_dataset_has_every_expected_variable_as_float64_scalar_with_references():
    model = make_net(seed=1)
    x = points((1, 3, 3), 20, seed=2)
    ds = norm_metrics(model, make_net(seed=3), x, fitted_labels(model, x))
    assert set(ds.data_vars) == set(EXPECTED_SIGN)
    for name, var in ds.data_vars.items():
        assert var.dims == () and var.dtype == np.float64, name
        assert "Jiang" in var.attrs["reference"] or "Neyshabur" in var.attrs["reference"], name
        assert var.attrs["expected_sign"] == EXPECTED_SIGN[name]
        assert np.isfinite(var.item()), name
    assert set(EXPECTED_SIGN.values()) <= {-1, +1}
    assert EXPECTED_SIGN["margin"] == -1
    assert all(EXPECTED_SIGN[k] == +1 for k in EXPECTED_SIGN if k != "margin")
    assert "note" not in ds.attrs


# ---------------------------------------------------------------- weight norms

@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("input_shape", SHAPES)
def test_frobenius_spectral_and_parameter_count_by_hand(depth, bias, input_shape):
    model = make_net("tanh", depth, input_shape, bias, width=5, seed=10 + depth)
    x = points(input_shape, 15, seed=depth)
    ds = norm_metrics(model, make_net("tanh", depth, input_shape, bias, width=5, seed=99),
                      x, fitted_labels(model, x))
    Ws = weights(model)
    assert len(Ws) == depth + 1
    frob = sum(float((W**2).sum()) for W in Ws)  # biases excluded
    spec = math.prod(float(np.linalg.svd(W, compute_uv=False)[0]) ** 2 for W in Ws)
    np.testing.assert_allclose(ds.frobenius_sum.item(), frob, rtol=1e-13)
    np.testing.assert_allclose(ds.spectral_product.item(), spec, rtol=1e-12)
    assert ds.n_parameters.item() == n_parameters_by_hand(model.spec)
    assert ds.n_parameters.item() == sum(p.numel() for p in model.parameters())


def test_frobenius_excludes_biases():
    """Changing only the biases leaves the Frobenius and spectral norms unchanged."""
    model = make_net(depth=2, seed=4)
    x = points((1, 3, 3), 10, seed=5)
    y = fitted_labels(model, x)
    before = norm_metrics(model, model, x, y)
    with torch.no_grad():
        for layer in [*model.hidden, model.readout]:
            layer.bias.mul_(7.0)
    after = norm_metrics(model, model, x, y)
    assert after.frobenius_sum.item() == before.frobenius_sum.item()
    assert after.spectral_product.item() == before.spectral_product.item()
    assert after.path_norm.item() > before.path_norm.item()  # the path norm counts them


# ---------------------------------------------------------------- path norm

@pytest.mark.parametrize("activation,depth,bias", CASES, ids=CASE_IDS)
def test_path_norm_matches_enumeration_of_every_path(activation, depth, bias):
    model = make_net(activation, depth, (4,), bias, width=3, seed=20 + depth)
    x = points((4,), 12, seed=depth)
    ds = norm_metrics(model, model, x, fitted_labels(model, x))
    np.testing.assert_allclose(ds.path_norm.item(), enumerated_path_norm(model), rtol=1e-13)


def test_path_norm_of_a_hand_sized_network():
    """d = 2, width 1, depth 1, 3 classes: f = W2 σ(W1 x + b1) + b2.
    Paths: Σ_i W1[0,i]² Σ_k W2[k,0]²; bias paths b1² Σ_k W2[k,0]² and Σ_k b2[k]²."""
    spec = ModelSpec((2,), N_CLASSES, width=1, depth=1, activation="hard_tanh", bias=True)
    model = build_model(spec, 0).double()
    with torch.no_grad():
        model.hidden[0].weight.copy_(torch.tensor([[2.0, -3.0]]))
        model.hidden[0].bias.copy_(torch.tensor([0.5]))
        model.readout.weight.copy_(torch.tensor([[1.0], [-2.0], [0.25]]))
        model.readout.bias.copy_(torch.tensor([1.0, 0.0, -1.5]))
    readout = 1 + 4 + 0.0625
    expected = (4 + 9) * readout + 0.25 * readout + (1 + 0 + 2.25)
    x = points((2,), 5, seed=0)
    ds = norm_metrics(model, model, x, fitted_labels(model, x))
    assert ds.path_norm.item() == pytest.approx(expected, rel=1e-15)
    assert enumerated_path_norm(model) == pytest.approx(expected, rel=1e-15)


def test_path_norm_does_not_depend_on_the_activation():
    x = points((4,), 8, seed=1)
    values = []
    for activation in sorted(ACTIVATIONS):
        model = make_net(activation, 3, (4,), True, width=3, seed=7)  # same weights each time
        values.append(norm_metrics(model, model, x, fitted_labels(model, x)).path_norm.item())
    np.testing.assert_allclose(values, values[0], rtol=1e-15)


# ---------------------------------------------------------------- distance from init

def test_distance_from_init_is_zero_at_initialization():
    model = make_net(depth=3, seed=8)
    x = points((1, 3, 3), 6, seed=9)
    y = fitted_labels(model, x)
    assert norm_metrics(model, copy.deepcopy(model), x, y).distance_from_init.item() == 0.0
    assert norm_metrics(model, model, x, y).distance_from_init.item() == 0.0


@pytest.mark.parametrize("bias", [True, False])
def test_distance_from_init_by_hand(bias):
    model = make_net("relu6", 2, (1, 3, 3), bias, seed=11)
    initial = make_net("relu6", 2, (1, 3, 3), bias, seed=12)
    x = points((1, 3, 3), 6, seed=13)
    ds = norm_metrics(model, initial, x, fitted_labels(model, x))
    a, b = model.state_dict(), initial.state_dict()
    assert len(a) == 3 * (1 + bias)  # every weight and bias
    expected = math.sqrt(sum(float(((a[k].numpy() - b[k].numpy()) ** 2).sum()) for k in a))
    np.testing.assert_allclose(ds.distance_from_init.item(), expected, rtol=1e-13)
    assert expected > 0


def test_initial_model_of_another_architecture_is_refused():
    model = make_net(depth=2, seed=1)
    x = points((1, 3, 3), 4, seed=1)
    with pytest.raises(ValueError, match="architecture"):
        norm_metrics(model, make_net(depth=3, seed=1), x, fitted_labels(model, x))


# ---------------------------------------------------------------- margins

@pytest.mark.parametrize("activation,depth,bias", CASES, ids=CASE_IDS)
def test_margin_matches_per_point_loop_and_ratios_divide_by_its_square(activation, depth, bias):
    # Width 8: a bias-free ReLU layer of 4 units is all off at ~1/16 of the points, where
    # every logit is 0 and the margin exactly 0.
    model = make_net(activation, depth, (1, 3, 3), bias, width=8, seed=30 + depth)
    x = points((1, 3, 3), 23, seed=31 + depth)  # 10th percentile at position 2.2
    y = fitted_labels(model, x, wrong=2)
    ds = norm_metrics(model, make_net(activation, depth, (1, 3, 3), bias, width=8, seed=0), x,
                      y, chunk_size=5)
    margins = margins_by_loop(model, x, y)
    assert sum(m < 0 for m in margins) == 2  # the two wrong points
    expected = percentile_by_hand(margins, 10)
    assert expected > 0
    np.testing.assert_allclose(ds.margin.item(), expected, rtol=1e-12)
    for ratio, norm in [("frobenius_over_margin", "frobenius_sum"),
                        ("spectral_over_margin", "spectral_product"),
                        ("path_over_margin", "path_norm")]:
        np.testing.assert_allclose(ds[ratio].item(), ds[norm].item() / expected**2, rtol=1e-12)
    assert "note" not in ds.attrs


def test_margin_interpolates_between_order_statistics():
    """With 7 points the 10th percentile sits 0.6 of the way from the smallest margin to the
    next: neither order statistic alone."""
    model = make_net(depth=1, seed=40)
    x = points((1, 3, 3), 7, seed=41)
    y = fitted_labels(model, x)
    margins = sorted(margins_by_loop(model, x, y))
    ds = norm_metrics(model, model, x, y)
    np.testing.assert_allclose(ds.margin.item(), margins[0] + 0.6 * (margins[1] - margins[0]),
                               rtol=1e-12)
    assert margins[0] < ds.margin.item() < margins[1]


def test_margin_uses_the_labels_given_not_the_predictions():
    model = make_net(depth=2, seed=42)
    x = points((1, 3, 3), 30, seed=43)
    wrong = torch.as_tensor(logits_of(model, x).argmin(1))  # every point misclassified
    ds = norm_metrics(model, model, x, wrong)
    np.testing.assert_allclose(ds.margin.item(), percentile_by_hand(
        margins_by_loop(model, x, wrong), 10), rtol=1e-12)
    assert ds.margin.item() < 0


def test_non_positive_margin_gives_nan_ratios_and_a_note():
    model = make_net(depth=2, seed=44)
    x = points((1, 3, 3), 30, seed=45)
    wrong = torch.as_tensor(logits_of(model, x).argmin(1))
    ds = norm_metrics(model, model, x, wrong)
    assert ds.margin.item() < 0
    for ratio in ("frobenius_over_margin", "spectral_over_margin", "path_over_margin"):
        assert np.isnan(ds[ratio].item()), ratio
    assert "does not fit" in ds.attrs["note"] and "NaN" in ds.attrs["note"]
    for norm in ("frobenius_sum", "spectral_product", "path_norm", "margin"):
        assert np.isfinite(ds[norm].item())


def test_zero_margin_counts_as_non_positive():
    """A readout of zeros gives all-equal logits: every margin is exactly 0."""
    model = make_net(depth=1, seed=46)
    with torch.no_grad():
        model.readout.weight.zero_()
        model.readout.bias.zero_()
    x = points((1, 3, 3), 10, seed=47)
    ds = norm_metrics(model, model, x, torch.zeros(10, dtype=torch.long))
    assert ds.margin.item() == 0.0
    assert np.isnan(ds.path_over_margin.item()) and "note" in ds.attrs


# ---------------------------------------------------------------- chunks, dtype, scale

@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_chunk_size_does_not_change_the_result(activation):
    model = make_net(activation, 2, (1, 3, 3), seed=50)
    x = points((1, 3, 3), 17, seed=51)
    y = fitted_labels(model, x, wrong=1)
    results = [norm_metrics(model, make_net(activation, 2, (1, 3, 3), seed=52), x, y,
                            chunk_size=c) for c in (1, 3, 17, 4096)]
    for ds in results[1:]:
        for name in EXPECTED_SIGN:
            np.testing.assert_allclose(ds[name].item(), results[0][name].item(), rtol=1e-13,
                                       err_msg=name)


def test_float32_model_gives_the_float64_answer():
    spec = ModelSpec((1, 3, 3), N_CLASSES, width=5, depth=3, activation="hard_sigmoid")
    model32, init32 = build_model(spec, 60), build_model(spec, 61)  # float32, as trained
    x32 = points((1, 3, 3), 25, seed=62, dtype=torch.float32)
    y = fitted_labels(model32, x32, wrong=1)
    before = {k: v.clone() for k, v in model32.state_dict().items()}
    ds = norm_metrics(model32, init32, x32, y)
    # The input model is left as it is: float32, same weights.
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    assert all(torch.equal(before[k], v) for k, v in model32.state_dict().items())
    reference = norm_metrics(copy.deepcopy(model32).double(), copy.deepcopy(init32).double(),
                             x32.double(), y)
    np.testing.assert_allclose(ds.margin.item(), percentile_by_hand(
        margins_by_loop(model32, x32, y), 10), rtol=1e-13)
    for name in EXPECTED_SIGN:
        np.testing.assert_allclose(ds[name].item(), reference[name].item(), rtol=1e-14,
                                   err_msg=name)
    # The comparison can tell precisions apart: a float32 margin differs at ~1e-7.
    with torch.no_grad():
        f32 = model32(x32)
        others = f32.scatter(1, y[:, None], -torch.inf).amax(1)
        margin32 = float(np.percentile((f32.gather(1, y[:, None])[:, 0] - others).numpy(),
                                       10))
    assert abs(margin32 - ds.margin.item()) > 1e-12 * abs(ds.margin.item())


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_scaling_the_readout_scales_margin_and_norms(bias, depth):
    """Readout (W_L, b_L) → c (W_L, b_L): every logit, hence every margin and the 10th
    percentile, scales by c; ‖W_L‖_F² by c², so frobenius_sum gains (c² − 1)‖W_L‖_F²; the
    spectral product and every path term (each path ends in one readout weight or bias)
    by c², so spectral and path norm over margin² are unchanged."""
    c = 2.5
    model = make_net("relu", depth, (1, 3, 3), bias, width=8, seed=70 + depth)
    initial = make_net("relu", depth, (1, 3, 3), bias, width=8, seed=0)
    x = points((1, 3, 3), 30, seed=71)
    y = fitted_labels(model, x, wrong=2)
    before = norm_metrics(model, initial, x, y)
    readout_frob = float((weights(model)[-1] ** 2).sum())
    with torch.no_grad():
        model.readout.weight.mul_(c)
        if bias:
            model.readout.bias.mul_(c)
    after = norm_metrics(model, initial, x, y)
    rel = dict(rtol=1e-12)
    np.testing.assert_allclose(after.margin.item(), c * before.margin.item(), **rel)
    np.testing.assert_allclose(after.frobenius_sum.item(),
                               before.frobenius_sum.item() + (c**2 - 1) * readout_frob, **rel)
    np.testing.assert_allclose(after.spectral_product.item(),
                               c**2 * before.spectral_product.item(), **rel)
    np.testing.assert_allclose(after.path_norm.item(), c**2 * before.path_norm.item(), **rel)
    np.testing.assert_allclose(after.spectral_over_margin.item(),
                               before.spectral_over_margin.item(), **rel)
    np.testing.assert_allclose(after.path_over_margin.item(), before.path_over_margin.item(),
                               **rel)
    np.testing.assert_allclose(after.frobenius_over_margin.item(),
                               after.frobenius_sum.item() / (c * before.margin.item()) ** 2,
                               **rel)
    assert before.margin.item() > 0
    assert after.n_parameters.item() == before.n_parameters.item()
