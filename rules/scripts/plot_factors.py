"""Adapter for rule plot_factors: indicators on matched pairs of a two-valued factor."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures import studies  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    size, figures = snakemake.params.size, snakemake.params.figures  # noqa: F821
    titles = studies.indicator_titles(xr.open_zarr(snakemake.input.metrics))  # noqa: F821 (lazy)
    pairs = pd.read_csv(snakemake.input.pairs)  # noqa: F821
    tests = pd.read_csv(snakemake.input.tests)  # noqa: F821
    save(studies.factor_chart(pairs, tests, titles, size["width"], size["height"]),
         f"{figures}/factors")
    log(f"{len(pairs)} matched pairs over {pairs['contrast'].nunique()} contrasts")
