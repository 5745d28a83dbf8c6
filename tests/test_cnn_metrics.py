"""Every metric on the convolutional networks of workflow_src/nets/cnns.py, against slow, obvious
float64 references on tiny inputs: per-point autograd Jacobians (and, at near-certain points,
log-softmax identities and 60-digit decimal losses), a dense brute-force count of code
changes along explicit polygon samples, hand-summed weights and numpy margins, a dense
Hessian of an explicitly written functional network, explicit per-point parameter gradients
for the NTK; and a shard of two CNN members measured together against each measured alone.

Batch-normalised networks get non-trivial running statistics and shifts and are measured in
eval mode; every metric must leave them as they are (a train-mode pass would move the running
statistics and make a point's value depend on the other points of its batch)."""

from __future__ import annotations

import copy
import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from workflow_src.nets.cnns import CNN_ARCHITECTURES, ShiftBatchNorm2d, WideBasicBlock
from workflow_src.metrics.jacobian import (
    jacobian_norms,
    pointwise_metrics,
    true_class_jacobian_norm,
)
from workflow_src.metrics.per_run import ellipse_metrics, translation_metrics
from workflow_src.metrics.trajectories import (
    draw_ellipses,
    ellipse_points,
    polygon_points,
    translation_polygon,
)
from workflow_src.nets.models import ModelSpec, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (1, 8, 8)  # sklearn digits
N_CLASSES = 3
# (architecture, width, depth, batch_norm): the published small nets and the smallest WRN.
CONFIGS = [
    ("alexnet_small", 0, 0, False),
    ("inception_small", 0, 0, True),
    ("wrn", 1, 10, True),
]
IDS = ["alexnet", "inception_bn", "wrn10_1"]


def spec_for(arch, width=0, depth=0, batch_norm=False, shape=SHAPE, activation="relu",
             n_classes=N_CLASSES):
    return ModelSpec(shape, n_classes, width, depth, activation, True, arch, batch_norm)


def settle_batch_norm(model, shape=SHAPE, seed=123):
    """Non-trivial batch-norm shifts, scales and running statistics, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                if m.bias is not None:
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=dtype))
                if m.weight is not None:
                    m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g,
                                                         dtype=dtype))
        model.train()
        for _ in range(3):
            model(1.5 * torch.randn(8, *shape, generator=g, dtype=dtype) + 0.2)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
    return model


def make_cnn(arch, width=0, depth=0, bn=False, seed=0, dtype=torch.float64, shape=SHAPE,
             activation="relu", n_classes=N_CLASSES):
    """A CNN in eval mode with settled batch norm (where it has any), in ``dtype``."""
    model = build_model(spec_for(arch, width, depth, bn, shape, activation, n_classes), seed)
    return settle_batch_norm(model.to(dtype), shape, seed=100 + seed)


def images(n, shape=SHAPE, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g, dtype=torch.float64).to(dtype)


def last_linear(model) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    assert not model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.fixture(scope="module")
def cnns():
    """float64, eval-mode, settled: one of each architecture (built once for the module)."""
    return {name: make_cnn(*cfg) for name, cfg in zip(IDS, CONFIGS)}


# --- 1. Jacobian norms and the loss per point ---------------------------------------------

def reference_jacobians(model64, xi):
    """∂f/∂x and ∂softmax(f)/∂x at one point, (n, C, H, W) each, by autograd in float64."""
    jf = jacobian(lambda v: model64(v[None])[0], xi)
    js = jacobian(lambda v: torch.softmax(model64(v[None])[0], -1), xi)
    return jf, js


@pytest.mark.parametrize("name", IDS)
def test_jacobian_metrics_match_per_point_autograd(cnns, name):
    model = cnns[name]
    before = snapshot(model)
    x = images(5, seed=1)
    with torch.no_grad():
        logits = model(x)
    y = torch.tensor([0, 1, 2, 0, 1])
    soft, logit = jacobian_norms(model, x, chunk_size=2)
    out = pointwise_metrics(model, x, y, chunk_size=3)
    true_class = true_class_jacobian_norm(model, x, y, chunk_size=4)
    ref_soft, ref_logit, ref_true = [], [], []
    for xi, yi in zip(x, y):
        jf, js = reference_jacobians(model, xi)
        ref_logit.append(float(jf.norm()))
        ref_soft.append(float(js.norm()))
        ref_true.append(float(js[yi].norm()))
    np.testing.assert_allclose(soft.numpy(), ref_soft, rtol=1e-10)
    np.testing.assert_allclose(logit.numpy(), ref_logit, rtol=1e-10)
    np.testing.assert_allclose(out["jacobian_norm"], ref_soft, rtol=1e-10)
    np.testing.assert_allclose(out["logit_jacobian_norm"], ref_logit, rtol=1e-10)
    np.testing.assert_allclose(true_class.numpy(), ref_true, rtol=1e-10)
    ref_loss = [-float(torch.log_softmax(f, -1)[k]) for f, k in zip(logits, y)]
    np.testing.assert_allclose(out["loss"], ref_loss, rtol=1e-12)
    np.testing.assert_array_equal(out["correct"], (logits.argmax(1) == y).numpy())
    assert min(ref_soft) > 0 and min(ref_true) > 0
    assert_untouched(model, before)


def test_batch_norm_is_used_with_its_running_statistics(cnns):
    """The inception's metric is a function of each point alone (eval mode): measuring a
    point with others or alone gives the same, and the running statistics matter."""
    model = cnns["inception_bn"]
    x = images(4, seed=2)
    together = jacobian_norms(model, x, chunk_size=4)[1]
    alone = torch.cat([jacobian_norms(model, x[i:i + 1])[1] for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=0)
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    assert not torch.allclose(jacobian_norms(fresh, x)[1], together, rtol=1e-3)


def readout_scale_for(logits: np.ndarray, target: float) -> float:
    """c with 1 − max softmax(c f) = target, by bisection on log c."""
    margins = logits.max() - logits
    margins = margins[margins > 0]

    def rest(c):
        s = np.exp(-c * margins).sum()
        return s / (1 + s)

    low, high = 1e-6, 1e8
    for _ in range(200):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if rest(mid) > target else (low, mid)
    return low


def exact_loss(logits, y: int) -> float:
    """−log σ_y = log Σ_k e^{f_k − f_y} in 60-digit decimal arithmetic (float64 logits)."""
    with localcontext() as ctx:
        ctx.prec = 60
        f = [Decimal(float(v)) for v in logits]
        return float(sum((fk - f[y]).exp() for fk in f).ln())


def exact_rest(logits) -> float:
    """1 − max softmax in 60-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 60
        f = [Decimal(float(v)) for v in logits]
        return float(1 - 1 / sum((fk - max(f)).exp() for fk in f))


