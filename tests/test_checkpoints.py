"""Checkpoints and resume (workflow_src/training/checkpoints.py): a network whose training is
interrupted and resumed, once or more, is bit-identical to one trained without a break; a
checkpoint of another network, other code or damaged is ignored and removed; loading never
unpickles an arbitrary object; a killed Snakemake resumes the member it was training."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from workflow_helpers import REPO, SNAKEMAKE, TINY_CONFIG

from workflow_src import integrity
from workflow_src.training.checkpoints import KEPT, POINTER, CheckpointStore
from workflow_src.data.corrupt import make_corrupted
from workflow_src.integrity import write_store
from workflow_src.nets.models import load_model
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.train import train
from workflow_src.jobs.train_shard import MemberFailed, train_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
QUIET = lambda *parts: None  # noqa: E731
IDENTITY = {"run_id": "a" * 12, "code_sha": "c" * 16, "data_sha": "d" * 16}


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


class InterruptedAt(CheckpointStore):
    """A CheckpointStore whose training is 'killed' right after it saves step ``stop_at``,
    by raising ``interruption`` (subclasses choose one that train_shard does not catch)."""

    interruption: type[BaseException] = Interrupted

    def __init__(self, *args, stop_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_at = stop_at

    def save(self, step, state):
        super().save(step, state)
        if step == self.stop_at:
            raise self.interruption(step)


def run_spec(optimizer="adam", augment=False, **changes):
    # 100 points in batches of 30: epochs of 3 batches and a dropped tail, so the order and
    # the position in it matter; label noise 0.5 keeps it from converging in 90 steps.
    data = DataSpec("digits", 100, 50, "none", 0.5, 0, True, False)
    values = dict(data=data, width=16, depth=1, activation="relu", bias=True,
                  optimizer=optimizer, learning_rate=0.05 if optimizer in ("sgd", "gd",
                                                                          "momentum") else 0.01,
                  batch_size=30, augment=augment, seed=3, target_train_acc=1.0, max_steps=90,
                  eval_every=10)
    values.update(changes)
    return RunSpec(**values)


@pytest.fixture(scope="module")
def data(digits):
    return make_corrupted(digits, run_spec().data)


def assert_same_network(model_a, result_a, model_b, result_b):
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    untimed = lambda result: (result.status, result.steps, result.train_correct,  # noqa: E731
                              result.test_correct, result.train_loss,
                              [{k: v for k, v in p.items() if k != "seconds"}
                               for p in result.curve])
    assert untimed(result_a) == untimed(result_b)


def checkpoint_files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


@pytest.mark.parametrize("optimizer, augment", [
    ("adam", False), ("momentum", False), ("momentum", True), ("adam", True),
    ("rmsprop", False), ("sgd", True), ("gd", False)])
def test_interrupted_twice_and_resumed_gives_the_uninterrupted_network(
        data, tmp_path, optimizer, augment):
    run = run_spec(optimizer, augment)
    alone, alone_result = train(run, data, CPU, log=QUIET)
    lines = []
    # Checkpoints every 7 steps: neither evaluation steps nor epoch boundaries.
    for stop_at in (14, 49):
        store = InterruptedAt(tmp_path, IDENTITY, 7, stop_at=stop_at, log=lines.append)
        with pytest.raises(Interrupted):
            train(run, data, CPU, log=lines.append, checkpoints=store)
        assert checkpoint_files(tmp_path) == [f"checkpoint-{stop_at}.pt", POINTER]
    store = CheckpointStore(tmp_path, IDENTITY, 7, log=lines.append)
    model, result = train(run, data, CPU, log=lines.append, checkpoints=store)
    assert any("resumed from the checkpoint at step 14" in line for line in lines)
    assert any("resumed from the checkpoint at step 49" in line for line in lines)
    assert_same_network(model, result, alone, alone_result)
    assert result.steps == 90 and result.status == "unconverged"
    # The resumed curve's seconds count on from the checkpoint's.
    seconds = [point["seconds"] for point in result.curve]
    assert seconds == sorted(seconds)
    assert store.finish() == [] and checkpoint_files(tmp_path) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_resumed_on_cuda_gives_the_uninterrupted_network(data, tmp_path, optimizer):
    """The same on CUDA, where the batch generator is a CUDA generator (augmentation on)."""
    cuda = torch.device("cuda")
    run = run_spec(optimizer, True)
    alone, alone_result = train(run, data, cuda, log=QUIET)
    identity = {**IDENTITY, "device": "cuda"}
    with pytest.raises(Interrupted):
        train(run, data, cuda, log=QUIET,
              checkpoints=InterruptedAt(tmp_path, identity, 7, stop_at=35, log=QUIET))
    lines = []
    model, result = train(run, data, cuda, log=lines.append,
                          checkpoints=CheckpointStore(tmp_path, identity, 7, log=QUIET))
    assert any("resumed from the checkpoint at step 35" in line for line in lines)
    assert_same_network(model, result, alone, alone_result)


def test_the_global_generators_do_not_change_a_network(data):
    """Why a checkpoint holds only the batch generator: whatever state torch's and NumPy's
    global generators are in, training (with augmentation) gives the same network. (Only
    nn.Linear's constructor draws from torch's, for weights build_model then overwrites.)"""
    trained = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        np.random.seed(seed)
        trained.append(train(run_spec("adam", True), data, CPU, log=QUIET))
    assert_same_network(*trained[0], *trained[1])


def test_a_stopped_network_resumes_to_its_result(digits, tmp_path):
    """A checkpoint at the step that decided convergence (a kept step, and the job killed
    before the network was saved) resumes to that result, not to more training."""
    run = run_spec("adam", max_steps=2000,
                   data=DataSpec("digits", 100, 50, "none", 0.0, 0, True, False))
    clean = make_corrupted(digits, run.data)
    alone, alone_result = train(run, clean, CPU, log=QUIET)
    assert alone_result.status == "converged"
    stop = alone_result.steps
    store = InterruptedAt(tmp_path, IDENTITY, 0, keep=[stop], stop_at=stop, log=QUIET)
    with pytest.raises(Interrupted):
        train(run, clean, CPU, log=QUIET, checkpoints=store)
    model, result = train(run, clean, CPU, log=QUIET,
                          checkpoints=CheckpointStore(tmp_path, IDENTITY, 0, keep=[stop]))
    assert_same_network(model, result, alone, alone_result)


def test_kept_checkpoints_are_the_network_at_those_steps(data, tmp_path):
    """checkpoint_every 0 writes only the kept steps; finishing deletes the rest and seals
    checkpoints.json; a kept checkpoint holds the weights a run of that many steps ends with."""
    run = run_spec("momentum")
    store = CheckpointStore(tmp_path, IDENTITY, 25, keep=[20, 45], log=QUIET)
    train(run, data, CPU, log=QUIET, checkpoints=store)
    assert store.finish() == [20, 45]
    assert checkpoint_files(tmp_path) == ["checkpoint-20.pt", "checkpoint-45.pt", KEPT]
    record = integrity.read_record(tmp_path / KEPT, ("steps", "identity"))
    assert record["steps"] == [20, 45] and record["identity"]["run_id"] == IDENTITY["run_id"]
    kept = torch.load(tmp_path / "checkpoint-20.pt", weights_only=True)
    short, _ = train(run_spec("momentum", max_steps=20), data, CPU, log=QUIET)
    for name, value in short.state_dict().items():
        assert torch.equal(kept["model"][name], value), name


@pytest.mark.parametrize("key", ["run_id", "code_sha", "data_sha"])
def test_a_checkpoint_of_another_network_or_code_is_ignored_and_removed(data, tmp_path, key):
    run = run_spec()
    alone, alone_result = train(run, data, CPU, log=QUIET)
    with pytest.raises(Interrupted):
        train(run, data, CPU, log=QUIET,
              checkpoints=InterruptedAt(tmp_path, IDENTITY, 10, stop_at=40, log=QUIET))
    lines = []
    other = CheckpointStore(tmp_path, {**IDENTITY, key: "0" * 12}, 10, log=lines.append)
    model, result = train(run, data, CPU, log=lines.append, checkpoints=other)
    assert any(f"checkpoint ignored and removed: it was written for another network or code "
               f"(differs in {key})" in line for line in lines), lines
    assert not any("resumed" in line for line in lines)
    assert "checkpoint-40.pt" not in checkpoint_files(tmp_path)
    assert_same_network(model, result, alone, alone_result)


@pytest.mark.parametrize("damage", ["flipped byte", "garbage pointer", "missing file",
                                    "wrong shapes"])
def test_a_damaged_checkpoint_is_ignored_and_removed(data, tmp_path, damage):
    run = run_spec()
    alone, alone_result = train(run, data, CPU, log=QUIET)
    with pytest.raises(Interrupted):
        train(run if damage != "wrong shapes" else run_spec(width=17), data, CPU, log=QUIET,
              checkpoints=InterruptedAt(tmp_path, IDENTITY, 10, stop_at=40, log=QUIET))
    path = tmp_path / "checkpoint-40.pt"
    if damage == "flipped byte":
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    elif damage == "garbage pointer":
        (tmp_path / POINTER).write_text("{not json")
    elif damage == "missing file":
        path.unlink()
    lines = []
    model, result = train(run, data, CPU, log=lines.append,
                          checkpoints=CheckpointStore(tmp_path, IDENTITY, 10, log=lines.append))
    expected = {"flipped byte": "it is damaged", "garbage pointer": "is unreadable",
                "missing file": "missing", "wrong shapes": "it does not fit this network"}
    assert any("checkpoint ignored and removed" in line and expected[damage] in line
               for line in lines), lines
    assert_same_network(model, result, alone, alone_result)


class Payload:
    """Unpickling this would create ``marker`` (as any code an attacker chose would run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles_an_arbitrary_object(data, tmp_path):
    """A checkpoint with a valid pointer and digest but holding a pickled object: loading
    with weights_only refuses it, the object's code never runs, the checkpoint is removed."""
    marker = tmp_path / "code-ran"
    folder = tmp_path / "run"
    store = CheckpointStore(folder, IDENTITY, 10, log=QUIET)
    store.save(10, {"note": Payload(marker)})
    assert not marker.exists()  # pickling it ran nothing
    lines = []
    assert CheckpointStore(folder, IDENTITY, 10, log=lines.append).load() is None
    assert not marker.exists()
    assert any("cannot be loaded safely (UnpicklingError" in line for line in lines), lines
    assert checkpoint_files(folder) == []


# --- a shard's job, in process ----------------------------------------------------------------

def shard_members():
    return [run_spec(seed=seed, max_steps=120) for seed in (0, 1, 2)]


def shard_stores(tmp_path, digits):
    path = tmp_path / "datasets" / "d.zarr"
    write_store(make_corrupted(digits, shard_members()[0].data), path)
    return {shard_members()[0].data.id: str(path)}


def test_a_failed_shard_job_reuses_finished_members_and_resumes_the_one_in_progress(
        tmp_path, digits, monkeypatch):
    from workflow_src.jobs import train_shard as module

    runs = shard_members()
    reference, results = tmp_path / "reference", tmp_path / "results"
    train_shard("s" * 12, runs, shard_stores(reference, digits), reference, CPU, False, QUIET,
                checkpoint_every=0)
    stores = shard_stores(results, digits)
    real_save = CheckpointStore.save

    def killed_in_member_2(self, step, state):
        real_save(self, step, state)
        if self.identity["run_id"] == runs[1].id and step == 60:
            raise Interrupted(step)

    monkeypatch.setattr(module.CheckpointStore, "save", killed_in_member_2)
    with pytest.raises(MemberFailed):
        train_shard("s" * 12, runs, stores, results, CPU, False, QUIET, checkpoint_every=20)
    monkeypatch.undo()
    assert checkpoint_files(results / "runs" / runs[0].id) == ["curve.csv", "model.pt",
                                                               "train.json"]
    assert "checkpoint-60.pt" in checkpoint_files(results / "runs" / runs[1].id)
    lines = []
    train_shard("s" * 12, runs, stores, results, CPU, False,
                lambda *parts: lines.append(" ".join(map(str, parts))), checkpoint_every=20)
    assert sum("reused" in line for line in lines) == 2  # the 1st, and the 3rd (finished)
    assert any(f"run {runs[1].id}: resumed from the checkpoint at step 60" in line
               for line in lines), lines
    for run in runs:
        assert_same_files(reference / "runs" / run.id, results / "runs" / run.id)


def assert_same_files(reference: Path, folder: Path):
    """The same network in both folders: equal weights, curve (but for seconds) and summary
    (but for timing), and no checkpoint left."""
    assert checkpoint_files(folder) == ["curve.csv", "model.pt", "train.json"]
    a, b = load_model(reference / "model.pt"), load_model(folder / "model.pt")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    curves = [pd.read_csv(f / "curve.csv").drop(columns="seconds") for f in (reference, folder)]
    pd.testing.assert_frame_equal(*curves)
    summaries = [{k: v for k, v in json.loads((f / "train.json").read_text()).items()
                  if k not in ("seconds", "contents", "record_sha256")}
                 for f in (reference, folder)]
    assert summaries[0] == summaries[1]


# --- the workflow, killed -------------------------------------------------------------------

def one_shard_study(checkpoint_every: int) -> dict:
    """The tiny study cut to one shard of two networks fitting random labels (<= 8000 steps:
    long enough to be interrupted in the second)."""
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"].update(label_noise=[1.0], width=[16], depth=[1], seed=[0, 1])  # one shard
    config["training"] = {"max_steps": 8000, "eval_every": 100,
                          "checkpoint_every": checkpoint_every}
    return config


def train_command(workdir: Path, study: dict) -> list[str]:
    """Snakemake's command for the training stage of ``study`` (written to workdir)."""
    workdir.mkdir(exist_ok=True)
    (workdir / "study.yaml").write_text(yaml.safe_dump(study))
    return [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(workdir / "study.yaml"), "--cores", "2",
            "--until", "train"]


def train_reference(workdir: Path) -> list[str]:
    """Train one_shard_study without checkpoints in workdir, uninterrupted; its run ids."""
    done = subprocess.run(train_command(workdir, one_shard_study(0)), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = sorted(p.name for p in (workdir / "results/runs").iterdir())
    assert len(runs) == 2 and all(checkpoint_files(workdir / "results/runs" / r)
                                  == ["curve.csv", "model.pt", "train.json"] for r in runs)
    return runs


@pytest.mark.workflow
def test_killed_training_job_resumes_to_the_uninterrupted_networks(tmp_path):
    """SIGKILL to Snakemake and its training job while the 2nd member of a shard trains (the
    1st finished, the 2nd past a checkpoint); after --unlock the re-run reuses the 1st,
    resumes the 2nd, and both equal those of an uninterrupted run without checkpoints."""
    config = one_shard_study(500)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    runs = train_reference(reference)

    first = subprocess.Popen(train_command(killed, config), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    folders = [killed / "results/runs" / r for r in runs]
    try:
        deadline = time.monotonic() + 120
        while not (any((f / "train.json").exists() for f in folders) and any(
                (f / POINTER).exists() and not (f / "train.json").exists() for f in folders)):
            assert first.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline, "no second member checkpointed in 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # Snakemake and the training job
        first.wait()
    in_progress = [f for f in folders if not (f / "train.json").exists()]
    assert len(in_progress) == 1 and (in_progress[0] / POINTER).exists()
    assert not list((killed / "results/shards").glob("*/train.json"))

    unlock = subprocess.run([*train_command(killed, config), "--unlock"], cwd=REPO,
                            capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    resumed = subprocess.run(train_command(killed, config), cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = "\n".join(p.read_text() for p in (killed / "results/logs/train").glob("*.log"))
    assert "reused" in log and "resumed from the checkpoint at step" in log, log
    for run_id in runs:
        assert_same_files(reference / "results/runs" / run_id, killed / "results/runs" / run_id)
