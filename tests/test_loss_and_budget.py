"""The squared loss (RunSpec.loss, grid axis loss_function), fixed-budget training
(training.stop_at_target false, fit_step) and depth-0 networks (a linear classifier):
values against hand computations in float64, one update against the gradient's closed form
and autograd of the formula, stacked against one-by-one training, the budget's step count
and fit_step, bit-identical resumes, and the run ids of default runs."""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import pytest
import torch
from test_checkpoints import IDENTITY, Interrupted, InterruptedAt, assert_same_network
from test_stacked_checkpoints import Killed, KilledAt, assert_same_stack, store
from training_helpers import assert_trained_alike

from workflow_src.training.checkpoints import CheckpointStore
from workflow_src.data.corrupt import make_corrupted
from workflow_src.training.ensemble import train_stacked
from workflow_src.nets.losses import batch_loss, per_point_loss
from workflow_src.metrics.jacobian import pointwise_metrics
from workflow_src.nets.models import ModelSpec, build_model, load_model, save_model
from workflow_src.runtable import LEGACY_DEFAULTS, DataSpec, RunSpec, stable_hash
from workflow_src.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
QUIET = lambda *parts: None  # noqa: E731
F64 = torch.float64


def data_spec(noise=0.0):
    return DataSpec("digits", 100, 50, "none", noise, 0, True, False)


def run_spec(**changes):
    values = dict(data=data_spec(), width=16, depth=1, activation="relu", bias=True,
                  optimizer="gd", learning_rate=0.05, batch_size=100, augment=False, seed=3,
                  target_train_acc=1.0, max_steps=60, eval_every=5, loss="squared")
    values.update(changes)
    return RunSpec(**values)


@pytest.fixture(scope="module")
def float64_data(digits):
    """noise -> the 100-point digits set in float64 (so the networks are float64)."""
    out = {}
    for noise in (0.0, 0.5):
        data = make_corrupted(digits, data_spec(noise))
        out[noise] = data.assign(x_train=data["x_train"].astype("float64"),
                                 x_test=data["x_test"].astype("float64"))
    return out


# --- the loss's value -------------------------------------------------------------------

def squared_by_hand(logits, labels) -> float:
    """(1/B) sum_i 1/2 sum_k (f_ik - [k == y_i])^2, in Python floats."""
    total = 0.0
    for row, label in zip(logits, labels):
        total += 0.5 * sum((f - (1.0 if k == label else 0.0)) ** 2 for k, f in enumerate(row))
    return total / len(labels)


@pytest.mark.parametrize("scale", [1.0, 1e-6, 1e40])
def test_squared_loss_is_half_the_squared_distance_to_one_hot_summed_over_classes(scale):
    gen = torch.Generator().manual_seed(0)
    logits = scale * torch.randn(7, 4, generator=gen, dtype=F64)
    labels = torch.randint(0, 4, (7,), generator=gen)
    want = squared_by_hand(logits.tolist(), labels.tolist())
    assert batch_loss("squared", logits, labels).item() == pytest.approx(want, rel=1e-14)
    per_point = per_point_loss("squared", logits, labels)
    assert per_point.shape == (7,) and per_point.dtype == F64
    for i in range(7):
        one = squared_by_hand([logits[i].tolist()], [labels[i].item()])
        assert per_point[i].item() == pytest.approx(one, rel=1e-14)
    # Stacked: (members, points, classes) gives each member's points.
    stacked = per_point_loss("squared", torch.stack([logits, 2 * logits]),
                             torch.stack([labels, labels]))
    assert torch.equal(stacked[0], per_point)
    assert stacked[1].mean().item() == pytest.approx(
        squared_by_hand((2 * logits).tolist(), labels.tolist()), rel=1e-14)


def test_squared_loss_is_zero_at_the_targets_and_one_half_at_zero_logits():
    labels = torch.tensor([0, 2, 1])
    target = torch.nn.functional.one_hot(labels, 5).to(F64)
    assert batch_loss("squared", target, labels).item() == 0.0
    # Zero logits: 1/2 (1^2) for the true class only.
    assert batch_loss("squared", torch.zeros(3, 5, dtype=F64), labels).item() == 0.5


