# What `snakemake verify` (rules/verify.smk) expects: every dataset, every output of the
# shard plan and every study-level job's seal, with what must be removed with it and what
# the next run then redoes.
from snakemake.exceptions import WorkflowError
from snakemake.io import is_flagged

from workflow_src.jobs.adapter import TRAIN_SUMMARY_KEYS


def computed_from(metric):
    """``metric`` and every measured metric that reads its results (the bounds read the
    Jacobian's), in order: a damaged store is measured again with them."""
    found = [metric]
    for other in MEASURED:
        if any(need in found for need in METRICS[other].metric_needs) and other not in found:
            found.append(other)
    return found


def networks_of(data_ids):
    ids = [run_id for run_id, run in RUNS.items() if run.data.id in data_ids]
    shards = shards_on(data_ids)
    return (f"the {len(shards)} shard(s) of its {len(ids)} network(s) train and are measured "
            "again (networks retrain only if the rebuilt dataset differs from the one they "
            f"were trained on): {', '.join(shards)}")


def shards_on(data_ids):
    """The shards with a member trained on one of the datasets ``data_ids``."""
    return [shard for shard, members in SHARDS.items()
            if any(RUNS[run_id].data.id in data_ids for run_id in members)]


def snapshot_stores(shard):
    """The shard's snapshot store (measure.snapshots), measured from its members."""
    return [SNAPSHOT_STORE.format(shard=shard)] if SNAPSHOTS["enabled"] else []


def measured_from(shard):
    """The shard's record and what is measured from its members: its measure record, its
    stores."""
    return [shard_record(shard), measure_record(shard),
            *(metric_store(m, shard) for m in MEASURED), *snapshot_stores(shard)]


def shard_jobs_on(data_ids):
    """The records and stores of every shard with a member trained on ``data_ids``."""
    return [path for shard in shards_on(data_ids) for path in measured_from(shard)]


def dataset_outputs():
    """Each raw dataset and corrupted subset. A damaged one takes with it everything computed
    from it down to the shards' records and stores (a raw one, its subsets too): Snakemake
    asks for a missing dataset only when a job that reads it must run, and the shards' jobs
    must not be skipped. Their training jobs then reuse every member whose dataset is
    rebuilt identical (workflow_src/jobs/train_shard.py)."""
    raw = {spec.dataset: [] for spec in DATA_SPECS.values()}
    for data_id, spec in DATA_SPECS.items():
        raw[spec.dataset].append(data_id)
    entries = []
    for name, data_ids in raw.items():
        path = raw_dataset_store(name)
        subsets = [dataset_store(data_id) for data_id in data_ids]
        entries.append({"output": path, "removes": [path, *subsets, *shard_jobs_on(data_ids)],
                        "rebuilds": f"acquire {name}, corrupt its {len(data_ids)} subset(s); "
                                    f"{networks_of(data_ids)}"})
    for data_id in DATA_SPECS:
        path = dataset_store(data_id)
        entries.append({"output": path, "removes": [path, *shard_jobs_on([data_id])],
                        "rebuilds": f"corrupt {data_id}; {networks_of([data_id])}"})
    return entries


def shard_outputs(shard):
    """The shard's record, each member's train.json (which vouches for its model.pt and
    curve.csv), the shard's measure record and its metric stores. A damaged member takes the
    shard's record, measure record and stores with it; the next run retrains that member
    only (intact members are reused, workflow_src/jobs/train_shard.py) and re-measures the shard.
    A damaged store takes the measure record (and the stores computed from it): the next
    run's measure job re-measures those and reuses the shard's other stores."""
    record, measured, *stores = measured_from(shard)
    entries = [{"output": record, "required": ["shard", "members"],
                "removes": [record, measured, *stores],
                "rebuilds": f"train shard {shard} (intact members are reused), then measure "
                            "of it"}]
    for run_id in SHARDS[shard]:
        files = [str(path(RESULTS, run_id)) for path in
                 (paths.model_file, paths.curve_file, paths.run_record)]
        entries.append({
            "output": files[-1], "required": list(TRAIN_SUMMARY_KEYS),
            "removes": [*files, record, measured, *stores],
            "rebuilds": f"network {run_id} retrains in shard {shard}, then measure of the "
                        "shard"})
    entries.append({"output": measured, "required": ["shard", "stores"], "removes": [measured],
                    "rebuilds": f"measure of shard {shard}, which reuses its intact stores"})
    for metric in MEASURED:
        again = computed_from(metric)
        entries.append({"output": metric_store(metric, shard),
                        "removes": [*(metric_store(m, shard) for m in again), measured],
                        "rebuilds": f"measure of shard {shard} measures {', '.join(again)} "
                                    "again and reuses its other stores"})
    entries += [{"output": store, "removes": [store],
                 "rebuilds": f"measure_snapshots of shard {shard}"}
                for store in snapshot_stores(shard)]
    return entries


def study_jobs():
    """One entry per study-level job the study asks for (its outputs are in TARGETS): the
    job's record (its `seal` output) or, for the aggregate, the store it writes. A damaged
    one takes the job's outputs; the next run redoes the job, and then every job that reads
    them (their input is newer). A job with none of its outputs present is not checked:
    it has not run yet (or verify removed it with a damaged shard), and the next run runs it."""
    targets = {str(path) for path in TARGETS}
    jobs = [job for job in workflow.rules if targets & {str(f) for f in job.output}]
    readers = {job.name: [other.name for other in jobs
                          if {str(f) for f in job.output} & {str(f) for f in other.input}]
               for job in jobs}
    entries = []
    for job in jobs:
        outputs = [str(f) for f in job.output]
        if "seal" in job.output.keys():
            checked = {str(job.output.seal): ["rule"]}
        elif all(is_flagged(f, "directory") for f in job.output):
            checked = {path: [] for path in outputs}  # Zarr stores, sealed by their manifests
        else:
            raise WorkflowError(f"the study outputs {outputs} of {job.name} are not sealed; "
                                f"declare seal=study_seal(\"{job.name}\") among its outputs "
                                "and call integrity.seal_job last in its script")
        if not any(os.path.exists(path) for path in outputs):
            continue
        then = sorted(_downstream(job.name, readers))
        rebuilds = job.name + (f", then what reads its outputs: {', '.join(then)}" if then else "")
        entries += [{"output": path, "required": required, "removes": outputs,
                     "rebuilds": rebuilds, "study_level": True}
                    for path, required in checked.items()]
    return entries


def _downstream(name, readers):
    """Every job that reads the outputs of ``name``, or of a job that does, and so on."""
    found, todo = set(), list(readers[name])
    while todo:
        reader = todo.pop()
        if reader not in found:
            found.add(reader)
            todo += readers[reader]
    return found
