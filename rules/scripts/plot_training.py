"""Adapter for rule plot_training: Zhang et al.'s Figure 1 (learning curves, time to fit,
test error) from the study's learning curves."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.figures.catalogue import fits  # noqa: E402
from workflow_src.figures.job import draw_figures  # noqa: E402
from workflow_src.figures.output import write_library  # noqa: E402
from workflow_src.integrity import seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    write_library(sm.output.library)  # vega.js, which every figure's HTML loads
    data = draw_figures(sm, sm.params.figures_drawn, log)
    log(fits(data)[["run_id", "dataset", "corruption", "label_noise", "group", "status",
                    "steps", "seconds", "test_error"]].to_string())
    seal_job(sm)
