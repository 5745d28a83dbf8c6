"""How robust is the ordering of sensitivity along ellipses of each kind of anchors?

Novak et al. 2018 (arXiv 1802.08760, §4.1) find both metrics highest off the data manifold
(ellipses through random points), lower between training points of different classes and
lowest within one class. On the default study the Jacobian norm orders that way but the
exact transition count of the random-anchor ellipses is the lowest. This script retrains
small clean-label networks with the workflow's own data, training and measuring code under
settings the workflow grid does not cover in one study (training-set size, depth, width,
optimiser, and input standardisation, which the workflow has no option for), and prints,
per setting and kind of anchors, the mean exact transitions and mean ‖J‖_F around the
ellipses, at the initial weights and after training. Like the benchmarks it is a script,
not a test: it measures, it asserts nothing.

    .venv/bin/python benchmarks/sweep_ellipse_kinds.py            # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/sweep_ellipse_kinds.py --quick    # two small settings, ~10 s

It also checks the exact counts on these real ellipses against the paper's sampled
estimator at k = 2^16 (sampled <= exact, and close), so a reader can rule out the walk.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from workflow_src.data.acquire import acquire
from workflow_src.data.corrupt import make_corrupted
from workflow_src.metrics.per_run import ellipse_metrics
from workflow_src.metrics.trajectories import ANCHOR_KINDS, draw_ellipses, ellipse_points
from workflow_src.metrics.transitions import exact_transitions_ellipse, sampled_transitions
from workflow_src.nets.models import build_model
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.train import train

BASE = dict(n_train=1000, width=256, depth=2, optimizer="adam", learning_rate=1e-3,
            standardize="none")
SETTINGS = [
    {},
    {"depth": 1},
    {"depth": 4},
    {"width": 1024},
    {"optimizer": "sgd", "learning_rate": 0.01},
    {"n_train": 5000},
    {"standardize": "global"},
    {"standardize": "per_pixel"},
    {"standardize": "per_pixel", "depth": 4},
]
QUICK = [{"width": 64, "depth": 1}, {"width": 64, "depth": 1, "standardize": "per_pixel"}]


def standardize(data, how: str):
    """Inputs rescaled with the training set's statistics (train and test alike).

    global: (x - mean) / std over all pixels, an affine map of every input, so the ellipses
    are the same up to scale and only training dynamics can change; per_pixel:
    (x - mean_i) / (std_i + 0.1), the 0.1 (in pixel/255 units) keeping the almost constant
    border pixels from being blown up.
    """
    if how == "none":
        return data
    x = data["x_train"].values
    if how == "global":
        mean, scale = x.mean(), x.std()
    elif how == "per_pixel":
        mean, scale = x.mean(axis=0), x.std(axis=0) + 0.1
    else:
        raise ValueError(f"standardize {how!r} is not one of none, global, per_pixel")
    data = data.copy()
    for name in ("x_train", "x_test"):
        data[name] = (data[name] - mean) / scale
    return data


def run_setting(raw, setting: dict, per_kind: int, n_positions: int, seed: int) -> dict:
    s = {**BASE, **setting}
    spec = DataSpec(dataset="fashion_mnist", n_train=s["n_train"], n_test=1000,
                    corruption="none", label_noise=0.0, seed=0, corrupt_test_inputs=True,
                    corrupt_test_labels=False)
    data = standardize(make_corrupted(raw, spec), s["standardize"])
    run = RunSpec(data=spec, width=s["width"], depth=s["depth"], activation="relu", bias=True,
                  optimizer=s["optimizer"], learning_rate=s["learning_rate"], batch_size=100,
                  augment=False, seed=seed, target_train_acc=1.0, max_steps=20000,
                  eval_every=100)
    model, result = train(run, data, torch.device("cpu"), log=lambda _: None)
    model.eval()
    initial = build_model(model.spec, run.seed).eval()
    train_x = torch.as_tensor(data["x_train"].values)
    train_y = torch.as_tensor(data["y_train_clean"].values)
    out = ellipse_metrics(model, train_x, train_y, per_kind, n_positions, seed=0,
                          chunk_size=256, initial_model=initial)
    row = {"status": result.status, "steps": result.steps, "test_acc": result.test_acc}
    kinds = out["ellipse_kind"].values
    for kind in ANCHOR_KINDS:
        pick = kinds == kind
        for suffix, label in (("_init", "init"), ("", "trained")):
            row[(kind, label, "T")] = float(out[f"ellipse_transitions{suffix}"][pick].mean())
            row[(kind, label, "J")] = float(out[f"ellipse_jacobian_norm{suffix}"][pick].mean())
    row["check"] = sampled_check(model, train_x, train_y)
    return row


def sampled_check(model, train_x, train_y, k: int = 2**16) -> list[tuple[int, int]]:
    """(sampled at k, exact) on one ellipse of each kind, both in float64."""
    model64 = copy.deepcopy(model).double()
    pairs = []
    for ellipse in draw_ellipses(train_x, train_y, per_kind=1, seed=1)[1]:
        c, a, b = (v.double() for v in ellipse)
        exact = exact_transitions_ellipse(model, c, a, b).count
        sampled = sampled_transitions(
            model64, lambda s: ellipse_points(c, a, b, 2 * math.pi * s), k)
        pairs.append((int(sampled), int(exact)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small settings only")
    parser.add_argument("--per-kind", type=int, default=8, help="ellipses of each kind")
    parser.add_argument("--n-positions", type=int, default=64,
                        help="angles at which ‖J‖_F is averaged around each ellipse")
    parser.add_argument("--seed", type=int, default=0, help="network seed")
    args = parser.parse_args()
    torch.manual_seed(0)
    raw = acquire("fashion_mnist")
    settings = QUICK if args.quick else SETTINGS
    print("Mean exact transitions T and mean ‖J‖_F around ellipses through random points (R),")
    print("training points of different classes (D) and of one class (S); clean labels, relu.")
    print(f"{args.per_kind} ellipses per kind; base setting {BASE}.\n")
    header = (f"{'setting':<34}{'test acc':>9}  {'T init R/D/S':>16}  {'T trained R/D/S':>17}"
              f"  {'R<D?':>4}  {'J trained R/D/S':>18}  sampled<=exact")
    print(header)
    print("-" * len(header))
    for setting in settings:
        start = time.perf_counter()
        row = run_setting(raw, setting, args.per_kind, args.n_positions, args.seed)
        t_init = "/".join(f"{row[(k, 'init', 'T')]:.0f}" for k in ANCHOR_KINDS)
        t_trained = "/".join(f"{row[(k, 'trained', 'T')]:.0f}" for k in ANCHOR_KINDS)
        j_trained = "/".join(f"{row[(k, 'trained', 'J')]:.2f}" for k in ANCHOR_KINDS)
        ratio = row[("random", "trained", "T")] / row[("different_class", "trained", "T")]
        ok = all(s <= e for s, e in row["check"])
        label = ", ".join(f"{k}={v}" for k, v in setting.items()) or "base"
        print(f"{label:<34}{row['test_acc']:>9.3f}  {t_init:>16}  {t_trained:>17}"
              f"  {ratio:>4.2f}  {j_trained:>18}  {ok} {row['check']}"
              f"  [{row['status']}, {row['steps']} steps, {time.perf_counter() - start:.0f} s]",
              flush=True)
    print("\nR<D? is the ratio of mean trained transitions, random / different_class: below 1,")
    print("the random-anchor ellipses cross fewer units than those through training points.")


if __name__ == "__main__":
    main()
