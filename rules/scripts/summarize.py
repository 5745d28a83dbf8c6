"""Adapter for rule summarize: indicators ranked by |Ψ| and |τ| (Jiang et al. 2020)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402

from workflow_src import stats  # noqa: E402
from workflow_src.adapter import logged  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    correlations = pd.read_csv(snakemake.input.correlations)  # noqa: F821
    granulated = pd.read_csv(snakemake.input.granulated)  # noqa: F821
    table = stats.summary(correlations, granulated)
    table.to_csv(snakemake.output.summary, index=False)  # noqa: F821
    log(table.to_string())
