"""Adapter for rule regress: OLS of the gap on log(indicator), dataset fixed effects, HC3."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402

from workflow_src import stats  # noqa: E402
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    confidence = snakemake.params.stats["confidence"]  # noqa: F821
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    converged = stats.converged(stats.network_table(ds))
    tables, texts = [], []
    for name in stats.indicator_names(ds):
        coefficients, text = stats.ols_gap_on_log_indicator(converged, name, "gap", confidence)
        tables.append(coefficients)
        texts.append(f"== gap on log({name}), {len(converged)} converged networks ==\n{text}\n")
    coefficients_path = snakemake.output.coefficients  # noqa: F821
    pd.concat(tables, ignore_index=True).to_csv(coefficients_path, index=False)
    Path(snakemake.output.summary).write_text("\n".join(texts))  # noqa: F821
    log("\n".join(texts))
    seal_job(snakemake)  # noqa: F821
