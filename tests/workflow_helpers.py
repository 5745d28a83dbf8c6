"""Run the Snakemake CLI on a study config inside a scratch directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

TINY_CONFIG = {
    "study": "tiny",
    "data": {"n_train": 200, "n_test": 100},
    "grid": {
        "dataset": ["digits"], "corruption": ["none"], "label_noise": [0.0, 1.0],
        "width": [32], "depth": [1, 2], "activation": ["relu"], "bias": [True],
        "optimizer": ["adam"], "learning_rate": [0.01], "batch_size": [50],
        "augment": [False], "seed": [0],
    },
    "training": {"max_steps": 1500, "eval_every": 25},
    "measure": {"n_points": 40, "transitions": {"n_points": 10, "k_sampled": 256},
                "ellipses": {"per_kind": 2, "n_positions": 64}},
    "stats": {"n_boot": 200},
}


def snakemake(workdir: Path, config: dict, *args: str, timeout: int = 600):
    """Write config into workdir, run snakemake there; returns the CompletedProcess."""
    config_path = workdir / "study.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(config_path), "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def planned_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run ({} if nothing to do)."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match or match.group(1) == "total":
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def planned_shards(output: str, rule: str = "train") -> set[str]:
    """The shard ids of ``rule``'s planned jobs, from the job blocks of a dry run."""
    shards = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        if re.match(rf"(?:local)?rule {rule}:", block):
            shards.update(re.findall(r"wildcards: shard=([0-9a-f]{12})", block))
    return shards


def tiny_study(**changes):
    """TINY_CONFIG with dotted changes (section__key=value), validated (the schema's
    defaults filled in)."""
    import copy

    from workflow_src.config import validate_config

    config = copy.deepcopy(TINY_CONFIG)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = config
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return validate_config(config)
