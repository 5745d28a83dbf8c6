"""Adapter for rule collect_curves: every run's learning curve in one tidy table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged  # noqa: E402
from workflow_src.jobs.collect import learning_curves  # noqa: E402
from workflow_src.integrity import read_all, read_csv, read_record, seal_job  # noqa: E402
from workflow_src.paths import curve_file, results_of_shard_record, run_record  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    # The shards' records vouch for the members' train.json (and carry their summaries),
    # each train.json for the curve.csv beside it; all are checked before any is used.
    # (The weights, which the curves do not need, are not read.)
    records = read_all([(read_record, p, ("members",)) for p in sm.input.records])
    members = {run_id: summary for record in records
               for run_id, summary in record["members"].items()}
    summaries = [members[run_id] for run_id in sm.params.runs]
    results = results_of_shard_record(sm.input.records[0])
    curves = read_all([(read_csv, curve_file(results, run_id), run_record(results, run_id))
                       for run_id in sm.params.runs])
    table = learning_curves(sm.params.runs, curves, summaries)
    table.to_csv(sm.output.curves, index=False)
    log(f"{len(table)} evaluations of {table['run_id'].nunique()} runs")
    seal_job(sm)
