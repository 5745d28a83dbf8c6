"""Damaged results are refused, `snakemake verify` removes them, and the next run rebuilds
exactly the damaged networks' jobs with byte-identical statistics (tiny digits study)."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from workflow_helpers import TINY_CONFIG, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

STATS = "results/tiny/stats/correlations.csv"
PER_RUN_RULES = ("train", "measure_jacobian", "measure_translation", "measure_ellipses",
                 "measure_bounds")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("verify")
    result = snakemake(workdir, TINY_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, (workdir / STATS).read_bytes()


def keeping_mtime(path, damage):
    """Damage a file as bit rot would: its mtime stays, so Snakemake sees nothing."""
    stat = path.stat()
    damage(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def store(workdir, run_id, metric):
    (path,) = (workdir / "results/runs" / run_id).glob(f"{metric}-*.zarr")
    return path


def planned_run_ids(dry_run_output: str) -> dict[str, set[str]]:
    """Rule -> run ids of its planned jobs, from the job blocks of a dry run."""
    planned = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        run_id = re.search(r"wildcards: run_id=([0-9a-f]{12})", block)
        if rule and run_id:
            planned.setdefault(rule.group(1), set()).add(run_id.group(1))
    return planned


def test_damage_is_refused_then_verify_rebuilds_exactly_it(study):
    workdir, clean_stats = study
    run_ids = sorted(p.name for p in (workdir / "results/runs").iterdir())
    assert len(run_ids) == 4
    chunk_run, model_run, variable_run, intact_run = run_ids
    # Three damages at once, to three networks; the fourth stays intact.
    (chunk,) = [p for p in (store(workdir, chunk_run, "jacobian") / "loss").rglob("*")
                if p.is_file() and p.name != "zarr.json"][:1]
    chunk.unlink()
    model = workdir / "results/runs" / model_run / "model.pt"
    keeping_mtime(model, lambda p: p.write_bytes(b"\0" * p.stat().st_size))
    shutil.rmtree(store(workdir, variable_run, "translation") / "transitions_exact")
    # ... and one flipped byte in a chunk (same size, same mtime):
    (flipped,) = [p for p in (store(workdir, variable_run, "ellipses")
                              / "ellipse_jacobian_norm").rglob("*")
                  if p.is_file() and p.name != "zarr.json"][:1]
    keeping_mtime(flipped, lambda p: p.write_bytes(
        bytes([p.read_bytes()[0] ^ 0xFF]) + p.read_bytes()[1:]))
    stats_mtime = (workdir / STATS).stat().st_mtime_ns

    refused = snakemake(workdir, TINY_CONFIG, "--forcerun", "aggregate")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert str(chunk.relative_to(workdir)) in output, output
    assert f"results/runs/{model_run}/model.pt" in output and "snakemake verify" in output
    assert (workdir / STATS).read_bytes() == clean_stats
    assert (workdir / STATS).stat().st_mtime_ns == stats_mtime

    # A whole store gone (deleted after the forced run above, which would have rebuilt it:
    # Snakemake itself re-runs a job whose declared output is missing when asked to run).
    gone = store(workdir, chunk_run, "ellipses")
    shutil.rmtree(gone)
    verify = snakemake(workdir, TINY_CONFIG, "verify")
    report = verify.stdout
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verify: 18 of 23 expected outputs OK" in report, report
    assert f"MISSING {chunk.relative_to(workdir)}" in report
    assert f"DAMAGED results/runs/{model_run}/model.pt" in report
    assert f"MISSING {gone.relative_to(workdir)}: missing" in report
    assert f"DAMAGED {flipped.relative_to(workdir)}: content changed" in report

    dry_run = snakemake(workdir, TINY_CONFIG, "-n").stdout
    assert planned_run_ids(dry_run) == {
        "train": {model_run},
        "measure_jacobian": {chunk_run, model_run},
        "measure_bounds": {chunk_run, model_run},  # computed from the Jacobian store
        "measure_translation": {variable_run, model_run},
        "measure_ellipses": {chunk_run, variable_run, model_run},
    }
    jobs = planned_jobs(dry_run)
    study_level = set(jobs) - set(PER_RUN_RULES)
    assert {"aggregate", "correlate", "collect_curves", "plot_jacobian"} <= study_level
    assert all(jobs[rule] == 1 for rule in study_level), jobs
    assert not {"acquire", "corrupt"} & set(jobs)

    rebuilt = snakemake(workdir, TINY_CONFIG)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert (workdir / STATS).read_bytes() == clean_stats
    settled = snakemake(workdir, TINY_CONFIG, "-n")
    assert "Nothing to be done" in settled.stdout + settled.stderr


def test_damaged_metrics_store_is_refused_by_the_statistics_and_rebuilt(study):
    """One level up: a chunk of the study's metrics.zarr deleted. The statistics refuse it,
    verify removes it with the study outputs, and the next run re-aggregates identically,
    without re-running any network's job."""
    workdir, clean_stats = study
    assert "Nothing to be done" in snakemake(workdir, TINY_CONFIG, "-n").stdout
    metrics = workdir / "results/tiny/metrics.zarr"
    (chunk,) = [p for p in (metrics / "jacobian_norm").rglob("*")
                if p.is_file() and p.name != "zarr.json"][:1]
    chunk.unlink()
    refused = snakemake(workdir, TINY_CONFIG, "--forcerun", "correlate")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and str(chunk.relative_to(workdir)) in output, output
    assert not (workdir / STATS).exists()  # nothing written from it (Snakemake removes a
    # failed job's outputs)

    verify = snakemake(workdir, TINY_CONFIG, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verify: 23 of 24 expected outputs OK" in verify.stdout, verify.stdout
    assert f"MISSING {chunk.relative_to(workdir)}: missing" in verify.stdout
    assert not metrics.exists()
    jobs = planned_jobs(snakemake(workdir, TINY_CONFIG, "-n").stdout)
    assert "aggregate" in jobs and not set(PER_RUN_RULES) & set(jobs), jobs
    rebuilt = snakemake(workdir, TINY_CONFIG)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert (workdir / STATS).read_bytes() == clean_stats
