"""`snakemake verify` followed by one `snakemake` run always converges, for every kind of
damage: verify names exactly the damaged files, the run redoes exactly what verify said it
would, and a second verify finds every expected output intact, with the statistics (and,
where no network retrains, every study output) byte-identical to before the damage.

One small study (4 networks in one shard, two corrupted subsets of digits, the Jacobian
and bounds stores, a snapshot store) is built once; each case damages a copy of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from workflow_helpers import TINY_CONFIG, planned_jobs, snakemake

from workflow_src import integrity

pytestmark = pytest.mark.workflow

CONFIG = {
    **TINY_CONFIG,
    "grid": {**TINY_CONFIG["grid"], "depth": [1], "seed": [0, 1]},  # one shape: one shard
    "measure": {"n_points": 40, "transitions": {"n_points": 0}, "ellipses": {"per_kind": 0},
                "norms": {"enabled": False},
                # The final networks (every network stops before step 10000): no retraining.
                "snapshots": {"enabled": True, "steps": [10000], "metrics": ["jacobian"]}},
    "shards": {"size": 4},
}
STUDY = Path("results/tiny")
CORRELATIONS = f"{STUDY}/stats/correlations.csv"
GRANULATED = f"{STUDY}/stats/granulated.csv"
# 1 raw dataset + 2 subsets, the shard's record, its 4 members' train.json, its measure
# record, its Jacobian, bounds and snapshot stores, metrics.zarr and the seals of the 10
# other study-level jobs.
EXPECTED = 1 + 2 + 1 + 4 + 1 + 3 + 1 + 10
ALL_OK = f"verify: {EXPECTED} of {EXPECTED} expected outputs OK"
SHARD_JOBS = ("train", "measure", "measure_snapshots")
# The jobs that read metrics.zarr, or read what one of them wrote.
METRICS_READERS = ("correlate", "granulate", "regress", "paired", "summarize", "plot_metrics",
                   "plot_summary")
STUDY_JOBS = ("aggregate", *METRICS_READERS, "collect_curves", "plot_training",
              "plot_snapshots")
# The jobs that read correlations.csv or granulated.csv, or read what one of them wrote.
TABLE_READERS = ("summarize", "plot_metrics", "plot_summary")


@dataclass(frozen=True)
class Built:
    workdir: Path
    study_files: dict[str, bytes]  # every study output but metrics.zarr (code version)
    members: list[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    # At the depth of each case's copy, tmp_path / "study": the rules' code inputs are paths
    # relative to the working directory, and another path to them would re-run every job.
    workdir = tmp_path_factory.mktemp("round_trip") / "study"
    workdir.mkdir()
    result = snakemake(workdir, CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    verify = snakemake(workdir, CONFIG, "verify")
    assert ALL_OK in verify.stdout, verify.stdout
    members = sorted(p.name for p in (workdir / "results/runs").iterdir())
    assert len(members) == 4
    return Built(workdir, study_files(workdir), members)


def study_files(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes()
            for p in sorted((workdir / STUDY).rglob("*"))
            if p.is_file() and not {"logs", "metrics.zarr"} & set(p.relative_to(workdir).parts)}


def statistics(files: dict[str, bytes]) -> dict[str, bytes]:
    return {path: content for path, content in files.items()
            if path.startswith(f"{STUDY}/stats/")}


# --- damage, as it happens to files ---------------------------------------------------------

def keeping_mtime(path: Path, damage) -> None:
    """Bit rot: the content changes, the mtime stays, so Snakemake sees nothing."""
    stat = path.stat()
    damage(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def flip_first_byte(path: Path) -> None:
    content = path.read_bytes()
    keeping_mtime(path, lambda p: p.write_bytes(bytes([content[0] ^ 0xFF]) + content[1:]))


def chunk(store: Path) -> Path:
    """One chunk file of a Zarr store (a file under a variable's c/ folder)."""
    return sorted(p for p in store.rglob("*")
                  if p.is_file() and "c" in p.relative_to(store).parts)[0]


def first(workdir: Path, pattern: str) -> Path:
    return sorted(workdir.glob(pattern))[0]


def edit_a_value(path: Path) -> None:
    """As a spreadsheet saves it: one value changed, the file written anew."""
    header, row, *rest = path.read_text().splitlines()
    cells = row.split(",")
    cells[header.split(",").index("value")] = "0.1234"
    path.write_text("\n".join([header, ",".join(cells), *rest]) + "\n")


def garble(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00garbage\x9c" * 64)


def flip_a_chunk(workdir: Path, store: str):
    flipped = chunk(first(workdir, store))
    flip_first_byte(flipped)
    return {("DAMAGED", flipped)}


def damage_members(workdir: Path, built: Built):
    """Three members, three kinds: model.pt zeroed, curve.csv garbled, train.json cut."""
    runs = workdir / "results/runs"
    model, curve, record = (runs / built.members[0] / "model.pt",
                            runs / built.members[1] / "curve.csv",
                            runs / built.members[2] / "train.json")
    keeping_mtime(model, lambda p: p.write_bytes(b"\0" * p.stat().st_size))
    garble(curve)
    keeping_mtime(record, lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]))
    return {("DAMAGED", model), ("DAMAGED", curve), ("DAMAGED", record)}


