"""Checkpoints of stacked training (ensemble.train_stacked, train_shard with stack=True): a
stack interrupted once or twice and resumed gives exactly the networks, curves and results
of an uninterrupted stack, members that stopped before the interruption included; a
checkpoint of another stack, code or device, or one that does not fit, is ignored with a
log line and training starts from step 0; a shard's job killed mid-stack resumes it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_checkpoints import InterruptedAt, assert_same_files
from test_checkpoints import checkpoint_files as files  # noqa: I001 (an alias)

from workflow_src.training.checkpoints import POINTER, CheckpointStore
from workflow_src.data.corrupt import make_corrupted
from workflow_src.training.ensemble import train_stacked
from workflow_src.integrity import write_store
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.paths import shard_record
from workflow_src.jobs.train_shard import stack_checkpoints, train_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
QUIET = lambda *parts: None  # noqa: E731
CODE, DATA = "c" * 16, {"clean": "d" * 16, "noisy": "e" * 16}


class Killed(BaseException):
    """Stands for a kill right after a checkpoint was written (a BaseException, as a kill is
    no failure train_shard could catch and fall back from)."""


class KilledAt(InterruptedAt):
    """test_checkpoints' InterruptedAt, killing with a BaseException."""

    interruption = Killed


def spec(noise):
    return DataSpec("digits", 100, 50, "none", noise, 0, True, False)


@pytest.fixture(scope="module")
def datasets(digits):
    return {noise: make_corrupted(digits, spec(noise)) for noise in (0.0, 0.5)}


def stack(optimizer, augment):
    """Four members of one shape that stop at different steps: one converges early (before
    the first interruption, at a low target), one diverges at once (a huge learning rate),
    one runs out of steps at 45, one trains to the end (label noise, 90 steps). Batches of
    30 of 100 points: epochs of 3 batches and a dropped tail."""
    base = 0.05 if optimizer == "momentum" else 0.01
    members = [  # (label noise, seed, lr, target, max_steps, eval_every)
        (0.0, 0, base * 2, 0.12 if augment else 0.5, 90, 3),
        (0.0, 1, 1e30, 1.0, 90, 10),
        (0.0, 2, base, 1.0, 45, 7),
        (0.5, 3, base / 2, 1.0, 90, 10),
    ]
    return [RunSpec(data=spec(noise), width=16, depth=1, activation="relu", bias=True,
                    optimizer=optimizer, learning_rate=lr, batch_size=30, augment=augment,
                    seed=seed, target_train_acc=target, max_steps=max_steps,
                    eval_every=eval_every)
            for noise, seed, lr, target, max_steps, eval_every in members]


def identity(runs, device=CPU, code=CODE):
    return stack_checkpoints(Path("."), "s", runs, code,
                             {run.data.id: DATA["clean" if run.data.label_noise == 0 else
                                                "noisy"] for run in runs},
                             device, 0, QUIET).identity


def store(folder, runs, every, cls=CheckpointStore, log=QUIET, **kwargs):
    fields = {k: v for k, v in identity(runs, **kwargs.pop("identity", {})).items()
              if k not in ("format", "checkpoint_code")}
    return cls(folder, fields, every, log=log, **kwargs)


def untimed(trained):
    """What must be bit-equal: weights (NaN equal to NaN), and the result and curve but for
    the seconds (NaN as the string 'nan', so that a diverged member compares too)."""
    def plain(value):
        return "nan" if isinstance(value, float) and math.isnan(value) else value
    out = []
    for model, result in trained:
        curve = [{k: plain(v) for k, v in p.items() if k != "seconds"} for p in result.curve]
        out.append((result.status, result.steps, result.train_correct, result.test_correct,
                    plain(result.train_loss), curve))
    return out


def assert_same_stack(got, want):
    assert untimed(got) == untimed(want)
    for k, ((model, _), (model_ref, _)) in enumerate(zip(got, want)):
        for (name, a), b in zip(model.state_dict().items(), model_ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True,
                                       msg=f"member {k}: {name}")


# --- train_stacked ----------------------------------------------------------------------

@pytest.mark.parametrize("optimizer, augment", [
    ("adam", False), ("momentum", False), ("momentum", True), ("adam", True)])
