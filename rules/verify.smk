# `snakemake verify`: check every result the run table expects against its seal (see
# workflow_src/integrity.py), report, and remove each damaged or missing output with what was
# computed from it, so the next `snakemake` rebuilds exactly those. Not part of `rule all`.
include: "verify_outputs.smk"


rule verify:
    params:
        # Paths as params, not inputs: a missing one must be reported, not stop the DAG.
        expected=lambda wc: (dataset_outputs()
                             + [e for shard in SHARDS for e in shard_outputs(shard)]
                             + study_jobs()),
        study_outputs=lambda wc: [str(path) for path in TARGETS],
    log:
        f"{STUDY_DIR}/logs/verify.log",
    localrule: True
    conda:
        ENV_ANALYSIS
    script:
        "scripts/verify.py"
