"""Adapter for rule plot_keskar: Keskar et al.'s Fig. 3 from stats/keskar_interpolation.csv."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.keskar import keskar_1d_chart  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402
from workflow_src.integrity import read_csv, seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    size, figures = snakemake.params.size, snakemake.params.figures  # noqa: F821
    sm = snakemake  # noqa: F821
    table = read_csv(sm.input.table, sm.input.keskar_interpolation_seal)
    save(keskar_1d_chart(table, size["width"], size["height"]), f"{figures}/keskar_1d")
    log(f"{table.groupby(['small_run', 'large_run']).ngroups} pairs, {len(table)} rows")
    seal_job(snakemake)  # noqa: F821