def confident_softmax_jacobian(logits, jf):
    """∂σ/∂x (n, d) from float64 logits (n,) and ∂f/∂x (n, d) with log-softmax identities:
    σ_k = exp(log_softmax_k) and, with t the top class and D_k = J_k − J_t,
    ∂σ_t/∂x = −σ_t Σ_{k≠t} σ_k D_k and ∂σ_k/∂x = σ_k (D_k − Σ_{j≠t} σ_j D_j) for k ≠ t:
    no 1 − σ_t and no difference of nearly equal terms anywhere."""
    t = int(logits.argmax())
    s = torch.exp(torch.log_softmax(logits, -1))
    d = jf - jf[t]  # (n, d), row t is 0
    others = torch.arange(len(logits)) != t
    mean_d = (s[others, None] * d[others]).sum(0)  # Σ_{j≠t} σ_j D_j
    rows = s[:, None] * (d - mean_d)
    rows[t] = -s[t] * mean_d
    return rows


CONFIDENCES = (1e-12, 1e-16, 1e-30)  # 1 − max σ; float64 rounds σ_t to 1 from ~1e-16 on


def confident_case(arch, width, depth, bn, target, seed=0):
    """A float32 CNN (as the workflow trains it) and a point x (1, C, H, W) at which
    1 − max softmax ≈ target: the last linear layer (weights and bias) scaled up."""
    model = make_cnn(arch, width, depth, bn, seed=seed, dtype=torch.float32)
    x = images(1, seed=seed + 7, dtype=torch.float32)
    with torch.no_grad():
        c = readout_scale_for(model(x)[0].double().numpy(), target)
        last_linear(model).weight.mul_(c)
        last_linear(model).bias.mul_(c)
    return model, x


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize("arch,width,depth,bn", CONFIGS, ids=IDS)
def test_near_certain_points_match_float64_references(arch, width, depth, bn, confidence):
    model32, x32 = confident_case(arch, width, depth, bn, confidence, seed=3)
    model64 = copy.deepcopy(model32).double()
    x64 = x32.double()
    with torch.no_grad():
        logits = model64(x64)[0]
        assert float(torch.softmax(model32(x32), -1).max()) == 1.0  # float32 rounds it to 1
    assert exact_rest(logits) == pytest.approx(confidence, rel=0.05)  # the case is built
    jf = jacobian(lambda v: model64(v[None])[0], x64[0]).flatten(1)  # (n, d)
    js = confident_softmax_jacobian(logits, jf)
    # float64 autograd agrees on the rows without 1 − σ_t (a check of the identities)
    js_autograd = jacobian(lambda v: torch.softmax(model64(v[None])[0], -1), x64[0]).flatten(1)
    t = int(logits.argmax())
    others = torch.arange(N_CLASSES) != t
    torch.testing.assert_close(js[others], js_autograd[others], rtol=1e-9, atol=0)
    assert float(js[t].norm()) > 0
    # The float64 network to ~1e-9; the float32 network as the workflow runs it to what its
    # float32 logits allow (a shortcut through 1 − σ_t would give 0, an error of 1).
    for model, x, rtol in ((model64, x64, 1e-9), (model32, x32, 2e-3)):
        for y in (t, (t + 1) % N_CLASSES):  # confident and right, confident and wrong
            labels = torch.tensor([y])
            out = pointwise_metrics(model, x, labels)
            tc = true_class_jacobian_norm(model, x, labels)
            assert out["loss"].dtype == out["jacobian_norm"].dtype == np.float64
            np.testing.assert_allclose(out["loss"][0], exact_loss(logits, y), rtol=rtol)
            np.testing.assert_allclose(out["jacobian_norm"][0], float(js.norm()), rtol=rtol)
            np.testing.assert_allclose(out["logit_jacobian_norm"][0], float(jf.norm()),
                                       rtol=rtol)
            np.testing.assert_allclose(float(tc[0]), float(js[y].norm()), rtol=rtol)
            assert out["loss"][0] > 0 and out["jacobian_norm"][0] > 0 and tc[0] > 0


