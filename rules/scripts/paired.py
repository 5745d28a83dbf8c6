"""Adapter for rule paired: Wilcoxon tests of every two-valued factor on matched pairs, and
with ellipses measured, the per-ellipse table and the test of its order by kind of anchors.

Which factors, how networks are matched (and the full-batch gd exception) and the
multiple-testing correction are in ``workflow_src.stats.paired.factor_tests``; the ellipse
order in ``workflow_src.stats.ellipse_order``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)

from workflow_src import stats  # noqa: E402
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    opts, out = snakemake.params.stats, snakemake.output  # noqa: F821
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    converged = stats.converged(stats.network_table(ds))
    tests, pairs = stats.factor_tests(
        converged, stats.indicator_names(ds), opts["n_boot"], opts["confidence"], opts["seed"],
        method=snakemake.params.correction, log=log)  # noqa: F821
    tests.to_csv(out.tests, index=False)
    pairs.to_csv(out.pairs, index=False)
    log(tests.to_string())
    if "ellipses" in out.keys():
        from workflow_src.stats.tables import ellipse_summary_table

        summary = ellipse_summary_table(ds)
        summary.to_csv(out.ellipses, index=False)
        order = stats.kind_ordering(summary)
        order.to_csv(out.ellipse_order, index=False)
        log(order.to_string())
    seal_job(snakemake)  # noqa: F821
