"""The convolutional networks of workflow_src/nets/cnns.py: shapes, parameter counts, seeding,
the centre crop, fitting a tiny batch, and activation codes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workflow_src.nets.cnns import (
    CNN_ARCHITECTURES,
    AlexNetSmall,
    InceptionSmall,
    WideResNet,
    input_problem,
    parameter_count,
)
from workflow_src.nets.models import ACTIVATIONS, BREAKPOINTS, ModelSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
# (architecture, width, depth, batch_norm); wrn small for speed
CONFIGS = [
    ("alexnet_small", 0, 0, False),
    ("inception_small", 0, 0, True),
    ("inception_small", 0, 0, False),
    ("wrn", 1, 10, True),
]


def spec_for(arch, width=0, depth=0, batch_norm=False, shape=(3, 32, 32), activation="relu",
             bias=True, n_classes=10):
    return ModelSpec(shape, n_classes, width, depth, activation, bias, arch, batch_norm)


def build(spec, seed=0):
    return CNN_ARCHITECTURES[spec.architecture](spec, torch.Generator().manual_seed(seed))


def settle_batch_norm(model, shape, seed=123):
    """Give batch norm non-trivial running statistics and shifts, then switch to eval."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.bias is not None:
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=dtype))
        model.train()
        for _ in range(3):
            model(1.5 * torch.randn(8, *shape, generator=g, dtype=dtype) + 0.2)
    return model.eval()


# --- shapes, counts, seeding -----------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch,width,depth,bn", CONFIGS)
def test_output_shape(arch, width, depth, bn, shape):
    spec = spec_for(arch, width, depth, bn, shape, n_classes=7)
    assert input_problem(arch, shape, width, depth) is None
    model = build(spec).eval()
    assert model.spec is spec
    with torch.no_grad():
        out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch,width,depth,bn", CONFIGS)
