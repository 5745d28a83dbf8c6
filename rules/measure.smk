# Stage 4: metrics of one trained network, one rule and one store per metric. A store's
# name carries a hash of the metric's settings, so changing one metric's settings re-runs
# only that metric, and two studies with different settings never overwrite each other.
rule measure_jacobian:
    output:
        directory(metric_store("jacobian")),
    input:
        unpack(run_inputs),
        code=package_files("metrics/jacobian", "models"),
    params:
        settings=METRIC_SETTINGS["jacobian"],
    log:
        "results/logs/measure_jacobian/{run_id}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_jacobian.py"


rule measure_translation:
    output:
        directory(metric_store("translation")),
    input:
        unpack(run_inputs),
        code=package_files("metrics/per_run", "metrics/transitions", "metrics/trajectories",
                           "metrics/jacobian", "models"),
    params:
        settings=METRIC_SETTINGS["translation"],
    log:
        "results/logs/measure_translation/{run_id}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_translation.py"


rule measure_ellipses:
    output:
        directory(metric_store("ellipses")),
    input:
        unpack(run_inputs),
        code=package_files("metrics/per_run", "metrics/transitions", "metrics/trajectories",
                           "metrics/jacobian", "models"),
    params:
        settings=METRIC_SETTINGS["ellipses"],
        run_seed=lambda wc: run_of(wc).seed,
    log:
        "results/logs/measure_ellipses/{run_id}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_ellipses.py"


rule measure_bounds:
    output:
        directory(metric_store("bounds")),
    input:
        unpack(run_inputs),
        jacobian=metric_store("jacobian"),
        code=package_files("metrics/per_run", "metrics/bounds", "metrics/jacobian", "models"),
    params:
        settings=METRIC_SETTINGS["bounds"],
    log:
        "results/logs/measure_bounds/{run_id}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_bounds.py"
