# Stage 6: which indicators track the generalization gap, over converged networks.
# Each rule reads metrics.zarr, so the indicators are whatever the store marks with
# attrs["role"] = "indicator"; file names stay fixed whatever that set is.
STATS = f"{STUDY_DIR}/stats"


rule correlate:
    output:
        networks=report(f"{STATS}/networks.csv", caption="../report/captions/networks.rst", category="Statistical tables"),
        correlations=report(f"{STATS}/correlations.csv", caption="../report/captions/correlations.rst", category="Statistical tables"),
        per_point=report(f"{STATS}/per_point.csv", caption="../report/captions/per_point.rst", category="Statistical tables"),
        seal=study_seal("correlate"),
    input:
        metrics=rules.aggregate.output.metrics,
        code=package_files("integrity", "stats/tables", "stats/_checks", "stats/correlation",
                           "stats/per_point", "stats/datasets"),
    params:
        stats=config["stats"],
    log:
        f"{STATS}/logs/correlate.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/correlate.py"


rule granulate:
    output:
        granulated=report(f"{STATS}/granulated.csv", caption="../report/captions/granulated.rst", category="Statistical tables"),
        seal=study_seal("granulate"),
    input:
        metrics=rules.aggregate.output.metrics,
        code=package_files("integrity", "stats/tables", "stats/_checks", "stats/granulated",
                           "stats/datasets"),
    log:
        f"{STATS}/logs/granulate.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/granulate.py"


rule regress:
    output:
        coefficients=report(f"{STATS}/ols.csv", caption="../report/captions/ols.rst", category="Statistical tables"),
        summary=report(f"{STATS}/ols_summary.txt", caption="../report/captions/ols_summary.rst", category="Statistical tables"),
        seal=study_seal("regress"),
    input:
        metrics=rules.aggregate.output.metrics,
        code=package_files("integrity", "stats/tables", "stats/regression"),
    params:
        stats=config["stats"],
    log:
        f"{STATS}/logs/regress.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/regress.py"


# Paired tests: of each two-valued factor on matched pairs, and (with ellipses measured) of
# the order of the ellipse metrics by kind of anchors, with the per-ellipse table they use.
ELLIPSE_CATEGORY = "On and off the data manifold"
ELLIPSE_TABLES = {
    "ellipses": report(f"{STATS}/ellipses.csv", caption="../report/captions/ellipses.rst",
                       category=ELLIPSE_CATEGORY),
    "ellipse_order": report(f"{STATS}/ellipse_order.csv",
                            caption="../report/captions/ellipse_order.rst",
                            category=ELLIPSE_CATEGORY),
} if ENABLED["ellipses"] else {}


rule paired:
    output:
        tests=report(f"{STATS}/paired.csv", caption="../report/captions/paired.rst", category="Statistical tables"),
        pairs=report(f"{STATS}/pairs.csv", caption="../report/captions/pairs.rst", category="Statistical tables"),
        **ELLIPSE_TABLES,
        seal=study_seal("paired"),
    input:
        metrics=rules.aggregate.output.metrics,
        code=package_files("integrity", "stats/tables", "stats/paired", "stats/ellipse_order"),
    params:
        stats=config["stats"],
        # Family-wise error control over every (factor, indicator) test of the study.
        correction="holm",
    log:
        f"{STATS}/logs/paired.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/paired.py"


rule summarize:
    output:
        summary=report(f"{STATS}/summary.csv", caption="../report/captions/summary.rst", category="Statistical tables"),
        seal=study_seal("summarize"),
    input:
        **sealed(rules.correlate, "correlations"),
        **sealed(rules.granulate, "granulated"),
        metrics=rules.aggregate.output.metrics,
        code=package_files("stats/summary", "stats/granulated", "stats/scoring", "stats/tables",
                           "stats/datasets", "integrity"),
    log:
        f"{STATS}/logs/summarize.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/summarize.py"


TARGETS.extend(rules.correlate.output)
TARGETS.extend(rules.granulate.output)
TARGETS.extend(rules.regress.output)
TARGETS.extend(rules.paired.output)
TARGETS.extend(rules.summarize.output)
