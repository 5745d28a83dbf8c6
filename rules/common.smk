# The run table and the paths every stage shares. Kept small: the logic is in workflow_src.
import shutil

from workflow_src.runtable import build_run_table

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
    n_points="[0-9]+",


def run_of(wildcards):
    return RUNS[wildcards.run_id]


def package_files(*modules):
    """Source files a rule depends on, so editing them re-runs that rule (mtime trigger).

    Relative to the working directory, which `--directory` may move away from the code.
    """
    return [os.path.relpath(f"{workflow.basedir}/workflow_src/{m}.py") for m in modules]
