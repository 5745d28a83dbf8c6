# Stage 7b: the figures of the study presets (studies/*.yaml), drawn for every study since
# they are cheap: Zhang et al.'s Figure 1 from the learning curves (Novak et al.'s factor
# and correlation figures are drawn with the others, rules/plots.smk). Figure names do not
# depend on the data.
from workflow_src.config import ConfigError


rule collect_curves:
    output:
        curves=f"{STUDY_DIR}/curves.csv",
        seal=study_seal("collect_curves"),
    input:
        # Each shard's record vouches for its members' train.json, each of those for the
        # curve.csv beside it (the per-network files are not Snakemake outputs of their own).
        records=[shard_record(shard) for shard in SHARDS],
        code=package_files("jobs/collect", "runtable", "integrity"),
    params:
        runs={run_id: run.hyperparameters() for run_id, run in RUNS.items()},
    log:
        f"{STUDY_DIR}/logs/collect_curves.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/collect_curves.py"


# plot_training, the first figure job to run, also writes figures/vega.js, the JavaScript
# every figure's HTML loads from its folder (workflow_src/figures/output.py).
rule plot_training:
    output:
        **figure_outputs("learning_curves", "time_to_fit", "test_error",
                         category="Fitting corrupted data"),
        library=f"{FIGURES}/vega.js",
        seal=study_seal("plot_training"),
    input:
        **sealed(rules.collect_curves, "curves"),
        code=package_files(*FIGURE_CODE),
    params:
        figures_drawn=["learning_curves", "time_to_fit", "test_error"],
        options=figure_options(config["plots"], ["learning_curves", "time_to_fit", "test_error"]),
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_training.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_training.py"


TARGETS.append(rules.collect_curves.output.curves)
TARGETS.extend(rules.plot_training.output)


# Double descent, model-wise and epoch-wise (studies/double_descent.yaml): on when
# plots.double_descent is.
if config["plots"]["double_descent"] and not ENABLED["norms"]:
    raise ConfigError("config key plots.double_descent: the figure's x axis is each network's "
                     "n_parameters, which measure.norms measures; set measure.norms.enabled: "
                     "true (it costs ~0.1 s a network)")


rule plot_double_descent:
    output:
        **figure_outputs("double_descent", "double_descent_epochs", category="Double descent"),
        table=report(f"{STUDY_DIR}/stats/double_descent.csv",
                     caption="../report/captions/double_descent_table.rst",
                     category="Double descent"),
        peak=report(f"{STUDY_DIR}/stats/double_descent_peak.csv",
                    caption="../report/captions/double_descent_peak.rst",
                    category="Double descent"),
        epochs=f"{STUDY_DIR}/stats/double_descent_epochs.csv",
        seal=study_seal("plot_double_descent"),
    input:
        **sealed(rules.correlate, "networks"),
        **sealed(rules.collect_curves, "curves"),
        code=package_files(*FIGURE_CODE),
    params:
        figures_drawn=["double_descent", "double_descent_epochs"],
        options=figure_options(config["plots"], ["double_descent", "double_descent_epochs"],
                               n_train=config["data"]["n_train"]),
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_double_descent.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_double_descent.py"


if config["plots"]["double_descent"]:
    TARGETS.extend(rules.plot_double_descent.output)
