"""Metrics along training: the chosen metrics of every member of a shard at chosen training
steps (snapshots), e.g. Arpit et al. 2017's critical sample ratio through training.

One job per shard (rule measure_snapshots) writes one store,
``results/shards/<shard>/snapshots-<hash of the settings>.zarr``, with dimensions
``run`` (coordinate ``run_id``, the shard's order), ``step`` (the requested training steps)
and the metrics' own (``point``, ...). Each metric is measured exactly as its final-network
job measures it (its registry declaration's measure function, measure_shard.measure_member,
with the settings of ``measure.<metric>``), so a curve ends at the value of the study's
metrics.zarr. Each metric gets its own copy of the snapshot's network.

The network of a member at step s:

- s at or beyond the member's final step (it converged, diverged or ran out of steps):
  the final network, ``model.pt`` (checked against its train.json); ``step_used`` is the
  final step and ``reached`` is False when s lies beyond it;
- a checkpoint kept at s (``training.keep_checkpoints``: ``checkpoint-<s>.pt``, listed with
  its digest in the sealed ``checkpoints.json``, written for this network and training
  code): its weights, after checking the digest. A damaged or foreign one is named in the
  log and the step is regenerated instead (nothing is lost, nothing is deleted);
- otherwise regenerated: the member is trained again from scratch by ``train.train`` (the
  same code, data, seed and device; training is deterministic), once per member up to the
  largest such step, with the weights recorded at every needed step on the way. The copy
  of the run that is retrained differs only in ``max_steps`` (the last needed step: this
  adds one evaluation there, which reads but never changes the weights) and in an
  unreachable target accuracy, so its stopping rule cannot end it before that step (the
  member itself did not stop before its final step, which lies beyond).

``source`` records which of the three gave each snapshot. This module imports no torch at
import time: the snapshot table is built in the analysis environment.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .. import registry
from .aggregate import expected_sign
from ..runtable import HYPERPARAMETERS

# The metrics a snapshot can measure (those that declare snapshots: true), in the order they
# are measured (the bounds read the Jacobian measured before them). The walks (translation,
# ellipses) are left out.
SNAPSHOT_METRICS = tuple(m for m, d in registry.metrics().items() if d.snapshots)
UNREACHABLE = 2.0  # a target training accuracy no network reaches: no early stop
SOURCES = ("final", "checkpoint", "regenerated")
# Per (run, step) variables of a snapshot store besides the metrics'.
SNAPSHOT_VARIABLES = ("step_used", "reached", "source", "train_acc", "test_acc",
                      "train_loss")


def ordered_metrics(metrics) -> list[str]:
    """The chosen metrics in the order they are measured; ValueError if one is unknown or
    the bounds come without the Jacobian they are computed from."""
    unknown = [m for m in metrics if m not in SNAPSHOT_METRICS]
    if unknown:
        raise ValueError(f"{unknown} cannot be measured on snapshots; choose from "
                         f"{list(SNAPSHOT_METRICS)}")
    for metric in metrics:
        missing = [m for m in registry.metric(metric).metric_needs if m not in metrics]
        if missing == ["jacobian"] and metric == "bounds":
            raise ValueError("bounds are computed from the Jacobian's per-point values: list "
                             "jacobian too")
        if missing:
            raise ValueError(f"{metric} is computed from the results of {missing}: list them too")
    return [m for m in SNAPSHOT_METRICS if m in metrics]


# --- the network at a step ------------------------------------------------------------------

class Recorder:
    """Stands in for a checkpoints.CheckpointStore in ``train.train``: resumes nothing, and
    keeps a copy of the weights after each of ``steps`` (on the CPU) instead of saving."""

    def __init__(self, steps):
        self.keep = frozenset(int(s) for s in steps)
        self.states: dict[int, dict] = {}

    def load(self):
        return None

    def due(self, step: int) -> bool:
        return step in self.keep

    def save(self, step: int, state: dict) -> None:
        # training_state's tensors may share the live weights' storage (on the CPU): copy.
        self.states[step] = {name: value.clone() for name, value in state["model"].items()}


def regenerate(run, data, steps, device, log=print) -> dict[int, dict]:
    """step -> the member's weights (a CPU state dict) after each of ``steps``, by training
    it again from scratch up to the largest (see the module doc). Every step must lie at or
    before the member's final step."""
    from ..training.train import train

    steps = sorted({int(s) for s in steps})
    if not steps:
        return {}
    if steps[0] < 1:
        raise ValueError(f"snapshot steps start at 1 (the first update), not {steps[0]}")
    probe = dataclasses.replace(run, max_steps=steps[-1], target_train_acc=UNREACHABLE)
    recorder = Recorder(steps)
    log(f"regenerating steps {steps} by training again from scratch")
    train(probe, data, device, log=lambda *parts: None, checkpoints=recorder)
    missing = [s for s in steps if s not in recorder.states]
    if missing:  # only a non-finite loss stops it early, and the member did not diverge there
        raise RuntimeError(
            f"run {run.id}: training again stopped (a non-finite loss) before steps "
            f"{missing}, which the member's own training passed: its training is not "
            f"reproducible on {device}. Remove results/runs/{run.id} to train it again.")
    return recorder.states


