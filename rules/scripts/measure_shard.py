"""Adapter for rules measure_<metric>: metrics of every network of one shard."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import torch  # noqa: E402

from workflow_src.adapter import logged  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402
from workflow_src.measure_shard import measure_shard  # noqa: E402
from workflow_src.runtable import RunSpec  # noqa: E402
from workflow_src.train import resolve_device  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)
    runs = [RunSpec.from_dict(raw) for raw in sm.params.runs]
    device = resolve_device(sm.config["training"]["device"])
    data_stores = {key.removeprefix("data_"): path for key, path in sm.input.items()
                   if key.startswith("data_")}
    results = Path(sm.input.record).parents[2]  # results/shards/<shard>/train.json
    stores = measure_shard(sm.params.metrics, sm.wildcards.shard, runs, data_stores, results,
                           device, sm.config["measure"]["chunk_size"], log)
    for metric, out in stores.items():
        log(out)
        write_store(out, sm.output[metric])
