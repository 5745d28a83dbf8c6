"""Networks (docs/science.md §3) and the training loop, on tiny digits subsets."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workflow_src.data.corrupt import make_corrupted
from workflow_src.nets.models import (
    ACTIVATIONS,
    BREAKPOINTS,
    MLP,
    ModelSpec,
    build_model,
    load_model,
    save_model,
)
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.augmentation import MAX_SHIFT, augment
from workflow_src.training.train import (
    EVAL_CHUNK,
    OPTIMIZERS,
    TrainResult,
    evaluate,
    make_optimizer,
    train,
)

CPU = torch.device("cpu")
# Independent definitions of PyTorch's activations (docs/science.md §3).
REFERENCE_ACTIVATION = {
    "relu": lambda z: z.clamp(min=0),
    "relu6": lambda z: z.clamp(0, 6),
    "hard_tanh": lambda z: z.clamp(-1, 1),
    "hard_sigmoid": lambda z: (z / 6 + 0.5).clamp(0, 1),
    "tanh": torch.tanh,
}


def data_spec(label_noise=0.0, n_train=100):
    return DataSpec(dataset="digits", n_train=n_train, n_test=50, corruption="none",
                    label_noise=label_noise, seed=0, corrupt_test_inputs=True,
                    corrupt_test_labels=False)


def run_spec(data, **overrides):
    values = dict(data=data, width=64, depth=1, activation="relu", bias=True, optimizer="adam",
                  learning_rate=1e-2, batch_size=100, augment=False, seed=0,
                  target_train_acc=1.0, max_steps=1000, eval_every=10)
    values.update(overrides)
    return RunSpec(**values)


def accuracy(model, x, y):
    with torch.no_grad():
        pred = model(torch.as_tensor(x)).argmax(1).numpy()
    return float(np.mean(pred == y))


# --- models ----------------------------------------------------------------------------

@pytest.mark.parametrize("activation,depth,bias",
                         list(itertools.product(sorted(ACTIVATIONS), [1, 2, 3], [True, False])))
def test_mlp_shapes_and_forward_match_a_manual_computation(activation, depth, bias):
    spec = ModelSpec((1, 3, 4), 5, width=7, depth=depth, activation=activation, bias=bias)
    model = build_model(spec, seed=0).double()
    assert len(model.hidden) == depth
    assert all((layer.bias is None) != bias for layer in [*model.hidden, model.readout])
    x = torch.randn(6, 1, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = model(x)
    assert out.shape == (6, 5)
    assert model(x.reshape(6, 12)).shape == (6, 5)
    h, act = x.reshape(6, 12), REFERENCE_ACTIVATION[activation]
    pre_expected = []
    for layer in model.hidden:
        z = h @ layer.weight.T + (layer.bias if bias else 0)
        pre_expected.append(z)
        h = act(z)
    expected = h @ model.readout.weight.T + (model.readout.bias if bias else 0)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    pre = model.preactivations(x)
    assert [p.shape for p in pre] == [(6, 7)] * depth
    for got, want in zip(pre, pre_expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError):
        ModelSpec((4,), 2, 3, 1, "gelu")


def test_build_model_same_seed_same_weights_different_seed_different():
    spec = ModelSpec((1, 8, 8), 10, width=16, depth=2, activation="relu")
    a, b, c = build_model(spec, 3), build_model(spec, 3), build_model(spec, 4)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(),
                                  c.state_dict().values()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


def test_build_model_ignores_the_global_rng():
    spec = ModelSpec((4,), 3, width=5, depth=2, activation="tanh")
    torch.manual_seed(0)
    a = build_model(spec, 7)
    torch.manual_seed(1)
    b = build_model(spec, 7)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_default_init_bounds():
    """PyTorch's Linear init: weights and biases uniform in ±1/sqrt(fan_in)."""
    spec = ModelSpec((1, 8, 8), 10, width=300, depth=1, activation="relu")
    layer = build_model(spec, 0).hidden[0]
    bound = 1 / 8.0
    for p in (layer.weight, layer.bias):
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.95 * bound
        assert abs(p.mean().item()) < 5 * bound / np.sqrt(3 * p.numel())  # centred: 5 σ


