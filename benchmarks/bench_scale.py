"""What a study of thousands of networks costs Snakemake before any job runs.

The demo grid of config.yaml (12 networks) repeated over 84 and 834 seeds gives 1,008 and
10,008 networks. For each, in a scratch directory, this runs `snakemake -n` as a user would
and prints the number of planned jobs (per rule, and how many would reach `sbatch` under
profiles/slurm: every job but the local ones), the dry run's wall time and its peak
memory, against the goals of a 10,000-network study (at most 700 jobs, 10 s, 300 MB on
the 2-core development machine; issue 19). No dataset is needed: a dry run only plans.

    .venv/bin/python benchmarks/bench_scale.py            # 1,008 and 10,008 networks
    .venv/bin/python benchmarks/bench_scale.py --quick    # 1,008 only
"""

from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from workflow_src import registry  # noqa: E402
from workflow_src.config import validate_config  # noqa: E402
from workflow_src.runtable import build_run_table  # noqa: E402

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
GOALS = {"jobs": 700, "seconds": 10.0, "peak_mb": 300.0}  # for the 10,008-network grid
LOCAL_RULES = {"all", "verify"}  # run on the submit host, never submitted to SLURM

def shard_rules(counts: dict) -> list[str]:
    """The rules planned once per shard: train, measure (every metric of the shard) and
    measure_snapshots when the study runs them."""
    return [rule for rule in counts if rule == "train" or rule.startswith("measure")]

# Peak resident memory of the one child it runs (RUSAGE_CHILDREN of a fresh process).
PEAK = ("import resource, subprocess, sys; "
        "code = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], 'w'), "
        "stderr=subprocess.STDOUT).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def job_counts(output: str) -> dict[str, int]:
    """Rule -> planned jobs, from the 'Job stats' table of a dry run (total included)."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def dry_run(seeds: int, workdir: Path) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    study = copy.deepcopy(config)
    study["study"] = f"scale-{seeds}"
    study["grid"]["seed"] = list(range(seeds))
    (workdir / "study.yaml").write_text(yaml.safe_dump(study))
    log = workdir / "dry_run.log"
    command = [str(SNAKEMAKE), "-n", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(workdir / "study.yaml"), "--cores", "2"]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK, str(log), *command],
                            capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake -n failed for {seeds} seeds; see {log}:\n{result.stderr}")
    counts = job_counts(log.read_text())
    validated = validate_config(copy.deepcopy(study))
    networks = len(build_run_table(validated))
    metrics = [m for m in registry.metrics() if registry.switched_on(m, validated)]
    return {"seeds": seeds, "networks": networks, "counts": counts, "seconds": seconds,
            "metrics": metrics,
            "peak_mb": int(result.stdout.split()[-1]) / 1024,  # ru_maxrss is in KiB on Linux
            "submitted": counts["total"] - sum(counts.get(r, 0) for r in LOCAL_RULES)}


def report(row: dict) -> None:
    counts = row["counts"]
    per_rule = ", ".join(f"{rule} {n:,}" for rule, n in counts.items() if rule != "total")
    print(f"\n{row['networks']:,} networks ({row['seeds']} seeds of the demo grid)")
    print(f"  planned jobs:      {counts['total']:,} ({per_rule})")
    print(f"  sbatch jobs:       {row['submitted']:,} (all but {', '.join(sorted(LOCAL_RULES))})")
    print(f"  jobs per network:  {counts['total'] / max(row['networks'], 1):.2f} "
          f"({counts.get('train', 0):,} shards of about "
          f"{row['networks'] / max(counts.get('train', 1), 1):.0f} networks)")
    # One job per network and metric, as before shards: per network a train job and one job
    # per metric the study measures, plus the same study-level jobs; and one job per shard
    # and measuring rule, as before one measuring job per shard (issue 19).
    per_shard = shard_rules(counts)
    study_level = counts["total"] - sum(counts[rule] for rule in per_shard)
    per_network_jobs = (1 + len(row["metrics"])) * row["networks"] + study_level
    rules = len(row["metrics"]) - ("bounds" in row["metrics"])  # the Jacobian's wrote both
    per_metric_jobs = (1 + rules) * counts.get("train", 0) + study_level
    print(f"  measured metrics:  {len(row['metrics'])} ({', '.join(row['metrics'])}), one "
          f"measure job a shard")
    print(f"  one job per network and metric would plan {per_network_jobs:,}: "
          f"{per_network_jobs / counts['total']:.1f}x the jobs; one job per shard and metric "
          f"{per_metric_jobs:,}")
    print(f"  snakemake -n:      {row['seconds']:.1f} s, peak {row['peak_mb']:.0f} MB")
    if row["networks"] >= 10_000:
        print(f"  against the goals: jobs {counts['total'] / GOALS['jobs']:.1f}x of "
              f"{GOALS['jobs']:,}, time {row['seconds'] / GOALS['seconds']:.1f}x of "
              f"{GOALS['seconds']:.0f} s, memory {row['peak_mb'] / GOALS['peak_mb']:.1f}x of "
              f"{GOALS['peak_mb']:.0f} MB (1.0x or less meets a goal)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 1,008-network grid")
    args = parser.parse_args()
    rows = []
    for seeds in ((84,) if args.quick else (84, 834)):
        with tempfile.TemporaryDirectory(prefix=f"gensens-scale-{seeds}-") as workdir:
            rows.append(dry_run(seeds, Path(workdir)))
        report(rows[-1])
    if len(rows) == 2:
        small, large = rows
        print(f"\n10x the networks: {large['counts']['total'] / small['counts']['total']:.1f}x "
              f"the jobs, {large['seconds'] / small['seconds']:.1f}x the dry-run time, "
              f"{large['peak_mb'] / small['peak_mb']:.1f}x the memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
