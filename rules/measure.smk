# Stage 4: per-test-point metrics of one trained network.


rule measure_jacobian:
    output:
        directory("results/runs/{run_id}/jacobian_n{n_points}.zarr"),
    input:
        model="results/runs/{run_id}/model.pt",
        data=lambda wc: f"results/datasets/{run_of(wc).data.id}.zarr",
        code=package_files("metrics/jacobian", "models"),
    log:
        "results/logs/measure_jacobian/{run_id}_n{n_points}.log",
    threads: config["training"]["threads"]
    resources:
        gpu=GPU,
    conda:
        ENV_TORCH
    script:
        "scripts/measure_jacobian.py"
