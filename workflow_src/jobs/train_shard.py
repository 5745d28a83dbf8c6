"""Stage 3 for one shard (workflow_src/shards.py): train every member network.

Each member's files stay where a network's files have always been, in
``results/runs/<run_id>/`` (model.pt, curve.csv, and train.json, which vouches for both), so
a network is trained once whichever shards and studies contain it. The shard's own record,
``results/shards/<shard>/train.json``, is written last: it lists every member's summary and
vouches for each member's train.json (workflow_src/integrity.py).

Members whose files are intact and were written by the same training code (``code_sha``,
a hash of the modules that determine a trained network) from the same dataset (``data_sha``,
the digest of its store's manifest) are reused, not retrained. That is
what makes re-planned shards cheap: a study that grows, a shard whose record was removed by
``snakemake verify`` because one member was damaged, another study sharing the networks.

A failing member (an exception, not divergence, which is a result) is logged and the others
go on; the job fails at the end and names it, and what its shard-mates computed is kept
for the next run.

Members trained one after another save checkpoints (workflow_src/training/checkpoints.py) in their
folder every ``checkpoint_every`` steps, so a job that is killed or fails resumes the member
it was training from its last checkpoint (and reuses the members it had finished). A
checkpoint names the network it belongs to: the run id, ``code_sha``, ``data_sha``, the
device type and torch version.

A stack (members trained at once, ensemble.train_stacked) saves one checkpoint of its whole
state every ``checkpoint_every`` steps, in the shard's folder ``results/shards/<shard>/``
(``stack_checkpoints``): all members' rows of the stacked tensors, and the final weights and
results of members that have already stopped, so a killed job resumes the stack at its last
checkpoint and gives exactly the networks of an uninterrupted stack. Its identity names the
stack: the sorted run ids of its members, ``code_sha``, every member's ``data_sha``, the
device type and torch version; a stack of other members (some were reused meanwhile, the
shard changed) or on another device ignores it, with a log line, and starts from step 0.
The stack's members are saved when the whole stack has finished, then its checkpoint is
deleted (a job killed while they are being saved reuses those already saved and trains the
others again from step 0, as a smaller stack). Stacked members keep no checkpoints
(``keep_checkpoints`` applies to members trained one after another; snapshots regenerate
stacked members' steps).

On SIGTERM or SIGINT (inside checkpoints.stop_on_signals, as the rule's script runs it) the
member or stack in training saves a checkpoint of the step it is at and the job stops with
checkpoints.TrainingStopped; members already finished are saved, and the re-run reuses them
and resumes the rest.
"""

from __future__ import annotations

import hashlib
import traceback
from pathlib import Path

import pandas as pd
import torch

from .. import integrity
from .adapter import TRAIN_SUMMARY_KEYS, Progress, code_version
from ..training.checkpoints import CheckpointStore, raise_if_stop_requested
from ..training.ensemble import stackable, train_stacked
from ..nets.models import save_model
from ..paths import CURVE_FILE, MODEL_FILE, RUN_RECORD, run_folder, run_record, shard_record
from ..runtable import RunSpec
from ..training.train import train

# The modules whose code determines a trained network (and so whether one can be reused):
# every network's, plus nets/cnns.py and nets/cnn_codes.py for the convolutional ones. An MLP's
# hash leaves those out, so that editing the CNNs retrains no MLP. Paths are relative to
# workflow_src/ (the same on every platform: a hash input).
TRAINING_CODE = ("training/train.py", "nets/models.py", "nets/spec.py", "runtable.py",
                 "training/ensemble.py", "nets/losses.py", "training/augmentation.py",
                 "training/stacked.py")
CNN_CODE = ("nets/cnns.py", "nets/cnn_codes.py")
# Keys of a member's summary the shard record repeats, so aggregate reads one file a shard.
SHARD_SUMMARY_KEYS = (*TRAIN_SUMMARY_KEYS, "fit_step", "train_correct", "n_train",
                      "test_correct", "n_test")


def stack_checkpoints(results: Path, shard: str, runs: list[RunSpec], code_sha: str,
                      data_shas: dict, device, every: int, log) -> CheckpointStore:
    """The checkpoints of the stack of ``runs`` (the shard's members trained at once), in the
    shard's folder; its identity names every member, so another stack never resumes it."""
    ids = sorted(run.id for run in runs)
    by_id = {run.id: run for run in runs}
    identity = {"stack": ids, "code_sha": code_sha,
                "data_sha": [data_shas[by_id[run_id].data.id] for run_id in ids],
                "device": device.type, "torch": str(torch.__version__)}
    return CheckpointStore(shard_record(results, shard).parent, identity, every, (), log)


