"""Adapter for rule aggregate: every run of the study into results/<study>/metrics.zarr."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import code_version, logged  # noqa: E402
from workflow_src.jobs.aggregate import build_metrics  # noqa: E402
from workflow_src.integrity import open_store, read_all, read_record  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402
from workflow_src.registry import use_custom  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    use_custom(sm.params.custom)  # the indicators of measure.custom join the registry
    # Every input checked as it is read, before any is combined: one error lists all damaged
    # files, and no statistic is ever computed from a store with missing or changed chunks.
    # A shard's training record carries its members' summaries (and vouches for their
    # train.json); its measure record vouches for each store's manifest, which the store's
    # files are checked against as it is opened.
    n_shards = len(sm.input.records)
    stores = [path for shard in sm.params.stores for path in shard]
    inputs = read_all([*((read_record, p, ("members",)) for p in sm.input.records),
                       *((read_record, p, ("stores",)) for p in sm.input.measured),
                       *((open_store, p) for p in stores)])
    records, opened = inputs[:n_shards], inputs[2 * n_shards:]
    members = {run_id: summary for record in records
               for run_id, summary in record["members"].items()}
    summaries = [members[run_id] for run_id in sm.params.runs]
    per_shard = len(sm.params.stores[0])  # stores are listed shard by shard, Jacobian first
    grouped = [opened[i:i + per_shard] for i in range(0, len(opened), per_shard)]
    metrics = build_metrics(sm.params.runs, summaries, grouped, code_version())
    log(metrics)
    write_store(metrics, sm.output.metrics)