def test_cross_entropy_is_torchs_and_an_unknown_loss_is_refused():
    gen = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(6, 3, generator=gen, dtype=F64), torch.tensor([0, 1, 2] * 2)
    want = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(batch_loss("cross_entropy", logits, labels), want)
    assert per_point_loss("cross_entropy", logits, labels).mean().item() == pytest.approx(
        want.item(), rel=1e-15)
    with pytest.raises(ValueError, match="loss 'hinge' is not one of"):
        batch_loss("hinge", logits, labels)


def test_the_squared_loss_is_float32_under_bfloat16_autocast():
    model = torch.nn.Linear(8, 3)
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = batch_loss("squared", logits, y)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(squared_by_hand(logits.float().tolist(), y.tolist()),
                                        rel=1e-6)


# --- one update ----------------------------------------------------------------------------

def test_one_gd_step_of_a_linear_classifier_follows_the_closed_form_gradient(float64_data):
    """Depth 0, f = W x + b: dL/dW = (1/n) (F - Y)^T X and dL/db = (1/n) sum_i (f_i - y_i),
    no autograd involved."""
    data = float64_data[0.0]
    run = run_spec(depth=0, width=0, max_steps=1, eval_every=1, learning_rate=0.01)
    model, result = train(run, data, CPU, log=QUIET)
    initial = build_model(model.spec, seed=run.seed).to(F64)
    x = torch.as_tensor(data["x_train"].values).flatten(1)
    y = torch.nn.functional.one_hot(torch.as_tensor(data["y_train"].values), 10).to(F64)
    w, b = initial.readout.weight.detach(), initial.readout.bias.detach()
    residual = x @ w.T + b - y  # (n, K)
    n = x.shape[0]
    torch.testing.assert_close(model.readout.weight, w - run.learning_rate * residual.T @ x / n,
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.readout.bias, b - run.learning_rate * residual.mean(0),
                               rtol=1e-12, atol=1e-14)
    # The curve's step-0 loss is the formula's at the initial weights.
    assert result.curve[0]["train_loss"] == pytest.approx(
        0.5 * (residual ** 2).sum().item() / n, rel=1e-12)


@pytest.mark.parametrize("optimizer", ["gd", "lbfgs"])
def test_one_step_of_an_mlp_follows_autograd_of_the_written_out_loss(float64_data, optimizer):
    """gd: w - lr * grad; lbfgs's first iteration also starts along -grad, so the update is
    a multiple of it."""
    data = float64_data[0.0]
    run = run_spec(optimizer=optimizer, max_steps=1, eval_every=1,
                   learning_rate=0.05 if optimizer == "gd" else 1.0)
    model, _ = train(run, data, CPU, log=QUIET)
    initial = build_model(model.spec, seed=run.seed).to(F64)
    x = torch.as_tensor(data["x_train"].values)
    labels = data["y_train"].values.tolist()
    logits = initial(x)
    loss = sum(0.5 * (logits[i, k] - (1.0 if k == labels[i] else 0.0)) ** 2
               for i in range(len(labels)) for k in range(10)) / len(labels)
    grads = torch.autograd.grad(loss, list(initial.parameters()))
    steps = [(p1.detach() - p0.detach()).flatten()
             for p1, p0 in zip(model.parameters(), initial.parameters())]
    step, grad = torch.cat(steps), torch.cat([g.flatten() for g in grads])
    if optimizer == "gd":
        torch.testing.assert_close(step, -run.learning_rate * grad, rtol=1e-10, atol=1e-14)
    else:
        cosine = torch.dot(step, -grad) / (step.norm() * grad.norm())
        assert cosine.item() == pytest.approx(1.0, abs=1e-10) and step.norm() > 0


# --- stacked against one by one ------------------------------------------------------------

STACK_LR = {"sgd": 0.05, "gd": 0.05, "momentum": 0.01, "adam": 3e-3, "rmsprop": 1e-3}


