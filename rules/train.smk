# Stage 3: one network per run of the grid; its id is the hash of what determines it.


rule train:
    output:
        model="results/runs/{run_id}/model.pt",
        curve="results/runs/{run_id}/curve.csv",
        summary="results/runs/{run_id}/train.json",
    input:
        data=lambda wc: f"results/datasets/{run_of(wc).data.id}.zarr",
        code=package_files("train", "models", "runtable"),
    params:
        run=lambda wc: run_of(wc).to_dict(),
    log:
        "results/logs/train/{run_id}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/train.py"