@pytest.mark.parametrize("bias", [True, False])
def test_save_load_round_trip_gives_identical_logits(tmp_path, bias):
    spec = ModelSpec((1, 8, 8), 10, width=16, depth=2, activation="hard_tanh", bias=bias)
    model = build_model(spec, 5)
    path = tmp_path / "model.pt"
    save_model(model, path)
    torch.load(path, weights_only=True)  # loadable without unpickling code
    loaded = load_model(path)
    assert isinstance(loaded, MLP) and loaded.spec == spec
    x = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_breakpoints_are_exactly_where_the_slope_changes(activation):
    """Finite-difference slopes of the torch activation on a fine grid over [-10, 10]:
    every change of slope lies next to a listed breakpoint and every breakpoint changes it;
    between breakpoints the function is affine (constant slope)."""
    assert set(BREAKPOINTS) == set(ACTIVATIONS)
    act = ACTIVATIONS[activation]()
    breakpoints = BREAKPOINTS[activation]
    if activation == "tanh":
        assert breakpoints == ()
        z = torch.linspace(-3, 3, 601, dtype=torch.float64)
        second = act(z[2:]) - 2 * act(z[1:-1]) + act(z[:-2])
        assert (second.abs() > 1e-9).float().mean() > 0.95  # curved almost everywhere
        return
    h = 1e-3
    # Grid offset by an irrational amount so no grid point sits on a breakpoint.
    z = torch.arange(-10.0, 10.0, h, dtype=torch.float64) + h / np.sqrt(2)
    slope = (act(z[1:]) - act(z[:-1])) / h  # slope on [z_i, z_{i+1}]
    jumps = torch.nonzero((slope[1:] - slope[:-1]).abs() > 1e-6).flatten()
    for i in jumps.tolist():
        near = [b for b in breakpoints if z[i] - 1e-12 <= b <= z[i + 2] + 1e-12]
        assert near, f"slope changes near {z[i + 1].item():.4f}, not a breakpoint"
    for b in breakpoints:
        left = (act(torch.tensor(b - 0.5, dtype=torch.float64))
                - act(torch.tensor(b - 0.5 - h, dtype=torch.float64))) / h
        right = (act(torch.tensor(b + 0.5 + h, dtype=torch.float64))
                 - act(torch.tensor(b + 0.5, dtype=torch.float64))) / h
        assert abs(left - right) > 0.1, f"no slope change at {b}"
        assert any(z[i] <= b <= z[i + 2] for i in jumps.tolist())
    # Affine between consecutive breakpoints (and beyond the outer ones): a line through
    # two interior points reproduces every other interior point.
    edges = [-10.0, *breakpoints, 10.0]
    for lo, hi in zip(edges[:-1], edges[1:]):
        t = torch.linspace(lo + 0.01, hi - 0.01, 50, dtype=torch.float64)
        f = act(t)
        line = f[0] + (f[-1] - f[0]) * (t - t[0]) / (t[-1] - t[0])
        torch.testing.assert_close(f, line, rtol=0, atol=1e-12)


# --- training --------------------------------------------------------------------------

def test_tiny_network_fits_its_training_set(digits):
    data = make_corrupted(digits, data_spec())
    run = run_spec(data_spec())
    model, result = train(run, data, CPU, log=lambda _: None)
    assert result.status == "converged"
    assert result.train_acc == 1.0
    assert result.steps < run.max_steps and result.steps % run.eval_every == 0
    assert accuracy(model, data["x_train"].values, data["y_train"].values) == 1.0
    assert result.test_acc == pytest.approx(
        accuracy(model, data["x_test"].values, data["y_test_clean"].values))
    assert result.gap == pytest.approx(result.train_acc - result.test_acc)


def test_training_starts_from_build_model_with_the_run_seed(digits):
    """measure_ellipses rebuilds a network's initial weights as build_model(spec, run seed):
    with a zero learning rate, training must leave exactly those weights."""
    data = make_corrupted(digits, data_spec())
    run = run_spec(data_spec(), learning_rate=0.0, max_steps=3, seed=7)
    model, _ = train(run, data, CPU, log=lambda _: None)
    initial = build_model(model.spec, seed=run.seed)
    for name, value in initial.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)


