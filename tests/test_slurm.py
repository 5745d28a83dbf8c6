"""The tiny study submitted to SLURM through profiles/slurm (`.ci/slurm-up` starts a cluster),
and a training job cancelled by SLURM (its time limit's signals) that resumes.

Skipped unless `sinfo` answers and shows an idle node (fails instead when
GENSENS_REQUIRE_SLURM=1). Takes about 4 minutes on 2 cores: each of the tiny study's 14 jobs
is its own SLURM job, polled with squeue (no accounting database needed).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import time

import pytest
import xarray as xr
import yaml
from workflow_helpers import REPO, SNAKEMAKE, TINY_CONFIG, planned_jobs, snakemake

PROFILE = REPO / "profiles" / "slurm"


def _why_no_cluster() -> str | None:
    """None when a SLURM cluster with an idle node answers, else the reason to skip."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found); .ci/slurm-up starts a single-node cluster"
    try:
        result = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True,
                                text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo does not answer: {error}"
    if result.returncode != 0:
        return f"sinfo failed: {result.stderr.strip()} (is slurmctld running? .ci/slurm-up)"
    states = result.stdout.split()
    if "idle" not in states:
        return f"no idle SLURM node (node states: {' '.join(states) or 'none'})"
    return None


SKIP_REASON = _why_no_cluster()
# CI sets GENSENS_REQUIRE_SLURM=1 after .ci/slurm-up: a missing cluster then fails the test
# instead of skipping it unnoticed.
REQUIRED = os.environ.get("GENSENS_REQUIRE_SLURM") == "1"
pytestmark = [pytest.mark.workflow, pytest.mark.slurm,
              pytest.mark.skipif(SKIP_REASON is not None and not REQUIRED,
                                 reason=SKIP_REASON or "")]


def test_tiny_study_runs_through_slurm_profile(tmp_path):
    if SKIP_REASON is not None:
        pytest.fail(f"GENSENS_REQUIRE_SLURM=1 but {SKIP_REASON}")
    config = copy.deepcopy(TINY_CONFIG)
    # CPU only: a GPU on this machine would otherwise make the jobs ask SLURM for one,
    # which the test cluster does not offer.
    config.setdefault("training", {})["device"] = "cpu"
    profile = ("--workflow-profile", str(PROFILE))
    planned = planned_jobs(snakemake(tmp_path, config, *profile, "-n").stdout)
    result = snakemake(tmp_path, config, *profile, timeout=400)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log

    # Every planned job but the local target rule `all` went through sbatch.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) == sum(planned.values()) - planned["all"], log
    assert "Falling back to 'sacct'" not in log  # status came from squeue
    ds = xr.open_zarr(tmp_path / "results/tiny/metrics.zarr")
    assert ds.sizes["run"] == 4 and ds.sizes["point"] == 40

    # squeue still lists the finished jobs of this run (MinJobAge), all completed.
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    queue = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%T",
                            "--name", run_id], capture_output=True, text=True, timeout=15)
    states = dict(line.split("|") for line in queue.stdout.split())
    assert states and set(states.values()) == {"COMPLETED"}, queue.stdout + queue.stderr
    assert set(states) <= set(submitted)

    again = snakemake(tmp_path, config, *profile, "-n")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_cancelled_training_job_saves_its_step_and_resumes(tmp_path):
    """scancel sends the job's processes SIGTERM, KillWait seconds before SIGKILL, as SLURM
    does at a job's time limit: the network in training saves a checkpoint of its current
    step (no periodic checkpoints here), the re-submitted job resumes from it, and the
    network equals one trained without SLURM and without a break."""
    from test_checkpoints import assert_same_files

    from workflow_src.training.checkpoints import POINTER

    if SKIP_REASON is not None:
        pytest.fail(f"GENSENS_REQUIRE_SLURM=1 but {SKIP_REASON}")
    config = copy.deepcopy(TINY_CONFIG)
    # One network that will not converge (a tiny rate): ~10 s of training on SLURM here.
    config["grid"].update(label_noise=[1.0], width=[16], depth=[1], learning_rate=[1e-5])
    config["training"] = {"max_steps": 20000, "eval_every": 500, "checkpoint_every": 0,
                          "device": "cpu"}
    reference, cancelled = tmp_path / "reference", tmp_path / "cancelled"
    for folder in (reference, cancelled):
        folder.mkdir()
    done = snakemake(reference, config, "--until", "train", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_id,) = [p.name for p in (reference / "results/runs").iterdir()]
    folder = cancelled / "results/runs" / run_id

    profile = ("--workflow-profile", str(PROFILE), "--until", "train")
    (cancelled / "study.yaml").write_text(yaml.safe_dump(config))
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(cancelled), "--configfile", str(cancelled / "study.yaml"), *profile]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        logs = cancelled / "results/logs/train"
        while not any("step 2000:" in p.read_text() for p in logs.glob("*.log")):
            assert first.poll() is None, "the study ended before its job could be cancelled"
            assert time.monotonic() < deadline, "the training job did not reach step 2000"
            time.sleep(0.1)
        jobs = re.findall(r"has been submitted with SLURM jobid (\d+)", "".join(
            p.read_text() for p in (cancelled / ".snakemake/log").glob("*.log")))
        assert jobs, "no SLURM job id in Snakemake's log"
        cancel = subprocess.run(["scancel", jobs[-1]], capture_output=True, text=True,
                                timeout=15)
        assert cancel.returncode == 0, cancel.stderr
        output, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode != 0, output
    log = "".join(p.read_text() for p in logs.glob("*.log"))
    assert "stop requested (SIGTERM): checkpoint saved at step" in log, log + output
    assert (folder / POINTER).exists() and not (folder / "train.json").exists()
    step = int(re.search(r"checkpoint saved at step (\d+)", log).group(1))
    assert 2000 <= step < 20000

    resumed = snakemake(cancelled, config, *profile, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = "".join(p.read_text() for p in logs.glob("*.log"))
    assert f"resumed from the checkpoint at step {step}" in log, log
    assert_same_files(reference / "results/runs" / run_id, folder)
