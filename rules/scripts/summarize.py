"""Adapter for rule summarize: indicators ranked by |Ψ| and |τ| (Jiang et al. 2020), with
each one's expected sign, Jiang's CMI score, Dziugaite et al.'s robust sign-error, and the
fraction of networks whose optimizer converged."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src import stats  # noqa: E402
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, read_all, read_csv, seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    # Each table checked against the seal of the job that wrote it: an edited or garbled
    # file is refused, naming it and the fix, instead of summarized.
    correlations, granulated = read_all([
        (read_csv, sm.input.correlations, sm.input.correlate_seal),
        (read_csv, sm.input.granulated, sm.input.granulate_seal)])
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    converged = stats.converged(stats.network_table(ds))
    signs = stats.expected_signs(ds, stats.indicator_names(ds))  # +1 where none is stated
    log(f"{len(converged)} converged networks; expected signs: {signs}")
    # Pooled rows, then each dataset's (column dataset), each part with its own scores and
    # notes (optimizers stopped short, constants).
    table = stats.summary_by_dataset(ds, correlations, granulated, "gap")
    table.to_csv(snakemake.output.summary, index=False)  # noqa: F821
    log(table.to_string())
    seal_job(sm)
