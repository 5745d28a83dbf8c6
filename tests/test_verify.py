"""Damaged results are refused, `snakemake verify` removes them with what was computed from
them, and the next run rebuilds exactly the damaged shards' jobs (tiny digits study: 4
networks in 2 shards of 2, workflow_src/shards.py): a shard's training job retrains only
its damaged member and reuses the intact one, and the statistics come out byte-identical."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from workflow_helpers import TINY_CONFIG, planned_jobs, snakemake

from workflow_src import integrity
from workflow_src.jobs.adapter import TRAIN_SUMMARY_KEYS

pytestmark = pytest.mark.workflow

STATS = "results/tiny/stats/correlations.csv"
PER_SHARD_RULES = ("train", "measure")


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


def shard_members(workdir) -> dict[str, list[str]]:
    """Shard id -> its members' run ids, as the shards' records list them."""
    return {record.parent.name: sorted(json.loads(record.read_text())["members"])
            for record in sorted((workdir / "results/shards").glob("*/train.json"))}


def store(workdir, shard, metric):
    (path,) = (workdir / "results/shards" / shard).glob(f"{metric}-*.zarr")
    return path


def content_files(directory):
    """The files of a store's variable directory (its chunks, not its zarr.json)."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "zarr.json")


def shard_and_run_outputs(workdir) -> set[str]:
    """Every shard record, measure record, metric store and network file present, relative
    to workdir."""
    results = workdir / "results"
    paths = [*results.glob("shards/*/train.json"), *results.glob("shards/*/measured-*.json"),
             *results.glob("shards/*/*.zarr"), *results.glob("runs/*/*")]
    return {str(path.relative_to(workdir)) for path in paths}


def planned_shards_by_rule(dry_run_output: str) -> dict[str, set[str]]:
    """Rule -> shard ids of its planned jobs, from the job blocks of a dry run."""
    planned = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        shard = re.search(r"wildcards: shard=([0-9a-f]{12})", block)
        if rule and shard:
            planned.setdefault(rule.group(1), set()).add(shard.group(1))
    return planned


