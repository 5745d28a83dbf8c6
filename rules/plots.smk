# Stage 7: figures; every setting goes through params so a change re-runs only these rules.
rule plot_jacobian:
    output:
        **figure_outputs("jacobian_vs_gap", "jacobian_by_correctness", "jacobian_vs_loss",
                         category="Jacobian norm and generalization"),
        seal=study_seal("plot_jacobian"),
    input:
        metrics=rules.aggregate.output.metrics,
        **sealed(rules.correlate, "networks"),
        code=package_files("integrity", "figures/common", "figures/theme", "figures/sensitivity"),
    params:
        plots=config["plots"],
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_jacobian.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_jacobian.py"


rule plot_ellipses:
    output:
        **figure_outputs("ellipse_profile", "ellipse_kinds", category="On and off the data manifold"),
        summary=report(f"{STUDY_DIR}/stats/ellipses.csv", caption="../report/captions/ellipses.rst",
                       category="On and off the data manifold"),
        order=report(f"{STUDY_DIR}/stats/ellipse_order.csv",
                     caption="../report/captions/ellipse_order.rst",
                     category="On and off the data manifold"),
        seal=study_seal("plot_ellipses"),
    input:
        metrics=rules.aggregate.output.metrics,
        code=package_files("integrity", "figures/common", "figures/theme", "figures/sensitivity",
                           "stats/ellipse_order", "stats/paired"),
    params:
        plots=config["plots"],
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_ellipses.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_ellipses.py"


rule plot_bounds:
    output:
        **figure_outputs("loss_bounds", category="Loss bounds"),
        seal=study_seal("plot_bounds"),
    input:
        metrics=rules.aggregate.output.metrics,
        code=package_files("integrity", "figures/common", "figures/theme", "figures/bounds",
                           "metrics/bounds", "stats/tables"),
    params:
        plots=config["plots"],
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_bounds.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_bounds.py"


TARGETS.extend(rules.plot_jacobian.output)
TARGETS.extend(rules.plot_bounds.output)
if ENABLED["ellipses"]:
    TARGETS.extend(rules.plot_ellipses.output)
