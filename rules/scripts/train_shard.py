"""Adapter for rule train: train (or reuse) every network of one shard."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import torch  # noqa: E402

from workflow_src.adapter import logged  # noqa: E402
from workflow_src.runtable import RunSpec  # noqa: E402
from workflow_src.train import resolve_device  # noqa: E402
from workflow_src.train_shard import train_shard  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)
    runs = [RunSpec.from_dict(raw) for raw in sm.params.runs]
    device = resolve_device(sm.config["training"]["device"])
    shard = sm.wildcards.shard
    log(f"shard {shard}: {len(runs)} networks on {device}"
        f"{', stacked' if sm.params.stack else ', one after another'}")
    data_stores = {key.removeprefix("data_"): path for key, path in sm.input.items()
                   if key.startswith("data_")}
    results = Path(sm.output.record).parents[2]  # results/shards/<shard>/train.json
    train_shard(shard, runs, data_stores, results, device, sm.params.stack, log)
