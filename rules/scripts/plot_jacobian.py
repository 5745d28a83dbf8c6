"""Adapter for rule plot_jacobian: Jacobian norm against the gap, correctness and loss."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.integrity import open_store, read_csv, seal_job  # noqa: E402
from workflow_src.figures import sensitivity  # noqa: E402
from workflow_src.figures.common import sample_rows, save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402

MAX_POINTS = 5000  # points drawn in the per-point scatter (a seeded sample beyond that)

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    opts, figures = snakemake.params.plots, snakemake.params.figures  # noqa: F821
    size = (opts["width"], opts["height"])
    ds = open_store(snakemake.input.metrics)  # noqa: F821
    networks = read_csv(snakemake.input.networks, snakemake.input.correlate_seal)  # noqa: F821
    gap = sensitivity.jacobian_vs_gap_chart(networks, list(ds.attrs["hyperparameters"]),
                                            opts["color_by"], *size)
    save(gap, f"{figures}/jacobian_vs_gap")
    points = sensitivity.points_table(ds)  # hyperparameters come along as columns
    save(sensitivity.jacobian_by_correctness_chart(points, opts["color_by"], *size),
         f"{figures}/jacobian_by_correctness")
    save(sensitivity.jacobian_vs_loss_chart(sample_rows(points, MAX_POINTS), *size),
         f"{figures}/jacobian_vs_loss")
    log(f"figures written for {len(networks)} networks, {len(points)} points")
    seal_job(snakemake)  # noqa: F821