def test_learning_curve_steps_increase_and_end_at_the_result(digits):
    data = make_corrupted(digits, data_spec())
    run = run_spec(data_spec(), max_steps=37, eval_every=5, learning_rate=1e-3,
                   optimizer="sgd", batch_size=16)
    model, result = train(run, data, CPU, log=lambda _: None)
    steps = [point["step"] for point in result.curve]
    assert steps == [0] + list(range(5, 36, 5)) + [37]  # step 0: the initial network
    initial = build_model(model.spec, seed=run.seed)
    with torch.no_grad():
        initial_loss = F.cross_entropy(initial(torch.as_tensor(data["x_train"].values)),
                                       torch.as_tensor(data["y_train"].values)).item()
    assert result.curve[0]["train_loss"] == pytest.approx(initial_loss, rel=1e-5)
    assert result.steps == 37
    last = result.curve[-1]
    assert last["train_acc"] == result.train_acc and last["test_acc"] == result.test_acc
    assert result.train_acc == pytest.approx(
        accuracy(model, data["x_train"].values, data["y_train"].values))
    with torch.no_grad():
        loss = F.cross_entropy(model(torch.as_tensor(data["x_train"].values)),
                               torch.as_tensor(data["y_train"].values)).item()
    assert result.train_loss == pytest.approx(loss, rel=1e-5)


def test_huge_learning_rate_ends_diverged_without_raising(digits):
    data = make_corrupted(digits, data_spec())
    run = run_spec(data_spec(), optimizer="sgd", learning_rate=1e6, max_steps=200)
    messages = []
    _, result = train(run, data, CPU, log=messages.append)
    assert result.status == "diverged"
    assert result.steps < run.max_steps
    assert messages


def test_small_step_budget_ends_unconverged(digits):
    data = make_corrupted(digits, data_spec())
    run = run_spec(data_spec(), optimizer="sgd", learning_rate=1e-3, max_steps=3, eval_every=10)
    model, result = train(run, data, CPU, log=lambda _: None)
    assert result.status == "unconverged"
    assert result.steps == 3
    assert result.train_acc < 1.0
    assert [point["step"] for point in result.curve] == [0, 3]


def test_label_noise_training_reports_accuracy_on_the_noisy_labels(digits):
    spec = data_spec(label_noise=1.0)
    data = make_corrupted(digits, spec)
    y_noisy, y_clean = data["y_train"].values, data["y_train_clean"].values
    assert np.mean(y_noisy != y_clean) > 0.5
    model, result = train(run_spec(spec, width=128, max_steps=2000), data, CPU,
                          log=lambda _: None)
    assert result.status == "converged" and result.train_acc == 1.0
    x = data["x_train"].values
    assert accuracy(model, x, y_noisy) == 1.0
    assert accuracy(model, x, y_clean) < 0.5  # memorised the random labels, not the digits
    assert result.test_acc == pytest.approx(
        accuracy(model, data["x_test"].values, data["y_test_clean"].values))