# --- 2. transitions along the translation polygon -----------------------------------------

def brute_force_sampled(model, image, k):
    """Σ_i ‖c(z_i) ≠ c(z_{(i+1) mod k})‖₁ over the k explicit points z_i =
    polygon_points(translation polygon, i / k) of a float64 copy, one point per pass."""
    model64 = copy.deepcopy(model).double()
    vertices = translation_polygon(image).double()
    z = polygon_points(vertices, torch.arange(k, dtype=torch.float64) / k)
    codes = torch.cat([model64.activation_codes(z[i:i + 1]) for i in range(k)])  # (k, U)
    nxt = torch.cat([codes[1:], codes[:1]])
    return int((codes != nxt).sum())


TRANSITION_CASES = [
    ("alexnet_small", 0, 0, False, "relu", 48),
    ("inception_small", 0, 0, True, "relu", 40),
    ("wrn", 1, 10, True, "hard_tanh", 300),  # > per_run.CNN_CHUNK: chunks joined
]


@pytest.mark.parametrize("arch,width,depth,bn,activation,k", TRANSITION_CASES,
                         ids=[c[0] for c in TRANSITION_CASES])
def test_sampled_transitions_equal_a_brute_force_count(arch, width, depth, bn, activation, k):
    model = make_cnn(arch, width, depth, bn, seed=4, activation=activation,
                     dtype=torch.float32)
    before = snapshot(model)
    x = images(2, seed=5, dtype=torch.float32)
    out = translation_metrics(model, x, k_sampled=k, jacobian_positions=4, chunk_size=3)
    expected = [brute_force_sampled(model, image, k) for image in x]
    np.testing.assert_array_equal(out["transitions_sampled"].values, expected)
    assert min(expected) > 0
    assert np.isnan(out["transitions_exact"].values).all()
    note = out.attrs["note"]
    assert arch in note and "transitions_exact" in note and "NaN" in note
    assert out.attrs["n_shifts"] == SHAPE[-1]
    assert_untouched(model, before)


def test_trajectory_jacobian_norm_is_the_mean_along_the_polygon(cnns):
    model = cnns["wrn10_1"]
    x = images(1, seed=6)
    out = translation_metrics(model, x, k_sampled=8, jacobian_positions=5, chunk_size=2)
    z = polygon_points(translation_polygon(x[0]), torch.arange(5, dtype=torch.float64) / 5)
    expected = np.mean([float(reference_jacobians(model, zi)[1].norm()) for zi in z])
    assert float(out["trajectory_jacobian_norm"][0]) == pytest.approx(expected, rel=1e-10)


