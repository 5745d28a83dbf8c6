"""The tiny study submitted to SLURM through profiles/slurm (`.ci/slurm-up` starts a cluster).

Skipped unless `sinfo` answers and shows an idle node (fails instead when
GENSENS_REQUIRE_SLURM=1). Takes about 2 minutes on 2 cores: each of the 14 jobs is its own
SLURM job, polled with squeue (no accounting database needed).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess

import pytest
import xarray as xr
from workflow_helpers import REPO, TINY_CONFIG, planned_jobs, snakemake

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
pytestmark = [pytest.mark.workflow,
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