def test_training_is_reproducible_for_a_seed(digits):
    data = make_corrupted(digits, data_spec())
    run = run_spec(data_spec(), max_steps=20, eval_every=10, batch_size=16, augment=True)
    m1, r1 = train(run, data, CPU, log=lambda _: None)
    m2, r2 = train(run, data, CPU, log=lambda _: None)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert r1.train_acc == r2.train_acc and r1.steps == r2.steps


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_takes_a_descent_step(name):
    spec = ModelSpec((6,), 3, width=8, depth=1, activation="tanh")
    model = build_model(spec, 0)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 3
    optimizer = make_optimizer(name, model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss0 = F.cross_entropy(model(x), y)

    def closure():  # L-BFGS evaluates the loss itself; the others step on one gradient
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    if name == "lbfgs":
        optimizer.step(closure)
    else:
        closure()
        optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < loss0


def test_unknown_optimizer_is_refused():
    model = build_model(ModelSpec((2,), 2, 2, 1, "relu"), 0)
    with pytest.raises(ValueError):
        make_optimizer("lbfgs-typo", model.parameters(), 0.1)


# --- exact accuracies, evaluation in chunks, full-batch gd -------------------------------

def result_with_counts(train_correct, n_train, test_correct, n_test):
    return TrainResult("converged", 10, train_correct, n_train, test_correct, n_test,
                       train_loss=0.1, seconds=1.0)


def test_equal_count_differences_give_bit_equal_gaps():
    """24 of 100 points apart, whatever the accuracies: one float, 0.24 (the double nearest
    24/100). Subtracting the rounded accuracies gives 0.2400000000000001 for 80 - 56."""
    pairs = [(100, 76), (90, 66), (80, 56), (56, 32), (24, 0), (70, 46)]
    gaps = {result_with_counts(c_train, 100, c_test, 100).gap for c_train, c_test in pairs}
    assert gaps == {0.24}
    assert len({c_train / 100 - c_test / 100 for c_train, c_test in pairs}) > 1  # the old way
    # Different split sizes, same fraction: 148/200 - 50/100 = 24/100.
    assert result_with_counts(148, 200, 50, 100).gap == 0.24
    negative = result_with_counts(3, 4, 7, 8)  # 6/8 - 7/8
    assert negative.gap == -0.125 and negative.train_acc == 0.75 and negative.test_acc == 0.875


def test_training_records_the_counts_behind_its_accuracies(digits):
    data = make_corrupted(digits, data_spec())
    model, result = train(run_spec(data_spec(), max_steps=30), data, CPU, log=lambda _: None)
    with torch.no_grad():
        train_pred = model(torch.as_tensor(data["x_train"].values)).argmax(1).numpy()
        test_pred = model(torch.as_tensor(data["x_test"].values)).argmax(1).numpy()
    assert (result.n_train, result.n_test) == (100, 50)
    assert result.train_correct == int(np.sum(train_pred == data["y_train"].values))
    assert result.test_correct == int(np.sum(test_pred == data["y_test"].values))
    assert result.train_acc == result.train_correct / 100
    assert result.gap == float(Fraction(result.train_correct, 100)
                               - Fraction(result.test_correct, 50))


@pytest.mark.parametrize("n_points", [EVAL_CHUNK - 1, EVAL_CHUNK, EVAL_CHUNK + 1,
                                      2 * EVAL_CHUNK + 8])
def test_evaluate_across_its_chunk_boundary_equals_one_float64_pass(n_points):
    """Against logits of all points in one pass and a log-softmax written out; every point
    counts once, so a chunk loop that skips or repeats one point moves the loss by ~1/N."""
    spec = ModelSpec((5,), 3, width=6, depth=1, activation="tanh")
    model = build_model(spec, 0).double()
    gen = torch.Generator().manual_seed(n_points)
    x = 3 * torch.randn(n_points, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n_points,), generator=gen)
    with torch.no_grad():
        logits = model(x)
    log_softmax = logits - logits.exp().sum(1, keepdim=True).log()
    expected_loss = -log_softmax[torch.arange(n_points), y].sum().item() / n_points
    expected_correct = int((logits.argmax(1) == y).sum())
    loss, correct = evaluate(model, x, y)
    assert correct == expected_correct and 0 < correct < n_points
    assert loss == pytest.approx(expected_loss, rel=1e-12, abs=0)


def float64_digits(digits, spec):
    data = make_corrupted(digits, spec)
    return data.assign(x_train=data["x_train"].astype("float64"),
                       x_test=data["x_test"].astype("float64"))