def test_smooth_cnn_stores_nan_transitions_with_the_smooth_note():
    model = make_cnn("wrn", 1, 10, True, activation="tanh")
    out = translation_metrics(model, images(2, seed=7), k_sampled=16, jacobian_positions=3,
                              chunk_size=4)
    assert np.isnan(out["transitions_exact"].values).all()
    assert np.isnan(out["transitions_sampled"].values).all()
    assert np.isfinite(out["trajectory_jacobian_norm"].values).all()
    assert "tanh" in out.attrs["note"] and "smooth" in out.attrs["note"]


# --- 3. ellipses --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["inception_bn", "wrn10_1"])
def test_ellipse_profiles_match_the_reference_and_transitions_are_nan(cnns, name):
    model = cnns[name]
    initial = build_model(model.spec, 0).double().eval()
    train_x = images(12, seed=8)
    train_y = torch.arange(12) % N_CLASSES
    angles = torch.arange(4, dtype=torch.float64) * (2 * math.pi / 4)
    out = ellipse_metrics(model, train_x, train_y, per_kind=1, n_positions=4, seed=3,
                          chunk_size=3, initial_model=initial)
    _, ellipses = draw_ellipses(train_x, train_y, 1, 3)
    for suffix, network in (("", model), ("_init", initial)):
        expected = [[float(reference_jacobians(network, z)[1].norm())
                     for z in ellipse_points(c, a, b, angles)] for c, a, b in ellipses]
        np.testing.assert_allclose(out[f"ellipse_jacobian_norm{suffix}"].values, expected,
                                   rtol=1e-10)
        assert np.isnan(out[f"ellipse_transitions{suffix}"].values).all()
    assert out["ellipse_jacobian_norm"].shape == (3, 4)
    assert model.spec.architecture in out.attrs["note"]
    assert "ellipse_transitions" in out.attrs["note"]


# --- 4. norms and margins -----------------------------------------------------------------

def test_alexnet_parameter_count_by_hand(cnns):
    """1 x 8 x 8 -> conv 5x5 64 -> pool (4 x 4) -> conv 5x5 64 -> pool (2 x 2) -> 384 ->
    192 -> 3, every layer with a bias."""
    from workflow_src.metrics.norms import norm_metrics

    model = cnns["alexnet"]
    expected = ((25 * 1 + 1) * 64 + (25 * 64 + 1) * 64 + (64 * 2 * 2 + 1) * 384
                + (384 + 1) * 192 + (192 + 1) * N_CLASSES)
    x = images(4, seed=9)
    out = norm_metrics(model, build_model(model.spec, 0), x, torch.zeros(4, dtype=torch.long))
    assert out["n_parameters"].item() == expected == 277_315


