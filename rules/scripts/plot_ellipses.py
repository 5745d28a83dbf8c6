"""Adapter for rule plot_ellipses: on/off-manifold profiles and transitions per anchor kind."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)

from workflow_src.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, seal_job  # noqa: E402
from workflow_src.figures import sensitivity  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402
from workflow_src.stats.ellipse_order import kind_ordering  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    opts, figures = snakemake.params.plots, snakemake.params.figures  # noqa: F821
    size = (opts["width"], opts["height"])
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    summary = sensitivity.ellipse_summary_table(ds)
    summary.to_csv(snakemake.output.summary, index=False)  # noqa: F821
    order = kind_ordering(summary)
    order.to_csv(snakemake.output.order, index=False)  # noqa: F821
    log(order.to_string())
    save(sensitivity.ellipse_profile_chart(sensitivity.ellipse_profile_table(ds), *size),
         f"{figures}/ellipse_profile")
    save(sensitivity.ellipse_kinds_chart(summary, *size), f"{figures}/ellipse_kinds")
    log(summary.groupby("kind")[[c for c in summary.columns if c.startswith(
        ("mean_jacobian_norm", "jacobian_norm_", "transitions"))]].mean())
    seal_job(snakemake)  # noqa: F821