def test_full_batch_gd_is_gradient_descent_on_the_whole_training_set(digits):
    """Five steps of train() with gd against a loop written out in float64: forward pass as
    matrix products, the mean cross-entropy over all 100 points, w <- w - lr * grad."""
    data = float64_digits(digits, data_spec())
    run = run_spec(data_spec(), optimizer="gd", learning_rate=0.5, batch_size=100,
                   max_steps=5, eval_every=100, width=16, depth=2)
    model, result = train(run, data, CPU, log=lambda _: None)
    assert result.steps == 5
    params = [p.detach().clone().double().requires_grad_()
              for p in build_model(model.spec, seed=run.seed).parameters()]
    x = torch.as_tensor(data["x_train"].values).reshape(100, -1)
    y = torch.as_tensor(data["y_train"].values)
    for _ in range(5):
        h = x
        for w, b in zip(params[0:-2:2], params[1:-2:2]):
            h = (h @ w.T + b).clamp(min=0)
        logits = h @ params[-2].T + params[-1]
        log_softmax = logits - logits.exp().sum(1, keepdim=True).log()
        loss = -log_softmax[torch.arange(100), y].mean()
        grads = torch.autograd.grad(loss, params)
        params = [(p - 0.5 * g).detach().requires_grad_() for p, g in zip(params, grads)]
    for got, want in zip(model.parameters(), params):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-12, atol=1e-12)


def test_full_batch_gd_sums_in_the_same_order_every_step(digits):
    """Bit for bit the same as torch's own ops on the points in their stored order: a
    reshuffle between steps would change the order of the gradient sums and the bits."""
    data = float64_digits(digits, data_spec())
    run = run_spec(data_spec(), optimizer="gd", learning_rate=0.5, batch_size=100,
                   max_steps=6, eval_every=100, width=16)
    model, _ = train(run, data, CPU, log=lambda _: None)
    reference = build_model(model.spec, seed=run.seed).double()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    x, y = torch.as_tensor(data["x_train"].values), torch.as_tensor(data["y_train"].values)
    for _ in range(6):
        optimizer.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        optimizer.step()
    for got, want in zip(model.parameters(), reference.parameters()):
        assert torch.equal(got, want)


# --- augmentation ----------------------------------------------------------------------

def reference_shift(x, dy, dx, flip):
    """out[r, c] = x[r + dy, c + dx] (zero outside), then mirrored left-right if flip.
    x: (C, H, W) numpy."""
    _, h, w = x.shape
    out = np.zeros_like(x)
    rs, cs = np.arange(h), np.arange(w)
    r_ok, c_ok = (rs + dy >= 0) & (rs + dy < h), (cs + dx >= 0) & (cs + dx < w)
    out[:, rs[r_ok][:, None], cs[c_ok][None, :]] = x[:, (rs + dy)[r_ok][:, None],
                                                     (cs + dx)[c_ok][None, :]]
    return out[:, :, ::-1] if flip else out


def test_augment_is_a_shift_of_at_most_four_pixels_or_its_mirror():
    b, c, h, w = 300, 2, 6, 10  # non-square to catch a height/width mix-up
    x = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = range(-MAX_SHIFT, MAX_SHIFT + 1)
    candidates = list(itertools.product(shifts, shifts, [False, True]))
    seen = set()
    for xi, oi in zip(x.numpy(), out.numpy()):
        found = [cand for cand in candidates if np.array_equal(oi, reference_shift(xi, *cand))]
        assert found, "output is not a translation by <= 4 px (with optional flip)"
        seen.update(found)
    assert MAX_SHIFT == 4
    # Every vertical shift, every horizontal shift and both flip states occur.
    assert {cand[0] for cand in seen} == set(shifts) and {cand[1] for cand in seen} == set(shifts)
    assert {cand[2] for cand in seen} == {False, True}


def test_augment_moves_a_bright_pixel_by_at_most_four():
    h = w = 12
    b = 400
    x = torch.zeros(b, 1, h, w)
    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, h, b), rng.integers(0, w, b)
    x[np.arange(b), 0, rows, cols] = 1.0
    out = augment(x, torch.Generator().manual_seed(3)).numpy()
    n_off, n_flipped = 0, 0
    for i in range(b):
        hits = np.argwhere(out[i, 0] != 0)
        if len(hits) == 0:
            n_off += 1
            continue
        assert len(hits) == 1 and out[i, 0][tuple(hits[0])] == 1.0
        r, col = hits[0]
        assert abs(r - rows[i]) <= 4
        direct, mirrored = abs(col - cols[i]) <= 4, abs((w - 1 - col) - cols[i]) <= 4
        assert direct or mirrored
        n_flipped += mirrored and not direct
    assert n_off < b // 2 and n_flipped > 0


def test_augment_is_deterministic_for_a_seeded_generator():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    c = augment(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