def test_damage_is_refused_then_verify_rebuilds_exactly_it(study):
    workdir, clean_stats = study
    shards = shard_members(workdir)
    assert len(shards) == 2 and all(len(members) == 2 for members in shards.values()), shards
    assert sorted(r for members in shards.values() for r in members) == sorted(
        p.name for p in (workdir / "results/runs").iterdir())
    # Shard A: a Jacobian chunk and a translation variable; shard B: one member's network
    # and an ellipses chunk (and, below, its whole bounds store). A's ellipses store and
    # B's other member stay intact, and must be neither removed nor recomputed.
    shard_a, shard_b = sorted(shards)
    damaged_run, intact_run = shards[shard_b]
    chunk = content_files(store(workdir, shard_a, "jacobian") / "loss")[0]
    chunk.unlink()
    model = workdir / "results/runs" / damaged_run / "model.pt"
    original_model = model.read_bytes()
    keeping_mtime(model, lambda p: p.write_bytes(b"\0" * p.stat().st_size))
    variable = store(workdir, shard_a, "translation") / "transitions_exact"
    variable_files = [p.relative_to(workdir) for p in variable.rglob("*") if p.is_file()]
    assert variable_files
    shutil.rmtree(variable)
    # ... and one flipped byte in a chunk (same size, same mtime):
    flipped = content_files(store(workdir, shard_b, "ellipses") / "ellipse_jacobian_norm")[0]
    keeping_mtime(flipped, lambda p: p.write_bytes(
        bytes([p.read_bytes()[0] ^ 0xFF]) + p.read_bytes()[1:]))
    stats_mtime = (workdir / STATS).stat().st_mtime_ns
    intact_model = workdir / "results/runs" / intact_run / "model.pt"
    intact_model_stat = intact_model.stat().st_mtime_ns, intact_model.read_bytes()

    refused = snakemake(workdir, TINY_CONFIG, "--forcerun", "aggregate")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    # The aggregate reads the shards' records and stores, so it names every damaged store
    # file. (It does not read the networks: the damaged model.pt is found by verify below.)
    for damaged in (chunk.relative_to(workdir), *variable_files, flipped.relative_to(workdir)):
        assert str(damaged) in output, (damaged, output)
    assert "snakemake verify" in output
    assert (workdir / STATS).read_bytes() == clean_stats
    assert (workdir / STATS).stat().st_mtime_ns == stats_mtime

    # A whole store gone (deleted after the forced run above, which would have rebuilt it:
    # Snakemake itself re-runs a job whose declared output is missing when asked to run).
    gone = store(workdir, shard_b, "bounds")
    shutil.rmtree(gone)
    # Removed: each damaged store with the stores computed from it (A's jacobian takes A's
    # intact bounds with it) and its shard's measure record; for the damaged member, its
    # files, B's record, measure record and all of B's stores. Kept: A's record, members,
    # ellipses and norms stores; B's intact member.
    removed = {str(store(workdir, shard_a, m).relative_to(workdir))
               for m in ("jacobian", "bounds", "translation")}
    removed |= {str(p.relative_to(workdir)) for shard in (shard_a, shard_b)
                for p in (workdir / "results/shards" / shard).glob("measured-*.json")}
    removed |= {str(store(workdir, shard_b, m).relative_to(workdir))
                for m in ("jacobian", "translation", "ellipses", "norms")}
    removed |= {f"results/shards/{shard_b}/train.json",
                *(f"results/runs/{damaged_run}/{name}"
                  for name in ("model.pt", "curve.csv", "train.json"))}
    before_verify = shard_and_run_outputs(workdir)
    verify = snakemake(workdir, TINY_CONFIG, "verify")
    report = verify.stdout
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Expected outputs: 3 datasets (1 raw + 2 corrupted) + per shard its record, its 2
    # members' train.json, its measure record and its 5 stores (the norms' included: on by
    # default) = 3 + 2 * 9 = 21, and the seals of the 9 study-level jobs besides the
    # aggregate (no metrics.zarr: the failed forced aggregate removed it, and verify checks
    # it only where it exists) = 30. Damaged: A's jacobian (chunk) and translation
    # (variable); B's damaged member's train.json (its model.pt), bounds (gone), ellipses
    # (flipped byte) and measure record (it vouches for the gone store's manifest) = 6. OK:
    # the datasets, both records (B's vouches only for its members' train.json, which are
    # intact), A's measure record (the damaged stores' manifests are intact), A's members,
    # B's intact member, A's bounds and ellipses, B's jacobian and translation, both shards'
    # norms = 15, and the 9 seals.
    assert "verify: 24 of 30 expected outputs OK" in report, report
    assert f"MISSING {chunk.relative_to(workdir)}: missing" in report
    for missing in variable_files:
        assert f"MISSING {missing}: missing" in report, (missing, report)
    assert f"DAMAGED results/runs/{damaged_run}/model.pt: content changed" in report
    assert f"MISSING {gone.relative_to(workdir)}: missing" in report
    assert f"DAMAGED {flipped.relative_to(workdir)}: content changed" in report
    assert f"MISSING {gone.relative_to(workdir)}/manifest.json: missing" in report
    # One line a problem: the chunk, each file of the variable, the model, the gone store
    # (as a store and as what B's measure record vouches for) and the flipped chunk; nothing
    # else is reported.
    assert report.count("MISSING ") + report.count("DAMAGED ") == 5 + len(variable_files), report

    assert removed <= before_verify
    assert shard_and_run_outputs(workdir) == before_verify - removed

    dry_run = snakemake(workdir, TINY_CONFIG, "-n").stdout
    assert planned_shards_by_rule(dry_run) == {
        "train": {shard_b},
        "measure": {shard_a, shard_b},  # A's measures its jacobian, bounds and translation
    }, dry_run
    jobs = planned_jobs(dry_run)
    assert {rule: jobs.get(rule) for rule in PER_SHARD_RULES} == {"train": 1, "measure": 2}
    study_level = set(jobs) - set(PER_SHARD_RULES)
    assert {"aggregate", "correlate", "collect_curves", "plot_metrics"} <= study_level
    assert all(jobs[rule] == 1 for rule in study_level), jobs
    assert not {"acquire", "corrupt"} & set(jobs)

    rebuilt = snakemake(workdir, TINY_CONFIG)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert (workdir / STATS).read_bytes() == clean_stats
    # Shard B's job reused its intact member (untouched) and retrained only the damaged one,
    # whose files are sealed again and whose network is the one trained before.
    assert (intact_model.stat().st_mtime_ns, intact_model.read_bytes()) == intact_model_stat
    train_log = (workdir / f"results/logs/train/{shard_b}.log").read_text()
    assert f"run {intact_run}: reused (" in train_log, train_log
    assert f"run {damaged_run}: reused" not in train_log, train_log
    assert integrity.check_record(workdir / "results/runs" / damaged_run / "train.json",
                                  TRAIN_SUMMARY_KEYS) == []
    assert model.read_bytes() == original_model
    assert integrity.check_record(workdir / f"results/shards/{shard_b}/train.json",
                                  ("members",)) == []
    # Shard A's measuring job reused its intact ellipses and norms stores.
    measure_log = (workdir / f"results/logs/measure/{shard_a}.log").read_text()
    assert re.findall(r"^(\w+): to measure:", measure_log, re.MULTILINE) == [
        "jacobian", "translation", "bounds"], measure_log
    settled = snakemake(workdir, TINY_CONFIG, "-n")
    assert "Nothing to be done" in settled.stdout + settled.stderr


def test_damaged_metrics_store_is_refused_by_the_statistics_and_rebuilt(study):
    """One level up: a chunk of the study's metrics.zarr deleted. The statistics refuse it,
    verify removes it, and the next run re-aggregates identically and redoes what reads it,
    without re-running any shard's job."""
    workdir, clean_stats = study
    assert "Nothing to be done" in snakemake(workdir, TINY_CONFIG, "-n").stdout
    metrics = workdir / "results/tiny/metrics.zarr"
    chunk = content_files(metrics / "jacobian_norm")[0]
    chunk.unlink()
    refused = snakemake(workdir, TINY_CONFIG, "--forcerun", "correlate")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and str(chunk.relative_to(workdir)) in output, output
    assert not (workdir / STATS).exists()  # nothing written from it (Snakemake removes a
    # failed job's outputs)

    verify = snakemake(workdir, TINY_CONFIG, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The 21 outputs of the shard plan (previous test), all intact, metrics.zarr, and the
    # seals of the 8 study-level jobs the forced correlate did not take with it.
    assert "verify: 29 of 30 expected outputs OK" in verify.stdout, verify.stdout
    assert f"MISSING {chunk.relative_to(workdir)}: missing" in verify.stdout
    assert not metrics.exists()
    jobs = planned_jobs(snakemake(workdir, TINY_CONFIG, "-n").stdout)
    assert "aggregate" in jobs and not set(PER_SHARD_RULES) & set(jobs), jobs
    rebuilt = snakemake(workdir, TINY_CONFIG)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert (workdir / STATS).read_bytes() == clean_stats
