"""Adapter for rule plot_metrics: the figures drawn from metrics.zarr and the statistics'
per-network and per-ellipse tables (Jacobian norm vs gap, by correctness and vs loss; loss
bounds; indicators vs gap; the ellipse figures when ellipses are measured)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.figures.job import draw_figures  # noqa: E402
from workflow_src.integrity import seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    draw_figures(sm, sm.params.figures_drawn, log)
    seal_job(sm)
