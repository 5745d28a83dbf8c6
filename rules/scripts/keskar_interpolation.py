"""Adapter for rule keskar_interpolation: Keskar et al.'s 1-D parametric plot data, the loss
and accuracy along w(a) = a w_large + (1 - a) w_small for every batch-size pair
(workflow_src/metrics/interpolation.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged, shard_job  # noqa: E402
from workflow_src.integrity import seal_job  # noqa: E402
from workflow_src.metrics.interpolation import pair_table  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    runs, data_stores, device = shard_job(sm)  # the pairs' members, their datasets
    records = list(sm.input.records)
    results = Path(records[0]).parents[2] if records else Path("results")
    pairs = [tuple(pair) for pair in sm.params.pairs]
    log(f"{len(pairs)} pairs, {sm.params.settings['n_alphas']} values of alpha, on {device}")
    table = pair_table(pairs, {run.id: run for run in runs}, data_stores, records, results,
                       sm.params.settings, sm.params.chunk_size, device, log)
    table.to_csv(sm.output.table, index=False)
    seal_job(sm)
