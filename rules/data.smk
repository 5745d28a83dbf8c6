# Stage 1 and 2: raw dataset -> class-balanced, corrupted subset (one per distinct DataSpec).
DATA_SPECS = {run.data.id: run.data for run in RUNS.values()}


rule acquire:
    output:
        directory(raw_dataset_store()),
    input:
        code=package_files("data/acquire"),
    log:
        "results/logs/acquire/{dataset}.log",
    conda:
        ENV_TORCH
    script:
        "scripts/acquire.py"


rule corrupt:
    output:
        directory(dataset_store()),
    input:
        raw=lambda wc: raw_dataset_store(DATA_SPECS[wc.data_id].dataset),
        code=package_files("data/corrupt", "runtable"),
    params:
        spec=lambda wc: DATA_SPECS[wc.data_id].__dict__,
    log:
        "results/logs/corrupt/{data_id}.log",
    conda:
        ENV_TORCH
    script:
        "scripts/corrupt.py"
