# Stage 1 and 2: raw dataset -> class-balanced, corrupted subset (one per distinct DataSpec).
DATA_SPECS = {run.data.id: run.data for run in RUNS.values()}


rule acquire:
    output:
        directory("results/datasets/raw/{dataset}.zarr"),
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
        directory("results/datasets/{data_id}.zarr"),
    input:
        raw=lambda wc: f"results/datasets/raw/{DATA_SPECS[wc.data_id].dataset}.zarr",
        code=package_files("data/corrupt", "runtable"),
    params:
        spec=lambda wc: DATA_SPECS[wc.data_id].__dict__,
    log:
        "results/logs/corrupt/{data_id}.log",
    conda:
        ENV_TORCH
    script:
        "scripts/corrupt.py"