def damage_shard_record(workdir: Path):
    record = first(workdir, "results/shards/*/train.json")
    content = json.loads(record.read_text())
    content["shard"] = "edited"
    record.write_text(json.dumps(content))
    return {("DAMAGED", record)}


def delete_a_chunk(workdir: Path, pattern: str):
    gone = chunk(first(workdir, pattern))
    gone.unlink()
    return {("MISSING", gone)}


def damage_file(workdir: Path, path: str, damage):
    damage(workdir / path)
    return {("DAMAGED", workdir / path)}


def damage_store_chunks(workdir: Path):
    """A metric store's chunk deleted, a snapshot store's flipped."""
    return (delete_a_chunk(workdir, "results/shards/*/jacobian-*.zarr")
            | flip_a_chunk(workdir, "results/shards/*/snapshots-*.zarr"))


def damage_tables(workdir: Path):
    """The two tables summarize reads: a value of one edited, the other garbled."""
    return (damage_file(workdir, CORRELATIONS, edit_a_value)
            | damage_file(workdir, GRANULATED, garble))


def remove_seal(workdir: Path, rule: str):
    """Outputs written before study outputs were sealed: no record vouches for them."""
    seal = workdir / STUDY / "seals" / f"{rule}.json"
    seal.unlink()
    return {("MISSING", seal)}


@dataclass(frozen=True)
class Case:
    damage: object  # (workdir, built) -> {(MISSING or DAMAGED, path)} verify must report
    jobs: tuple  # what the run after verify redoes, besides rule all
    retrains: tuple = ()  # members the run retrains (else it reuses all four)
    refused: tuple = ()  # files a plain run, before verify, must refuse, naming them
    study_level: bool = False  # verify's "next run" lines then name every job redone


CASES = {
    "raw_dataset": Case(lambda w, b: flip_a_chunk(w, "results/datasets/raw/digits.zarr"),
                        ("acquire", "corrupt", "corrupt", *SHARD_JOBS, *STUDY_JOBS)),
    "dataset": Case(lambda w, b: flip_a_chunk(w, "results/datasets/*.zarr"),
                    ("corrupt", *SHARD_JOBS, *STUDY_JOBS)),
    "member_files": Case(damage_members, (*SHARD_JOBS, *STUDY_JOBS), retrains=(0, 1, 2)),
    "shard_record": Case(lambda w, b: damage_shard_record(w), (*SHARD_JOBS, *STUDY_JOBS)),
    "store_chunks": Case(lambda w, b: damage_store_chunks(w),
                         ("measure", "measure_snapshots", *STUDY_JOBS)),
    "metrics_zarr": Case(lambda w, b: delete_a_chunk(w, f"{STUDY}/metrics.zarr"),
                         ("aggregate", *METRICS_READERS), study_level=True),
    "stats_csvs": Case(lambda w, b: damage_tables(w),
                       ("correlate", "granulate", *TABLE_READERS),
                       refused=(CORRELATIONS, GRANULATED), study_level=True),
    "figure_png": Case(lambda w, b: damage_file(w, f"{STUDY}/figures/jacobian_vs_gap.png",
                                                 flip_first_byte),
                       ("plot_metrics",), study_level=True),
    "figure_html": Case(lambda w, b: damage_file(
        w, f"{STUDY}/figures/learning_curves.html",
        lambda p: p.write_text(p.read_text() + "<!-- edited -->")),
        ("plot_training",), study_level=True),
    "unsealed_study_outputs": Case(lambda w, b: remove_seal(w, "plot_summary"),
                                   ("plot_summary",), study_level=True),
}