def members(optimizer, depth=1):
    """Five squared-loss members: an early stopper, one on noisy labels, one diverging, one
    fixed-budget member that fits before its budget ends, one of another seed."""
    base = STACK_LR[optimizer]
    batch = 100 if optimizer == "gd" else 25
    rows = [  # (noise, seed, lr, target, max_steps, eval_every, stop_at_target)
        (0.0, 0, base, 0.6, 80, 5, True),
        (0.5, 1, base / 2, 1.0, 40, 5, True),
        (0.0, 2, 1e160, 1.0, 60, 5, True),
        (0.0, 3, base * 2, 0.7, 70, 7, False),
        (0.0, 4, base, 1.0, 50, 10, True),
    ]
    return [run_spec(data=data_spec(noise), width=0 if depth == 0 else 24, depth=depth,
                     optimizer=optimizer, learning_rate=lr, batch_size=batch, seed=seed,
                     target_train_acc=target, max_steps=max_steps, eval_every=every,
                     stop_at_target=stop)
            for noise, seed, lr, target, max_steps, every, stop in rows]


@pytest.mark.parametrize("optimizer, depth", [
    ("sgd", 1), ("gd", 1), ("momentum", 1), ("adam", 1), ("rmsprop", 1), ("adam", 0)])
def test_stacked_squared_loss_members_train_exactly_as_alone(float64_data, optimizer, depth):
    runs = members(optimizer, depth)
    datas = [float64_data[run.data.label_noise] for run in runs]
    stacked = train_stacked(runs, datas, CPU, log=QUIET)
    alone = [train(run, data, CPU, log=QUIET) for run, data in zip(runs, datas)]
    assert alone[2][1].status == "diverged"
    budget = alone[3][1]
    assert budget.steps == 70 and budget.fit_step is not None and budget.fit_step < 70
    assert [(result.fit_step, result.loss) for _, result in stacked] == [
        (ref.fit_step, "squared") for _, ref in alone]
    assert_trained_alike(stacked, alone, losses=("train_loss", "test_loss"))


# --- fixed budget -------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_a_fixed_budget_trains_exactly_max_steps_and_fit_step_is_where_it_would_stop(
        float64_data, loss):
    """The stopping rule does not change the trajectory, so a budget run's fit_step is the
    step at which the same run with stop_at_target stops, and its curve starts as that
    run's and goes on every eval_every steps to max_steps."""
    data = float64_data[0.0]
    stopping = run_spec(optimizer="adam", learning_rate=0.01, batch_size=20, loss=loss,
                        target_train_acc=0.9, max_steps=200, eval_every=10)
    budget = replace(stopping, stop_at_target=False)
    _, stopped = train(stopping, data, CPU, log=QUIET)
    model, result = train(budget, data, CPU, log=QUIET)
    assert stopped.status == "converged" and stopped.steps < 200
    assert stopped.fit_step == stopped.steps
    assert result.steps == 200 and result.fit_step == stopped.steps
    assert [p["step"] for p in result.curve] == list(range(0, 201, 10))
    first = next(p["step"] for p in result.curve if p["step"] > 0 and p["train_acc"] >= 0.9)
    assert result.fit_step == first
    untimed = lambda curve: [{k: v for k, v in p.items() if k != "seconds"}  # noqa: E731
                             for p in curve]
    assert untimed(result.curve[:len(stopped.curve)]) == untimed(stopped.curve)
    # Its status says whether the final network fits; the record names the loss.
    final_fits = result.train_correct / result.n_train >= 0.9
    assert result.status == ("converged" if final_fits else "unconverged")
    assert result.loss == loss and result.curve[-1]["train_loss"] == result.train_loss


def test_a_budget_run_that_never_fits_has_no_fit_step(float64_data):
    run = run_spec(data=data_spec(0.5), max_steps=20, eval_every=5, stop_at_target=False)
    _, result = train(run, float64_data[0.5], CPU, log=QUIET)
    assert (result.status, result.steps, result.fit_step) == ("unconverged", 20, None)


def test_a_network_fitted_at_step_0_has_fit_step_at_its_first_evaluation(float64_data):
    """fit_step counts evaluations after an update, as the stopping rule does."""
    run = run_spec(target_train_acc=0.01, max_steps=12, eval_every=4, stop_at_target=False)
    _, result = train(run, float64_data[0.0], CPU, log=QUIET)
    assert result.curve[0]["train_acc"] >= 0.01 and result.fit_step == 4
    assert (result.status, result.steps) == ("converged", 12)


@pytest.mark.parametrize("loss, optimizer", [("squared", "adam"), ("cross_entropy", "momentum"),
                                             ("squared", "lbfgs")])
