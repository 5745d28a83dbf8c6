# What `snakemake verify` (rules/verify.smk) expects: every output of the shard plan, with
# what must be removed with it and what the next run then redoes.
from workflow_src.adapter import TRAIN_SUMMARY_KEYS


def measure_rule_of(metric):
    """The name of the rule that writes ``metric``'s store (its output named ``metric``)."""
    jobs = ("jacobian", "translation", "ellipses", *INDICATOR_METRICS)
    return next(f"measure_{job}" for job in jobs
                if metric in getattr(rules, f"measure_{job}").output.keys())


def written_with(metric):
    """The metrics whose stores the job that writes ``metric``'s store also writes (the
    Jacobian's job writes the bounds'): a damaged one is rebuilt with all of them."""
    writer = getattr(rules, measure_rule_of(metric))
    return [m for m in writer.output.keys() if ENABLED[m]]


def networks_of(data_ids):
    ids = [run_id for run_id, run in RUNS.items() if run.data.id in data_ids]
    shards = [shard for shard, members in SHARDS.items() if set(members) & set(ids)]
    return (f"the {len(shards)} shard(s) of its {len(ids)} network(s) train and are measured "
            "again (networks retrain only if the rebuilt dataset differs from the one they "
            f"were trained on): {', '.join(shards)}")


def dataset_outputs():
    raw = {spec.dataset: [] for spec in DATA_SPECS.values()}
    for data_id, spec in DATA_SPECS.items():
        raw[spec.dataset].append(data_id)
    entries = [{"output": f"results/datasets/raw/{name}.zarr",
                "removes": [f"results/datasets/raw/{name}.zarr"],
                "rebuilds": f"acquire {name}, corrupt its subsets; {networks_of(data_ids)}"}
               for name, data_ids in raw.items()]
    entries += [{"output": f"results/datasets/{data_id}.zarr",
                 "removes": [f"results/datasets/{data_id}.zarr"],
                 "rebuilds": f"corrupt {data_id}; {networks_of([data_id])}"}
                for data_id in DATA_SPECS]
    return entries


def shard_outputs(shard):
    """The shard's record, each member's train.json (which vouches for its model.pt and
    curve.csv), and the shard's metric stores. A damaged member takes the shard's record and
    stores with it; the next run retrains that member only (intact members are reused,
    workflow_src/train_shard.py) and re-measures the shard."""
    record = shard_record(shard)
    stores = {m: metric_store(m, shard) for m in METRICS_TO_AGGREGATE}
    measure_again = ", ".join(sorted({measure_rule_of(m) for m in stores}))
    # Snapshot stores (measure.snapshots) are measured from the members like the others.
    snapshots = [SNAPSHOT_STORE.format(shard=shard)] if SNAPSHOTS["enabled"] else []
    entries = [{"output": record, "required": ["shard", "members"],
                "removes": [record, *stores.values(), *snapshots],
                "rebuilds": f"train shard {shard} (intact members are reused), then "
                            f"{measure_again} of it"}]
    for run_id in SHARDS[shard]:
        folder = f"results/runs/{run_id}"
        entries.append({
            "output": f"{folder}/train.json", "required": list(TRAIN_SUMMARY_KEYS),
            "removes": [f"{folder}/model.pt", f"{folder}/curve.csv", f"{folder}/train.json",
                        record, *stores.values(), *snapshots],
            "rebuilds": f"network {run_id} retrains in shard {shard}, then {measure_again} "
                        "of the shard"})
    entries += [{"output": store,
                 "removes": [metric_store(m, shard) for m in written_with(metric)],
                 "rebuilds": f"{measure_rule_of(metric)} of shard {shard}"}
                for metric, store in stores.items()]
    entries += [{"output": store, "removes": [store],
                 "rebuilds": f"measure_snapshots of shard {shard}"} for store in snapshots]
    return entries


def study_store():
    """The study's metrics.zarr, which every statistic and figure reads (when it exists:
    a study not yet aggregated has nothing to check there)."""
    store = str(rules.aggregate.output.metrics)  # a plain path: params are pickled
    return [{"output": store, "removes": [store],
             "rebuilds": "aggregate, then every statistic and figure"}] if os.path.exists(store) else []