def training_code_sha(architecture: str = "mlp") -> str:
    """SHA-256 (first 16 hex digits) of the source that trains an ``architecture`` network:
    TRAINING_CODE, and CNN_CODE for every architecture but the MLP."""
    sha = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]  # workflow_src/
    for name in TRAINING_CODE + (() if architecture == "mlp" else CNN_CODE):
        sha.update(name.encode() + b"\0" + (package / name).read_bytes())
    return sha.hexdigest()[:16]


def data_sha(store) -> str:
    """Digest of a dataset store's manifest, which lists the digest of every file in it."""
    return integrity.digest(Path(store) / integrity.MANIFEST)["sha256"][:16]


def reusable_summary(run: RunSpec, folder: Path, code_sha: str, data: str
                     ) -> tuple[dict | None, str]:
    """(the member's summary, "") if its files are intact and come from this training code
    and this dataset; else (None, why it must be trained)."""
    record = folder / RUN_RECORD
    if not record.exists():
        return None, "not trained yet"
    try:  # checks the record and every file it vouches for, once
        summary = integrity.read_record(record, TRAIN_SUMMARY_KEYS)
    except integrity.DamagedOutputError as err:
        return None, f"its files are damaged ({'; '.join(map(str, err.problems))})"
    if summary.get("run_id") != run.id:
        return None, f"{record} is for run {summary.get('run_id')}"
    if summary.get("code_sha") != code_sha:
        return None, "it was trained by other training code"
    if summary.get("data_sha") != data:
        return None, "it was trained on a different dataset"
    return summary, ""


def save_trained(run: RunSpec, model, result, folder: Path, device, code_sha: str,
                 data: str) -> dict:
    """Write one network's model.pt and curve.csv, then the train.json that vouches for them."""
    folder.mkdir(parents=True, exist_ok=True)
    integrity.remove(folder / RUN_RECORD)  # a stale record must never vouch for new files
    save_model(model, folder / MODEL_FILE)
    pd.DataFrame(result.curve).to_csv(folder / CURVE_FILE, index=False)
    summary = {
        "run_id": run.id, "status": result.status, "steps": result.steps,
        # The first evaluation after an update at which the training accuracy reached the
        # target (null: never), whether training stopped there or went on (stop_at_target).
        "fit_step": result.fit_step,
        "train_acc": result.train_acc, "test_acc": result.test_acc, "gap": result.gap,
        # The counts the three fractions come from (each rounded once, so equal counts tie).
        "train_correct": result.train_correct, "n_train": result.n_train,
        "test_correct": result.test_correct, "n_test": result.n_test,
        # train_loss is the mean of the loss trained with (losses.py), named by loss_function.
        "train_loss": result.train_loss, "loss_function": result.loss,
        "seconds": result.seconds, "device": str(device),
        "torch": torch.__version__, "code_version": code_version(), "code_sha": code_sha,
        "data_sha": data,
    }
    integrity.seal_record(folder / RUN_RECORD, summary,
                          [folder / MODEL_FILE, folder / CURVE_FILE])
    return summary


class MemberFailed(RuntimeError):
    """Raised at the end of a shard's job when some members could not be trained."""


def train_shard(shard: str, runs: list[RunSpec], data_stores: dict, results: Path,
                device: torch.device, stack: bool, log, checkpoint_every: int = 0,
                keep_checkpoints=()) -> dict[str, dict]:
    """Train (or reuse) every member; write the shard record; return run id -> summary.

    data_stores: data id -> path of its corrupted dataset (stage 2). stack: train the
    members that need it as one stacked ensemble (ensemble.train_stacked) instead of one
    after another. checkpoint_every, keep_checkpoints: steps between checkpoints of a
    member in training (0: none), and the steps whose checkpoints stay when it is finished
    (config training.checkpoint_every, training.keep_checkpoints).
    """
    job = _ShardJob(shard, runs, data_stores, Path(results), device, log, checkpoint_every,
                    keep_checkpoints)
    todo = job.reuse()
    stacked = [run for run in todo if stackable(run)] if stack else []
    raise_if_stop_requested()
    if len(stacked) > 1 and job.train_stacked(stacked):
        todo = [run for run in todo if run not in stacked]
    failures = job.train_each(todo)
    if failures:
        raise MemberFailed(
            f"{len(failures)} of {len(runs)} networks of shard {shard} failed to train: "
            f"{', '.join(failures)} (tracebacks above). The {len(runs) - len(failures)} others "
            "are saved and will be reused when the job runs again.")
    # A stack's checkpoint left by stacked training that failed (and fell back to one after
    # another) or by an earlier stack of other members belongs to no network now.
    stack_checkpoints(results, shard, [], training_code_sha(), job.data_shas, device, 0,
                      log).clear()
    seal_shard(shard, runs, job.summaries, results)
    return job.summaries


