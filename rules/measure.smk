# Stage 4: one job per metric and shard measures every member (workflow_src/measure_shard.py)
# into one store per metric. A store's name carries a hash of the metric's settings, so changing one
# metric's settings re-runs only that metric, and two studies with different settings never
# overwrite each other.
# The per-point bounds are computed from the Jacobian's per-point values (and have the same
# settings), so one job writes both stores.
MEASURE_JOBS = {
    "jacobian": {"writes": ["jacobian", "bounds"],
                 "code": ["metrics/jacobian", "metrics/per_run", "metrics/bounds"]},
    "translation": {"writes": ["translation"],
                    "code": ["metrics/per_run", "metrics/transitions", "metrics/trajectories",
                             "metrics/jacobian"]},
    "ellipses": {"writes": ["ellipses"],
                 "code": ["metrics/per_run", "metrics/transitions", "metrics/trajectories",
                          "metrics/jacobian"]},
}


def measure_rule_of(metric):
    """The name of the rule that writes ``metric``'s store."""
    return next(f"measure_{job}" for job, spec in MEASURE_JOBS.items() if metric in spec["writes"])


for _job, _spec in MEASURE_JOBS.items():

    rule:
        name:
            f"measure_{_job}"
        output:
            **{m: directory(metric_store(m)) for m in _spec["writes"]},
        input:
            unpack(shard_inputs),
            code=package_files("measure_shard", "models", *_spec["code"]),
        params:
            metrics={m: METRIC_SETTINGS[m] for m in _spec["writes"]},
            runs=shard_runs,
        log:
            f"results/logs/measure_{_job}/{{shard}}.log",
        threads: config["training"]["threads"]
        resources:
            gpu=GPU,
        conda:
            ENV_TORCH
        script:
            "scripts/measure_shard.py"
