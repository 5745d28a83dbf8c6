"""Adapter for rule aggregate: every run of the study into results/<study>/metrics.zarr."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import TRAIN_SUMMARY_KEYS, code_version, logged  # noqa: E402
from workflow_src.aggregate import build_metrics  # noqa: E402
from workflow_src.integrity import open_store, read_all, read_record, write_store  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    # Every input checked as it is read, before any is combined: one error lists all damaged
    # files, and no statistic is ever computed from a store with missing or changed chunks.
    n_runs = len(sm.input.summaries)
    inputs = read_all([*((read_record, p, TRAIN_SUMMARY_KEYS) for p in sm.input.summaries),
                       *((open_store, p) for p in sm.input.stores)])
    summaries, stores = inputs[:n_runs], inputs[n_runs:]
    per_run = sm.params.metrics_per_run  # stores are listed run by run, Jacobian first
    grouped = [stores[i:i + per_run] for i in range(0, len(stores), per_run)]
    metrics = build_metrics(sm.params.runs, summaries, grouped, code_version())
    log(metrics)
    write_store(metrics, sm.output.metrics)
