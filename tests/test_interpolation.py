"""Keskar et al.'s 1-D parametric plot (arXiv 1609.04836 Fig. 3;
workflow_src.metrics.interpolation) against a slow per-point reference in float64, the
pairing of batch-size twins, and rules keskar_interpolation / plot_keskar end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from workflow_helpers import TINY_CONFIG, planned_jobs, snakemake

from workflow_src.data.corrupt import make_corrupted
from workflow_src.metrics import interpolation as I
from workflow_src.nets.models import MLP, ModelSpec, build_model
from workflow_src.runtable import DataSpec, RunSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = DataSpec(dataset="digits", n_train=120, n_test=60, corruption="none", label_noise=0.2,
                seed=0, corrupt_test_inputs=False, corrupt_test_labels=False)
SPEC = ModelSpec((1, 8, 8), 10, width=12, depth=2, activation="relu")


@pytest.fixture(scope="module")
def data(digits):
    ds = make_corrupted(digits, DATA)
    return {name: ds[name].values for name in ("x_train", "y_train", "x_test", "y_test")}


@pytest.fixture(scope="module")
def networks():
    """Two float32 networks (as the workflow's) whose blend is not trivially either one."""
    small, large = build_model(SPEC, 0), build_model(SPEC, 1)
    with torch.no_grad():
        for p in large.parameters():
            p.mul_(3.0)  # sharper logits: the losses along the line vary over decades
    return small.eval(), large.eval()


def reference(model_small, model_large, x, y, alpha):
    """(mean loss, accuracy) of the blend, built by hand and evaluated point by point."""
    blended = MLP(model_small.spec).double()
    small = {k: v.double() for k, v in model_small.state_dict().items()}
    large = {k: v.double() for k, v in model_large.state_dict().items()}
    blended.load_state_dict({k: alpha * large[k] + (1 - alpha) * small[k] for k in small})
    x = torch.as_tensor(x, dtype=torch.float64)
    losses, correct = [], 0
    with torch.no_grad():
        for i in range(x.shape[0]):
            logits = blended(x[i:i + 1])[0]
            label = int(y[i])
            losses.append(float(torch.logsumexp(logits, 0) - logits[label]))
            correct += int(int(logits.argmax()) == label)
    return float(np.mean(losses)), correct / x.shape[0]


def test_interpolate_matches_a_per_point_reference(networks, data):
    alphas = I.alpha_grid(7, -1.0, 2.0)
    before = [copy.deepcopy(net.state_dict()) for net in networks]
    table = I.interpolate(*networks, data["x_train"], data["y_train"], data["x_test"],
                          data["y_test"], alphas, chunk_size=32)
    assert list(table.columns) == ["alpha", "train_loss", "train_acc", "test_loss", "test_acc"]
    np.testing.assert_array_equal(table["alpha"], alphas)
    for row in table.itertuples():
        for split in ("train", "test"):
            loss, acc = reference(*networks, data[f"x_{split}"], data[f"y_{split}"], row.alpha)
            assert getattr(row, f"{split}_acc") == acc
            assert getattr(row, f"{split}_loss") == pytest.approx(loss, rel=1e-12)
    # The line is not flat: extrapolating past the sharper network raises the loss.
    assert table["train_loss"].max() > 3 * table["train_loss"].min()
    for net, state in zip(networks, before):  # the caller's networks are untouched
        assert all(p.dtype == torch.float32 for p in net.parameters())
        for key, value in net.state_dict().items():
            assert torch.equal(value, state[key])


def test_the_ends_are_the_networks_themselves(networks, data):
    """α = 0 and α = 1 are each network's own float64 loss and accuracy, bit for bit, and
    the chunking changes nothing but the summation order."""
    alphas = I.alpha_grid(25, -1.0, 2.0)  # the authors' grid: step 1/8, 0 and 1 on it
    assert 0.0 in alphas and 1.0 in alphas
    table = I.interpolate(*networks, data["x_train"], data["y_train"], data["x_test"],
                          data["y_test"], alphas, chunk_size=1000).set_index("alpha")
    for alpha, net in ((0.0, networks[0]), (1.0, networks[1])):
        own = copy.deepcopy(net).double()
        for split in ("train", "test"):
            x = torch.as_tensor(data[f"x_{split}"], dtype=torch.float64)
            y = torch.as_tensor(data[f"y_{split}"]).long()
            loss, acc = I.evaluate(own, x, y, chunk_size=1000)
            assert table.loc[alpha, f"{split}_loss"] == loss
            assert table.loc[alpha, f"{split}_acc"] == acc
    chunked = I.interpolate(*networks, data["x_train"], data["y_train"], data["x_test"],
                            data["y_test"], alphas, chunk_size=7).set_index("alpha")
    pd.testing.assert_frame_equal(chunked, table, check_exact=False, rtol=1e-13)


def test_interpolate_refuses_different_architectures(networks, data):
    other = build_model(dataclasses.replace(SPEC, width=13), 0)
    with pytest.raises(ValueError, match="architectures"):
        I.interpolate(networks[0], other, data["x_train"], data["y_train"], data["x_test"],
                      data["y_test"], [0.0], chunk_size=32)


# --- pairs ------------------------------------------------------------------------------

BASE = RunSpec(data=DATA, width=32, depth=1, activation="relu", bias=True, optimizer="adam",
               learning_rate=0.01, batch_size=32, augment=False, seed=0, target_train_acc=1.0,
               max_steps=100, eval_every=10)


def table(*runs):
    return {run.id: run for run in runs}


def test_pairs_are_batch_size_twins_smallest_with_largest():
    b16, b64, b256 = (dataclasses.replace(BASE, batch_size=b) for b in (16, 64, 256))
    other_lr = dataclasses.replace(BASE, batch_size=128, learning_rate=0.1)  # no twin
    deep = [dataclasses.replace(BASE, depth=2, batch_size=b) for b in (8, 100)]
    other_seed = dataclasses.replace(BASE, seed=1, batch_size=16)  # alone in its group
    runs = [b64, other_lr, b256, deep[1], b16, other_seed, deep[0]]
    pairs = I.batch_size_pairs(table(*runs))
    assert pairs == sorted([(b16.id, b256.id), (deep[0].id, deep[1].id)])
    random.Random(0).shuffle(runs)  # the order depends only on which runs there are
    assert I.batch_size_pairs(table(*runs)) == pairs
    assert I.pair_members(pairs) == sorted([b16.id, b256.id, deep[0].id, deep[1].id])
    shards = {"s1": [b16.id, b64.id], "s2": [other_lr.id], "s3": [deep[1].id, b256.id]}
    assert I.shards_of(I.pair_members(pairs), shards) == ["s1", "s3"]


def test_runs_differing_in_more_than_batch_size_make_no_pair():
    noisy = dataclasses.replace(BASE, batch_size=64,
                                data=dataclasses.replace(DATA, label_noise=0.5))
    budget = dataclasses.replace(BASE, batch_size=128, max_steps=200)
    assert I.batch_size_pairs(table(BASE, noisy, budget)) == []
    assert I.batch_size_pairs(table(BASE)) == []
    assert I.batch_size_pairs({}) == []


# --- the rules, end to end ----------------------------------------------------------------

KESKAR_CONFIG = copy.deepcopy(TINY_CONFIG)
KESKAR_CONFIG["grid"].update(label_noise=[0.0], width=[16], batch_size=[20, 200])
KESKAR_CONFIG["measure"]["interpolation"] = {"n_alphas": 7, "alpha_min": -1.0, "alpha_max": 2.0}
FIGURE_FORMATS = ("html", "png", "svg")


@pytest.mark.workflow
def test_rules_write_the_table_and_the_figure(tmp_path):
    """4 networks (2 depths x batch sizes 20 and 200) make 2 pairs; only what the two rules
    need is built (no measuring)."""
    plan = planned_jobs(snakemake(tmp_path, KESKAR_CONFIG, "-n").stdout)
    assert plan["keskar_interpolation"] == 1 and plan["plot_keskar"] == 1, plan
    assert "keskar_interpolation" not in planned_jobs(snakemake(tmp_path, TINY_CONFIG,
                                                                "-n").stdout)
    result = snakemake(tmp_path, KESKAR_CONFIG, "plot_keskar", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    csv = pd.read_csv(tmp_path / "results/tiny/stats/keskar_interpolation.csv")
    assert list(csv.columns[:11]) == [
        "small_run", "large_run", "batch_small", "batch_large", "status_small", "status_large",
        "alpha", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert {"depth", "width", "learning_rate", "seed"} <= set(csv.columns)
    assert "batch_size" not in csv.columns
    pairs = csv.groupby(["small_run", "large_run"])
    assert pairs.ngroups == 2 and (pairs.size() == 7).all()
    assert set(csv["batch_small"]) == {20} and set(csv["batch_large"]) == {200}
    np.testing.assert_allclose(sorted(set(csv["alpha"])), np.linspace(-1, 2, 7))
    for (small, large), rows in pairs:
        rows = rows.set_index("alpha")
        for alpha, run_id in ((0.0, small), (1.0, large)):
            summary = json.loads((tmp_path / f"results/runs/{run_id}/train.json").read_text())
            # train.json comes from float32 logits, the table from float64: equal but for a
            # near-tie flipping (one point at most).
            assert abs(rows.loc[alpha, "train_acc"] - summary["train_acc"]) <= (
                1 / summary["n_train"] + 1e-12)
            assert rows.loc[alpha, "train_loss"] == pytest.approx(summary["train_loss"],
                                                                  rel=1e-3, abs=1e-6)
    for fmt in FIGURE_FORMATS:
        assert (tmp_path / f"results/tiny/figures/keskar_1d.{fmt}").stat().st_size > 0
    assert (tmp_path / "results/tiny/figures/keskar_1d.png").read_bytes()[:8] == (
        b"\x89PNG\r\n\x1a\n")
