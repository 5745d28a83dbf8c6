"""Adapter for rule plot_indicators_vs_gap: every indicator vs the gap, panel per dataset."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures import studies  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402
from workflow_src.integrity import open_store, read_all, read_csv, seal_job  # noqa: E402
from workflow_src.stats import optimizer_flags  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    opts, figures = snakemake.params.plots, snakemake.params.figures  # noqa: F821
    sm = snakemake  # noqa: F821
    ds, networks = read_all([(open_store, sm.input.metrics),
                             (read_csv, sm.input.networks, sm.input.correlate_seal)])
    titles = studies.indicator_titles(ds)
    chart = studies.indicators_vs_gap_chart(networks, titles, list(ds.attrs["hyperparameters"]),
                                            opts["color_by"], opts["width"], opts["height"],
                                            optimizer_flags(ds))  # hollow: stopped short
    save(chart, f"{figures}/indicators_vs_gap")
    log(f"{len(titles)} indicators over {len(networks)} networks")
    seal_job(sm)
