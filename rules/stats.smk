# Stage 6: which indicators track the generalization gap, over converged networks.
STATS = f"{STUDY_DIR}/stats"


rule correlate:
    output:
        networks=f"{STATS}/networks.csv",
        correlations=f"{STATS}/correlations.csv",
        per_point=f"{STATS}/per_point.csv",
    input:
        metrics=rules.aggregate.output.metrics,
        code=package_files("stats/tables", "stats/correlation", "stats/per_point"),
    params:
        stats=config["stats"],
    log:
        f"{STATS}/logs/correlate.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/correlate.py"


TARGETS.extend(rules.correlate.output)