def test_a_budget_run_killed_twice_and_resumed_is_bit_identical(float64_data, tmp_path, loss,
                                                                optimizer):
    """Killed before and after its fit step (checkpoints every 7 steps)."""
    data = float64_data[0.0]
    run = run_spec(optimizer=optimizer, learning_rate={"adam": 0.01, "momentum": 0.02,
                                                       "lbfgs": 1.0}[optimizer],
                   batch_size=30, loss=loss, target_train_acc=0.8, max_steps=90,
                   eval_every=10, stop_at_target=False)
    reference, reference_result = train(run, data, CPU, log=QUIET)
    assert reference_result.fit_step is not None and 14 < reference_result.fit_step < 90
    for stop_at in (14, 84):
        with pytest.raises(Interrupted):
            train(run, data, CPU, log=QUIET,
                  checkpoints=InterruptedAt(tmp_path, IDENTITY, 7, stop_at=stop_at, log=QUIET))
    model, result = train(run, data, CPU, log=QUIET,
                          checkpoints=CheckpointStore(tmp_path, IDENTITY, 7, log=QUIET))
    assert_same_network(model, result, reference, reference_result)
    assert (result.steps, result.fit_step) == (90, reference_result.fit_step)


def test_a_budget_stack_killed_twice_and_resumed_is_bit_identical(float64_data, tmp_path):
    runs = [replace(run, stop_at_target=False) for run in members("adam")]
    datas = [float64_data[run.data.label_noise] for run in runs]
    reference = train_stacked(runs, datas, CPU, log=QUIET)
    steps = [(result.status, result.steps) for _, result in reference]
    assert steps[2][0] == "diverged" and steps[2][1] < 14, steps
    assert [steps[k][1] for k in (0, 1, 3, 4)] == [80, 40, 70, 50]  # budgets, whatever fits
    for stop_at in (14, 63):
        with pytest.raises(Killed):
            train_stacked(runs, datas, CPU, log=QUIET,
                          checkpoints=store(tmp_path, runs, 7, KilledAt, stop_at=stop_at))
    resumed = train_stacked(runs, datas, CPU, log=QUIET,
                            checkpoints=store(tmp_path, runs, 7))
    assert_same_stack(resumed, reference)
    assert [r.fit_step for _, r in resumed] == [r.fit_step for _, r in reference]


# --- run ids -------------------------------------------------------------------------------

# The id of RUN in tests/test_identities.py as the code before the two settings gave it.
DEFAULT_RUN_ID = "3c07e252ecd1"


def test_default_settings_leave_the_run_id_unchanged():
    run = RunSpec(data=DataSpec("digits", 100, 50, "none", 0.0, 0, True, False), width=16,
                  depth=1, activation="relu", bias=True, optimizer="sgd", learning_rate=0.1,
                  batch_size=20, augment=False, seed=0, target_train_acc=1.0, max_steps=10,
                  eval_every=5)
    payload = {k: v for k, v in asdict(run).items() if k not in LEGACY_DEFAULTS}
    assert run.id == stable_hash(payload) == DEFAULT_RUN_ID
    assert replace(run, loss="cross_entropy", stop_at_target=True).id == run.id
    ids = {replace(run, loss="squared").id, replace(run, stop_at_target=False).id,
           replace(run, loss="squared", stop_at_target=False).id, run.id}
    assert len(ids) == 4


# --- depth 0: a linear classifier ---------------------------------------------------------

