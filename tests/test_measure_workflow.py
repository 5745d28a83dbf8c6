"""One measuring job per shard, through Snakemake (tiny digits study: 4 networks in 2 shards):
changing one metric's setting in a finished study re-measures that metric's stores only,
every other store reused; a damaged metric store goes through verify, one run and verify
again, and only it is measured again."""

from __future__ import annotations

import copy
import re

import pytest
from workflow_helpers import TINY_CONFIG, planned_jobs, snakemake

from workflow_src import integrity

pytestmark = pytest.mark.workflow

STATS = "results/tiny/stats/correlations.csv"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("measure_workflow")
    result = snakemake(workdir, TINY_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir


def stores(workdir) -> dict[str, int]:
    """Every metric store present -> the mtime of its manifest (when it was sealed)."""
    return {str(p.parent.relative_to(workdir)): p.stat().st_mtime_ns
            for p in (workdir / "results/shards").glob("*/*-*.zarr/manifest.json")}


def measured_in_logs(workdir) -> dict[str, list[str]]:
    """Shard -> the metrics its last measuring job measured (not reused)."""
    found = {}
    for log in (workdir / "results/logs/measure").glob("*.log"):
        found[log.stem] = re.findall(r"^(\w+): to measure:", log.read_text(), re.MULTILINE)
    return found


def test_a_changed_setting_re_measures_only_that_metrics_stores(study):
    before = stores(study)
    assert len(before) == 2 * 5  # jacobian, translation, ellipses, bounds, norms per shard
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"]["ellipses"] = {**config["measure"]["ellipses"], "seed": 3}
    jobs = planned_jobs(snakemake(study, config, "-n").stdout)
    assert jobs["measure"] == 2 and "train" not in jobs, jobs
    result = snakemake(study, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert measured_in_logs(study) == {shard: ["ellipses"] for shard in measured_in_logs(study)}
    after = stores(study)
    new = set(after) - set(before)
    assert len(new) == 2 and all("/ellipses-" in path for path in new)  # one per shard
    assert {path: after[path] for path in before} == before  # nothing else rewritten
    assert "Nothing to be done" in snakemake(study, config, "-n").stdout


def test_a_damaged_metric_store_goes_through_verify_run_verify(study):
    """Back at the study's settings: its measure records are current, so no measuring job
    runs at all; then one chunk of one shard's norms store is removed."""
    jobs = planned_jobs(snakemake(study, TINY_CONFIG, "-n").stdout)
    assert "measure" not in jobs and "aggregate" in jobs, jobs
    restored = snakemake(study, TINY_CONFIG)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    clean = (study / STATS).read_bytes()
    (norms, *_) = sorted((study / "results/shards").glob("*/norms-*.zarr"))
    shard = norms.parent.name
    records = set(norms.parent.glob("measured-*.json"))
    assert len(records) == 2  # the study's and the one with the other ellipses seed
    chunk = next(p for p in (norms / "margin").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    before = stores(study)

    verify = snakemake(study, TINY_CONFIG, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"MISSING {chunk.relative_to(study)}: missing" in verify.stdout
    assert f"next run: measure of shard {shard} measures norms again" in verify.stdout
    assert not norms.exists() and len(set(norms.parent.glob("measured-*.json"))) == 1
    jobs = planned_jobs(snakemake(study, TINY_CONFIG, "-n").stdout)
    assert jobs["measure"] == 1 and "train" not in jobs, jobs

    rebuilt = snakemake(study, TINY_CONFIG)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert measured_in_logs(study)[shard] == ["norms"]
    assert integrity.check_store(norms) == []
    after = stores(study)
    damaged = str(norms.relative_to(study))
    assert after[damaged] > before[damaged]  # sealed again
    assert {p: t for p, t in after.items() if p != damaged} == \
        {p: t for p, t in before.items() if p != damaged}  # every other store as it was
    assert (study / STATS).read_bytes() == clean
    again = snakemake(study, TINY_CONFIG, "verify")
    assert again.returncode == 0 and "MISSING" not in again.stdout, again.stdout
    assert "DAMAGED" not in again.stdout
    assert re.search(r"verify: (\d+) of \1 expected outputs OK", again.stdout), again.stdout
