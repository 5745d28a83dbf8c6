"""Adapter for rule plot_jacobian: the Jacobian-vs-gap and per-point figures."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from workflow_src.figures import sensitivity  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.adapter import logged  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    opts, out = snakemake.params.plots, snakemake.output  # noqa: F821
    ds = xr.open_zarr(snakemake.input.metrics).load()  # noqa: F821
    networks = pd.read_csv(snakemake.input.networks)  # noqa: F821
    gap = sensitivity.jacobian_vs_gap_chart(networks, list(ds.attrs["hyperparameters"]),
                                        opts["color_by"], opts["width"], opts["height"])
    save(gap, out.gap_html, out.gap_png)
    points = sensitivity.points_table(ds)  # hyperparameters come along as columns
    by_point = sensitivity.jacobian_by_correctness_chart(points, opts["color_by"], opts["width"],
                                                     opts["height"])
    save(by_point, out.points_html, out.points_png)
    log(f"figures written for {len(networks)} networks, {len(points)} points")