def reported(report: str) -> set[tuple[str, Path]]:
    """{(MISSING or DAMAGED, path)} of verify's problem lines."""
    return {(kind, Path(rest.split(": ", 1)[0]))
            for kind, rest in re.findall(r"^(MISSING|DAMAGED) (.+)$", report, re.MULTILINE)}


def unsealed(workdir: Path) -> list[str]:
    """Every file under results/ (logs aside) that no store manifest or record vouches for."""
    results = workdir / "results"
    files = {p for p in results.rglob("*") if p.is_file() and "logs" not in p.parts
             and p.name != ".snakemake_timestamp"}
    vouched = set()
    for manifest in results.rglob(integrity.MANIFEST):
        listed = json.loads(manifest.read_text())["files"]
        vouched |= {manifest, *(manifest.parent / name for name in listed)}
    for record in results.rglob("*.json"):
        content = json.loads(record.read_text())
        if isinstance(content, dict) and integrity.CONTENTS in content:
            vouched |= {record, *(Path(os.path.normpath(record.parent / name))
                                  for name in content[integrity.CONTENTS])}
    return sorted(str(p.relative_to(workdir)) for p in files - vouched)


def test_every_file_the_workflow_writes_is_sealed(built):
    assert unsealed(built.workdir) == []
    assert integrity.check_record(built.workdir / STUDY / "seals/correlate.json", ["rule"]) == []


@pytest.mark.parametrize("name", CASES)
def test_verify_then_one_run_repairs(built, tmp_path, name):
    case = CASES[name]
    workdir = tmp_path / "study"
    shutil.copytree(built.workdir, workdir, symlinks=True)  # keeps every mtime
    damaged = {(kind, path.relative_to(workdir)) for kind, path in case.damage(workdir, built)}

    if case.refused:  # summarize, whose inputs are newer, reads them and refuses
        refused = snakemake(workdir, CONFIG)
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output
        assert all(f"  - {path}: " in output for path in case.refused), output
        assert "snakemake verify" in output and "UnicodeDecodeError" not in output, output
        summary = STUDY / "stats/summary.csv"  # never rewritten from the damaged table
        assert not (workdir / summary).exists()  # (Snakemake removes a failed job's outputs)

    verify = snakemake(workdir, CONFIG, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert reported(verify.stdout) == damaged, verify.stdout

    run = snakemake(workdir, CONFIG)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    expected_jobs = {rule: case.jobs.count(rule) for rule in case.jobs} | {"all": 1}
    assert planned_jobs(output) == expected_jobs, output
    if case.study_level:  # what verify said the next run would redo is what it redid
        promised = " ".join(re.findall(r"next run: (.+)$", verify.stdout, re.MULTILINE))
        assert set(re.findall(r"\w+", promised.replace("then what reads its outputs", ""))) \
            == set(case.jobs), promised
    if "train" in case.jobs:
        (log,) = (workdir / "results/logs/train").glob("*.log")
        reused = set(re.findall(r"run (\w{12}): reused", log.read_text()))
        retrained = {built.members[i] for i in case.retrains}
        assert reused == set(built.members) - retrained, log.read_text()

    again = snakemake(workdir, CONFIG, "verify")
    assert ALL_OK in again.stdout and not reported(again.stdout), again.stdout
    after = study_files(workdir)
    if case.retrains:  # retrained networks are bit-identical; only their timings differ
        assert statistics(after) == statistics(built.study_files)
        for run_id in built.members:
            model = Path("results/runs") / run_id / "model.pt"
            assert (workdir / model).read_bytes() == (built.workdir / model).read_bytes()
    else:
        assert after == built.study_files
    assert unsealed(workdir) == []
