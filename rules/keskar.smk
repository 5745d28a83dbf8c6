# Keskar et al. 2017 (arXiv 1609.04836) Fig. 3: loss and accuracy along the line
# w(a) = a w_large + (1 - a) w_small through two networks that differ only in batch size
# (so they start from the same weights). The pairs and what they need are planned in
# workflow_src/metrics/interpolation.py; a study without such pairs asks for nothing here.
# Two rules: the interpolation needs torch (ENV_TORCH), the figure altair (ENV_ANALYSIS).
from workflow_src.metrics.interpolation import batch_size_pairs, pair_members, shards_of

KESKAR_PAIRS = batch_size_pairs(RUNS)
KESKAR_RUNS = pair_members(KESKAR_PAIRS)
KESKAR_CATEGORY = "Sharpness (Keskar et al.)"


rule keskar_interpolation:
    output:
        table=report(f"{STUDY_DIR}/stats/keskar_interpolation.csv",
                     caption="../report/captions/keskar_interpolation.rst",
                     category=KESKAR_CATEGORY),
        seal=study_seal("keskar_interpolation"),
    input:
        # Each shard record vouches for its members' train.json, each of those for model.pt.
        records=[shard_record(shard) for shard in shards_of(KESKAR_RUNS, SHARDS)],
        **{f"data_{data_id}": dataset_store(data_id)
           for data_id in sorted({RUNS[run_id].data.id for run_id in KESKAR_RUNS})},
        code=package_files("metrics/interpolation", "metrics/jacobian", "nets/models",
                           "nets/spec", "nets/cnns", "nets/cnn_codes", "nets/checked",
                           "integrity", "paths", "runtable"),
    params:
        pairs=[list(pair) for pair in KESKAR_PAIRS],
        runs=[RUNS[run_id].to_dict() for run_id in KESKAR_RUNS],
        settings=dict(config["measure"]["interpolation"]),
        chunk_size=config["measure"]["chunk_size"],
    log:
        f"{STUDY_DIR}/logs/keskar_interpolation.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/keskar_interpolation.py"


rule plot_keskar:
    output:
        **figure_outputs("keskar_1d", category=KESKAR_CATEGORY),
        seal=study_seal("plot_keskar"),
    input:
        **sealed(rules.keskar_interpolation, "table"),
        code=package_files(*FIGURE_CODE),
    params:
        figures_drawn=["keskar_1d"],
        options=figure_options(config["plots"], ["keskar_1d"]),
        figures=figure_dir,
    log:
        f"{STUDY_DIR}/logs/plot_keskar.log",
    conda:
        ENV_ANALYSIS
    script:
        "scripts/plot_keskar.py"


if KESKAR_PAIRS:
    TARGETS.extend(rules.keskar_interpolation.output)
    TARGETS.extend(rules.plot_keskar.output)
