"""Adapter for rule measure_snapshots: the chosen metrics of every network of one shard at
the chosen training steps (workflow_src/jobs/snapshots.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged, shard_job  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402
from workflow_src.jobs.snapshots import measure_snapshots  # noqa: E402
from workflow_src.paths import results_of_shard_record  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    runs, data_stores, device = shard_job(sm)
    results = results_of_shard_record(sm.input.record)
    log(f"shard {sm.wildcards.shard}: {len(runs)} networks, steps {sm.params.steps}, "
        f"metrics {list(sm.params.metrics)}, on {device}")
    out = measure_snapshots(sm.params.steps, sm.params.metrics, sm.wildcards.shard, runs,
                            data_stores, results, device, sm.config["measure"]["chunk_size"],
                            log)
    log(out)
    write_store(out, sm.output.snapshots)
