"""Adapter for rule collect_curves: every run's learning curve in one tidy table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import TRAIN_SUMMARY_KEYS, logged  # noqa: E402
from workflow_src.collect import learning_curves  # noqa: E402
from workflow_src.integrity import read_all, read_csv, read_record  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    # Each train.json vouches for the curve.csv beside it; all are checked before any is used.
    summaries = read_all([(read_record, p, TRAIN_SUMMARY_KEYS) for p in sm.input.summaries])
    curves = read_all([(read_csv, curve, summary) for curve, summary
                       in zip(sm.input.curves, sm.input.summaries, strict=True)])
    table = learning_curves(sm.params.runs, curves, summaries)
    table.to_csv(sm.output.curves, index=False)
    log(f"{len(table)} evaluations of {table['run_id'].nunique()} runs")
