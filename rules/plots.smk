# Stage 7: figures; every setting goes through params so a change re-runs only these rules.
FIGURES = f"{STUDY_DIR}/figures"


rule plot_jacobian:
    output:
        gap_html=f"{FIGURES}/jacobian_vs_gap.html",
        gap_png=f"{FIGURES}/jacobian_vs_gap.png",
        points_html=f"{FIGURES}/jacobian_by_correctness.html",
        points_png=f"{FIGURES}/jacobian_by_correctness.png",
    input:
        metrics=rules.aggregate.output.metrics,
        networks=rules.correlate.output.networks,
        code=package_files("figures/common", "figures/sensitivity"),
    params:
        plots=config["plots"],
    log:
        f"{STUDY_DIR}/logs/plot_jacobian.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_jacobian.py"


TARGETS.extend(rules.plot_jacobian.output)
