# The run table and the paths every stage shares. Kept small: the logic is in workflow_src.
import shutil

from workflow_src.figures.common import outputs as figure_files
from workflow_src.runtable import build_run_table, stable_hash

RUNS = build_run_table(config)
STUDY_DIR = f"results/{config['study']}"
N_POINTS = min(config["measure"]["n_points"], config["data"]["n_test"])
# Each stage appends the files it delivers; `rule all` (Snakefile) asks for all of them.
TARGETS = []
ENV_TORCH = "../envs/torch.yaml"
ENV_ANALYSIS = "../envs/analysis.yaml"
# Jobs ask the scheduler for a GPU when they will use CUDA (nvidia-smi marks a driver).
GPU = int(
    config["training"]["device"] == "cuda"
    or (config["training"]["device"] == "auto" and shutil.which("nvidia-smi") is not None)
)


wildcard_constraints:
    run_id="[0-9a-f]{12}",
    data_id="[0-9a-f]{12}",
    dataset="[a-z0-9_]+",


def run_of(wildcards):
    return RUNS[wildcards.run_id]


def package_files(*modules):
    """Source files a rule depends on, so editing them re-runs that rule (mtime trigger).

    Relative to the working directory, which `--directory` may move away from the code.
    """
    return [os.path.relpath(f"{workflow.basedir}/workflow_src/{m}.py") for m in modules]


# Stage 4: one store per metric and run, named by a hash of that metric's settings, so
# changing one metric's settings re-runs only that metric and two studies with different
# settings never overwrite each other.
MEASURE = config["measure"]
METRIC_SETTINGS = {
    "jacobian": {"n_points": N_POINTS},
    "translation": {"n_points": min(MEASURE["transitions"]["n_points"], N_POINTS),
                    "k_sampled": MEASURE["transitions"]["k_sampled"],
                    "jacobian_positions": MEASURE["transitions"]["jacobian_positions"]},
    "ellipses": dict(MEASURE["ellipses"]),
    "bounds": {"n_points": N_POINTS},
}
ENABLED = {"jacobian": True, "bounds": True,
           "translation": METRIC_SETTINGS["translation"]["n_points"] > 0,
           "ellipses": MEASURE["ellipses"]["per_kind"] > 0}


def metric_store(metric, run_id="{run_id}"):
    """results/runs/<run_id>/<metric>-<hash of its settings>.zarr"""
    return f"results/runs/{run_id}/{metric}-{stable_hash(METRIC_SETTINGS[metric], 8)}.zarr"


def run_inputs(wildcards):
    """What a measuring job reads: the weights, the train.json that vouches for them
    (workflow_src/integrity.py), and the network's dataset."""
    return {"model": f"results/runs/{wildcards.run_id}/model.pt",
            "summary": f"results/runs/{wildcards.run_id}/train.json",
            "data": f"results/datasets/{run_of(wildcards).data.id}.zarr"}


# Stage 7
FIGURES = f"{STUDY_DIR}/figures"


def figure_outputs(*stems, category="Figures"):
    """Named outputs <stem>_<format> for every figure a rule draws; the PNG goes into the
    `snakemake --report` with the caption report/captions/<stem>.rst."""
    outputs = {}
    for stem in stems:
        for fmt, path in figure_files(FIGURES, stem).items():
            if fmt == "png":
                path = report(path, caption=f"../report/captions/{stem}.rst", category=category)
            outputs[f"{stem}_{fmt}"] = path
    return outputs


def figure_dir(wildcards, output):
    return os.path.dirname(output[0])
