# Stage 4: one job per metric and shard measures every member (workflow_src/measure_shard.py)
# into one store per metric. A store's name carries a hash of the metric's settings, so
# changing one metric's settings re-runs only that metric, and two studies with different
# settings never overwrite each other. The per-point bounds are computed from the Jacobian's
# per-point values (and have the same settings), so the Jacobian's job writes both stores.
# Each rule's params.metrics lists what it writes, in the order it computes them.
# The indicators beyond Novak's (norms ... ntk, at the end) have one rule each, written out
# (not in a loop) so that tests/test_envs.py and readers see every rule.
WALK_CODE = ["metrics/per_run", "metrics/transitions", "metrics/trajectories",
             "metrics/jacobian"]


rule measure_jacobian:
    output:
        jacobian=directory(metric_store("jacobian")),
        bounds=directory(metric_store("bounds")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", "metrics/jacobian", "metrics/per_run",
                           "metrics/bounds"),
    params:
        metrics={m: METRIC_SETTINGS[m] for m in ("jacobian", "bounds")},
        runs=shard_runs,
    log:
        "results/logs/measure_jacobian/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"


rule measure_translation:
    output:
        translation=directory(metric_store("translation")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", *WALK_CODE),
    params:
        metrics={"translation": METRIC_SETTINGS["translation"]},
        runs=shard_runs,
    log:
        "results/logs/measure_translation/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"


rule measure_ellipses:
    output:
        ellipses=directory(metric_store("ellipses")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", *WALK_CODE),
    params:
        metrics={"ellipses": METRIC_SETTINGS["ellipses"]},
        runs=shard_runs,
    log:
        "results/logs/measure_ellipses/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"



rule measure_norms:
    output:
        norms=directory(metric_store("norms")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", "metrics/norms"),
    params:
        metrics={"norms": METRIC_SETTINGS["norms"]},
        runs=shard_runs,
    log:
        "results/logs/measure_norms/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"


rule measure_critical:
    output:
        critical=directory(metric_store("critical")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", "metrics/critical"),
    params:
        metrics={"critical": METRIC_SETTINGS["critical"]},
        runs=shard_runs,
    log:
        "results/logs/measure_critical/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"


rule measure_hessian:
    output:
        hessian=directory(metric_store("hessian")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", "metrics/hessian"),
    params:
        metrics={"hessian": METRIC_SETTINGS["hessian"]},
        runs=shard_runs,
    log:
        "results/logs/measure_hessian/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"


rule measure_sharpness:
    output:
        sharpness=directory(metric_store("sharpness")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", "metrics/sharpness", "metrics/jacobian"),
    params:
        metrics={"sharpness": METRIC_SETTINGS["sharpness"]},
        runs=shard_runs,
    log:
        "results/logs/measure_sharpness/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"


rule measure_pac_bayes:
    output:
        pac_bayes=directory(metric_store("pac_bayes")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", "metrics/pac_bayes", "metrics/sharpness", "metrics/jacobian"),
    params:
        metrics={"pac_bayes": METRIC_SETTINGS["pac_bayes"]},
        runs=shard_runs,
    log:
        "results/logs/measure_pac_bayes/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"


rule measure_ntk:
    output:
        ntk=directory(metric_store("ntk")),
    input:
        unpack(shard_inputs),
        code=package_files("measure_shard", "models", "metrics/ntk"),
    params:
        metrics={"ntk": METRIC_SETTINGS["ntk"]},
        runs=shard_runs,
    log:
        "results/logs/measure_ntk/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_shard.py"