class _ShardJob:
    """One train job's members: which are reused, training them (stacked or one after
    another), and saving each with the code and data it was trained by."""

    def __init__(self, shard, runs, data_stores, results, device, log, checkpoint_every,
                 keep_checkpoints):
        self.shard, self.runs, self.data_stores, self.results = shard, runs, data_stores, results
        self.device, self.log = device, log
        self.checkpoint_every, self.keep_checkpoints = checkpoint_every, keep_checkpoints
        self.code_shas = {arch: training_code_sha(arch)
                          for arch in {run.architecture for run in runs}}
        self.data_shas = {data_id: data_sha(path) for data_id, path in data_stores.items()}
        self.opened: dict = {}
        self.summaries: dict[str, dict] = {}
        self.progress = Progress(log, len(runs), "networks")

    def data_of(self, run):  # opened (and checked against its seal) when first needed
        if run.data.id not in self.opened:
            self.opened[run.data.id] = integrity.open_store(self.data_stores[run.data.id])
        return self.opened[run.data.id]

    def save(self, run, model, result):
        self.summaries[run.id] = save_trained(
            run, model, result, run_folder(self.results, run.id), self.device,
            self.code_shas[run.architecture], self.data_shas[run.data.id])

    def checkpoints_of(self, run) -> CheckpointStore:
        identity = {"run_id": run.id, "code_sha": self.code_shas[run.architecture],
                    "data_sha": self.data_shas[run.data.id],
                    "device": self.device.type, "torch": str(torch.__version__)}
        return CheckpointStore(run_folder(self.results, run.id), identity,
                               self.checkpoint_every, self.keep_checkpoints,
                               self.progress.prefixed(f"run {run.id}"))

    def reuse(self) -> list[RunSpec]:
        """Reuse every member trained by this code on this data; return the others."""
        todo = []
        for run in self.runs:
            summary, why = reusable_summary(run, run_folder(self.results, run.id),
                                            self.code_shas[run.architecture],
                                            self.data_shas[run.data.id])
            if summary is None:
                self.log(f"run {run.id}: to train: {why}")
                todo.append(run)
            else:
                self.summaries[run.id] = summary
                self.checkpoints_of(run).tidy()  # left by a job killed right after sealing it
                self.progress.done(f"run {run.id}: reused ({summary['status']}, "
                                   f"{summary['steps']} steps)")
        return todo

    def train_stacked(self, stacked: list[RunSpec]) -> bool:
        """Train ``stacked`` as one stacked ensemble and save them; False if that failed."""
        self.log(f"training {len(stacked)} networks as one stacked ensemble on {self.device}")
        # Only MLPs stack (ensemble.stackable), so the stack's code is the MLPs'.
        stack_store = stack_checkpoints(self.results, self.shard, stacked, training_code_sha(),
                                        self.data_shas, self.device, self.checkpoint_every,
                                        self.progress.prefixed("stack"))
        try:
            trained = train_stacked(stacked, [self.data_of(run) for run in stacked],
                                    self.device, self.progress.prefixed("stack"),
                                    checkpoints=stack_store)
        except Exception:  # e.g. out of memory: fall back to one after another
            self.log("stacked training failed; training one after another:\n"
                     f"{traceback.format_exc()}")
            return False
        for run, (model, result) in zip(stacked, trained):
            self.save(run, model, result)
            self.checkpoints_of(run).clear()  # any were of a run one after another
            self.progress.done(f"run {run.id}: {result.status} after {result.steps} steps")
        stack_store.clear()  # only now that every member is sealed (it keeps none)
        return True

    def train_each(self, todo: list[RunSpec]) -> dict[str, str]:
        """Train ``todo`` one after another and save each; run id -> traceback of those that
        failed."""
        failures: dict[str, str] = {}
        for run in todo:
            raise_if_stop_requested()  # a signal arrived while the previous member finished
            self.progress.start(f"run {run.id}: {run}")
            try:
                checkpoints = self.checkpoints_of(run)
                model, result = train(run, self.data_of(run), self.device,
                                      self.progress.prefixed(f"run {run.id}"),
                                      checkpoints=checkpoints)
                self.save(run, model, result)
                checkpoints.finish()  # only now that the network is sealed
            except Exception:
                failures[run.id] = traceback.format_exc()
                self.progress.done(f"run {run.id}: FAILED\n{failures[run.id]}")
                continue
            self.progress.done(f"run {run.id}: {result.status} after {result.steps} steps, "
                               f"gap {result.gap:.4f}")
        return failures


def seal_shard(shard: str, runs: list[RunSpec], summaries: dict[str, dict], results: Path):
    """The shard's record: every member's summary, and the digest of its train.json."""
    path = shard_record(results, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {run.id: {key: summaries[run.id][key] for key in SHARD_SUMMARY_KEYS}
               for run in runs}
    integrity.seal_record(path, {"shard": shard, "members": members,
                                 "code_version": code_version()},
                          [run_record(results, run.id) for run in runs])