def test_a_stack_interrupted_twice_and_resumed_gives_the_uninterrupted_networks(
        datasets, tmp_path, optimizer, augment):
    runs = stack(optimizer, augment)
    datas = [datasets[run.data.label_noise] for run in runs]
    reference = train_stacked(runs, datas, CPU, log=QUIET)
    statuses = [(result.status, result.steps) for _, result in reference]
    assert statuses[0][0] == "converged" and statuses[0][1] < 14, statuses
    assert statuses[1][0] == "diverged" and statuses[2] == ("unconverged", 45)
    assert statuses[3] == ("unconverged", 90)
    lines = []
    # Every 7 steps: neither evaluation steps nor epoch boundaries; 49 is after member 2
    # ran out of steps, 14 after members 0 and 1 stopped.
    for stop_at in (14, 49):
        with pytest.raises(Killed):
            train_stacked(runs, datas, CPU, log=lines.append,
                          checkpoints=store(tmp_path, runs, 7, KilledAt, lines.append,
                                            stop_at=stop_at))
        assert files(tmp_path) == [f"checkpoint-{stop_at}.pt", POINTER]
    resumed_store = store(tmp_path, runs, 7, log=lines.append)
    resumed = train_stacked(runs, datas, CPU, log=lines.append, checkpoints=resumed_store)
    assert any("resumed the stack of 4 networks from the checkpoint at step 14 (2 still "
               "training" in line for line in lines), lines
    assert any("from the checkpoint at step 49 (1 still training" in line for line in lines)
    assert_same_stack(resumed, reference)
    seconds = [p["seconds"] for p in resumed[3][1].curve]
    assert seconds == sorted(seconds)  # counting on from the checkpoint's
    assert resumed_store.finish() == [] and files(tmp_path) == []


def test_rows_are_matched_by_run_id_whatever_the_order_of_the_runs(datasets, tmp_path):
    runs = stack("adam", False)
    datas = [datasets[run.data.label_noise] for run in runs]
    reference = train_stacked(runs, datas, CPU, log=QUIET)
    with pytest.raises(Killed):
        train_stacked(runs, datas, CPU, log=QUIET,
                      checkpoints=store(tmp_path, runs, 7, KilledAt, stop_at=35))
    lines = []
    resumed = train_stacked(runs[::-1], datas[::-1], CPU, log=lines.append,
                            checkpoints=store(tmp_path, runs, 7))
    assert any("from the checkpoint at step 35" in line for line in lines), lines
    assert_same_stack(resumed[::-1], reference)


@pytest.mark.parametrize("change", ["membership", "code", "device"])
def test_a_checkpoint_of_another_stack_code_or_device_is_ignored(datasets, tmp_path, change):
    runs = stack("momentum", True)
    datas = [datasets[run.data.label_noise] for run in runs]
    reference = train_stacked(runs, datas, CPU, log=QUIET)
    # The checkpoint was written by a stack of the first three only, by other code, or on
    # a CUDA device; the stack of four on the CPU must not use it.
    written_by = {"membership": (runs[:3], {}), "code": (runs, {"code": "0" * 16}),
                  "device": (runs, {"device": torch.device("cuda")})}[change]
    with pytest.raises(Killed):
        train_stacked(written_by[0], datas[:len(written_by[0])], CPU, log=QUIET,
                      checkpoints=store(tmp_path, written_by[0], 7, KilledAt, stop_at=21,
                                        identity=written_by[1]))
    assert "checkpoint-21.pt" in files(tmp_path)
    lines = []
    retrained = train_stacked(runs, datas, CPU, log=lines.append,
                              checkpoints=store(tmp_path, runs, 7, log=lines.append))
    differs = {"membership": "data_sha, stack", "code": "code_sha", "device": "device"}
    assert any("checkpoint ignored and removed: it was written for another network or code "
               f"(differs in {differs[change]}); training from the start" in line
               for line in lines), lines
    assert not any("resumed" in line for line in lines)
    assert "checkpoint-21.pt" not in files(tmp_path)
    assert_same_stack(retrained, reference)


@pytest.mark.parametrize("misfit", ["shapes", "members", "optimizer"])
def test_a_checkpoint_that_does_not_fit_the_stack_is_ignored(datasets, tmp_path, misfit):
    """Intact and under this stack's identity, yet its content does not fit (as if written
    by changed code whose digest did not change): discarded with the reason, trained from 0."""
    runs = stack("adam", False)
    datas = [datasets[run.data.label_noise] for run in runs]
    reference = train_stacked(runs, datas, CPU, log=QUIET)
    with pytest.raises(Killed):
        train_stacked(runs, datas, CPU, log=QUIET,
                      checkpoints=store(tmp_path, runs, 7, KilledAt, stop_at=21))
    state = torch.load(tmp_path / "checkpoint-21.pt", weights_only=True)
    if misfit == "shapes":
        state["params"]["hidden.0.weight"] = state["params"]["hidden.0.weight"][:, :15]
    elif misfit == "members":
        state["members"][0] = "0" * 12
    else:
        del state["optimizer"]["slots"]["exp_avg_sq"]
    store(tmp_path, runs, 7).save(21, state)  # a new pointer and digest for it
    lines = []
    retrained = train_stacked(runs, datas, CPU, log=lines.append,
                              checkpoints=store(tmp_path, runs, 7, log=lines.append))
    reason = {"shapes": "parameter hidden.0.weight: (2, 15, 64)", "members": "other members",
              "optimizer": "optimizer state"}[misfit]
    assert any("checkpoint ignored and removed: it does not fit this stack (ValueError: "
               in line and reason in line for line in lines), lines
    assert not any("resumed" in line for line in lines)
    assert_same_stack(retrained, reference)


