# Stage 7: figures. One job draws every figure that reads the same inputs (the figures'
# catalogue: workflow_src/figures/catalogue.py says what each reads and which plot options
# it uses). A job's params are only the options its figures use (figure_options), and inside
# the job a figure whose inputs, options and code are unchanged is reused from
# figures/.cache instead of drawn again (workflow_src/figures/output.py), so changing one
# plot option re-draws only the figures that use it.
from workflow_src.figures.catalogue import options as figure_options

FIGURE_CODE = ("figures/common", "figures/output", "figures/theme", "figures/catalogue",
               "figures/job", "figures/sensitivity", "figures/bounds", "figures/indicators",
               "figures/studies", "figures/double_descent", "figures/keskar", "figures/snapshots",
               "figures/eigenlearning",
               "metrics/bounds",
               "stats/tables", "stats/summary", "stats/datasets", "integrity", "runtable")
INDICATOR_CATEGORY = "Which indicators track the gap"

METRIC_FIGURES = ["jacobian_vs_gap", "jacobian_by_correctness", "jacobian_vs_loss",
                  "loss_bounds", "indicators_vs_gap"]
ELLIPSE_FIGURES = ["ellipse_profile", "ellipse_kinds"] if ENABLED["ellipses"] else []
EIGENLEARNING_FIGURES = ["eigenlearning"] if ENABLED["eigenlearning"] else []


rule plot_metrics:
    output:
        **figure_outputs("jacobian_vs_gap", "jacobian_by_correctness", "jacobian_vs_loss",
                         category="Jacobian norm and generalization"),
        **figure_outputs("indicators_vs_gap", category=INDICATOR_CATEGORY),
        **figure_outputs("loss_bounds", category="Loss bounds"),
        **figure_outputs(*ELLIPSE_FIGURES, category=ELLIPSE_CATEGORY),
        **figure_outputs(*EIGENLEARNING_FIGURES, category="NTK eigenlearning"),
        seal=study_seal("plot_metrics"),
    input:
        metrics=rules.aggregate.output.metrics,
        **sealed(rules.correlate, "networks"),
        **(sealed(rules.paired, "ellipses") if ENABLED["ellipses"] else {}),
        code=package_files(*FIGURE_CODE),
    params:
        figures_drawn=METRIC_FIGURES + ELLIPSE_FIGURES + EIGENLEARNING_FIGURES,
        options=figure_options(config["plots"],
                               METRIC_FIGURES + ELLIPSE_FIGURES + EIGENLEARNING_FIGURES),
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_metrics.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_metrics.py"


rule plot_summary:
    output:
        **figure_outputs("indicator_ranking", category=INDICATOR_CATEGORY),
        **figure_outputs("factors", category="Factors of generalization"),
        seal=study_seal("plot_summary"),
    input:
        metrics=rules.aggregate.output.metrics,
        **sealed(rules.summarize, "summary"),
        **sealed(rules.granulate, "granulated"),
        **sealed(rules.paired, "tests", "pairs"),
        code=package_files(*FIGURE_CODE),
    params:
        figures_drawn=["indicator_ranking", "factors"],
        options=figure_options(config["plots"], ["indicator_ranking", "factors"]),
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_summary.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_summary.py"


TARGETS.extend(rules.plot_metrics.output)
TARGETS.extend(rules.plot_summary.output)
