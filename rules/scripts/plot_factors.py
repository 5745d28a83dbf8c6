"""Adapter for rule plot_factors: indicators on matched pairs of a two-valued factor."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures import studies  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402
from workflow_src.integrity import open_store, read_all, read_csv, seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    size, figures = snakemake.params.size, snakemake.params.figures  # noqa: F821
    sm = snakemake  # noqa: F821
    metrics, pairs, tests = read_all([(open_store, sm.input.metrics),
                                      (read_csv, sm.input.pairs, sm.input.paired_seal),
                                      (read_csv, sm.input.tests, sm.input.paired_seal)])
    titles = studies.indicator_titles(metrics)
    save(studies.factor_chart(pairs, tests, titles, size["width"], size["height"]),
         f"{figures}/factors")
    log(f"{len(pairs)} matched pairs over {pairs['contrast'].nunique()} contrasts")
    seal_job(sm)
