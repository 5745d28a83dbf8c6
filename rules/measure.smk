# Stage 4: one job per shard measures every enabled metric of every member
# (workflow_src/jobs/measure_shard.py), each into its own store named by a hash of that metric's
# settings (metric_store). The stores are not outputs: the job's output is the shard's
# measure record, written last, which vouches for each store (as a shard's train.json vouches
# for its members), so Snakemake never deletes a store. The job reuses every store that is
# intact and current (same settings, code and members) and measures only the missing or stale
# ones, each sealed when done: changing one metric's settings or source re-measures that
# metric only, and a killed job keeps the metrics it finished.
# The metrics, their settings, code and costs: workflow_src/measures/<metric>.py, read by
# workflow_src/registry.py.
rule measure:
    output:
        record=measure_record(),
    input:
        unpack(shard_inputs),
        code=package_files("jobs/measure_shard", "registry", "declarations", "paths",
                           "nets/checked", *MEASURE_CODE),
    params:
        metrics={m: METRIC_SETTINGS[m] for m in MEASURED},
        stores=lambda wildcards: {m: metric_store(m, wildcards.shard) for m in MEASURED},
        runs=shard_runs,
        custom=CUSTOM,  # measure.custom: the job's registry reads their declarations
    log:
        "results/logs/measure/{shard}.log",
    threads: config["training"]["threads"]
    priority: shard_priority
    resources:
        gpu=GPU,
        runtime=measure_minutes,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"
