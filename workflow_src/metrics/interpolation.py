"""The 1-D parametric plot between a small-batch and a large-batch solution (Keskar et al.
2017, arXiv 1609.04836, §2.2 and Fig. 3).

Keskar et al. evaluate the training and test loss and accuracy of
w(α) = α·w_large + (1 − α)·w_small, α ∈ [−1, 2], where w_small and w_large are networks
trained from the same initial weights with a small and a large batch: α = 0 is the
small-batch solution, α = 1 the large-batch one, and α outside [0, 1] extrapolates past
either end. Their code (github.com/keskarnitish/large-batch-training,
``plot_parametric_plot.py`` and ``PyTorch/plot_parametric_pytorch.py``) evaluates 25 equally
spaced values, ``linspace(-1, 2, 25)``: the defaults of ``measure.interpolation``.

Here a pair is two networks of the run table that differ *only* in their batch size
(``batch_size_pairs``). They share their initial weights, since ``models.build_model(spec,
seed)`` draws them from the architecture and the run's seed, and neither depends on the
batch size. ``batch_size_pairs`` imports nothing heavy: the Snakefile calls it to plan.
"""

from __future__ import annotations

import json

from ..runtable import RunSpec

COLUMNS = ("alpha", "train_loss", "train_acc", "test_loss", "test_acc")


def batch_size_pairs(runs: dict[str, RunSpec]) -> list[tuple[str, str]]:
    """(small-batch run id, large-batch run id) for every group of runs that are identical
    in every setting (data, architecture, optimizer, learning rate, seed, training budget)
    except ``batch_size``.

    A group of two or more runs gives *one* pair: its smallest batch size with its largest
    (Keskar et al.'s contrast; intermediate batch sizes are not paired). Runs alone in their
    group give none. Pairs are sorted by (small id, large id), so the order depends only on
    which runs there are, not on the order of ``runs``.
    """
    groups: dict[str, list[RunSpec]] = {}
    for run in runs.values():
        rest = {key: value for key, value in run.to_dict().items() if key != "batch_size"}
        groups.setdefault(json.dumps(rest, sort_keys=True), []).append(run)
    pairs = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda run: (run.batch_size, run.id))
        pairs.append((members[0].id, members[-1].id))
    return sorted(pairs)


def pair_members(pairs) -> list[str]:
    """Every run id that is a member of some pair, sorted."""
    return sorted({run_id for pair in pairs for run_id in pair})


def shards_of(run_ids, shards: dict[str, list[str]]) -> list[str]:
    """The shard ids (sorted) of ``shards`` (shard id -> member run ids) that hold any of
    ``run_ids``."""
    wanted = set(run_ids)
    return sorted(shard for shard, members in shards.items() if wanted & set(members))


def alpha_grid(n_alphas: int, alpha_min: float, alpha_max: float):
    """n_alphas equally spaced α from alpha_min to alpha_max (both included), float64.
    With the defaults (−1, 2, 25) the step is 1/8, so α = 0 and α = 1 are on the grid
    exactly."""
    import numpy as np

    return np.linspace(alpha_min, alpha_max, n_alphas, dtype=np.float64)


