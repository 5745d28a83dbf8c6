# Stage 5: every run of the study into one labelled store, results/<study>/metrics.zarr.
METRICS_TO_AGGREGATE = [m for m in ALL_METRICS if ENABLED[m]]


rule aggregate:
    output:
        metrics=directory(f"{STUDY_DIR}/metrics.zarr"),
    input:
        records=[shard_record(shard) for shard in SHARDS],
        stores=[metric_store(m, shard) for shard in SHARDS for m in METRICS_TO_AGGREGATE],
        code=package_files("aggregate", "runtable", "integrity"),
    params:
        runs={run_id: run.hyperparameters() for run_id, run in RUNS.items()},
        metrics_per_shard=len(METRICS_TO_AGGREGATE),
    log:
        f"{STUDY_DIR}/logs/aggregate.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/aggregate.py"


TARGETS.append(rules.aggregate.output.metrics)
