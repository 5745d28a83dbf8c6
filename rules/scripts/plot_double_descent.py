"""Adapter for rule plot_double_descent: training and test error against parameters."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.figures import studies  # noqa: E402
from workflow_src.figures.common import save  # noqa: E402
from workflow_src.figures.theme import use_theme  # noqa: E402
from workflow_src.integrity import read_csv, seal_job  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    use_theme()
    sm = snakemake  # noqa: F821
    networks = read_csv(sm.input.networks, sm.input.correlate_seal)
    save(studies.double_descent_chart(networks, sm.params.n_train, sm.params.size["width"],
                                      sm.params.size["height"]),
         f"{sm.params.figures}/double_descent")
    table = studies.double_descent_table(networks, sm.params.n_train)
    table.to_csv(sm.output.table, index=False)
    log(table.to_string())
    seal_job(sm)
