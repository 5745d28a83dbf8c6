"""Adapter for rule plot_metrics: the figures drawn from metrics.zarr and stats/networks.csv
(Jacobian norm vs gap, by correctness and vs loss; loss bounds; indicators vs gap; the
ellipse figures and their tables when ellipses are measured)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures.catalogue import ellipse_summary  # noqa: E402
from workflow_src.figures.job import draw_figures, study_data  # noqa: E402
from workflow_src.integrity import seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    data, paths = study_data(sm)
    if "summary" in sm.output.keys():  # the ellipse tables (ellipses measured)
        from workflow_src.stats.ellipse_order import kind_ordering

        summary = ellipse_summary(data)
        summary.to_csv(sm.output.summary, index=False)
        order = kind_ordering(summary)
        order.to_csv(sm.output.order, index=False)
        log(order.to_string())
    draw_figures(sm, sm.params.figures_drawn, log, data, paths)
    seal_job(sm)
