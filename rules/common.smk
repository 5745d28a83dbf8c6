# The run table and the paths every stage shares. Kept small: the logic is in workflow_src.
import shutil

from workflow_src.figures.common import outputs as figure_files
from workflow_src.runtable import build_run_table, stable_hash
from workflow_src.shards import plan_shards

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


# Stages 3-4 work on shards of networks (workflow_src/shards.py): one job trains a shard,
# one job per metric measures it. Membership depends only on the run table and shards.size.
SHARDS = plan_shards(RUNS, config["shards"]["size"], "cuda" if GPU else "cpu")
STACK = config["shards"]["stack"] is True or (config["shards"]["stack"] == "auto" and bool(GPU))


wildcard_constraints:
    shard="[0-9a-f]{12}",
    run_id="[0-9a-f]{12}",
    data_id="[0-9a-f]{12}",
    dataset="[a-z0-9_]+",


def shard_runs(wildcards):
    """The shard's members, as the dicts RunSpec.from_dict reads, in training order."""
    return [RUNS[run_id].to_dict() for run_id in SHARDS[wildcards.shard]]


def shard_data(wildcards):
    """data_<data id> -> the corrupted dataset of every member of the shard."""
    ids = sorted({RUNS[run_id].data.id for run_id in SHARDS[wildcards.shard]})
    return {f"data_{data_id}": f"results/datasets/{data_id}.zarr" for data_id in ids}


def shard_record(shard="{shard}"):
    """results/shards/<shard>/train.json: written last by the shard's training job, it lists
    every member's summary and vouches for each member's results/runs/<run_id>/train.json."""
    return f"results/shards/{shard}/train.json"


def package_files(*modules):
    """Source files a rule depends on, so editing them re-runs that rule (mtime trigger).

    Relative to the working directory, which `--directory` may move away from the code.
    """
    return [os.path.relpath(f"{workflow.basedir}/workflow_src/{m}.py") for m in modules]


# Stage 4: one store per metric and shard, named by a hash of that metric's settings, so
# changing one metric's settings re-runs only that metric and two studies with different
# settings never overwrite each other.
MEASURE = config["measure"]
METRIC_SETTINGS = {
    "jacobian": {"n_points": N_POINTS},
    "translation": {"n_points": min(MEASURE["transitions"]["n_points"], N_POINTS),
                    "k_sampled": MEASURE["transitions"]["k_sampled"],
                    "jacobian_positions": MEASURE["transitions"]["jacobian_positions"],
                    # only when on: the translation stores of studies without CNN walks
                    # keep their names
                    **({"exact_cnn": True} if MEASURE["transitions"]["exact_cnn"] else {})},
    "ellipses": dict(MEASURE["ellipses"]),
    "bounds": {"n_points": N_POINTS},
}
# The indicators beyond Novak's (README "Indicators"), each measured by its own rule:
# each switched by its `enabled` key, which is not part of the settings (switching a metric
# off and on again finds its stores).
INDICATOR_METRICS = ("norms", "critical", "hessian", "sharpness", "pac_bayes", "ntk")
# Every metric store, in the order aggregate reads a shard's (the Jacobian's first).
ALL_METRICS = ("jacobian", "translation", "ellipses", "bounds", *INDICATOR_METRICS)
for _metric in INDICATOR_METRICS:
    METRIC_SETTINGS[_metric] = {k: v for k, v in MEASURE[_metric].items() if k != "enabled"}
METRIC_SETTINGS["critical"]["n_points"] = min(MEASURE["critical"]["n_points"], N_POINTS)
METRIC_SETTINGS["hessian"]["n_points"] = min(MEASURE["hessian"]["n_points"], config["data"]["n_train"])
METRIC_SETTINGS["ntk"]["n_points"] = min(MEASURE["ntk"]["n_points"], config["data"]["n_train"])
METRIC_SETTINGS["ntk"]["n_test_points"] = min(MEASURE["ntk"]["n_test_points"], config["data"]["n_test"])
# Keskar's sharpness without restarts (the default) is the single run from z = 0 it always
# was: the setting enters the store's name only when used, so earlier stores keep theirs.
if not METRIC_SETTINGS["sharpness"].get("restarts"):
    METRIC_SETTINGS["sharpness"].pop("restarts", None)
ENABLED = {"jacobian": True, "bounds": True,
           "translation": METRIC_SETTINGS["translation"]["n_points"] > 0,
           "ellipses": MEASURE["ellipses"]["per_kind"] > 0,
           **{m: MEASURE[m]["enabled"] for m in INDICATOR_METRICS}}


def metric_store(metric, shard="{shard}"):
    """results/shards/<shard>/<metric>-<hash of its settings>.zarr"""
    return f"results/shards/{shard}/{metric}-{stable_hash(METRIC_SETTINGS[metric], 8)}.zarr"


def shard_inputs(wildcards):
    """What a measuring job reads: the shard's record (which vouches for every member's
    train.json, and each of those for its model.pt) and the members' datasets."""
    return {"record": shard_record(wildcards.shard), **shard_data(wildcards)}


# Stages 5-7 write a fixed set of files per study (statistics, tables, figures), whatever its
# number of networks. Each such job seals all it writes in one record, its output named
# `seal` (workflow_src/integrity.py, seal_job); a job that reads another's file checks it
# against that record (integrity.read_csv), and `snakemake verify` checks every record.
def study_seal(rule):
    """results/<study>/seals/<rule>.json: the record of the study-level job ``rule``."""
    return f"{STUDY_DIR}/seals/{rule}.json"


def sealed(rule, *names):
    """Inputs of a job that reads a study-level job's files: the outputs ``names`` of
    ``rule`` (rules.<name>) and ``<name>_seal``, the record the job checks them against."""
    return {**{name: getattr(rule.output, name) for name in names},
            f"{rule.rule.name}_seal": rule.output.seal}


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
