# Stage 5: every run of the study into one labelled store, results/<study>/metrics.zarr.


rule aggregate:
    output:
        metrics=directory(f"{STUDY_DIR}/metrics.zarr"),
    input:
        summaries=[f"results/runs/{run_id}/train.json" for run_id in RUNS],
        jacobians=[f"results/runs/{run_id}/jacobian_n{N_POINTS}.zarr" for run_id in RUNS],
        code=package_files("aggregate", "runtable"),
    params:
        runs={run_id: run.hyperparameters() for run_id, run in RUNS.items()},
    log:
        f"{STUDY_DIR}/logs/aggregate.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/aggregate.py"


TARGETS.append(rules.aggregate.output.metrics)
