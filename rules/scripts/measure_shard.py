"""Adapter for rule measure: every enabled metric of every network of one shard, each into
its own store (reused when intact and current), then the shard's measure record."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.jobs.measure_shard import measure_job  # noqa: E402
from workflow_src.registry import use_custom  # noqa: E402
from workflow_src.runtable import RunSpec  # noqa: E402
from workflow_src.paths import results_of_shard_record  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    use_custom(sm.params.custom)  # the indicators of measure.custom join the registry
    runs = [RunSpec.from_dict(raw) for raw in sm.params.runs]
    data_stores = {key.removeprefix("data_"): path for key, path in sm.input.items()
                   if key.startswith("data_")}
    results = results_of_shard_record(sm.input.record)
    log(f"shard {sm.wildcards.shard}: {len(runs)} networks, metrics {list(sm.params.metrics)}")
    record = measure_job(sm.params.metrics, sm.params.stores, sm.wildcards.shard, runs,
                         data_stores, results, sm.config["training"]["device"], sm.threads,
                         sm.config["measure"]["chunk_size"], log)
    if Path(record) != Path(sm.output.record):
        raise RuntimeError(f"sealed {record}, but the rule's output is {sm.output.record}")