def evaluate(model, x, y, chunk_size: int) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy) of ``model`` on (x, y), ``chunk_size`` points
    per forward pass, in the dtype of the model and x (float64 in ``interpolate``)."""
    import torch

    from .jacobian import cross_entropy

    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk_size):
            logits = model(x[start:start + chunk_size])
            yb = y[start:start + chunk_size]
            total_loss += cross_entropy(logits, yb).sum()
            correct += int((logits.argmax(dim=1) == yb).sum().item())
    return float(total_loss.item()) / x.shape[0], correct / x.shape[0]


def interpolate(model_small, model_large, x_train, y_train, x_test, y_test, alphas,
                chunk_size: int = 1024):
    """Train and test loss and accuracy of w(α) = α·w_large + (1 − α)·w_small for each α
    (Keskar et al. 2017, §2.2, Fig. 3): a pandas DataFrame with columns alpha, train_loss,
    train_acc, test_loss, test_acc, one row per α in the given order.

    Losses are mean cross-entropies in nats (``jacobian.cross_entropy``, float64);
    accuracies are fractions of the points whose top logit is their label. The labels are
    the ones given: for the training split, those the networks were trained on.

    Everything runs in float64 on copies: the caller's networks are left as they are.
    α = 0 and α = 1 give exactly the small and the large network (0·w = 0 and 1·w = w), so
    those rows are each network's own float64 loss and accuracy. Points are evaluated
    ``chunk_size`` at a time, which bounds memory and does not change the result.
    """
    import copy

    import pandas as pd
    import torch

    small = copy.deepcopy(model_small).double().eval()
    large = copy.deepcopy(model_large).double().eval()
    if small.state_dict().keys() != large.state_dict().keys() or any(
            a.shape != b.shape for a, b in zip(small.state_dict().values(),
                                              large.state_dict().values())):
        raise ValueError("the two networks have different architectures")
    device = next(small.parameters()).device
    large = large.to(device)
    blended = copy.deepcopy(small)
    ends = list(zip(blended.state_dict().values(), small.state_dict().values(),
                    large.state_dict().values()))
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
    splits = {name: (torch.as_tensor(x, device=device).double(),
                     torch.as_tensor(y, device=device).long()) for name, (x, y) in splits.items()}
    rows = []
    with torch.no_grad():
        for alpha in [float(a) for a in alphas]:
            for target, w_small, w_large in ends:
                target.copy_(alpha * w_large + (1.0 - alpha) * w_small)
            row = {"alpha": alpha}
            for name, (x, y) in splits.items():
                row[f"{name}_loss"], row[f"{name}_acc"] = evaluate(blended, x, y, chunk_size)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def pair_table(pairs, runs: dict, data_stores: dict, records, results, settings: dict,
               chunk_size: int, device="cpu", log=print):
    """The table of rule keskar_interpolation: ``interpolate`` for every pair, one row per
    (pair, α) with columns small_run, large_run, batch_small, batch_large, status_small,
    status_large, alpha, train_loss, train_acc, test_loss, test_acc, then the hyperparameters
    the two networks share (runtable.HYPERPARAMETERS but batch_size).

    pairs: (small id, large id) as from ``batch_size_pairs``; runs: run id -> RunSpec of
    every member; data_stores: data id -> path of the dataset store; records: the records of
    the shards holding the members, checked first (each vouches for its members'
    train.json, each of those for its model.pt); results: the results folder;
    settings: ``measure.interpolation`` (n_alphas, alpha_min, alpha_max).
    """
    import pandas as pd

    from .. import integrity
    from ..runtable import HYPERPARAMETERS
    from ..nets.checked import load_checked
    from ..paths import model_file, run_record

    listed = set()
    for record in integrity.read_all([(integrity.read_record, path, ("members",))
                                      for path in records]):
        listed.update(record["members"])
    missing = sorted({run_id for pair in pairs for run_id in pair} - listed)
    if missing:
        raise integrity.DamagedOutputError([integrity.Problem(
            ", ".join(map(str, records)), f"no shard record lists members {missing}")])
    alphas = alpha_grid(settings["n_alphas"], settings["alpha_min"], settings["alpha_max"])
    datas, tables = {}, []
    for small_id, large_id in pairs:
        small, large = runs[small_id], runs[large_id]
        if small.data.id not in datas:
            datas[small.data.id] = integrity.open_store(data_stores[small.data.id])
        data = datas[small.data.id]
        models, summaries = [], []
        for run_id in (small_id, large_id):
            record = run_record(results, run_id)
            models.append(load_checked(model_file(results, run_id), record, device))
            summaries.append(integrity.read_record(record, ("status",)))
        table = interpolate(*models, data["x_train"].values, data["y_train"].values,
                            data["x_test"].values, data["y_test"].values, alphas, chunk_size)
        shared = {name: value for name, value in small.hyperparameters().items()
                  if name != "batch_size"}
        tables.append(table.assign(
            small_run=small_id, large_run=large_id, batch_small=small.batch_size,
            batch_large=large.batch_size, status_small=summaries[0]["status"],
            status_large=summaries[1]["status"], **shared))
        ends = table.set_index("alpha")
        for alpha, summary, name in ((0.0, summaries[0], "small"), (1.0, summaries[1], "large")):
            here = (f"{ends.loc[alpha, 'train_acc']:.4f}" if alpha in ends.index
                    else "not on the grid")
            log(f"pair {small_id} (batch {small.batch_size}) - {large_id} (batch "
                f"{large.batch_size}): {name} network's train acc {summary['train_acc']:.4f} "
                f"(train.json), {here} at alpha={alpha:g}")
    columns = ["small_run", "large_run", "batch_small", "batch_large", "status_small",
               "status_large", *COLUMNS, *(h for h in HYPERPARAMETERS if h != "batch_size")]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]
