"""Adapter for rule verify: check every expected result, remove the damaged ones, report."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.integrity import repair  # noqa: E402

terminal = sys.stdout  # logged() redirects stdout to the log; the report goes to both
with logged(snakemake.log[0]) as log:  # noqa: F821
    for line in repair(snakemake.params.expected, snakemake.params.study_outputs):  # noqa: F821
        log(line)
        print(line, file=terminal, flush=True)