@pytest.mark.parametrize("name", IDS)
def test_norm_metrics_against_hand_sums_and_numpy_margins(cnns, name):
    from workflow_src.metrics.norms import NON_POSITIVE_MARGIN, PERCENTILE, norm_metrics

    model = cnns[name]
    initial = build_model(model.spec, 0).eval()  # float32, as the workflow rebuilds it
    # A trained network: the settled one moved by a known step from its initial weights.
    trained = copy.deepcopy(model)
    g = torch.Generator().manual_seed(10)
    with torch.no_grad():
        for p, p0 in zip(trained.parameters(), initial.parameters()):
            p.copy_(p0.double() + 0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    settle_batch_norm(trained, seed=11)  # running statistics are buffers: no distance
    before = snapshot(trained)
    x = images(23, seed=12)
    with torch.no_grad():
        logits = torch.cat([trained(x[i:i + 1]) for i in range(len(x))]).numpy()
    for y, positive in ((logits.argmax(1), True), (np.arange(23) % N_CLASSES, False)):
        out = norm_metrics(trained, initial, x, torch.as_tensor(y), chunk_size=5)
        params = dict(trained.named_parameters())
        n = sum(p.numel() for p in params.values())
        # every conv (4-d) and linear (2-d) weight; batch norm's 1-d weights and all biases out
        frob = sum(float((p.detach() ** 2).sum()) for p in params.values() if p.dim() >= 2)
        assert all(p.dim() == 1 for k, p in params.items() if p.dim() < 2)
        dist = math.sqrt(sum(float(((p.detach() - p0.detach().double()) ** 2).sum())
                             for p, p0 in zip(params.values(), initial.parameters())))
        margins = np.array([f[k] - np.delete(f, k).max() for f, k in zip(logits, y)])
        margin = np.percentile(margins, PERCENTILE)
        assert out["n_parameters"].item() == n == sum(
            p.numel() for p in CNN_ARCHITECTURES[model.spec.architecture](model.spec)
            .parameters())
        assert out["frobenius_sum"].item() == pytest.approx(frob, rel=1e-12)
        assert out["distance_from_init"].item() == pytest.approx(dist, rel=1e-12)
        assert out["margin"].item() == pytest.approx(margin, rel=1e-10, abs=1e-12)
        assert (margin > 0) == positive
        for var in ("spectral_product", "path_norm", "spectral_over_margin",
                    "path_over_margin"):
            assert np.isnan(out[var].item()), var
        note = out.attrs["note"]
        assert model.spec.architecture in note and "spectral_product" in note
        if positive:
            assert out["frobenius_over_margin"].item() == pytest.approx(frob / margin**2,
                                                                        rel=1e-10)
        else:
            assert np.isnan(out["frobenius_over_margin"].item())
            assert NON_POSITIVE_MARGIN.split("{")[0] in note
        assert_untouched(trained, before)
    # frobenius_sum is not a sum over every parameter (batch norm and biases excluded)
    all_squares = sum(float((p.detach() ** 2).sum()) for p in trained.parameters())
    assert frob < all_squares


# --- 5. critical samples, Hessian, sharpness, PAC-Bayes, NTK ------------------------------

def test_critical_samples_on_batch_norm_inception(cnns):
    from workflow_src.metrics.critical import critical_sample_metrics, langevin_adversarial_search

    model = copy.deepcopy(cnns["inception_bn"])
    x = images(4, seed=13)
    # The two top classes all but tied at the first point, so that the search can flip it.
    with torch.no_grad():
        f = model(x[:1])[0]
        top2 = f.argsort(descending=True)[:2]
        last_linear(model).bias[top2[1]] += f[top2[0]] - f[top2[1]] - 1e-7
    before = snapshot(model)
    out = critical_sample_metrics(model, x, max_iterations=4, seed=1, chunk_size=3)
    assert np.isfinite(out["critical"].values).all()
    assert 0 <= out["critical_sample_ratio"].item() <= 1
    # A search that flips: every point it reports is in the box and classified otherwise.
    # (No noise, so that a point searched alone takes the very same steps.)
    radius = 0.5
    found = langevin_adversarial_search(model, x, alpha=0.05, beta=0.0, radius=radius,
                                        max_iterations=30, seed=2, chunk_size=3)
    with torch.no_grad():
        assert torch.equal(found.predicted, model(x).argmax(1))
        after = model(found.x_hat).argmax(1)
    assert found.critical.any()
    assert torch.equal(found.critical, after != found.predicted)
    assert float((found.x_hat - x).abs().max()) <= radius
    alone = [langevin_adversarial_search(model, x[i:i + 1], 0.05, 0.0, radius, 30, 2)
             for i in range(len(x))]
    assert torch.equal(torch.cat([a.steps for a in alone]), found.steps)
    assert_untouched(model, before)


class TinyCNN(nn.Module):
    """A CNN small enough for a dense Hessian (189 parameters), built from the CNNs' own
    parts: conv -> shift-only batch norm (inception_small's) -> relu -> max-pool -> LRN
    (alexnet_small's) -> a strided pre-activation WRN block with its 1x1 shortcut -> BN ->
    relu -> global mean -> linear."""

    def __init__(self, seed=0):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn = ShiftBatchNorm2d(2)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.lrn = nn.LocalResponseNorm(size=9, alpha=1.0, beta=0.75, k=1.0)
        self.block = WideBasicBlock(2, 3, 2, nn.ReLU)
        self.bn_out = nn.BatchNorm2d(3)
        self.act_out = nn.ReLU()
        self.readout = nn.Linear(3, N_CLASSES)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.double()
        settle_batch_norm(self, seed=seed + 1)

    def forward(self, x):
        h = self.lrn(self.pool(self.act(self.bn(self.conv(x)))))
        h = self.act_out(self.bn_out(self.block(h)))
        return self.readout(h.mean(dim=(2, 3)))


def explicit_loss(model: TinyCNN, x, y):
    """w -> mean cross-entropy of TinyCNN written out with torch.nn.functional and the
    eval-mode batch norm formula (x − μ) / sqrt(σ² + ε) · γ + β; and w₀."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    w0 = parameters_to_vector(model.parameters()).detach().clone()
    b = model.block

    def bn(h, m, gamma=None, beta=None):
        out = (h - m.running_mean[:, None, None]) / torch.sqrt(m.running_var + m.eps)[:, None, None]
        if gamma is not None:
            out = out * gamma[:, None, None]
        return out + beta[:, None, None]

    def loss(w):
        p, i = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            p[name] = w[i:i + n].reshape(shape)
            i += n
        h = F.relu(bn(F.conv2d(x, p["conv.weight"], padding=1), model.bn, None, p["bn.bias"]))
        h = F.local_response_norm(F.max_pool2d(h, 3, 2, 1), 9, 1.0, 0.75, 1.0)
        o = F.relu(bn(h, b.bn1, p["block.bn1.weight"], p["block.bn1.bias"]))
        r = F.conv2d(o, p["block.shortcut.weight"], stride=2)
        u = F.relu(bn(F.conv2d(o, p["block.conv1.weight"], stride=2, padding=1), b.bn2,
                      p["block.bn2.weight"], p["block.bn2.bias"]))
        h = F.conv2d(u, p["block.conv2.weight"], padding=1) + r
        h = F.relu(bn(h, model.bn_out, p["bn_out.weight"], p["bn_out.bias"]))
        f = h.mean(dim=(2, 3)) @ p["readout.weight"].T + p["readout.bias"]
        return F.cross_entropy(f, y)

    return loss, w0


def test_hessian_of_a_tiny_cnn_matches_the_dense_float64_hessian():
    from workflow_src.metrics.hessian import LossHessian, hessian_metrics

    model = TinyCNN(seed=0)
    x = images(10, seed=14)
    y = torch.arange(10) % N_CLASSES
    loss, w0 = explicit_loss(model, x, y)
    with torch.no_grad():
        assert float(loss(w0)) == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-13)
    h = torch.autograd.functional.hessian(loss, w0)  # (189, 189), float64
    assert h.shape == (189, 189)
    scale = float(h.abs().max())
    v = torch.randn(3, w0.numel(), generator=torch.Generator().manual_seed(15),
                    dtype=torch.float64)
    hv = LossHessian(model, x, y, chunk_size=4)(v)
    torch.testing.assert_close(hv, v @ h, rtol=0, atol=1e-11 * scale)
    before = snapshot(model)
    out = hessian_metrics(model, x, y, n_iterations=1000, tolerance=1e-13, n_probes=6,
                          seed=3, chunk_size=4)
    eig = np.linalg.eigvalsh(h.numpy())
    assert out["hessian_top_eigenvalue"].item() == pytest.approx(eig[-1], rel=1e-6)
    assert out["hessian_top_converged"].item() == 1.0
    # Hutchinson: exactly the mean of vᵀHv over the seed's Rademacher probes.
    g = torch.Generator().manual_seed(3)
    probes = torch.stack([torch.randint(0, 2, (w0.numel(),), generator=g) * 2 - 1
                          for _ in range(6)]).double()
    samples = ((probes @ h) * probes).sum(1)
    assert out["hessian_trace"].item() == pytest.approx(float(samples.mean()), rel=1e-9)
    assert out.attrs["n_parameters"] == 189
    assert_untouched(model, before)


@pytest.mark.parametrize("name", ["inception_bn", "wrn10_1"])
def test_hessian_vector_products_match_finite_differences_of_gradients(cnns, name):
    """On the full-size CNNs (77k and 1.6M parameters; inception's shift-only batch norm
    has no double backward in PyTorch, hessian.py works around it)."""
    from workflow_src.metrics.hessian import LossHessian, hessian_metrics

    model = cnns[name]
    before = snapshot(model)
    x = images(6, seed=16)
    y = torch.arange(6) % N_CLASSES
    w0 = parameters_to_vector(model.parameters()).detach()
    v = torch.randn(w0.numel(), generator=torch.Generator().manual_seed(17),
                    dtype=torch.float64)
    v /= v.norm()
    step = 1e-5
    codes = model.activation_codes(x)

    def gradient(w):
        net = copy.deepcopy(model)
        vector_to_parameters(w, net.parameters())
        # the stencil stays in the network's region of x: a difference of gradients there
        # is a second derivative
        assert torch.equal(net.activation_codes(x), codes)
        loss = F.cross_entropy(net(x), y)
        return parameters_to_vector(torch.autograd.grad(loss, list(net.parameters())))

    fd = (gradient(w0 + step * v) - gradient(w0 - step * v)) / (2 * step)
    hv = LossHessian(model, x, y, chunk_size=4)(v)
    assert float(hv.norm()) > 1e-4
    torch.testing.assert_close(hv, fd, rtol=0, atol=1e-6 * float(hv.norm()))
    out = hessian_metrics(model, x, y, n_iterations=4, tolerance=1e-4, n_probes=2, seed=0,
                          chunk_size=4)
    assert all(np.isfinite(out[k].item()) for k in out.data_vars)
    assert out.attrs["n_parameters"] == w0.numel()
    assert_untouched(model, before)


@pytest.mark.slow  # ~15 s; sharpness and PAC-Bayes references: test_sharpness, test_pac_bayes
def test_sharpness_and_pac_bayes_on_batch_norm_inception(cnns):
    from workflow_src.metrics.pac_bayes import pac_bayes_metrics
    from workflow_src.metrics.sharpness import sharpness_metrics

    model = cnns["inception_bn"]
    before = snapshot(model)
    x = images(6, seed=18)
    with torch.no_grad():
        logits = model(x)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    sharp = sharpness_metrics(model, x, y, epsilons=(1e-3,), subspace_dim=2,
                              max_iterations=1, seed=1, chunk_size=4)
    assert sharp.attrs["loss_at_weights"] == pytest.approx(
        float(F.cross_entropy(logits, y)), rel=1e-12)
    for var in ("sharpness_full", "sharpness_subspace"):
        assert np.isfinite(sharp[var].values).all() and (sharp[var].values >= 0).all()
    assert sharp["sharpness_full"].item() > 0
    pac = pac_bayes_metrics(model, x, y, bisection_steps=2, n_draws=2, ascent_steps=2,
                            seed=2, chunk_size=4)
    assert pac.attrs["accuracy_at_weights"] == float((logits.argmax(1) == y).double().mean())
    for var in pac.data_vars:
        assert np.isfinite(pac[var].item()), var
    assert_untouched(model, before)


def test_ntk_on_batch_norm_inception_matches_explicit_gradients(cnns):
    from workflow_src.metrics.ntk import ntk_gram, ntk_metrics

    model = cnns["inception_bn"]
    before = snapshot(model)
    x, x_test = images(3, seed=19), images(2, seed=20)
    y, y_test = torch.tensor([0, 1, 2]), torch.tensor([2, 0])
    params = list(model.parameters())

    def gradients(points):  # (n_points, K, P): ∂f_k(x_i)/∂θ one backward pass each
        rows = []
        for xi in points:
            f = model(xi[None])[0]
            rows.append(torch.stack([parameters_to_vector(torch.autograd.grad(
                f[k], params, retain_graph=True)) for k in range(N_CLASSES)]))
        return torch.stack(rows)

    G, G_test = gradients(x), gradients(x_test)
    expected = torch.einsum("akp,bkp->ab", G, G).numpy()
    np.testing.assert_allclose(ntk_gram(model, x, chunk_size=2), expected, rtol=1e-10)
    np.testing.assert_allclose(ntk_gram(model, x_test, x, chunk_size=2),
                               torch.einsum("akp,bkp->ab", G_test, G).numpy(), rtol=1e-10)
    out = ntk_metrics(model, model, x, y, x_test, y_test, n_points=3, top_k=2, chunk_size=3)
    assert out["ntk_trace"].item() == pytest.approx(float(np.trace(expected)), rel=1e-10)
    for var in out.data_vars:
        assert np.isfinite(out[var].values).all() or var.startswith("ntk_condition"), var
    assert_untouched(model, before)


# --- 6. a shard of two CNN members -------------------------------------------------------

# the fixture cnn_shard (two trained WRN-10-1 members of one shard) is in conftest.py


SHARD_SETTINGS = {
    "jacobian": {"n_points": 4},
    "bounds": {"n_points": 4},
    "translation": {"n_points": 2, "k_sampled": 24, "jacobian_positions": 3},
    "ellipses": {"per_kind": 1, "n_positions": 3, "seed": 0, "at_initialization": True},
    "norms": {},
    "critical": {"n_points": 3, "alpha": 0.25, "beta": 0.2, "radius": 0.3,
                 "max_iterations": 3, "seed": 3},
    "hessian": {"n_points": 6, "n_iterations": 2, "tolerance": 1e-4, "n_probes": 2,
                "seed": 1},
    "sharpness": {"epsilons": [1e-3], "subspace_dim": 2, "max_iterations": 1, "seed": 2},
    "pac_bayes": {"target_deviation": 0.1, "tolerance": 0.01, "bisection_steps": 1,
                  "n_draws": 1, "ascent_steps": 1, "magnitude_eps": 1e-3,
                  "search_max": 2.0, "seed": 4},
    "ntk": {"n_points": 3, "n_test_points": 2, "top_k": 2, "ridge": 1e-6, "chunk_size": 2},
}


@pytest.mark.slow  # trains a CNN shard (conftest cnn_shard); MLP shards: test_shards
def test_a_cnn_shard_store_holds_each_members_own_metrics(cnn_shard):
    from workflow_src import integrity
    from workflow_src.jobs.measure_shard import measure_shard
    from workflow_src.metrics.critical import critical_sample_metrics
    from workflow_src.metrics.hessian import hessian_metrics
    from workflow_src.metrics.norms import norm_metrics
    from workflow_src.metrics.ntk import ntk_metrics
    from workflow_src.metrics.pac_bayes import pac_bayes_metrics
    from workflow_src.metrics.per_run import bound_metrics
    from workflow_src.metrics.sharpness import sharpness_metrics
    from workflow_src.nets.models import load_model

    results, runs, stores = cnn_shard
    measured = measure_shard(SHARD_SETTINGS, "c" * 12, runs, stores, results,
                             torch.device("cpu"), 8, lambda *a: None)
    assert set(measured) == set(SHARD_SETTINGS)
    for i, run in enumerate(runs):
        model = load_model(results / "runs" / run.id / "model.pt")
        assert model.spec.architecture == "wrn" and model.spec.batch_norm
        assert not model.training
        bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bn and any(not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
                          for m in bn)  # trained: the running statistics moved
        initial = build_model(model.spec, run.seed).eval()
        data = integrity.open_store(stores[run.data.id])
        x, y = torch.as_tensor(data["x_train"].values), torch.as_tensor(data["y_train"].values)
        x_test = torch.as_tensor(data["x_test"].values)
        y_test = torch.as_tensor(data["y_test"].values)
        jac = pointwise_metrics(model, x_test[:4], y_test[:4], 8)
        alone = {
            "bounds": bound_metrics(model, x_test[:4], y_test[:4], jac["loss"],
                                    jac["logit_jacobian_norm"], 10, 8),
            "translation": translation_metrics(model, x_test[:2], 24, 3, 8),
            "ellipses": ellipse_metrics(model, x, torch.as_tensor(data["y_train_clean"].values),
                                        1, 3, 0, 8, initial_model=initial),
            "norms": norm_metrics(model, initial, x, y, 8),
            "critical": critical_sample_metrics(model, x_test[:3], 0.25 / 255, 0.2 / 255,
                                                0.3 / 255, 3, 3, 8),
            "hessian": hessian_metrics(model, x[:6], y[:6], 2, 1e-4, 2, 1, 8),
            "pac_bayes": pac_bayes_metrics(model, x, y, 0.1, 0.01, 1, 1, 1, 1e-3, 2.0, 4, 8),
            "ntk": ntk_metrics(model, initial, x, y, x_test[:2], y_test[:2], 3, 2, 1e-6, 2),
        }
        for name, values in jac.items():
            np.testing.assert_array_equal(measured["jacobian"][name].values[i], values)
        for metric, values in alone.items():
            for name in values.data_vars:
                np.testing.assert_array_equal(measured[metric][name].values[i],
                                              values[name].values, err_msg=f"{metric} {name}")
        sharp = sharpness_metrics(model, x, y, (1e-3,), 2, 1, 2, 8)
        for name in ("sharpness_full", "sharpness_subspace"):
            assert measured["sharpness"][f"{name}_eps0p001"].values[i] == \
                sharp[name].sel(epsilon=1e-3).item()
        assert np.isnan(measured["translation"]["transitions_exact"].values[i]).all()
        assert (measured["translation"]["transitions_sampled"].values[i] > 0).all()
        assert np.isnan(measured["norms"]["spectral_product"].values[i])
        assert np.isfinite(measured["hessian"]["hessian_top_eigenvalue"].values[i])
    assert measured["jacobian"]["run_id"].values.tolist() == [run.id for run in runs]
