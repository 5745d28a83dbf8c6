"""Adapter for rule plot_training: Zhang et al.'s Figure 1 (learning curves, time to fit,
test error) from the study's learning curves."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures import studies  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402
from workflow_src.integrity import read_csv, seal_job  # noqa: E402
from workflow_src.runtable import HYPERPARAMETERS  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    size, figures = snakemake.params.size, snakemake.params.figures  # noqa: F821
    hps = list(HYPERPARAMETERS)
    curves = read_csv(snakemake.input.curves, snakemake.input.collect_curves_seal)  # noqa: F821
    fits = studies.fit_table(curves, hps)
    save(studies.learning_curves_chart(curves, hps, size["width"], size["height"]),
         f"{figures}/learning_curves")
    save(studies.time_to_fit_chart(fits, hps, size["width"], size["height"]),
         f"{figures}/time_to_fit")
    save(studies.test_error_chart(fits, hps, size["width"], size["height"]),
         f"{figures}/test_error")
    log(fits[["run_id", "dataset", "corruption", "label_noise", "group", "status", "steps",
              "seconds", "test_error"]].to_string())
    seal_job(snakemake)  # noqa: F821
