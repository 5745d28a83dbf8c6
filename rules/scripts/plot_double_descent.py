"""Adapter for rule plot_double_descent: error against parameters (model-wise), the peak per
label noise, and error along training near the threshold (epoch-wise)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.figures import double_descent  # noqa: E402
from workflow_src.figures.job import draw_figures, study_data  # noqa: E402
from workflow_src.integrity import seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    data, paths = study_data(sm)
    n_train = sm.params.options["n_train"]
    table = double_descent.double_descent_table(data.networks, n_train)
    table.to_csv(sm.output.table, index=False)
    peak = double_descent.peak_table(table)
    peak.to_csv(sm.output.peak, index=False)
    log(peak.to_string())
    epochs = double_descent.epoch_table(data.curves, data.networks, n_train)
    epochs.to_csv(sm.output.epochs, index=False)
    log(f"epoch-wise: widths {sorted(epochs['width'].unique())}, {len(epochs)} rows")
    draw_figures(sm, sm.params.figures_drawn, log, data, paths)
    seal_job(sm)
