"""Gradient noise of the training loss (workflow_src/measures/gradient_noise.py) against a
slow, obvious float64 reference: one autograd backward per training point, the gradients
stacked, their covariance's trace by numpy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from workflow_helpers import TINY_CONFIG

from workflow_src import registry
from workflow_src.config import ConfigError, validate_config
from workflow_src.jobs.measure_shard import MemberJob, measure_member
from workflow_src.measures.gradient_noise import gradient_noise
from workflow_src.nets.models import ModelSpec, build_model

N_CLASSES = 3


def network(architecture="mlp", activation="relu", seed=0):
    if architecture == "mlp":
        spec = ModelSpec((1, 4, 4), N_CLASSES, width=6, depth=2, activation=activation)
    else:
        spec = ModelSpec((1, 28, 28), N_CLASSES, width=1, depth=10, activation="relu",
                         architecture="wrn", batch_norm=True)
    model = build_model(spec, seed).eval()
    with torch.no_grad():  # batch norm with running statistics that are not the identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def data(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *model.spec.input_shape, generator=g)
    return x, torch.randint(0, N_CLASSES, (n,), generator=g)


def reference(model, x, y) -> dict:
    """Per-point gradients by one backward each, in float64; numpy's covariance trace."""
    model64 = copy.deepcopy(model).double().eval()
    params = list(model64.parameters())
    rows = []
    for xi, yi in zip(x.double(), y):
        loss = F.cross_entropy(model64(xi[None]), yi[None])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).numpy())
    g = np.stack(rows)
    mean = g.mean(axis=0)
    noise = float(np.trace(np.cov(g, rowvar=False, bias=True))) if g.shape[1] < 3000 else \
        float(((g - mean) ** 2).sum(axis=1).mean())
    return {"gradient_noise": noise, "gradient_mean_norm_sq": float(mean @ mean),
            "gradient_noise_scale": noise / float(mean @ mean)}


@pytest.mark.parametrize("activation", ["relu", "tanh", "hard_sigmoid"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_equals_the_per_point_reference(activation, chunk_size):
    model = network(activation=activation)
    x, y = data(model, 23)
    got = gradient_noise(model, x, y, chunk_size)
    for name, value in reference(model, x, y).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-10, err_msg=name)


def test_a_batch_norm_cnn_equals_the_reference_per_point_in_eval_mode():
    model = network("wrn")
    x, y = data(model, 5)
    got = gradient_noise(model, x, y, 2)
    for name, value in reference(model, x, y).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-9, err_msg=name)


def test_two_points_give_a_quarter_of_their_gradients_squared_distance():
    """tr Σ over two points is ||g1 - g2||² / 4 (a population covariance, 1/N)."""
    model = network()
    x, y = data(model, 2, seed=3)
    model64 = copy.deepcopy(model).double()
    g = [torch.cat([p.flatten() for p in torch.autograd.grad(
        F.cross_entropy(model64(xi[None].double()), yi[None]), list(model64.parameters()))])
        for xi, yi in zip(x, y)]
    assert gradient_noise(model, x, y)["gradient_noise"] == \
        pytest.approx(float(((g[0] - g[1]) ** 2).sum()) / 4, rel=1e-12)


def test_identical_points_have_no_noise_and_the_model_is_left_as_it_is():
    model = network()
    before = copy.deepcopy(model.state_dict())
    x, y = data(model, 1)
    out = gradient_noise(model, x.repeat(4, 1, 1, 1), y.repeat(4))
    assert out["gradient_noise"] == pytest.approx(0.0, abs=1e-24)
    assert out["gradient_noise_scale"] == pytest.approx(0.0, abs=1e-20)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype
    with pytest.raises(ValueError, match="at least two"):
        gradient_noise(model, x, y)


def test_the_labels_trained_on_matter():
    model = network()
    x, y = data(model, 20)
    assert gradient_noise(model, x, y)["gradient_noise"] != \
        gradient_noise(model, x, (y + 1) % N_CLASSES)["gradient_noise"]


def test_through_the_registry_on_the_first_training_points():
    """The declared measure function reads the first n_points training points with the
    labels trained on and writes exactly its declared variables."""
    model = network()
    x, y = data(model, 30)
    dataset = xr.Dataset({"x_train": (("n", "c", "h", "w"), x.numpy()),
                          "y_train": ("n", y.numpy()),
                          "y_train_clean": ("n", ((y + 1) % N_CLASSES).numpy())})
    job = MemberJob(torch.device("cpu"), 8)
    out = measure_member("gradient_noise", copy.deepcopy(model), dataset,
                         {"n_points": 12, "chunk_size": 5}, job)
    assert set(out.data_vars) == set(registry.metric("gradient_noise").variables)
    for name, value in reference(model, x[:12], y[:12]).items():
        np.testing.assert_allclose(out[name].item(), value, rtol=1e-10, err_msg=name)
    assert registry.expected_sign("gradient_noise") == 1
    assert registry.expected_sign("gradient_noise_scale") is None


def test_its_settings_are_in_the_config_schema_off_by_default():
    config = validate_config(copy.deepcopy(TINY_CONFIG))
    assert config["measure"]["gradient_noise"] == {"enabled": False, "n_points": 1000,
                                                   "chunk_size": 64}
    assert not registry.switched_on("gradient_noise", config)
    assert registry.settings("gradient_noise", config)["n_points"] == 200  # data.n_train
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"]["gradient_noise"] = {"n_points": 1}  # its declared minimum: 2
    with pytest.raises(ConfigError, match="measure.gradient_noise.n_points"):
        validate_config(config)
