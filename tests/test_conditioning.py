"""Conditioning of the training loss (workflow_src/metrics/conditioning.py): the full tangent
kernel against one autograd backward per (point, class), the gradient against autograd of
the loss and against rᵀKr/n², the PL bound ½‖∇L‖²/L ≥ λ_min(K)/n with equality when r is
K's eigenvector for λ_min, cross-entropy at near-certain points against exact decimal
arithmetic; all in float64 on small random networks."""

from __future__ import annotations

import copy
import decimal
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from workflow_helpers import TINY_CONFIG

from workflow_src import registry
from workflow_src.config import ConfigError, validate_config
from workflow_src.jobs.measure_shard import MemberJob, measure_member
from workflow_src.metrics.conditioning import conditioning, loss_and_residual, tangent_kernel
from workflow_src.nets.models import float64_copy
from workflow_src.nets.models import ModelSpec, build_model

N_CLASSES = 3


def network(width=6, depth=2, activation="tanh", seed=0):
    spec = ModelSpec((1, 4, 4), N_CLASSES, width=width, depth=depth, activation=activation)
    return build_model(spec, seed).eval()


def data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    return x, torch.randint(0, N_CLASSES, (n,), generator=g)


def reference_jacobian(model, x) -> np.ndarray:
    """(nK, P), row i·K + k = ∂f_k(x_i)/∂w, one backward per point and class."""
    model64 = float64_copy(model)
    params = list(model64.parameters())
    rows = []
    for xi in x.double():
        logits = model64(xi[None])[0]
        for k in range(logits.shape[0]):
            grads = torch.autograd.grad(logits[k], params, retain_graph=True)
            rows.append(torch.cat([g.flatten() for g in grads]).numpy())
    return np.stack(rows)


def squared_gradient(model, x, targets) -> float:
    """‖∇L‖² of L = (1/n) Σ_i ½‖f_i − y_i‖², by autograd of the loss itself."""
    model64 = float64_copy(model)
    loss = 0.5 * ((model64(x.double()) - targets) ** 2).sum() / x.shape[0]
    grads = torch.autograd.grad(loss, list(model64.parameters()))
    return float(sum((g ** 2).sum() for g in grads)), loss.item()


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_the_kernel_equals_the_per_output_autograd_loop(activation, chunk_size):
    model = network(activation=activation)
    x, _ = data(9)
    jac = reference_jacobian(model, x)
    got = tangent_kernel(float64_copy(model), x, chunk_size)
    np.testing.assert_allclose(got, jac @ jac.T, rtol=1e-6, atol=1e-12 * np.abs(got).max())
    # recomputing the chunks instead of keeping them gives the same kernel
    np.testing.assert_allclose(tangent_kernel(float64_copy(model), x, chunk_size, 0), got,
                               rtol=1e-12)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_the_gradient_is_the_kernel_quadratic_form_and_autograd_of_the_loss(loss):
    model = network()
    x, y = data(12)
    out = conditioning(model, network(seed=1), x, y, loss=loss)
    jac = reference_jacobian(model, x)
    with torch.no_grad():
        logits = float64_copy(model)(x)
    onehot = F.one_hot(y, N_CLASSES).double()
    if loss == "squared":
        grad_sq, value = squared_gradient(model, x, onehot)
        residual = (logits - onehot).numpy().reshape(-1)
    else:
        model64 = float64_copy(model)
        ce = F.cross_entropy(model64(x), y)
        grads = torch.autograd.grad(ce, list(model64.parameters()))
        grad_sq, value = float(sum((g ** 2).sum() for g in grads)), ce.item()
        residual = (torch.softmax(logits, 1) - onehot).numpy().reshape(-1)
    quadratic = residual @ (jac @ jac.T) @ residual / x.shape[0] ** 2
    assert out["grad_norm_sq"] == pytest.approx(quadratic, rel=1e-10)
    assert out["grad_norm_sq"] == pytest.approx(grad_sq, rel=1e-10)
    assert out["loss"] == pytest.approx(value, rel=1e-12)
    assert out["pl_ratio"] == pytest.approx(0.5 * grad_sq / value, rel=1e-10)
    eigenvalues = np.linalg.eigvalsh(jac @ jac.T)
    assert out["lambda_min"] == pytest.approx(eigenvalues[0], rel=1e-6)
    assert out["lambda_max"] == pytest.approx(eigenvalues[-1], rel=1e-6)
    assert out["trace"] == pytest.approx((jac ** 2).sum(), rel=1e-10)
    assert out["condition_number"] == pytest.approx(eigenvalues[-1] / eigenvalues[0], rel=1e-6)
    assert out["kernel_bound_ratio"] >= 1 - 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_the_pl_inequality_holds_for_the_squared_loss(seed):
    model = network(width=[8, 32][seed % 2], seed=seed, activation=["tanh", "relu"][seed % 2])
    x, y = data(10, seed)
    with torch.no_grad():  # targets near and far from the logits
        model.readout.weight.mul_(1 + 3 * seed)
    out = conditioning(model, network(width=[8, 32][seed % 2], seed=seed + 10), x, y,
                       loss="squared")
    assert out["lambda_min"] > 0 and np.isfinite(out["condition_number"])
    assert out["pl_ratio"] >= out["lambda_min"] / x.shape[0] * (1 - 1e-10)
    assert out["pl_bound_ratio"] >= 1 - 1e-10
    assert out["pl_bound_ratio"] == pytest.approx(out["kernel_bound_ratio"], rel=1e-12)


