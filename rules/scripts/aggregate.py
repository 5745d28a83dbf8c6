"""Adapter for rule aggregate: every run of the study into results/<study>/metrics.zarr."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import json  # noqa: E402

import xarray as xr  # noqa: E402

from workflow_src.adapter import code_version, logged  # noqa: E402
from workflow_src.aggregate import build_metrics  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    summaries = [json.loads(Path(p).read_text()) for p in sm.input.summaries]
    per_run = sm.params.metrics_per_run  # stores are listed run by run, Jacobian first
    stores = [xr.open_zarr(p).load() for p in sm.input.stores]
    grouped = [stores[i:i + per_run] for i in range(0, len(stores), per_run)]
    metrics = build_metrics(sm.params.runs, summaries, grouped, code_version())
    log(metrics)
    metrics.to_zarr(sm.output.metrics, mode="w")
