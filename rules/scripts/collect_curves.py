"""Adapter for rule collect_curves: every run's learning curve in one tidy table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import json  # noqa: E402

import pandas as pd  # noqa: E402

from workflow_src.adapter import logged  # noqa: E402
from workflow_src.collect import learning_curves  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    curves = [pd.read_csv(p) for p in snakemake.input.curves]  # noqa: F821
    summaries = [json.loads(Path(p).read_text()) for p in snakemake.input.summaries]  # noqa: F821
    table = learning_curves(snakemake.params.runs, curves, summaries)  # noqa: F821
    table.to_csv(snakemake.output.curves, index=False)  # noqa: F821
    log(f"{len(table)} evaluations of {table['run_id'].nunique()} runs")