def test_equality_when_the_residual_is_the_smallest_eigenvector():
    """y = f − v_min: r = v_min, so ½‖∇L‖²/L = (λ_min/n²)/(1/(2n))·½ = λ_min/n exactly."""
    model = network(width=8)
    x, _ = data(10)
    jac = reference_jacobian(model, x)
    eigenvalues, vectors = np.linalg.eigh(jac @ jac.T)
    with torch.no_grad():
        logits = float64_copy(model)(x)
    targets = logits - torch.from_numpy(vectors[:, 0].reshape(logits.shape))
    out = conditioning(model, model, x, targets, loss="squared")
    assert out["pl_ratio"] == pytest.approx(eigenvalues[0] / x.shape[0], rel=1e-6)
    assert out["pl_bound_ratio"] == pytest.approx(1.0, rel=1e-6)
    # the largest eigenvector gives the other end, λ_max / n
    targets = logits - torch.from_numpy(vectors[:, -1].reshape(logits.shape))
    out = conditioning(model, model, x, targets, loss="squared")
    assert out["pl_ratio"] == pytest.approx(eigenvalues[-1] / x.shape[0], rel=1e-10)


def test_no_change_at_initialisation_and_the_model_is_left_as_it_is():
    model = network()
    before = copy.deepcopy(model.state_dict())
    x, y = data(7)
    out = conditioning(model, copy.deepcopy(model), x, y, loss="squared")
    assert out["kernel_change"] == 0.0
    for name in ("pl_ratio", "lambda_min", "condition_number", "trace"):
        assert out[f"{name}_init"] == out[name]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype
    moved = conditioning(network(seed=1), model, x, y)["kernel_change"]
    assert moved > 0.01


def test_a_singular_kernel_has_infinite_condition_and_no_bound_ratio():
    """P < nK (a width-1 network: 23 parameters, 30 kernel rows): K singular."""
    model = network(width=1, depth=1)
    x, y = data(10)
    out = conditioning(model, model, x, y, loss="squared")
    assert out["condition_number"] == np.inf
    assert np.isnan(out["pl_bound_ratio"]) and np.isnan(out["kernel_bound_ratio"])
    assert abs(out["lambda_min"]) < 1e-10 * out["lambda_max"]
    assert out["pl_ratio"] >= out["lambda_min"] / x.shape[0]


def exact_cross_entropy(logits: np.ndarray, labels) -> tuple[float, np.ndarray]:
    """Mean loss and residual softmax − onehot with 60 decimal digits."""
    decimal.getcontext().prec = 60
    losses, residual = [], np.zeros_like(logits)
    for i, (row, label) in enumerate(zip(logits, labels)):
        exps = [decimal.Decimal(float(v)).exp() for v in row]
        total = sum(exps)
        losses.append(total.ln() - decimal.Decimal(float(row[label])))
        for k, e in enumerate(exps):
            residual[i, k] = float(e / total - (1 if k == label else 0))
    return float(sum(losses) / len(losses)), residual


