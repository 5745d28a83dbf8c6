"""Adapter for rule correlate: per-network table, correlations with the gap, per-point tests."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402

from workflow_src import stats  # noqa: E402
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, seal_job  # noqa: E402
from workflow_src.stats.tables import point_indicators  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    opts, out = snakemake.params.stats, snakemake.output  # noqa: F821
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    networks = stats.network_table(ds)
    networks.to_csv(out.networks, index=False)
    converged = stats.converged(networks)
    log(f"{len(converged)} of {len(networks)} networks converged; only those are correlated")
    names = stats.indicator_names(ds)
    # Over every converged network (dataset "pooled") and, with several datasets, within
    # each: the same bootstrap seed for every part.
    table = stats.per_dataset(lambda part: stats.correlations(
        part, names, "gap", opts["n_boot"], opts["confidence"], opts["seed"]), converged)
    table.to_csv(out.correlations, index=False)
    log(table.to_string())
    converged_ds = stats.converged_runs(ds)
    per_point = pd.concat([
        stats.per_point_misclassification(converged_ds, name, opts["confidence"])
        for name in point_indicators(ds)
    ], ignore_index=True)
    per_point.to_csv(out.per_point, index=False)
    log(per_point[per_point["scope"] == "pooled"].to_string())
    seal_job(snakemake)  # noqa: F821