# --- a shard's job ------------------------------------------------------------------------

def shard_members():
    """Three members of one shape; one runs out of steps (30) before the kill at 40."""
    runs = []
    for seed, (noise, max_steps) in enumerate([(0.0, 120), (0.5, 30), (0.5, 120)]):
        runs.append(RunSpec(data=spec(noise), width=16, depth=1, activation="relu",
                            bias=True, optimizer="adam", learning_rate=0.01, batch_size=30,
                            augment=False, seed=seed, target_train_acc=1.0,
                            max_steps=max_steps, eval_every=10))
    return runs


def shard_stores(folder, digits):
    stores = {}
    for run in shard_members():
        path = Path(folder) / "datasets" / f"{run.data.id}.zarr"
        if not path.exists():
            write_store(make_corrupted(digits, run.data), path)
        stores[run.data.id] = str(path)
    return stores


def kill_the_stack_at(monkeypatch, stop_at: int):
    """train_shard's stack 'killed' right after its checkpoint at ``stop_at`` is written
    (members trained one after another checkpoint as usual)."""
    from workflow_src.jobs import train_shard as module
    real_save = CheckpointStore.save

    def killed(self, step, state):
        real_save(self, step, state)
        if "stack" in self.identity and step == stop_at:
            raise Killed(step)

    monkeypatch.setattr(module.CheckpointStore, "save", killed)


def test_a_shard_job_killed_mid_stack_resumes_to_the_uninterrupted_networks(
        tmp_path, digits, monkeypatch):
    runs, shard = shard_members(), "s" * 12
    reference, results = tmp_path / "reference", tmp_path / "results"
    train_shard(shard, runs, shard_stores(reference, digits), reference, CPU, True, QUIET,
                checkpoint_every=0)
    stores = shard_stores(results, digits)
    kill_the_stack_at(monkeypatch, 40)
    with pytest.raises(Killed):
        train_shard(shard, runs, stores, results, CPU, True, QUIET, checkpoint_every=20)
    monkeypatch.undo()
    shard_folder = shard_record(results, shard).parent
    assert files(shard_folder) == ["checkpoint-40.pt", POINTER]
    assert not any((results / "runs" / run.id / "train.json").exists() for run in runs)
    lines = []
    train_shard(shard, runs, stores, results, CPU, True,
                lambda *parts: lines.append(" ".join(map(str, parts))), checkpoint_every=20)
    assert any("resumed the stack of 3 networks from the checkpoint at step 40 (2 still "
               "training" in line for line in lines), lines
    assert files(shard_folder) == ["train.json"]  # the stack's checkpoint is gone
    for run in runs:
        assert_same_files(reference / "runs" / run.id, results / "runs" / run.id)


def test_a_stack_checkpoint_left_behind_is_removed_when_the_shard_is_sealed(
        tmp_path, digits, monkeypatch):
    """Killed mid-stack, then run one after another: the stack's checkpoint belongs to no
    network any more and is removed with the shard's record written."""
    runs, shard = shard_members(), "s" * 12
    stores = shard_stores(tmp_path, digits)
    kill_the_stack_at(monkeypatch, 20)
    with pytest.raises(Killed):
        train_shard(shard, runs, stores, tmp_path, CPU, True, QUIET, checkpoint_every=20)
    monkeypatch.undo()
    shard_folder = shard_record(tmp_path, shard).parent
    assert files(shard_folder) == ["checkpoint-20.pt", POINTER]
    train_shard(shard, runs, stores, tmp_path, CPU, False, QUIET, checkpoint_every=20)
    assert files(shard_folder) == ["train.json"]
    for run in runs:
        assert files(tmp_path / "runs" / run.id) == ["curve.csv", "model.pt", "train.json"]
