# Stage 5: every run of the study into one labelled store, results/<study>/metrics.zarr. Its
# inputs are the shards' records: the training record (the members' summaries) and the
# measure record, which vouches for each of the shard's stores (listed in params, read in
# MEASURED's order, the Jacobian's first).


rule aggregate:
    output:
        metrics=directory(f"{STUDY_DIR}/metrics.zarr"),
    input:
        records=[shard_record(shard) for shard in SHARDS],
        measured=[measure_record(shard) for shard in SHARDS],
        code=package_files("jobs/aggregate", "registry", "runtable", "integrity"),
    params:
        runs={run_id: run.hyperparameters() for run_id, run in RUNS.items()},
        stores=[[metric_store(m, shard) for m in MEASURED] for shard in SHARDS],
        custom=CUSTOM,  # measure.custom: their variables' units and signs (workflow_src/custom.py)
    log:
        f"{STUDY_DIR}/logs/aggregate.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/aggregate.py"


TARGETS.append(rules.aggregate.output.metrics)
