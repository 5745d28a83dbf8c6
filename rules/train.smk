# Stage 3: one job per shard trains its networks (workflow_src/jobs/train_shard.py). A network's
# files stay in results/runs/<run_id>/, so it is trained once, whichever shards and studies
# contain it; the shard's record, written last, is what Snakemake sees. Checkpoints of a network
# in training (results/runs/<run_id>/checkpoint*) are not outputs: Snakemake's removal of a
# failed job's outputs leaves them, and the re-run resumes from them.


rule train:
    output:
        record=shard_record(),
    input:
        unpack(shard_data),
        code=package_files(
            "jobs/train_shard", "training/train", "training/ensemble", "training/stacked",
            "training/augmentation", "training/checkpoints", "nets/models", "nets/spec",
            "nets/cnns", "nets/cnn_codes", "nets/losses", "runtable"
        ),
    params:
        runs=shard_runs,
        stack=STACK,
    log:
        "results/logs/train/{shard}.log",
    threads: config["training"]["threads"]
    priority: shard_priority  # the largest networks first (rules/common.smk)
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/train_shard.py"