def kept_checkpoint(folder: Path, step: int, summary: dict, log=print) -> dict | None:
    """The weights of the checkpoint kept at ``step`` in the member's folder if it is listed
    in an intact checkpoints.json, matches its digest and was written for this network and
    training code; else None (with a log line naming the problem, unless there is none)."""
    import torch

    from .. import integrity
    from ..training.checkpoints import KEPT, checkpoint_path

    folder = Path(folder)
    path, record_path = checkpoint_path(folder, step), folder / KEPT
    if not record_path.is_file():
        return None
    record, problems = integrity.load_record(record_path, ("identity", "steps"))
    if record is None or path.name not in record.get("contents", {}):
        if problems:
            log(f"kept checkpoints not used ({'; '.join(map(str, problems))}); "
                f"regenerating step {step} instead")
        return None

    def refuse(why: str) -> None:
        log(f"kept checkpoint {path} not used: {why}; regenerating step {step} by training "
            "again from scratch instead (the file is left as it is: delete it, or run the "
            "shard's training again, to replace it)")
        return None

    identity = record["identity"]
    expected = {"run_id": summary["run_id"], "code_sha": summary.get("code_sha"),
                "data_sha": summary.get("data_sha")}
    differing = [k for k, v in expected.items() if identity.get(k) != v]
    if differing:
        return refuse(f"written for another network or training code ({', '.join(differing)})")
    problems = integrity.compare(path, str(path), record["contents"][path.name])
    if problems:
        return refuse(f"damaged ({'; '.join(p.what for p in problems)})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = dict(state["model"])
        if int(state["step"]) != step:
            raise ValueError(f"it holds step {state['step']}")
    except Exception as err:
        return refuse(f"unreadable ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    return weights


def snapshot_weights(run, data, steps, summary: dict, folder: Path, device, log=print
                     ) -> dict[int, tuple[dict | None, int, str]]:
    """step -> (weights, step used, source) for every requested step: weights None means the
    final network (model.pt); source is one of SOURCES (see the module doc)."""
    final = int(summary["steps"])
    out, todo = {}, []
    for step in sorted({int(s) for s in steps}):
        if step >= final:
            out[step] = (None, final, "final")
            continue
        weights = kept_checkpoint(folder, step, summary, log)
        if weights is None:
            todo.append(step)
        else:
            out[step] = (weights, step, "checkpoint")
    for step, weights in regenerate(run, data, todo, device, log).items():
        out[step] = (weights, step, "regenerated")
    return dict(sorted(out.items()))


def network_from(weights: dict, final_model, run, data, device):
    """The network with ``weights`` (None: ``final_model`` itself), in eval mode."""
    if weights is None:
        return final_model
    from ..nets.models import build_model
    from ..training.train import model_spec_for

    model = build_model(model_spec_for(run, data), run.seed, device)
    model.load_state_dict(weights)
    return model.eval()


# --- one shard ------------------------------------------------------------------------------

def measure_snapshots(steps, metrics: dict[str, dict], shard: str, runs: list, data_stores,
                      results, device, chunk_size: int, log) -> xr.Dataset:
    """The snapshot store of one shard: for every member and requested step, the metrics
    (metric -> its settings, measured in ordered_metrics' order) of the member's network at
    that step, the step used, whether it was reached, where its weights came from, and its
    training and test accuracy and training loss (train.evaluate, as the learning curve)."""
    import torch

    from .. import integrity
    from .adapter import TRAIN_SUMMARY_KEYS, Progress
    from .measure_shard import MemberJob, copy_for, measure_member
    from ..training.train import evaluate
    from ..nets.checked import load_checked
    from ..paths import model_file, run_folder, run_record, shard_record

    order = ordered_metrics(metrics)
    steps = sorted({int(s) for s in steps})
    record = integrity.read_record(shard_record(results, shard), ("members",))
    missing = [run.id for run in runs if run.id not in record["members"]]
    if missing:
        raise integrity.DamagedOutputError([integrity.Problem(
            str(shard_record(results, shard)), f"does not list members {missing}")])
    datas = {data_id: integrity.open_store(path) for data_id, path in data_stores.items()}
    job = MemberJob(device, chunk_size, log)
    progress = Progress(log, len(runs), "networks")
    members = []
    for run in runs:
        progress.start(f"run {run.id}: steps {steps}")
        summary = integrity.read_record(run_record(results, run.id), TRAIN_SUMMARY_KEYS)
        data = datas[run.data.id]
        final_model = load_checked(model_file(results, run.id), run_record(results, run.id),
                                   device)
        x_train = torch.as_tensor(data["x_train"].values, device=device)
        y_train = torch.as_tensor(data["y_train"].values, device=device)
        x_test = torch.as_tensor(data["x_test"].values, device=device)
        y_test = torch.as_tensor(data["y_test"].values, device=device)
        snapshots = []
        for step, (weights, used, source) in snapshot_weights(
                run, data, steps, summary, run_folder(results, run.id), device,
                progress.prefixed(f"run {run.id}")
        ).items():
            model = network_from(weights, final_model, run, data, device)
            job.run, job.measured = run, {}
            for metric in order:
                job.measured[metric] = measure_member(metric, copy_for(model), data,
                                                      metrics[metric], job)
            # The loss the network trained with (losses.py), as in its learning curve.
            train_loss, train_correct = evaluate(model, x_train, y_train, run.loss)
            _, test_correct = evaluate(model, x_test, y_test, run.loss)
            snapshots.append(_merge_metrics([job.measured[m] for m in order]).assign(
                step_used=np.int64(used), reached=np.bool_(step <= used), source=source,
                train_acc=train_correct / x_train.shape[0],
                test_acc=test_correct / x_test.shape[0], train_loss=train_loss))
        member = xr.concat(snapshots, dim="step", join="outer", fill_value=np.nan,
                           coords="minimal", compat="override", combine_attrs="drop")
        members.append(member.assign(final_steps=np.int64(summary["steps"]),
                                     status=str(summary["status"])))
        progress.done(f"run {run.id}: {len(steps)} snapshots")
    out = xr.concat(members, dim="run", join="outer", fill_value=np.nan, coords="minimal",
                    compat="override", combine_attrs="drop")
    out = out.assign_coords(step=("step", np.array(steps, dtype=np.int64)),
                            run_id=("run", [run.id for run in runs]),
                            data_id=("run", [run.data.id for run in runs]))
    out.attrs = {"shard": shard, "metrics": order, "steps": steps,
                 "sources": "final: model.pt; checkpoint: a kept checkpoint-<step>.pt; "
                            "regenerated: trained again from scratch"}
    return out


def _merge_metrics(stores: list[xr.Dataset]) -> xr.Dataset:
    """One snapshot's metric outputs as one Dataset (the per-point ones share ``point``)."""
    cleaned, names = [], set()
    for store in stores:
        store = store.drop_vars([c for c in ("test_index",) if c in store.coords])
        if "correct" in store:  # float, so padding can be NaN
            store["correct"] = store["correct"].astype(float)
        clash = names & set(store.data_vars)
        if clash:
            raise ValueError(f"two snapshot metrics both write {sorted(clash)}")
        names |= set(store.data_vars)
        cleaned.append(store.assign_attrs({}))
    return xr.merge(cleaned, join="outer", fill_value=np.nan, compat="override",
                    combine_attrs="drop")


# --- the study's table (analysis environment) -----------------------------------------------

def table_columns(ds: xr.Dataset) -> list[str]:
    """The metric variables of a snapshot store the table has a column for: those whose
    dimensions are (run, step) or (run, step, point); per-point ones are averaged."""
    return [name for name, da in ds.data_vars.items()
            if name not in (*SNAPSHOT_VARIABLES, "final_steps", "status")
            and da.dims in (("run", "step"), ("run", "step", "point"))]


def snapshot_table(stores: list[xr.Dataset], runs: dict[str, dict]) -> pd.DataFrame:
    """One row per (run, requested step) of every shard's store: run_id, the hyperparameters
    (``runs``: run id -> hyperparameters, the study's order), the member's final status and
    steps, the step requested and used, reached, source, the snapshot's accuracies and
    training loss, then every metric (per-point ones averaged over the points, NaN padding
    skipped)."""
    rows = []
    for ds in stores:
        metrics = table_columns(ds)
        for i, run_id in enumerate(ds["run_id"].values.tolist()):
            member = ds.isel(run=i)
            for j, step in enumerate(ds["step"].values.tolist()):
                snap = member.isel(step=j)
                # (.get: a run not in the study is refused below, naming it)
                row = {"run_id": run_id, **runs.get(run_id, {}),
                       "status": str(member["status"].values),
                       "final_steps": int(member["final_steps"].values), "step": int(step),
                       "step_used": int(snap["step_used"].values),
                       "reached": bool(snap["reached"].values),
                       "source": str(snap["source"].values),
                       **{name: float(snap[name].values) for name in
                          ("train_acc", "test_acc", "train_loss")}}
                for name in metrics:
                    values = np.asarray(snap[name].values, dtype=float)
                    row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
                rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    unknown = sorted(set(table["run_id"]) - set(runs))
    if unknown:
        raise ValueError(f"snapshot stores hold runs {unknown} that are not the study's")
    position = {run_id: i for i, run_id in enumerate(runs)}
    table = table.sort_values(["run_id", "step"], key=lambda s: s.map(position)
                              if s.name == "run_id" else s, kind="stable")
    return table.reset_index(drop=True)


def indicator_columns(table: pd.DataFrame) -> list[str]:
    """The table's indicator columns: the variables whose metric declares an expected sign
    (registry.expected_sign), as the statistics' indicators."""
    return [c for c in table.columns
            if c not in ("run_id", *HYPERPARAMETERS) and expected_sign(c) is not None]
