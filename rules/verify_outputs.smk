# What `snakemake verify` (rules/verify.smk) expects: every output of the run table, with
# what must be removed with it and what the next run then redoes.
from workflow_src.adapter import TRAIN_SUMMARY_KEYS


def stores_reading(metric):
    """The enabled metrics whose rule reads ``metric``'s store (measure_bounds reads the
    Jacobian's), read off the rules themselves so a new dependency is never missed."""
    store = metric_store(metric)
    return [m for m in METRICS_TO_AGGREGATE
            if store in map(str, getattr(rules, f"measure_{m}").input)]


def networks_of(data_ids):
    ids = [run_id for run_id, run in RUNS.items() if run.data.id in data_ids]
    return f"{len(ids)} network(s) retrain and are re-measured: {', '.join(ids)}"


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


def run_outputs(run_id):
    folder = f"results/runs/{run_id}"
    stores = {m: metric_store(m, run_id) for m in METRICS_TO_AGGREGATE}
    train = {"output": f"{folder}/train.json", "required": list(TRAIN_SUMMARY_KEYS),
             "removes": [f"{folder}/model.pt", f"{folder}/curve.csv", f"{folder}/train.json",
                         *stores.values()],
             "rebuilds": f"network {run_id} retrains and is re-measured"}
    measured = [{"output": store,
                 "removes": [store, *(metric_store(d, run_id) for d in stores_reading(m))],
                 "rebuilds": f"measure_{m} of {run_id}"
                             + "".join(f", measure_{d}" for d in stores_reading(m))}
                for m, store in stores.items()]
    return [train, *measured]


def study_store():
    """The study's metrics.zarr, which every statistic and figure reads (when it exists:
    a study not yet aggregated has nothing to check there)."""
    store = str(rules.aggregate.output.metrics)  # a plain path: params are pickled
    return [{"output": store, "removes": [store],
             "rebuilds": "aggregate, then every statistic and figure"}] if os.path.exists(store) else []

