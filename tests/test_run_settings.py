"""The grid axes and settings added for the convolutional networks and Zhang et al.'s
optimisation (architecture, batch_norm, momentum, weight_decay, lr_schedule, lbfgs, crop
augmentation): existing run ids stay as they were, a setting enters a run's id only where
it changes the network, the config refuses what cannot be built, and the training loop
does what each setting says."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from workflow_helpers import REPO

from workflow_src.config import ConfigError, load_study, validate_config
from workflow_src.runtable import DataSpec, RunSpec, build_run_table
from workflow_src.training.augmentation import random_crops
from workflow_src.training.train import learning_rate_at, make_optimizer, run_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The studies as they were before these settings existed, and a digest of all their run
# ids (full and small scales) computed by the code of that time (commit a5c4a36): a changed
# digest means cached networks of existing studies would no longer be found.
EXISTING_STUDIES = ["config.yaml", "studies/arpit_memorization.yaml",
                    "studies/double_descent.yaml", "studies/jiang_measures.yaml",
                    "studies/keskar_batch.yaml", "studies/mine.yaml", "studies/novak_1000.yaml",
                    "studies/novak_factors.yaml", "studies/novak_gap.yaml",
                    "studies/zhang_corruption.yaml"]
EXISTING_IDS_DIGEST = "0f31c16bafdc7d3e"
# Presets rewritten since (their networks are new ones): read as they were then.
FROZEN = {"studies/double_descent.yaml": "tests/frozen_studies/double_descent.yaml"}
DEFAULT_STUDY_IDS = ['01a602c300bb', '0d3231dbf793', '4cf25607a524', '51cda2a7ea9e',
                     '57a08bf87022', '783e6c0d2de0', '912c713ad4d0', '9582002c287b',
                     'c59d0b83f835', 'cbe420da2790', 'e0e8c2283480', 'e76a38e4b67e']


def _study(path, scale="full", **overrides):
    config = load_study([REPO / path], {"scale": scale} if scale != "full" else {})
    for key, value in overrides.items():
        config[key] = value
    return validate_config(config)


def test_the_run_ids_of_existing_studies_are_unchanged():
    ids = {}
    for path in EXISTING_STUDIES:
        for scale in ("full", "small"):
            config = load_study([REPO / FROZEN.get(path, path)],
                                {"scale": scale} if scale != "full" else {})
            if scale != "full" and scale not in (config.get("scales") or {}):
                continue
            ids[f"{path}:{scale}"] = sorted(build_run_table(validate_config(config)))
    assert sorted(ids["config.yaml:full"]) == DEFAULT_STUDY_IDS
    digest = hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:16]
    assert digest == EXISTING_IDS_DIGEST, "run ids of existing studies changed"


def _default_block():
    return copy.deepcopy(_study("config.yaml")["grid"])


def _runs(**axes):
    config = _study("config.yaml")
    config["grid"] = {**_default_block(), "label_noise": [0.0], "width": [64], "depth": [1],
                      **axes}
    return list(build_run_table(validate_config(config)).values())


def test_optional_axes_at_their_defaults_add_nothing_to_the_id():
    plain = _runs()
    explicit = _runs(architecture=["mlp"], batch_norm=[False], momentum=[0.9],
                     weight_decay=[0.0], lr_schedule=["constant"])
    assert [r.id for r in plain] == [r.id for r in explicit]


@pytest.mark.parametrize("axes", [
    {"architecture": ["wrn"], "depth": [10], "width": [1]},
    {"weight_decay": [5e-4]},
    {"lr_schedule": ["exponential"]},
    {"optimizer": ["momentum"], "momentum": [0.5]},
    {"optimizer": ["lbfgs"]},
])
def test_a_setting_that_changes_the_network_changes_the_id(axes):
    (plain,) = _runs(**{k: v for k, v in axes.items() if k in ("depth", "width")})
    (changed,) = _runs(**axes)
    assert changed.id != plain.id


def test_mixed_precision_enters_the_id_only_when_on():
    config = _study("config.yaml")
    config["grid"] = {**_default_block(), "label_noise": [0.0], "width": [64], "depth": [1]}
    ids = {}
    for value in (None, False, True):
        study = copy.deepcopy(config)
        if value is not None:
            study["training"]["mixed_precision"] = value
        (run,) = build_run_table(validate_config(study)).values()
        assert run.mixed_precision is bool(value)
        ids[value] = run.id
    assert ids[None] == ids[False] != ids[True]
    study = copy.deepcopy(config)
    study["training"]["mixed_precision"] = "bf16"
    with pytest.raises(Exception, match="mixed_precision"):
        validate_config(study)


def test_axes_that_do_not_apply_collapse_instead_of_repeating_a_network():
    # alexnet_small has a published size: two widths are one network; adam has no momentum.
    runs = _runs(architecture=["alexnet_small"], width=[64, 256], depth=[1, 2])
    assert len(runs) == 1 and runs[0].width == runs[0].depth == 0
    assert len(_runs(optimizer=["adam"], momentum=[0.5, 0.9])) == 1
    # inception_small's batch norm is a switch, on by default; a wrn's is always on.
    assert {r.batch_norm for r in _runs(architecture=["inception_small"],
                                        batch_norm=[True, False])} == {True, False}
    assert [r.batch_norm for r in _runs(architecture=["inception_small"])] == [True]
    assert [r.batch_norm for r in _runs(architecture=["wrn"], depth=[10],
                                        batch_norm=[False])] == [True]
    # Their coordinates are what the network has: momentum 0 for adam, 0.9 by default.
    (momentum,) = _runs(optimizer=["momentum"])
    assert momentum.hyperparameters()["momentum"] == 0.9
    assert _runs()[0].hyperparameters()["momentum"] == 0.0


def test_a_fixed_size_block_may_leave_out_width_and_depth_but_an_mlp_block_may_not():
    config = _study("config.yaml")
    block = {k: v for k, v in _default_block().items() if k not in ("width", "depth")}
    config["grid"] = {**block, "architecture": ["alexnet_small", "inception_small"]}
    assert len(build_run_table(validate_config(copy.deepcopy(config)))) == 6
    config["grid"] = {**block, "architecture": ["alexnet_small", "mlp"]}
    with pytest.raises(ConfigError, match=r"config key grid: missing axes width, depth"):
        validate_config(config)


@pytest.mark.parametrize("axes, message", [
    ({"architecture": ["wrn"], "depth": [12]}, "depth 12 is not a Wide ResNet depth 6n"),
    ({"architecture": ["alexnet_small"], "augment": ["crop"]},
     "alexnet_small on fashion_mnist (28x28 px) cannot use it"),
    ({"augment": ["crop"], "dataset": ["cifar10"]}, "mlp on cifar10"),
    ({"lr_schedule": ["multistep"]}, "lr_schedule multistep needs training.lr_milestones"),
    ({"architecture": ["resnet50"]}, "'resnet50' is not allowed"),
])
def test_settings_that_cannot_be_built_are_refused_with_the_fix(axes, message):
    config = _study("config.yaml")
    config["grid"] = {**_default_block(), **axes}
    with pytest.raises(ConfigError) as raised:
        validate_config(config)
    assert message in str(raised.value)


def test_input_shapes_of_the_run_table_are_those_stage_1_stores(digits):
    from workflow_src.runtable import INPUT_SHAPES
    assert INPUT_SHAPES["digits"] == tuple(digits.train_images.shape[1:][::-1])
    assert INPUT_SHAPES["digits"] == (1, 8, 8)


def test_a_run_spec_round_trips_through_json():
    config = _study("config.yaml")
    config["training"]["lr_milestones"] = [100, 300]
    config["grid"] = {**_default_block(), "label_noise": [0.0], "width": [64], "depth": [1],
                      "lr_schedule": ["multistep"]}
    (run,) = build_run_table(validate_config(config)).values()
    back = RunSpec.from_dict(json.loads(json.dumps(run.to_dict())))
    assert back == run and back.id == run.id and back.lr_milestones == (100, 300)


# --- what the training loop does with them ----------------------------------------------

def _spec(**changes):
    data = DataSpec("digits", 100, 50, "none", 0.0, 0, True, False)
    values = dict(data=data, width=16, depth=1, activation="relu", bias=True, optimizer="sgd",
                  learning_rate=0.1, batch_size=20, augment=False, seed=0,
                  target_train_acc=1.0, max_steps=10, eval_every=5)
    values.update(changes)
    return RunSpec(**values)


def test_learning_rate_schedules_follow_epochs_and_milestones():
    exponential = _spec(lr_schedule="exponential", lr_decay=0.5)
    # 100 points in batches of 20: 5 steps an epoch; the rate halves after each epoch.
    assert [learning_rate_at(exponential, s, 5) for s in (1, 5, 6, 10, 11)] == [
        0.1, 0.1, 0.05, 0.05, 0.025]
    multistep = _spec(lr_schedule="multistep", lr_milestones=(3, 7), lr_gamma=0.1)
    rates = [learning_rate_at(multistep, s, 5) for s in range(1, 10)]
    assert rates[:3] == [0.1] * 3 and rates[3:7] == pytest.approx([0.01] * 4)
    assert rates[7:] == pytest.approx([0.001] * 2)
    assert learning_rate_at(_spec(), 1000, 5) == 0.1


def test_weight_decay_and_momentum_reach_the_optimizer():
    params = [torch.nn.Parameter(torch.ones(3))]
    optimizer = run_optimizer(_spec(optimizer="momentum", momentum=0.5, weight_decay=0.1),
                              params)
    assert optimizer.defaults["momentum"] == 0.5 and optimizer.defaults["weight_decay"] == 0.1
    # Weight decay as torch applies it: the update is lr * (grad + lambda * w).
    w = torch.nn.Parameter(torch.tensor([2.0]))
    sgd = make_optimizer("sgd", [w], lr=0.1, weight_decay=0.5)
    (w * 3).sum().backward()
    sgd.step()
    assert w.item() == pytest.approx(2.0 - 0.1 * (3 + 0.5 * 2.0))
    # Defaults add no keyword, so today's optimizers are exactly those of before.
    assert make_optimizer("adam", [w], lr=0.1).defaults == torch.optim.Adam([w], lr=0.1).defaults


def test_scheduled_training_uses_the_scheduled_rates(digits):
    """A run whose rate drops to 0 after step 5 stops changing there."""
    from workflow_src.data.corrupt import make_corrupted
    from workflow_src.training.train import train

    run = _spec(lr_schedule="multistep", lr_milestones=(5,), lr_gamma=1e-300, max_steps=10)
    data = make_corrupted(digits, run.data)
    short, _ = train(run.__class__(**{**run.__dict__, "max_steps": 5,
                                      "lr_schedule": "constant", "lr_milestones": (),
                                      "lr_gamma": None}), data, torch.device("cpu"),
                     log=lambda *a: None)
    scheduled, result = train(run, data, torch.device("cpu"), log=lambda *a: None)
    assert result.steps == 10
    for a, b in zip(short.parameters(), scheduled.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_lbfgs_fits_a_small_training_set_full_batch(digits):
    from workflow_src.data.corrupt import make_corrupted
    from workflow_src.training.train import train

    run = _spec(optimizer="lbfgs", learning_rate=1.0, batch_size=100, max_steps=200,
                eval_every=10)
    model, result = train(run, make_corrupted(digits, run.data), torch.device("cpu"),
                          log=lambda *a: None)
    assert result.status == "converged" and result.train_acc == 1.0 and result.steps < 200


def test_random_crops_are_crops_of_the_image_and_flips():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    crops = random_crops(x, generator)
    assert crops.shape == (2, 3, 28, 28)
    for image, crop in zip(x, crops):
        windows = [image[:, i:i + 28, j:j + 28] for i in range(5) for j in range(5)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)
    again = random_crops(x, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)


def test_a_loss_with_weight_decay_for_lbfgs_is_the_l2_penalised_loss():
    from workflow_src.training.train import lbfgs_step
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.arange(8) % 3
    optimizer = make_optimizer("lbfgs", model.parameters(), lr=1.0)
    expected = (F.cross_entropy(model(x), y)
                + 0.5 * 0.1 * sum((p * p).sum() for p in model.parameters())).item()
    assert lbfgs_step(model, optimizer, x, y, 0.1).item() == pytest.approx(expected)


def test_stacked_training_refuses_what_it_does_not_implement():
    from workflow_src.training.ensemble import stackable
    assert stackable(_spec())
    for changes in ({"weight_decay": 1e-4}, {"lr_schedule": "exponential", "lr_decay": 0.9},
                    {"optimizer": "lbfgs"}, {"architecture": "wrn", "batch_norm": True},
                    {"optimizer": "momentum", "momentum": 0.5}, {"augment": "crop"},
                    {"mixed_precision": True}):
        assert not stackable(_spec(**changes)), changes



def test_snapshots_of_the_bounds_need_the_jacobian():
    config = _study("config.yaml")
    config["measure"]["snapshots"] = {"enabled": True, "steps": [10], "metrics": ["bounds"]}
    with pytest.raises(ConfigError, match="list jacobian too"):
        validate_config(config)