@pytest.mark.parametrize("scale", [1.0, 30.0, 300.0])
def test_cross_entropy_at_near_certain_points_against_exact_arithmetic(scale):
    """With large last-layer weights the points are fitted with margins of ~10-1000 logits:
    F.cross_entropy rounds most losses to 0; L, ∇L and the PL ratio here stay accurate."""
    model = network(width=8)
    x, _ = data(10)
    with torch.no_grad():
        model.readout.weight.mul_(scale)
        y = float64_copy(model)(x).argmax(1)  # every point fitted
        logits = float64_copy(model)(x)
    value, residual = exact_cross_entropy(logits.numpy(), y.numpy())
    jac = reference_jacobian(model, x)
    grad = jac.T @ residual.reshape(-1) / x.shape[0]
    out = conditioning(model, network(width=8, seed=1), x, y)
    assert out["loss"] > 0
    assert out["loss"] == pytest.approx(value, rel=1e-10)
    assert out["grad_norm_sq"] == pytest.approx(grad @ grad, rel=1e-8)
    assert out["pl_ratio"] == pytest.approx(0.5 * (grad @ grad) / value, rel=1e-8)
    assert out["kernel_bound_ratio"] >= 1 - 1e-9


def test_bad_input_is_named():
    model = network()
    x, y = data(4)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        conditioning(model, model, x, y, loss="hinge")
    with pytest.raises(ValueError, match="targets must be"):
        loss_and_residual(torch.zeros(4, 3), torch.zeros(4, 2), "squared")
    with pytest.raises(ValueError, match="one label per point"):
        loss_and_residual(torch.zeros(4, 3), torch.zeros(5), "cross_entropy")


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_through_the_registry_with_the_runs_loss_and_initial_weights(loss):
    spec = ModelSpec((1, 4, 4), N_CLASSES, width=16, depth=1, activation="relu")
    initial, trained = build_model(spec, 5).eval(), build_model(spec, 6).eval()
    x, y = data(20)
    dataset = xr.Dataset({"x_train": (("n", "c", "h", "w"), x.float().numpy()),
                          "y_train": ("n", y.numpy())})
    job = MemberJob(torch.device("cpu"), 8)
    job.run = SimpleNamespace(seed=5, loss=loss)
    out = measure_member("conditioning", copy.deepcopy(trained), dataset,
                         {"n_points": 12, "chunk_size": 5}, job)
    assert set(out.data_vars) == set(registry.metric("conditioning").variables)
    want = conditioning(trained, initial, x[:12].float(), y[:12], loss=loss)
    for name, value in want.items():
        np.testing.assert_allclose(out[f"conditioning_{name}"].item(), value, rtol=1e-10)
    assert registry.expected_sign("conditioning_pl_ratio") is None
    at_init = measure_member("conditioning", copy.deepcopy(initial), dataset,
                             {"n_points": 12, "chunk_size": 5}, job)
    assert at_init["conditioning_kernel_change"].item() == 0.0


def test_its_settings_are_in_the_config_schema_off_by_default():
    config = validate_config(copy.deepcopy(TINY_CONFIG))
    assert config["measure"]["conditioning"] == {"enabled": False, "n_points": 50,
                                                 "chunk_size": 16}
    assert not registry.switched_on("conditioning", config)
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"]["conditioning"] = {"n_points": 0}
    with pytest.raises(ConfigError, match="measure.conditioning.n_points"):
        validate_config(config)


# --- the preset's small variant, end to end ----------------------------------------------

@pytest.fixture(scope="module")
def conditioning_small(tmp_path_factory):
    """studies/conditioning.yaml's small variant run end to end; its results folder."""
    import yaml
    from workflow_helpers import REPO, snakemake

    workdir = tmp_path_factory.mktemp("conditioning")
    config = yaml.safe_load((REPO / "studies" / "conditioning.yaml").read_text())
    result = snakemake(workdir, config, "--config", "scale=small", timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workdir / "results" / "conditioning-small"


@pytest.mark.workflow
@pytest.mark.presets
@pytest.mark.slow
def test_the_small_preset_satisfies_the_pl_bound_at_every_snapshot(conditioning_small):
    import pandas as pd

    from workflow_src.stats.conditioning import condition_number, findings

    table = pd.read_csv(conditioning_small / "tables" / "snapshots.csv")
    assert set(table["loss_function"]) == {"squared", "cross_entropy"}
    assert set(table["optimizer"]) == {"gd", "sgd"}
    squared = table[table["loss_function"] == "squared"]
    ratio = squared["conditioning_pl_bound_ratio"]
    singular = np.isinf(condition_number(squared))
    assert (ratio[~singular] >= 1 - 1e-9).all() and ratio[singular].isna().all()
    assert (~singular).any()  # the bound is checked somewhere, not only vacuous
    assert (table["conditioning_kernel_bound_ratio"].dropna() >= 1 - 1e-9).all()
    found = findings(table, n_boot=200)
    assert found["bound"]["below_one"] == 0
    assert len(found["networks"]) == 8
    for stem in ("conditioning_vs_width", "conditioning_along_training"):
        png = conditioning_small / "figures" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
