"""Adapter for rule train: train (or reuse) every network of one shard."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.jobs.adapter import logged, shard_job  # noqa: E402
from workflow_src.training.checkpoints import TrainingStopped, stop_on_signals  # noqa: E402
from workflow_src.jobs.train_shard import train_shard  # noqa: E402
from workflow_src.paths import results_of_shard_record  # noqa: E402

# SIGTERM (SLURM's time limit, scancel) or SIGINT: the network in training saves a
# checkpoint of its current step and the job exits 128 + the signal's number.
with logged(snakemake.log[0]) as log, stop_on_signals():  # noqa: F821
    sm = snakemake  # noqa: F821
    runs, data_stores, device = shard_job(sm)
    shard = sm.wildcards.shard
    log(f"shard {shard}: {len(runs)} networks on {device}"
        f"{', stacked' if sm.params.stack else ', one after another'}")
    results = results_of_shard_record(sm.output.record)
    # Read from the config, not params: checkpoint settings must not re-run finished jobs.
    training = sm.config["training"]
    try:
        train_shard(shard, runs, data_stores, results, device, sm.params.stack, log,
                    checkpoint_every=training["checkpoint_every"],
                    keep_checkpoints=training["keep_checkpoints"])
    except TrainingStopped as stopped:
        log(f"shard {shard}: {stopped}; re-run the workflow to resume")
        raise SystemExit(128 + stopped.signum)