def test_runs_in_float64(arch, width, depth, bn):
    spec = spec_for(arch, width, depth, bn, (3, 32, 32))
    model = build(spec).double().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
        codes = model.activation_codes(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (2, 10)
    assert codes.shape[0] == 2


def test_alexnet_parameter_count_matches_zhang():
    # 4,864 + 102,464 + (7*7*64*384 + 384) + (384*192 + 192) + (192*10 + 10)
    assert parameter_count(build(spec_for("alexnet_small"))) == 1_387_786
    assert 4_864 + 102_464 + 7 * 7 * 64 * 384 + 384 + 384 * 192 + 192 + 192 * 10 + 10 == 1_387_786
    # 28 x 28 inputs give the same network; 8 x 8 digits flatten 2 * 2 * 64
    assert parameter_count(build(spec_for("alexnet_small", shape=(3, 28, 28)))) == 1_387_786
    digits = build(spec_for("alexnet_small", shape=(1, 8, 8)))
    assert digits.classifier[1].in_features == 2 * 2 * 64


def test_inception_parameter_count_matches_zhang():
    # TF batch_norm default: no conv bias, BN shift beta, no scale gamma
    assert parameter_count(build(spec_for("inception_small", batch_norm=True))) == 1_649_402
    # conv bias without batch norm: same count
    assert parameter_count(build(spec_for("inception_small", batch_norm=False))) == 1_649_402
    for bn in (True, False):
        model = build(spec_for("inception_small", batch_norm=bn, bias=False))
        assert parameter_count(model) == 1_647_680
    # running statistics are buffers
    model = build(spec_for("inception_small", batch_norm=True))
    n_bn = sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert n_bn == 19
    assert all(m.weight is None for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.running_mean is not None for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def wrn_formula(depth, k, c_in=3, n_classes=10):
    """Parameters of a pre-activation WRN-depth-k: convs without bias, BN gamma and beta."""
    n = (depth - 4) // 6
    total = 9 * c_in * 16
    c = 16
    for c_out, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        for i in range(n):
            a = c if i == 0 else c_out
            total += 2 * a + 9 * a * c_out + 2 * c_out + 9 * c_out * c_out
            if i == 0 and (a != c_out or stride != 1):
                total += a * c_out  # 1x1 shortcut
        c = c_out
    return total + 2 * c + c * n_classes + n_classes


@pytest.mark.parametrize("depth,k", [(10, 1), (16, 4), (22, 2)])
def test_wrn_parameter_count(depth, k):
    model = build(spec_for("wrn", k, depth, True))
    assert parameter_count(model) == wrn_formula(depth, k)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_wrn_16_4_parameter_count_pinned():
    assert parameter_count(build(spec_for("wrn", 4, 16, True))) == 2_748_890  # paper: 2.7M
    # spec.bias only concerns the final linear layer
    assert parameter_count(build(spec_for("wrn", 4, 16, True, bias=False))) == 2_748_880


@pytest.mark.parametrize("arch,width,depth,bn", CONFIGS)
def test_seeding(arch, width, depth, bn):
    spec = spec_for(arch, width, depth, bn, (1, 8, 8))
    a, b, c = build(spec, 5), build(spec, 5), build(spec, 6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)
    assert not all(torch.equal(sa[key], sc[key]) for key in sa)


def test_initialisation_is_he_normal_for_convolutions_in_module_order():
    model = build(spec_for("alexnet_small", shape=(1, 8, 8)), seed=3)
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.empty(64, 1, 5, 5), torch.empty(64, 64, 5, 5)
    nn.init.kaiming_normal_(w1, nonlinearity="relu", generator=g)
    nn.init.kaiming_normal_(w2, nonlinearity="relu", generator=g)
    first, second = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert torch.equal(first.weight, w1) and torch.equal(first.bias, torch.zeros(64))
    assert torch.equal(second.weight, w2)
    # The linear layers after them: PyTorch's default, from the same stream.
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    w = torch.empty_like(linear.weight)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
    bound = 1 / math.sqrt(linear.in_features)
    b = torch.empty(linear.out_features).uniform_(-bound, bound, generator=g)
    assert torch.equal(linear.weight, w) and torch.equal(linear.bias, b)
    # He-normal: the weights' variance is 2 / fan_in.
    assert second.weight.var().item() == pytest.approx(2 / (64 * 25), rel=0.05)
    wrn = build(spec_for("wrn", 1, 10, True))
    for m in wrn.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_bias_flag():
    model = build(spec_for("alexnet_small", bias=False))
    assert all(m.bias is None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    inc = build(spec_for("inception_small", batch_norm=False, bias=True))
    assert all(m.bias is not None for m in inc.modules() if isinstance(m, nn.Conv2d))


def test_activation_is_used_everywhere():
    model = build(spec_for("inception_small", batch_norm=True, activation="hard_tanh"))
    kinds = {type(m) for m in model.modules()}
    assert nn.Hardtanh in kinds and nn.ReLU not in kinds


# --- the centre crop -----------------------------------------------------------------


@pytest.mark.parametrize("arch,width,depth,bn", CONFIGS[:2] + CONFIGS[3:])
def test_centre_crop(arch, width, depth, bn):
    model = settle_batch_norm(build(spec_for(arch, width, depth, bn)), (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        crop = model(x[:, :, 2:30, 2:30].contiguous())
        off = model(x[:, :, 0:28, 0:28].contiguous())
    torch.testing.assert_close(full, crop, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(full, off)


# --- fitting a tiny batch ------------------------------------------------------------


# inception without batch norm fits too, but needs ~250 steps: left out for speed
FIT_CONFIGS = [c for c in CONFIGS if c[0] != "inception_small" or c[3]]


@pytest.mark.parametrize("arch,width,depth,bn", FIT_CONFIGS)
def test_fits_random_labels(arch, width, depth, bn):
    shape = (1, 8, 8)
    model = build(spec_for(arch, width, depth, bn, shape))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, *shape, generator=g), torch.randint(0, 10, (16,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    acc = 0.0
    for step in range(300):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            if acc == 1.0:
                break
    assert acc == 1.0


# --- activation codes ----------------------------------------------------------------


def settled(arch, width, depth, bn, shape, activation="relu", dtype=torch.float32):
    model = build(spec_for(arch, width, depth, bn, shape, activation=activation)).to(dtype)
    return settle_batch_norm(model, shape)


@pytest.mark.parametrize("arch,width,depth,bn", CONFIGS)
def test_codes_batch_independent_and_from_the_forward_pass(arch, width, depth, bn):
    # float64 and seeded: in float32 a batch of 5 and batches of 1 take different
    # convolution kernels, whose rounding (~1e-7) flips a unit that happens to sit that
    # close to its breakpoint: 1 of 40 seeded float32 draws of this inception did so.
    shape = (1, 12, 12)
    model = settled(arch, width, depth, bn, shape, dtype=torch.float64)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(11),
                    dtype=torch.float64)
    codes = model.activation_codes(x)
    assert codes.dtype == torch.int16 and codes.ndim == 2 and codes.shape[0] == 5
    assert model.activation_codes(x[:2]).shape == (2, codes.shape[1])
    one_by_one = torch.cat([model.activation_codes(x[i : i + 1]) for i in range(5)])
    assert torch.equal(codes, one_by_one)
    with torch.no_grad():
        logits, same_pass = model.forward_with_codes(x)
        assert torch.equal(logits, model(x))
    assert torch.equal(same_pass, codes)
    assert codes.min() >= 0 and codes.max() <= 8
    assert not model.training  # activation_codes restores the mode
    model.train()
    model.activation_codes(x)
    assert model.training


def test_code_length_counts_every_unit():
    shape = (1, 8, 8)
    model = settled("alexnet_small", 0, 0, False, shape)
    # act 64*8*8, pool 64*4*4, act 64*4*4, pool 64*2*2, act 384, act 192
    expected = 64 * 64 + 64 * 16 + 64 * 16 + 64 * 4 + 384 + 192
    assert model.activation_codes(torch.randn(2, *shape)).shape == (2, expected)
    wrn = settled("wrn", 1, 10, True, shape)
    # block activations: 2 per block (16@8x8 16@8x8 | 16@8x8 32@4x4 | 32@4x4 64@2x2) + final
    expected = 16 * 64 * 3 + 32 * 16 * 2 + 64 * 4 * 2
    assert wrn.activation_codes(torch.randn(2, *shape)).shape == (2, expected)


def test_pool_codes_are_argmax_within_window():
    shape = (1, 8, 8)
    model = settled("alexnet_small", 0, 0, False, shape)
    x = torch.randn(1, *shape)
    codes = model.activation_codes(x)
    with torch.no_grad():
        a = model.features[1](model.features[0](x))  # activated first conv, (1, 64, 8, 8)
    pool_codes = codes[0, 64 * 64 : 64 * 64 + 64 * 16].view(64, 4, 4).long()
    padded = F.pad(a[0], (1, 1, 1, 1), value=-math.inf)
    for c, i, j in [(0, 0, 0), (3, 1, 2), (10, 3, 3), (63, 2, 0)]:
        window = padded[c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].reshape(-1)
        assert window[pool_codes[c, i, j]] == window.max()


@pytest.mark.parametrize("activation", ["relu", "hard_tanh"])
@pytest.mark.parametrize("arch,width,depth,bn", CONFIGS[:2] + CONFIGS[3:])
def test_codes_change_only_where_a_breakpoint_is_crossed(arch, width, depth, bn, activation):
    shape = (1, 12, 12)
    model = settled(arch, width, depth, bn, shape, activation, torch.float64)
    x = torch.randn(1, *shape, dtype=torch.float64)
    codes = model.activation_codes(x)
    d = torch.randn_like(x)
    near = model.activation_codes(x + 1e-7 * d / d.norm())
    assert (near == codes).double().mean() > 0.999

    # the first activation layer's pre-activation is affine in x (conv, eval-mode BN)
    first = next(m for m in model.modules() if type(m) is ACTIVATIONS[activation])
    grabbed = []
    handle = first.register_forward_hook(lambda m, i, o: grabbed.append(i[0]))
    xg = x.clone().requires_grad_(True)
    model(xg)
    handle.remove()
    pre = grabbed[0].flatten(1)
    u = pre.shape[1] // 3
    z = pre[0, u]
    (g,) = torch.autograd.grad(z, xg)
    bps = torch.tensor(BREAKPOINTS[activation], dtype=torch.float64)
    b = bps[(bps - z.detach()).abs().argmin()]
    target = b - torch.sign(z.detach() - b) * 1e-3  # just across the nearest breakpoint
    x2 = x + (target - z.detach()) * g / g.pow(2).sum()
    codes2 = model.activation_codes(x2)
    assert codes2[0, u] != codes[0, u]
    assert abs(int(codes2[0, u]) - int(codes[0, u])) == 1


@pytest.mark.parametrize("arch,width,depth,bn", [CONFIGS[1], CONFIGS[3]])
def test_locally_linear_where_codes_are_constant(arch, width, depth, bn):
    shape = (1, 12, 12)
    model = settled(arch, width, depth, bn, shape, "relu", torch.float64)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    d = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    d = d / d.norm()
    h = 1e-3
    while not torch.equal(model.activation_codes(x), model.activation_codes(x + 2 * h * d)):
        h /= 4
        assert h > 1e-12
    assert torch.equal(model.activation_codes(x), model.activation_codes(x + h * d))
    with torch.no_grad():
        f0, f1, f2 = (model(x + t * h * d) for t in (0, 1, 2))
    first = (f2 - f0).abs().max()
    second = (f0 - 2 * f1 + f2).abs().max()
    assert first > 0
    assert second <= 1e-6 * first + 1e-14


def test_tanh_has_no_codes():
    model = build(spec_for("inception_small", batch_norm=True, activation="tanh", shape=(1, 8, 8)))
    with pytest.raises(ValueError, match="breakpoints"):
        model.activation_codes(torch.randn(1, 1, 8, 8))
    # the network itself still runs
    assert model.eval()(torch.randn(1, 1, 8, 8)).shape == (1, 10)


# --- input_problem -------------------------------------------------------------------


def test_input_problem():
    for arch, w, d in [("alexnet_small", 0, 0), ("inception_small", 0, 0), ("wrn", 4, 16)]:
        for shape in SHAPES:
            assert input_problem(arch, shape, w, d) is None
        message = input_problem(arch, (1, 4, 4), w, d)
        assert isinstance(message, str) and "8" in message and "\n" not in message
    for depth in (12, 4, 0):
        message = input_problem("wrn", (3, 32, 32), 4, depth)
        assert message is not None and "6n + 4" in message
    assert "width" in input_problem("wrn", (3, 32, 32), 0, 16)
    assert input_problem("resnet", (3, 32, 32), 0, 0) is not None
    with pytest.raises(ValueError, match="6n"):
        WideResNet(spec_for("wrn", 4, 12, True))
    with pytest.raises(ValueError):
        AlexNetSmall(spec_for("alexnet_small", shape=(1, 4, 4)))
    with pytest.raises(ValueError):
        InceptionSmall(spec_for("inception_small", shape=(1, 4, 4)))


def test_registry():
    assert CNN_ARCHITECTURES == {
        "alexnet_small": AlexNetSmall, "inception_small": InceptionSmall, "wrn": WideResNet,
    }
