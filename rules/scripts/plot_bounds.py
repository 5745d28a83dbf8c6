"""Adapter for rule plot_bounds: measured Jacobian norms against the loss bounds."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)

from workflow_src.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, seal_job  # noqa: E402
from workflow_src.figures.bounds import bounds_chart, bounds_table  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    opts, figures = snakemake.params.plots, snakemake.params.figures  # noqa: F821
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    points = bounds_table(ds)
    n_classes = int(ds["n_classes"].max())  # the curves assume one class count per study
    save(bounds_chart(points, n_classes, opts["width"], opts["height"]), f"{figures}/loss_bounds")
    log(f"{len(points)} points; {points['within_bounds'].mean():.3f} within the bounds")
    seal_job(snakemake)  # noqa: F821
