# The run table and the paths every stage shares. Kept small: the logic is in workflow_src.
import math
import shutil

from workflow_src import paths, registry
from workflow_src.config import ConfigError
from workflow_src.figures.output import outputs as figure_files  # no altair at start-up
from workflow_src.runtable import build_run_table
from workflow_src.shards import plan_shards

RUNS = build_run_table(config)
RESULTS = paths.RESULTS  # where every output lies: workflow_src/paths.py
STUDY_DIR = str(paths.study_folder(RESULTS, config["study"]))
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
# one job measures it. Membership depends only on the run table and shards.size.
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
    return {f"data_{data_id}": dataset_store(data_id) for data_id in ids}


def dataset_store(data_id="{data_id}"):
    """results/datasets/<data_id>.zarr: a corrupted subset, what networks train on."""
    return str(paths.dataset_store(RESULTS, data_id))


def raw_dataset_store(name="{dataset}"):
    """results/datasets/raw/<name>.zarr: a dataset as acquired."""
    return str(paths.raw_dataset_store(RESULTS, name))


def shard_record(shard="{shard}"):
    """results/shards/<shard>/train.json: written last by the shard's training job, it lists
    every member's summary and vouches for each member's results/runs/<run_id>/train.json."""
    return str(paths.shard_record(RESULTS, shard))


def package_files(*modules):
    """Source files a rule depends on, so editing them re-runs that rule (mtime trigger).

    Relative to the working directory, which `--directory` may move away from the code.
    """
    return [os.path.relpath(f"{workflow.basedir}/workflow_src/{m}.py") for m in modules]


# Stage 4: one job per shard measures every enabled metric (rules/measure.smk), each into its
# own store named by a hash of that metric's settings, so changing one metric's settings
# re-measures only that metric and two studies with different settings never overwrite each
# other. What each metric is, its settings and its switch: its module in workflow_src/measures/,
# read by workflow_src/registry.py without importing torch.
# The indicators a user brings (measure.custom, workflow_src/custom.py) are metrics too,
# measured after the built-in ones; their modules are found and read here, not imported.
CUSTOM = config["measure"]["custom"]
registry.use_custom(CUSTOM)
METRICS = registry.metrics()  # name -> its declaration, in measuring order
# Every metric, in the order the job measures them and aggregate reads a shard's stores (the
# Jacobian's first).
ALL_METRICS = tuple(METRICS)
# The indicators beyond Novak's (README "Indicators"), each switched by its `enabled` key,
# which is not part of the settings (switching a metric off and on again finds its stores).
INDICATOR_METRICS = tuple(m for m in ALL_METRICS if METRICS[m].switch == "enabled")
METRIC_SETTINGS = {m: registry.settings(m, config) for m in ALL_METRICS}
ENABLED = {m: registry.switched_on(m, config) for m in ALL_METRICS}
# The metrics the measuring job measures (ENABLED, in order); a metric another reads is on.
MEASURED = [m for m in ALL_METRICS if ENABLED[m]]
for _metric in MEASURED:
    _off = [need for need in METRICS[_metric].metric_needs if not ENABLED[need]]
    if _off:
        raise ConfigError(f"metric {_metric} reads the results of {_off}, which the study "
                          "switches off; switch them on")


def metric_store(metric, shard="{shard}"):
    """results/shards/<shard>/<metric>-<hash of its settings>.zarr"""
    name = registry.store_name(metric, METRIC_SETTINGS[metric])
    return str(paths.metric_store(RESULTS, shard, name))


def measure_record(shard="{shard}"):
    """results/shards/<shard>/measured-<hash of the measured stores' names>.json: written last
    by the shard's measuring job, it vouches for each store of MEASURED (workflow_src/paths.py,
    which the job names it with)."""
    return str(paths.measure_record(RESULTS, shard, {m: metric_store(m) for m in MEASURED}))


MEASURE_CODE = sorted({module for m in MEASURED for module in registry.code_modules(m)})


def measure_minutes(wildcards, attempt):
    """SLURM runtime (minutes) of a shard's measuring job: the enabled metrics' costs (each
    declaration's seconds per network of the default study) times the shard's networks,
    three times over (a loaded node, larger inputs), plus 10 minutes for start-up and
    reading; times the attempt (Snakemake's --retries). A job stopped at its limit keeps
    the metrics it finished, and the next run measures the rest. Networks much larger than
    the default study's: --set-resources measure:runtime=MINUTES."""
    seconds = sum(METRICS[m].cost for m in MEASURED) * len(SHARDS[wildcards.shard])
    return attempt * (10 + math.ceil(3 * seconds / 60))


def shard_priority(wildcards):
    """The scheduling priority of a shard's train and measure jobs: its members' hidden
    units (width x depth), a proxy for both jobs' time. Snakemake starts ready jobs of higher
    priority first, so the shard of the largest networks trains first and its measuring job,
    the study's longest, starts as early as it can instead of last."""
    return sum(RUNS[run_id].width * RUNS[run_id].depth for run_id in SHARDS[wildcards.shard])


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
