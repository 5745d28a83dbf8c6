"""Adapter for rule aggregate: every run of the study into results/<study>/metrics.zarr."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import json  # noqa: E402

import xarray as xr  # noqa: E402

from workflow_src.adapter import code_version, logged  # noqa: E402
from workflow_src.aggregate import build_metrics  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    summaries = [json.loads(Path(p).read_text()) for p in snakemake.input.summaries]  # noqa: F821
    point_sets = [xr.open_zarr(p).load() for p in snakemake.input.jacobians]  # noqa: F821
    metrics = build_metrics(snakemake.params.runs, summaries, point_sets, code_version())  # noqa: F821
    log(metrics)
    metrics.to_zarr(snakemake.output.metrics, mode="w")  # noqa: F821
