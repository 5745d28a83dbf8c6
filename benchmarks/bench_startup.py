"""What each job of the default study spends importing Python modules before it works.

    .venv/bin/python benchmarks/bench_startup.py [--configfile config.yaml] [--cores 1]

It runs the study (config.yaml unless told otherwise) from an empty results folder in a
scratch directory (`snakemake --directory`), one job at a time (--cores 1, so the output of
one job is not interleaved with another's), with PYTHONPROFILEIMPORTTIME=1: every Python
process a job starts prints each module it imports and the microseconds it took
(`python -X importtime`). It prints, per rule: the jobs, their mean wall time (from
Snakemake's one-second timestamps), the mean seconds spent importing, whether the job
imported torch, and the heaviest top-level imports; then the totals against the study's
job-seconds, and the plain baseline of the same machine: `python -c pass` and
`python -c "import torch"` in fresh processes. Import timing itself slows imports a little,
so the import seconds are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
HEADER = "import time: self [us] | cumulative | imported package"
LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]")
RULE = re.compile(r"^(?:local)?rule (\w+):")
JOBID = re.compile(r"^\s+jobid: (\d+)")
FINISHED = re.compile(r"Finished job(?:id:)? (\d+)")


class Process:
    """One Python process's imports: total own microseconds, top-level cumulative ones."""

    def __init__(self):
        self.own_us = 0
        self.top: dict[str, int] = {}
        self.names: set[str] = set()

    def add(self, own: int, cumulative: int, depth: int, name: str):
        self.own_us += own
        self.names.add(name)
        if depth == 1:  # the format indents a top-level import by one space
            self.top[name] = self.top.get(name, 0) + cumulative


def parse(output: str):
    """[(rule, seconds, [Process])] per job, in the order the jobs ran."""
    jobs, current, stamp, pending_rule = {}, None, None, None
    order = []
    for line in output.splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := RULE.match(line):
            pending_rule = match.group(1)
        elif (match := JOBID.match(line)) and pending_rule:
            current = match.group(1)
            jobs[current] = {"rule": pending_rule, "start": stamp, "end": stamp,
                             "processes": []}
            order.append(current)
            pending_rule = None
        elif match := FINISHED.search(line):
            if match.group(1) in jobs:
                jobs[match.group(1)]["end"] = stamp
        elif line.startswith(HEADER) and current is not None:
            jobs[current]["processes"].append(Process())
        elif (match := LINE.match(line)) and current is not None and jobs[current]["processes"]:
            own, cumulative, indent, name = match.groups()
            jobs[current]["processes"][-1].add(int(own), int(cumulative), len(indent), name)
    return [(jobs[j]["rule"], (jobs[j]["end"] - jobs[j]["start"]).total_seconds(),
             jobs[j]["processes"]) for j in order]


def fresh_process_seconds(code: str, repeats: int = 3) -> float:
    """The fastest of ``repeats`` wall times of ``python -c code`` in a fresh process."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        best = min(best, time.perf_counter() - start)
    return best


def report(jobs) -> None:
    by_rule = defaultdict(list)
    for rule, seconds, processes in jobs:
        by_rule[rule].append((seconds, processes))
    print(f"{'rule':<16}{'jobs':>5}{'s/job':>8}{'import s/job':>14}{'torch':>7}  "
          "heaviest top-level imports (cumulative s, first job)")
    total_job = total_import = 0.0
    for rule, runs in by_rule.items():
        if rule == "all":
            continue
        seconds = sum(s for s, _ in runs) / len(runs)
        imports = sum(p.own_us for _, ps in runs for p in ps) / 1e6 / len(runs)
        torch = any("torch" in p.names for _, ps in runs for p in ps)
        first = runs[0][1][0].top if runs[0][1] else {}
        heavy = sorted(first.items(), key=lambda kv: -kv[1])[:3]
        print(f"{rule:<16}{len(runs):>5}{seconds:>8.1f}{imports:>14.2f}"
              f"{'yes' if torch else 'no':>7}  "
              + ", ".join(f"{name} {us / 1e6:.2f}" for name, us in heavy))
        total_job += seconds * len(runs)
        total_import += imports * len(runs)
    print(f"\nall jobs: {total_job:.0f} job-seconds, of which {total_import:.0f} s importing "
          f"({total_import / total_job:.0%}; timestamps have one-second resolution)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default=str(REPO / "config.yaml"))
    parser.add_argument("--cores", type=int, default=1)
    args = parser.parse_args()
    bare = fresh_process_seconds("pass")
    torch = fresh_process_seconds("import torch")
    print(f"baseline, a fresh process: python -c pass {bare:.2f} s; "
          f"python -c 'import torch' {torch:.2f} s ({torch / bare:.0f}x)\n")
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        start = time.perf_counter()
        run = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory",
                              scratch, "--configfile", args.configfile, "--cores",
                              str(args.cores)], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode:
            sys.exit(f"the study failed:\n{run.stderr[-3000:]}")
    jobs = parse(run.stderr)  # Snakemake and the jobs write to the same stderr, in order
    print(f"the study: {len(jobs)} jobs in {wall:.0f} s with --cores {args.cores}\n")
    report(jobs)


if __name__ == "__main__":
    main()
