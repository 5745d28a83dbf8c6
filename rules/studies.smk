# Stage 7b: the figures of the study presets (studies/*.yaml), drawn for every study since
# they are cheap: Zhang et al.'s Figure 1 from the learning curves, Novak et al.'s factor
# and correlation figures from the statistics. Figure names do not depend on the data.
from workflow_src.config import ConfigError

FIGURE_CODE = ("figures/common", "figures/theme", "figures/studies", "stats/tables", "integrity")


rule collect_curves:
    output:
        curves=f"{STUDY_DIR}/curves.csv",
        seal=study_seal("collect_curves"),
    input:
        # Each shard's record vouches for its members' train.json, each of those for the
        # curve.csv beside it (the per-network files are not Snakemake outputs of their own).
        records=[shard_record(shard) for shard in SHARDS],
        code=package_files("collect", "runtable", "integrity"),
    params:
        runs={run_id: run.hyperparameters() for run_id, run in RUNS.items()},
    log:
        f"{STUDY_DIR}/logs/collect_curves.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/collect_curves.py"


rule plot_training:
    output:
        **figure_outputs("learning_curves", "time_to_fit", "test_error",
                         category="Fitting corrupted data"),
        seal=study_seal("plot_training"),
    input:
        **sealed(rules.collect_curves, "curves"),
        code=package_files(*FIGURE_CODE),
    params:
        size={key: config["plots"][key] for key in ("width", "height")},
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_training.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_training.py"


rule plot_factors:
    output:
        **figure_outputs("factors", category="Factors of generalization"),
        seal=study_seal("plot_factors"),
    input:
        metrics=rules.aggregate.output.metrics,
        **sealed(rules.paired, "tests", "pairs"),
        code=package_files(*FIGURE_CODE),
    params:
        size={key: config["plots"][key] for key in ("width", "height")},
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_factors.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_factors.py"


rule plot_indicators_vs_gap:
    output:
        **figure_outputs("indicators_vs_gap", category="Jacobian norm and generalization"),
        seal=study_seal("plot_indicators_vs_gap"),
    input:
        metrics=rules.aggregate.output.metrics,
        **sealed(rules.correlate, "networks"),
        code=package_files(*FIGURE_CODE),
    params:
        plots=config["plots"],
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_indicators_vs_gap.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_indicators_vs_gap.py"


TARGETS.append(rules.collect_curves.output.curves)
TARGETS.extend(rules.plot_training.output)
TARGETS.extend(rules.plot_factors.output)
TARGETS.extend(rules.plot_indicators_vs_gap.output)


# Model-wise double descent (studies/double_descent.yaml): on when plots.double_descent is.
if config["plots"]["double_descent"] and not ENABLED["norms"]:
    raise ConfigError("config key plots.double_descent: the figure's x axis is each network's "
                     "n_parameters, which measure.norms measures; set measure.norms.enabled: "
                     "true (it costs ~0.1 s a network)")


rule plot_double_descent:
    output:
        **figure_outputs("double_descent", category="Double descent"),
        table=report(f"{STUDY_DIR}/stats/double_descent.csv",
                     caption="../report/captions/double_descent_table.rst",
                     category="Double descent"),
        seal=study_seal("plot_double_descent"),
    input:
        **sealed(rules.correlate, "networks"),
        code=package_files(*FIGURE_CODE),
    params:
        n_train=config["data"]["n_train"],
        size={key: config["plots"][key] for key in ("width", "height")},
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_double_descent.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_double_descent.py"


if config["plots"]["double_descent"]:
    TARGETS.extend(rules.plot_double_descent.output)