def test_a_linear_classifier_builds_saves_loads_and_has_the_jacobian_of_its_weights(tmp_path):
    spec = ModelSpec((1, 8, 8), 10, width=0, depth=0, activation="relu")
    model = build_model(spec, seed=0).to(F64)
    assert [name for name, _ in model.named_parameters()] == ["readout.weight", "readout.bias"]
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt").to(F64)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(loaded(x), x.flatten(1) @ model.readout.weight.T
                               + model.readout.bias)
    # ∂f/∂x = W at every point: ‖∂f/∂x‖_F = ‖W‖_F, ‖∂σ/∂x‖_F = ‖(diag σ − σσᵀ) W‖_F.
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    values = pointwise_metrics(loaded, x, y)
    w = model.readout.weight.detach()
    assert values["logit_jacobian_norm"].tolist() == pytest.approx([w.norm().item()] * 6,
                                                                   rel=1e-12)
    with torch.no_grad():
        sigma = torch.softmax(loaded(x), dim=1)
    want = [((torch.diag(s) - torch.outer(s, s)) @ w).norm().item() for s in sigma]
    assert values["jacobian_norm"].tolist() == pytest.approx(want, rel=1e-10)
    assert values["loss"].tolist() == pytest.approx(
        torch.nn.functional.cross_entropy(loaded(x), y, reduction="none").tolist(), rel=1e-10)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_a_linear_classifier_trains_to_fit_the_digits(float64_data, loss):
    run = run_spec(depth=0, width=0, optimizer="adam", learning_rate=0.05, batch_size=20,
                   loss=loss, max_steps=400, eval_every=10)
    model, result = train(run, float64_data[0.0], CPU, log=QUIET)
    assert result.status == "converged" and result.fit_step == result.steps < 400
    assert math.isfinite(result.train_loss) and model.spec.depth == 0


# --- the network's record ------------------------------------------------------------------

def test_the_record_names_the_loss_and_holds_fit_step(digits, tmp_path):
    """train.json and the shard record hold fit_step (null: never fitted) and name the loss
    of train_loss; curve.csv has train_loss and test_loss of that loss every eval_every."""
    import json

    import pandas as pd

    from workflow_src.integrity import write_store
    from workflow_src.paths import shard_record
    from workflow_src.jobs.train_shard import train_shard

    runs = [run_spec(optimizer="adam", learning_rate=0.01, batch_size=20, max_steps=200,
                     eval_every=20, target_train_acc=0.9, stop_at_target=False),
            run_spec(data=data_spec(0.5), max_steps=20, eval_every=10)]
    stores = {}
    for run in runs:
        path = tmp_path / "datasets" / f"{run.data.id}.zarr"
        write_store(make_corrupted(digits, run.data), path)
        stores[run.data.id] = str(path)
    summaries = train_shard("s" * 12, runs, stores, tmp_path, CPU, False, QUIET)
    fitted, never = (summaries[run.id] for run in runs)
    assert fitted["steps"] == 200 and 0 < fitted["fit_step"] < 200, fitted
    assert never["fit_step"] is None and never["status"] == "unconverged"
    shard = json.loads(shard_record(tmp_path, "s" * 12).read_text())
    for run in runs:
        record = json.loads((tmp_path / "runs" / run.id / "train.json").read_text())
        assert record["loss_function"] == "squared"
        assert shard["members"][run.id]["fit_step"] == record["fit_step"]
        curve = pd.read_csv(tmp_path / "runs" / run.id / "curve.csv")
        assert {"train_loss", "test_loss"} <= set(curve.columns)
        assert curve["step"].tolist() == list(range(0, run.max_steps + 1, run.eval_every))
        assert curve["train_loss"].iloc[-1] == pytest.approx(record["train_loss"], rel=1e-12)


# --- the settings in a study ---------------------------------------------------------------

def test_a_study_with_depth_0_squared_loss_and_a_fixed_budget():
    from workflow_helpers import tiny_study

    from workflow_src.config import ConfigError
    from workflow_src.runtable import build_run_table

    linear = {"grid__depth": [0, 1], "grid__width": [16, 32],
              "grid__loss_function": ["cross_entropy", "squared"],
              "measure__transitions__n_points": 0, "measure__ellipses__per_kind": 0}
    runs = list(build_run_table(tiny_study(**linear, training__stop_at_target=False)).values())
    # Depth 0 ignores width (recorded as 0): 2 label noises x 2 losses x (2 widths + 1).
    assert len(runs) == 12 and {r.width for r in runs if r.depth == 0} == {0}
    assert {r.loss for r in runs} == {"cross_entropy", "squared"}
    assert all(not r.stop_at_target for r in runs)
    assert {r.hyperparameters()["loss_function"] for r in runs} == {"cross_entropy", "squared"}
    defaults = build_run_table(tiny_study())
    assert all(r.loss == "cross_entropy" and r.stop_at_target for r in defaults.values())
    with pytest.raises(ConfigError, match=r"depth 0 \(a linear classifier.*"
                                          r"measure.transitions.n_points: 0"):
        tiny_study(**{**linear, "measure__transitions__n_points": 10})
    with pytest.raises(ConfigError, match="measure.ellipses.per_kind: 0"):
        tiny_study(**{**linear, "measure__ellipses__per_kind": 2})
    with pytest.raises(ConfigError, match="depth 0 is not a Wide ResNet depth"):
        tiny_study(grid__architecture=["wrn"], grid__depth=[0], grid__dataset=["mnist"])
    with pytest.raises(ConfigError, match="loss_function"):
        tiny_study(grid__loss_function=["hinge"])


