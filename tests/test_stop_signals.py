"""Stopping on a signal (checkpoints.stop_on_signals): SIGTERM, what SLURM sends at a job's
time limit, makes the network in training save a checkpoint of the very step it is at, with
no periodic checkpoints at all, and stop; the re-run resumes from that step and gives the
network an uninterrupted run gives. The same for a stack, for a shard's job in process, and
for Snakemake's training job signalled as SLURM signals it (every process of the job)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_checkpoints import (
    assert_same_files,
    assert_same_network,
    checkpoint_files,
    one_shard_study,
    run_spec,
    shard_members,
    shard_stores,
    train_command,
    train_reference,
)
from test_stacked_checkpoints import assert_same_stack, spec, stack, store
from workflow_helpers import REPO

from workflow_src.training.checkpoints import (
    POINTER,
    CheckpointStore,
    TrainingStopped,
    stop_on_signals,
    stop_requested,
)
from workflow_src.data.corrupt import make_corrupted
from workflow_src.training.ensemble import train_stacked
from workflow_src.paths import shard_record
from workflow_src.training.train import train
from workflow_src.jobs.train_shard import MemberFailed, train_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
QUIET = lambda *parts: None  # noqa: E731
IDENTITY = {"run_id": "a" * 12, "code_sha": "c" * 16, "data_sha": "d" * 16}


class SignalledAt(CheckpointStore):
    """A CheckpointStore that sends this process ``signum`` while the loop is at step ``at``
    (the loops ask ``due`` after every step): as if SLURM's time limit struck there."""

    def __init__(self, *args, at, signum=signal.SIGTERM, run_id=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.signum, self.run_id = at, signum, run_id

    def due(self, step):
        if step == self.at and self.run_id in (None, self.identity.get("run_id")):
            os.kill(os.getpid(), self.signum)
        return super().due(step)


@pytest.fixture(scope="module")
def data(digits):
    return make_corrupted(digits, run_spec().data)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_step_it_arrived_at_and_the_resumed_network_is_the_same(
        data, tmp_path, signum):
    run = run_spec("momentum", True)
    alone, alone_result = train(run, data, CPU, log=QUIET)
    handlers = {signal.SIGTERM: signal.getsignal(signal.SIGTERM),
                signal.SIGINT: signal.getsignal(signal.SIGINT)}
    lines = []
    # No periodic checkpoints (every 0); step 23 is neither an evaluation step nor the end
    # of an epoch (batches of 30 of 100 points).
    with stop_on_signals(), pytest.raises(TrainingStopped) as stopped:
        train(run, data, CPU, log=lines.append,
              checkpoints=SignalledAt(tmp_path, IDENTITY, 0, at=23, signum=signum,
                                      log=lines.append))
    assert stopped.value.step == 23 and stopped.value.signum == signum
    assert checkpoint_files(tmp_path) == ["checkpoint-23.pt", POINTER]
    assert any(f"stop requested ({signal.Signals(signum).name}): checkpoint saved at step 23"
               in line for line in lines), lines
    assert stop_requested() is None  # leaving the context forgets the request
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    store = CheckpointStore(tmp_path, IDENTITY, 0, log=lines.append)
    model, result = train(run, data, CPU, log=lines.append, checkpoints=store)
    assert any("resumed from the checkpoint at step 23" in line for line in lines)
    assert_same_network(model, result, alone, alone_result)
    assert store.finish() == [] and checkpoint_files(tmp_path) == []


def test_a_signal_at_a_checkpoint_step_saves_it_once(data, tmp_path):
    """At a step whose periodic checkpoint is written anyway, that one is the stop's."""
    saved = []

    class Counting(SignalledAt):
        def save(self, step, state):
            saved.append(step)
            super().save(step, state)

    with stop_on_signals(), pytest.raises(TrainingStopped):
        train(run_spec(), data, CPU, log=QUIET,
              checkpoints=Counting(tmp_path, IDENTITY, 10, at=20, log=QUIET))
    assert saved == [10, 20]
    assert checkpoint_files(tmp_path) == ["checkpoint-20.pt", POINTER]


def test_a_signal_on_the_last_step_lets_the_network_finish(data, tmp_path):
    run = run_spec()
    with stop_on_signals():
        model, result = train(run, data, CPU, log=QUIET,
                              checkpoints=SignalledAt(tmp_path, IDENTITY, 0,
                                                      at=run.max_steps, log=QUIET))
        assert stop_requested() == signal.SIGTERM  # for train_shard: stop before the next
    assert result.steps == run.max_steps and checkpoint_files(tmp_path) == []


def test_a_signalled_stack_resumes_to_the_uninterrupted_networks(digits, tmp_path):
    runs = stack("momentum", True)
    datasets = {noise: make_corrupted(digits, spec(noise)) for noise in (0.0, 0.5)}
    datas = [datasets[run.data.label_noise] for run in runs]
    reference = train_stacked(runs, datas, CPU, log=QUIET)
    lines = []
    # step 17: two members have stopped, two still train
    with stop_on_signals(), pytest.raises(TrainingStopped) as stopped:
        train_stacked(runs, datas, CPU, log=lines.append,
                      checkpoints=store(tmp_path, runs, 0, SignalledAt, lines.append, at=17))
    assert stopped.value.step == 17
    assert checkpoint_files(tmp_path) == ["checkpoint-17.pt", POINTER]
    resumed = train_stacked(runs, datas, CPU, log=lines.append,
                            checkpoints=store(tmp_path, runs, 0, log=lines.append))
    assert any("from the checkpoint at step 17 (2 still training" in line for line in lines)
    assert_same_stack(resumed, reference)


def test_a_signalled_shard_job_keeps_its_finished_members_and_resumes_the_one_in_progress(
        tmp_path, digits, monkeypatch):
    """SIGTERM while the 2nd of 3 members trains: the job stops (TrainingStopped, not a
    member's failure, and without going on to the 3rd); the re-run reuses the 1st and
    resumes the 2nd from the signal's step."""
    from workflow_src.jobs import train_shard as module

    runs = shard_members()
    reference, results = tmp_path / "reference", tmp_path / "results"
    train_shard("s" * 12, runs, shard_stores(reference, digits), reference, CPU, False, QUIET,
                checkpoint_every=0)
    stores = shard_stores(results, digits)
    monkeypatch.setattr(module, "CheckpointStore",
                        lambda *args, **kwargs: SignalledAt(*args, at=37, run_id=runs[1].id,
                                                            **kwargs))
    lines = []
    with stop_on_signals(), pytest.raises(TrainingStopped):
        train_shard("s" * 12, runs, stores, results, CPU, False,
                    lambda *parts: lines.append(" ".join(map(str, parts))), checkpoint_every=0)
    monkeypatch.undo()
    assert not any("FAILED" in line for line in lines), lines
    assert checkpoint_files(results / "runs" / runs[0].id) == ["curve.csv", "model.pt",
                                                               "train.json"]
    assert checkpoint_files(results / "runs" / runs[1].id) == ["checkpoint-37.pt", POINTER]
    assert not (results / "runs" / runs[2].id).exists()  # never started
    assert not shard_record(results, "s" * 12).exists()
    lines = []
    train_shard("s" * 12, runs, stores, results, CPU, False,
                lambda *parts: lines.append(" ".join(map(str, parts))), checkpoint_every=0)
    assert any(f"run {runs[1].id}: resumed from the checkpoint at step 37" in line
               for line in lines), lines
    for run in runs:
        assert_same_files(reference / "runs" / run.id, results / "runs" / run.id)


def test_a_signal_between_members_stops_the_job_before_the_next(tmp_path, digits,
                                                                monkeypatch):
    """SIGTERM on the 1st member's last step: it is saved, the 2nd never starts."""
    from workflow_src.jobs import train_shard as module

    runs = shard_members()
    stores = shard_stores(tmp_path, digits)
    monkeypatch.setattr(module, "CheckpointStore",
                        lambda *args, **kwargs: SignalledAt(
                            *args, at=runs[0].max_steps, run_id=runs[0].id, **kwargs))
    with stop_on_signals(), pytest.raises(TrainingStopped) as stopped:
        train_shard("s" * 12, runs, stores, tmp_path, CPU, False, QUIET, checkpoint_every=0)
    assert stopped.value.step is None
    assert (tmp_path / "runs" / runs[0].id / "train.json").exists()
    assert not (tmp_path / "runs" / runs[1].id).exists()


@pytest.fixture
def python_sigint():
    """SIGINT as Python sets it up in a foreground process: KeyboardInterrupt. A shell
    starts background jobs (`nohup make test &`) with SIGINT ignored, and then Python
    installs no handler; the previous handler comes back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_without_the_context_a_signal_is_not_caught(data, tmp_path, python_sigint):
    """Outside stop_on_signals nothing changes: SIGINT is Python's KeyboardInterrupt, and a
    member's failure is still a failure (MemberFailed), not a stop."""
    with pytest.raises(KeyboardInterrupt):
        train(run_spec(), data, CPU, log=QUIET,
              checkpoints=SignalledAt(tmp_path, IDENTITY, 0, at=5, signum=signal.SIGINT,
                                      log=QUIET))
    assert issubclass(TrainingStopped, BaseException)
    assert not issubclass(TrainingStopped, Exception) and issubclass(MemberFailed, Exception)


@pytest.mark.slow  # a second pytest in a subprocess
def test_the_sigint_test_passes_in_a_background_job_and_leaves_sigint_ignored():
    """`nohup make test &`: the shell starts the job with SIGINT ignored, and a child
    inherits that. The test above still passes, and gives the ignored SIGINT back."""
    script = ("import signal, sys, pytest\n"
              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "status = pytest.main(['-q', '-p', 'no:cacheprovider', sys.argv[1]])\n"
              "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN, 'not restored'\n"
              "sys.exit(status)\n")
    test = f"{__file__}::test_without_the_context_a_signal_is_not_caught"
    result = subprocess.run([sys.executable, "-c", script, test], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout, result.stdout


# --- the workflow, signalled as SLURM signals a job at its time limit ------------------------

def second_member_at_step_300(log: str) -> bool:
    """The training log shows one member finished and, after that, an evaluation at step 300
    (of the next member)."""
    lines = log.splitlines()
    finished = [i for i, line in enumerate(lines) if re.search(r": (un)?converged after", line)]
    return len(finished) == 1 and any("step 300:" in line for line in lines[finished[0]:])


@pytest.mark.workflow
def test_sigterm_to_the_training_job_saves_and_the_rerun_resumes(tmp_path):
    """SIGTERM to every process of Snakemake and its training job (what SLURM does at the
    time limit, KillWait seconds before SIGKILL) while the 2nd member of a shard trains,
    with no periodic checkpoints: the job saves the 2nd member's current step and exits;
    the re-run reuses the 1st, resumes the 2nd, and both equal an uninterrupted run's."""
    config = one_shard_study(0)
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    runs = train_reference(reference)

    def command(workdir):
        return train_command(workdir, config)

    first = subprocess.Popen(command(stopped), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    logs = stopped / "results/logs/train"
    try:
        deadline = time.monotonic() + 120
        # the 1st member sealed and the 2nd past its first evaluations
        while not any(second_member_at_step_300(p.read_text()) for p in logs.glob("*.log")):
            assert first.poll() is None, "training ended before it could be signalled"
            assert time.monotonic() < deadline, "the 2nd member did not start in 120 s"
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    log = "\n".join(p.read_text() for p in logs.glob("*.log"))
    assert "stop requested (SIGTERM): checkpoint saved at step" in log, log + output
    assert "stopped by SIGTERM after step" in log, log
    folders = [stopped / "results/runs" / r for r in runs]
    in_progress = [f for f in folders if not (f / "train.json").exists()]
    assert len(in_progress) == 1 and (in_progress[0] / POINTER).exists(), log
    assert not list((stopped / "results/shards").glob("*/train.json"))

    unlock = subprocess.run([*command(stopped), "--unlock"], cwd=REPO, capture_output=True,
                            text=True)
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    resumed = subprocess.run(command(stopped), cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = "\n".join(p.read_text() for p in logs.glob("*.log"))
    assert "reused" in log and "resumed from the checkpoint at step" in log, log
    for run_id in runs:  # (no checkpoint left either)
        assert_same_files(reference / "results/runs" / run_id, stopped / "results/runs" / run_id)
