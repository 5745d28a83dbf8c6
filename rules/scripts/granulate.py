"""Adapter for rule granulate: Jiang et al.'s ψ per hyperparameter axis and Ψ, per indicator."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402

from workflow_src import stats  # noqa: E402
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    converged = stats.converged(stats.network_table(ds))
    # Every recorded hyperparameter is an axis; single-valued ones come back as rows whose
    # note says so, so the table shows which axes the study could not score.
    axes = list(converged.attrs["hyperparameters"])
    # Over every converged network (dataset "pooled") and, with several datasets, within
    # each (where the dataset axis has a single value).
    table = stats.per_dataset(lambda part: pd.concat(
        [stats.granulated_kendall(part, name, axes, "gap") for name in stats.indicator_names(ds)],
        ignore_index=True), converged)
    table.to_csv(snakemake.output.granulated, index=False)  # noqa: F821
    log(f"{len(converged)} converged networks\n{table.to_string()}")
    seal_job(snakemake)  # noqa: F821
