"""The stacked trainer (workflow_src/training/ensemble.py) against train.train and torch.optim, in
float64 on small digits networks."""

import pytest
import torch
from training_helpers import assert_trained_alike

from workflow_src.data.corrupt import make_corrupted
from workflow_src.training.ensemble import STACKABLE_OPTIMIZERS, check_stackable, train_stacked
from workflow_src.training.stacked import StackedOptimizer
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.train import make_optimizer, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
QUIET = lambda _: None  # noqa: E731
# A learning rate per optimizer at which a 100-point digits network learns in tens of steps.
LEARNING_RATE = {"sgd": 0.5, "gd": 0.5, "momentum": 0.05, "adam": 1e-2, "rmsprop": 3e-3}
# Weights reach ~1e159 after one update, so the next forward pass overflows float64.
HUGE_LR = 1e160


def float64_data(digits, label_noise):
    spec = DataSpec(dataset="digits", n_train=100, n_test=50, corruption="none",
                    label_noise=label_noise, seed=0, corrupt_test_inputs=True,
                    corrupt_test_labels=False)
    data = make_corrupted(digits, spec)
    return spec, data.assign(x_train=data["x_train"].astype("float64"),
                             x_test=data["x_test"].astype("float64"))


# --- update rules ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", STACKABLE_OPTIMIZERS)
def test_stacked_update_rule_equals_torch_optim_per_member(kind):
    """Three members with their own learning rates take six steps on the same random
    gradients as three torch.optim optimizers; member 1 leaves after step 3."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"weight": (4, 5), "bias": (4,)}
    lrs = [0.1, 0.01, 0.3]
    stacked = {name: torch.randn(3, *shape, generator=gen, dtype=torch.float64)
               for name, shape in shapes.items()}
    alone = [{name: p[k].clone().requires_grad_() for name, p in stacked.items()}
             for k in range(3)]
    optimizers = [make_optimizer(kind, list(params.values()), lr)
                  for params, lr in zip(alone, lrs)]
    opt = StackedOptimizer(kind, torch.tensor(lrs, dtype=torch.float64))
    members = [0, 1, 2]
    for step in range(6):
        if step == 3:
            keep = torch.tensor([0, 2])
            opt.select(keep)
            stacked = {name: p[keep] for name, p in stacked.items()}
            members = [0, 2]
        grads = {name: torch.randn(len(members), *shape, generator=gen, dtype=torch.float64)
                 for name, shape in shapes.items()}
        opt.step(stacked, grads)
        for row, k in enumerate(members):
            for name, p in alone[k].items():
                p.grad = grads[name][row].clone()
            optimizers[k].step()
        for row, k in enumerate(members):
            for name, p in alone[k].items():
                torch.testing.assert_close(stacked[name][row], p.detach(), rtol=1e-14,
                                           atol=1e-14, msg=f"{kind} step {step} member {k}")


# --- whole trainings -------------------------------------------------------------------

def shard(digits, optimizer, augment):
    """Five members of one shape: one stops early (low target), one runs out of steps on
    random labels, one diverges, two more with their own seeds, lrs, data and rules."""
    base = LEARNING_RATE[optimizer]
    batch_size = 100 if optimizer == "gd" else 25  # 4 steps an epoch: reshuffles happen
    # Shifts of up to 4 px on 8x8 images slow learning, so the early stopper aims lower.
    early_target = 0.15 if augment else 0.6
    members = [  # (label_noise, seed, lr, target, max_steps, eval_every)
        (0.0, 0, base, early_target, 60, 5),
        (1.0, 1, base / 2, 1.0, 30, 5),
        (0.0, 2, HUGE_LR, 1.0, 60, 5),
        (0.2, 3, base * 2, 0.9, 45, 7),
        (0.0, 4, base, 1.0, 40, 10),
    ]
    datasets = {noise: float64_data(digits, noise) for noise in {m[0] for m in members}}
    runs, datas = [], []
    for noise, seed, lr, target, max_steps, eval_every in members:
        spec, data = datasets[noise]
        runs.append(RunSpec(data=spec, width=24, depth=2, activation="relu", bias=True,
                            optimizer=optimizer, learning_rate=lr, batch_size=batch_size,
                            augment=augment, seed=seed, target_train_acc=target,
                            max_steps=max_steps, eval_every=eval_every))
        datas.append(data)
    return runs, datas


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("optimizer", STACKABLE_OPTIMIZERS)
def test_stacked_members_train_exactly_as_alone(digits, optimizer, augment):
    runs, datas = shard(digits, optimizer, augment)
    stacked = train_stacked(runs, datas, CPU, log=QUIET)
    alone = [train(run, data, CPU, log=QUIET) for run, data in zip(runs, datas)]
    statuses = [result.status for _, result in alone]
    assert statuses[0] == "converged" and alone[0][1].steps < runs[0].max_steps
    assert statuses[1] == "unconverged" and statuses[2] == "diverged"
    assert_trained_alike(stacked, alone)


def test_unstackable_runs_are_refused_naming_the_setting(digits):
    runs, datas = shard(digits, "adam", False)
    runs[3] = RunSpec(**{**runs[3].__dict__, "width": 32})
    with pytest.raises(ValueError, match="one width for all runs"):
        check_stackable(runs, datas)
    with pytest.raises(ValueError, match="one dataset per run"):
        check_stackable(runs, datas[:2])