# --- CNNs and mixed precision ----------------------------------------------------------------

@pytest.mark.parametrize("architecture, mixed", [("alexnet_small", False),
                                                 ("alexnet_small", True), ("mlp", True)])
def test_cnns_and_mixed_precision_train_on_the_squared_loss(architecture, mixed):
    """The curve's losses are the squared loss of the network at each evaluation (float32
    data, so float32 networks); the budget runs to max_steps."""
    from test_cnn_training import cnn_run, synthetic_cifar

    run = cnn_run(architecture, loss="squared", mixed_precision=mixed, max_steps=6,
                  eval_every=3, stop_at_target=False, augment=False, lr_schedule="constant",
                  lr_decay=None, weight_decay=0.0, width=16 if architecture == "mlp" else 0,
                  depth=1 if architecture == "mlp" else 0)
    data = make_corrupted(synthetic_cifar(), run.data)
    model, result = train(run, data, CPU, log=QUIET)
    assert result.steps == 6 and [p["step"] for p in result.curve] == [0, 3, 6]
    model.eval()
    with torch.no_grad():
        for split in ("train", "test"):
            x = torch.as_tensor(data[f"x_{split}"].values)
            labels = data[f"y_{split}"].values.tolist()
            want = squared_by_hand(model(x).double().tolist(), labels)
            assert result.curve[-1][f"{split}_loss"] == pytest.approx(want, rel=1e-6)


# --- a study, end to end ---------------------------------------------------------------------

@pytest.mark.workflow
@pytest.mark.slow
def test_a_squared_loss_fixed_budget_study_records_fit_step_and_the_loss(tmp_path):
    """A linear classifier and an MLP on the squared loss with a fixed budget, through
    Snakemake: stats/networks.csv has fit_step (NaN where a network never fitted) and
    loss_function; curves.csv has test_loss and every evaluation up to max_steps."""
    import copy

    import pandas as pd
    from workflow_helpers import TINY_CONFIG, snakemake

    config = copy.deepcopy(TINY_CONFIG)
    config["data"] = {"n_train": 100, "n_test": 50}
    config["grid"].update({"label_noise": [0.0], "depth": [0, 1], "loss_function": ["squared"]})
    config["training"] = {"max_steps": 200, "eval_every": 25, "stop_at_target": False}
    config["measure"] = {"n_points": 20, "transitions": {"n_points": 0},
                         "ellipses": {"per_kind": 0}}
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    networks = pd.read_csv(tmp_path / "results/tiny/stats/networks.csv")
    assert sorted(networks["depth"]) == [0, 1] and set(networks["loss_function"]) == {"squared"}
    assert (networks["steps"] == 200).all()
    curves = pd.read_csv(tmp_path / "results/tiny/curves.csv")
    for run_id, curve in curves.groupby("run_id"):
        assert curve["step"].tolist() == list(range(0, 201, 25))
        assert curve["test_loss"].notna().all()
        row = networks[networks["run_id"] == run_id].iloc[0]
        assert curve["fit_step"].nunique(dropna=False) == 1
        assert curve["fit_step"].iloc[0] == row["fit_step"] or (
            math.isnan(curve["fit_step"].iloc[0]) and math.isnan(row["fit_step"]))
        fitted = curve[(curve["step"] > 0) & (curve["train_acc"] >= 1.0)]["step"]
        if fitted.empty:
            assert math.isnan(row["fit_step"])
        else:
            assert row["fit_step"] == fitted.iloc[0]
        assert row["status"] == ("converged" if curve["train_acc"].iloc[-1] >= 1.0
                                 else "unconverged")
