"""Adapter for rule plot_double_descent: training and test error against parameters."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures import studies  # noqa: E402
from workflow_src.figures.job import draw_figures, study_data  # noqa: E402
from workflow_src.integrity import seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    data, paths = study_data(sm)
    table = studies.double_descent_table(data.networks, sm.params.options["n_train"])
    table.to_csv(sm.output.table, index=False)
    log(table.to_string())
    draw_figures(sm, sm.params.figures_drawn, log, data, paths)
    seal_job(sm)
