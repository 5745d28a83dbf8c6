# Metrics along training (measure.snapshots; Arpit et al. 2017, arXiv 1706.05394, follow
# the critical sample ratio through training). One job per shard measures the chosen
# metrics of every member at the chosen training steps into one store, named by a hash of
# the steps and the metrics' settings (workflow_src/jobs/snapshots.py: a kept checkpoint, else
# the member trained again from scratch, else the final network); one job turns every
# shard's store into the study's table and figure. Measuring needs torch (ENV_TORCH), the
# table and figure altair (ENV_ANALYSIS). Off by default; `enabled` is not in the hash.
SNAPSHOTS = config["measure"]["snapshots"]
# In the order they are measured (that of ALL_METRICS: the bounds after the Jacobian).
SNAPSHOT_METRICS = [m for m in ALL_METRICS if m in SNAPSHOTS["metrics"]]
SNAPSHOT_SETTINGS = {"steps": sorted(set(SNAPSHOTS["steps"])),
                     "metrics": {m: registry.hashed_settings(m, METRIC_SETTINGS[m])
                                 for m in SNAPSHOT_METRICS}}
SNAPSHOT_STORE = str(paths.snapshot_store(RESULTS, "{shard}", SNAPSHOT_SETTINGS))
# The modules each snapshot metric's results depend on (its declaration's code).
SNAPSHOT_CODE = {m: registry.code_modules(m) for m in ALL_METRICS if METRICS[m].snapshots}
SNAPSHOT_CATEGORY = "Metrics along training"
# The conditioning figures (workflow_src/figures/conditioning.py) when it is measured.
SNAPSHOT_FIGURES = ["snapshots", *(["conditioning_vs_width", "conditioning_along_training"]
                                   if "conditioning" in SNAPSHOT_METRICS else []),
                    # workflow_src/figures/implicit_bias.py
                    *(["implicit_bias"] if "implicit_bias" in SNAPSHOT_METRICS else [])]
SNAPSHOT_FIGURE = figure_outputs(*SNAPSHOT_FIGURES, category=SNAPSHOT_CATEGORY)


rule measure_snapshots:
    output:
        snapshots=directory(SNAPSHOT_STORE),
    input:
        unpack(shard_inputs),
        # train, losses, augmentation, stacked: snapshots without kept checkpoints train again.
        code=package_files("jobs/snapshots", "jobs/measure_shard", "registry", "paths",
                           "training/train", "training/augmentation", "training/stacked",
                           "training/checkpoints", "nets/losses", "nets/models", "nets/spec",
                           "nets/cnns", "nets/cnn_codes", "nets/checked",
                           *sorted({f for m in SNAPSHOT_METRICS for f in SNAPSHOT_CODE[m]})),
    params:
        steps=SNAPSHOT_SETTINGS["steps"],
        metrics={m: METRIC_SETTINGS[m] for m in SNAPSHOT_METRICS},
        runs=shard_runs,
    log:
        "results/logs/measure_snapshots/{shard}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_snapshots.py"


rule plot_snapshots:
    output:
        **SNAPSHOT_FIGURE,
        table=report(f"{STUDY_DIR}/tables/snapshots.csv", category=SNAPSHOT_CATEGORY,
                     caption="../report/captions/snapshots_table.rst"),
        seal=study_seal("plot_snapshots"),
    input:
        stores=[SNAPSHOT_STORE.format(shard=shard) for shard in SHARDS],
        code=package_files("jobs/snapshots", "jobs/aggregate", "registry", "integrity",
                           "figures/common", "figures/theme", "figures/studies",
                           "figures/snapshots",
                           "figures/conditioning", "stats/conditioning",
                           "figures/implicit_bias"),
    params:
        runs={run_id: run.hyperparameters() for run_id, run in RUNS.items()},
        color_by=config["plots"]["color_by"],
        size={key: config["plots"][key] for key in ("width", "height")},
        figures=figure_dir,
        figures_drawn=SNAPSHOT_FIGURES,
    log:
        f"{STUDY_DIR}/logs/plot_snapshots.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_snapshots.py"


if SNAPSHOTS["enabled"]:
    TARGETS.extend(rules.plot_snapshots.output)
