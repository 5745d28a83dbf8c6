"""Adapter for rule plot_keskar: Keskar et al.'s Fig. 3 from stats/keskar_interpolation.csv."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.figures.job import draw_figures, study_data  # noqa: E402
from workflow_src.integrity import seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    data, paths = study_data(sm)
    table = data.keskar
    log(f"{table.groupby(['small_run', 'large_run']).ngroups} pairs, {len(table)} rows")
    draw_figures(sm, sm.params.figures_drawn, log, data, paths)
    seal_job(sm)
