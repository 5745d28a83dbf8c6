"""Adapter for rules measure_<metric>: metrics of every network of one shard."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged, shard_job  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402
from workflow_src.measure_shard import measure_shard  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    runs, data_stores, device = shard_job(sm)
    results = Path(sm.input.record).parents[2]  # results/shards/<shard>/train.json
    stores = measure_shard(sm.params.metrics, sm.wildcards.shard, runs, data_stores, results,
                           device, sm.config["measure"]["chunk_size"], log)
    for metric, out in stores.items():
        log(out)
        write_store(out, sm.output[metric])
