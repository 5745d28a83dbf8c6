"""Stage 4 for one shard (workflow_src/shards.py): every enabled metric of every member.

One job per shard (rule measure) measures the metrics the study enables (workflow_src/
registry.py), each into its own store ``results/shards/<shard>/<metric>-<hash of its
settings>.zarr``, whose variables carry a ``run`` dimension (coordinate ``run_id``, in the
shard's order) in front of the metric's own dimensions. Each member's network is read
through its train.json, which the shard's record vouches for (workflow_src/integrity.py),
so a damaged member is named before anything is computed from it.

- **Metric by metric.** Each metric's store is written and sealed as soon as that metric is
  done for every member, so a job that is killed or fails keeps the metrics it finished.
- **Reuse.** A store records its identity (attrs["identity"]): the metric, the settings that
  name it, its code hash (registry.code_sha: the source of the modules its results depend
  on), STORE_FORMAT, the settings of the metrics it reads, and every member's run id, the
  SHA-256 of its model.pt and its dataset's digest. A sealed, intact store with the identity
  the job would write is reused; any other is measured again. So changing one metric's
  settings or source re-measures that metric only. Stores written before stores recorded
  their identity are adopted while their metric's code is the code they were checked
  against (UNRECORDED) and their members are the shard's.
- **The record.** Last, ``results/shards/<shard>/measured-<hash of the store names>.json``
  (the rule's only output) vouches for each store's manifest, the way the shard's
  train.json vouches for its members: the stores are not Snakemake outputs, so Snakemake
  never deletes them, and a failed job leaves its finished stores for the next run.
- **Isolation.** Every metric gets its own copy of each network (loaded afresh from
  model.pt, in eval mode), its own copies of the data's tensors, the global random
  generators seeded to 0 and gradients on, and whatever it changes of torch's global state
  (grad mode, default dtype, the generators) is put back after it: no metric sees another's
  side effects (the PAC-Bayes searches perturb the weights they are given), and the stores
  do not depend on the order the metrics are measured in.

Torch is imported only when something has to be measured: a job whose stores are all
reused (a metric switched off, an edited module of another metric) takes about a second.
"""

from __future__ import annotations

import copy
import json
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from .. import integrity, registry
from .adapter import Progress
from ..paths import MODEL_FILE, measure_record, model_file, run_record, shard_record

DATA_ATTRS = ("dataset", "source", "source_sha256")
STORE_FORMAT = 1  # raise to re-measure every store (a change of how stores are built)
# Stores written before stores recorded their identity (by the rules measure_<metric>) are
# adopted while their metric's code hash is the one below, that of the commit that
# introduced identities (its stores were checked equal to the ones before: any later edit
# re-measures), if their members are the shard's and they are newer than each of their
# code's modules (what those rules' mtime trigger asked; measures/<metric>.py is new).
UNRECORDED: dict[str, str] = {
    "jacobian": "eeb9bb05fdbcbbfe", "translation": "0cc38551b2ae5c42",
    "ellipses": "4020fac949905383", "bounds": "92252b919e6e043c",
    "norms": "5d2beaf1091878f2", "critical": "82c57290a56601cc",
    "hessian": "f25930f9da738b7d", "sharpness": "bc69c7f6abad98ee",
    "pac_bayes": "fc96148f5ae6ee3f", "ntk": "7d320a4417bc6076",
}


def data_sha(store) -> str:
    """Digest of a dataset store's manifest (train_shard.data_sha)."""
    return integrity.digest(Path(store) / integrity.MANIFEST)["sha256"][:16]


class MetricFailed(RuntimeError):
    """Raised at the end of a measuring job when some metrics could not be measured."""


# --- what a member is measured with -----------------------------------------------------------

class MemberJob:
    """What a metric's measure function may use besides the network, its dataset and its
    settings: the device, the chunk size, the member's run, the results of the metrics it
    needs (``measured``), a log for progress lines, and copies of the data as tensors."""

    def __init__(self, device, chunk_size: int, log=print):
        self.device, self.chunk_size, self.log = device, chunk_size, log
        self.run, self.measured = None, {}

    def tensor(self, values):
        """A copy of ``values`` as a tensor on the device (a metric may change it freely)."""
        import torch

        return torch.tensor(np.asarray(values), device=self.device)

    def test_points(self, data, n_points=None):
        """The first n_points test inputs (P, C, H, W) and their labels (P,)."""
        return (self.tensor(data["x_test"].values[:n_points]),
                self.tensor(data["y_test"].values[:n_points]))

    def train_points(self, data, n_points=None):
        """The first n_points training inputs and the labels the network was trained on
        (possibly corrupted: the metrics of the training loss are as the network saw it)."""
        return (self.tensor(data["x_train"].values[:n_points]),
                self.tensor(data["y_train"].values[:n_points]))

    def initial_model(self, model):
        """The member's initial weights: training starts from build_model(spec, run seed)."""
        from ..nets.models import build_model

        return build_model(model.spec, self.run.seed, self.device).eval()

    @staticmethod
    def without_attrs(ds: xr.Dataset) -> xr.Dataset:
        """Per-network attrs would be lost when members are stacked (the first one's would be
        kept for all): what varies per network is a variable, the rest is documented where
        the metric is defined."""
        out = ds.copy()
        out.attrs = {}
        for name in out.variables:
            out[name].attrs = {}
        return out


@contextmanager
def isolated():
    """Torch's, NumPy's and Python's global generators seeded to 0 and gradients on for one
    metric; they, the grad mode and the default dtype are restored after it."""
    import random

    import torch

    grad, dtype = torch.is_grad_enabled(), torch.get_default_dtype()
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        torch.set_grad_enabled(True)
        try:
            yield
        finally:
            torch.set_grad_enabled(grad)
            torch.set_default_dtype(dtype)
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def measure_member(name: str, model, data, settings: dict, job: MemberJob) -> xr.Dataset:
    """Metric ``name`` of one network: ``model`` is the metric's own copy (it may change it),
    ``job.measured`` holds the results of the metrics it needs. Checks that it writes only
    the variables it declares, with their dimensions."""
    with isolated():
        out = registry.load(name)(model, data, settings, job)
    if not isinstance(out, xr.Dataset):
        raise TypeError(f"returned {type(out).__name__}, not an xarray.Dataset")
    for var, da in out.data_vars.items():
        found = registry.variable(var)
        if found is None or var not in _declared_by(name, var):
            raise ValueError(f"wrote variable {var!r}, which {registry.metric(name).path.name} "
                             "does not declare")
        if list(da.dims) != list(found[0]["dims"]):
            raise ValueError(f"wrote {var!r} with dims {list(da.dims)}, declared "
                             f"{found[0]['dims']}")
    return out


def _declared_by(name: str, var: str) -> set:
    """{var} if metric ``name`` declares ``var`` (exactly or by a pattern), else {}."""
    declared = registry.metric(name).variables
    if var in declared or any(p.endswith("*") and var.startswith(p[:-1]) for p in declared):
        return {var}
    return set()


# --- one metric of every member ---------------------------------------------------------------

def measure_metric(name: str, settings: dict, shard: str, runs: list, datas: dict, results,
                   needed: dict, device, chunk_size: int, progress: Progress) -> xr.Dataset:
    """Metric ``name`` of every member, stacked along ``run`` (the shard's order). needed:
    metric -> the shard's store of each metric it reads."""
    per_member = []
    for i, run in enumerate(runs):
        label = f"{name} of run {run.id}"
        progress.start(f"{label}: start")
        job = MemberJob(device, chunk_size, progress.prefixed(label))
        job.run = run
        job.measured = {need: needed[need].isel(run=i) for need in needed}
        begin = time.perf_counter()
        from ..nets.checked import load_checked

        model = load_checked(model_file(results, run.id), run_record(results, run.id), device)
        try:
            per_member.append(measure_member(name, model, datas[run.data.id], settings, job))
        except Exception as err:
            raise MetricFailed(f"metric {name} ({registry.metric(name).module}) of network "
                               f"{run.id} in shard {shard}: {type(err).__name__}: {err}") from err
        progress.done(f"{label}: {time.perf_counter() - begin:.2f} s")
    first = datas[runs[0].data.id]
    return _stack_members(per_member, runs, shard, first.attrs)


def _stack_members(stores: list[xr.Dataset], runs: list, shard: str, data_attrs) -> xr.Dataset:
    out = xr.concat(stores, dim="run", join="outer", fill_value=np.nan, coords="minimal",
                    compat="override", combine_attrs="override")
    out = out.assign_coords(run_id=("run", [run.id for run in runs]),
                            data_id=("run", [run.data.id for run in runs]))
    out.attrs.update({key: data_attrs[key] for key in DATA_ATTRS}, shard=shard)
    return out


def open_datasets(data_stores: dict) -> dict:
    """data id -> its dataset, checked, in memory, its arrays read-only."""
    datas = {}
    for data_id, path in data_stores.items():
        data = integrity.open_store(path)
        for variable in data.variables.values():
            variable.values.flags.writeable = False
        datas[data_id] = data
    return datas


def measure_shard(metrics: dict[str, dict], shard: str, runs: list, data_stores: dict,
                  results, device, chunk_size: int, log) -> dict[str, xr.Dataset]:
    """metric -> its store for every member of the shard, in memory (nothing is written):
    metrics maps each metric to its settings, measured in this order (a metric after those
    it needs); runs: the members' RunSpecs; data_stores: data id -> path of its dataset."""
    _check_record(results, shard, runs)
    datas = open_datasets(data_stores)
    progress = Progress(log, len(metrics) * len(runs), "measurements")
    out: dict[str, xr.Dataset] = {}
    for name, settings in metrics.items():
        needed = {need: out[need] for need in registry.metric(name).metric_needs}
        out[name] = measure_metric(name, settings, shard, runs, datas, results, needed,
                                   device, chunk_size, progress)
    return out


def _check_record(results, shard: str, runs: list) -> dict:
    record_path = shard_record(results, shard)
    record = integrity.read_record(record_path, ("members",))
    missing = [run.id for run in runs if run.id not in record["members"]]
    if missing:
        raise integrity.DamagedOutputError([integrity.Problem(
            str(record_path), f"does not list members {missing}")])
    return record


# --- the job: reuse, measure what is missing, seal ---------------------------------------------

def members_of(runs: list, results, data_stores: dict) -> list[list[str]]:
    """[run id, SHA-256 of its model.pt, its dataset's digest] of every member, from its
    train.json (which the shard's record vouches for, checked before this is called)."""
    digests = {data_id: data_sha(path) for data_id, path in data_stores.items()}
    members = []
    for run in runs:
        record = json.loads(run_record(results, run.id).read_text())
        members.append([run.id, record[integrity.CONTENTS][MODEL_FILE]["sha256"],
                        digests[run.data.id]])
    return members


def identity(name: str, settings: dict, members: list, all_settings: dict) -> dict:
    """What a store of metric ``name`` must record to be reused (see the module doc)."""
    return {"metric": name, "settings": registry.hashed_settings(name, settings),
            "code_sha": registry.code_sha(name), "format": STORE_FORMAT,
            "needs": {need: registry.hashed_settings(need, all_settings[need])
                      for need in registry.metric(name).metric_needs},
            "members": members}


def reusable(path, wanted: dict) -> str:
    """"" if the store at ``path`` can be reused for identity ``wanted``, else why not."""
    path = Path(path)
    if not path.exists():
        return "not measured yet"
    problems = integrity.check_store(path)
    if problems:
        return f"damaged or unfinished ({'; '.join(map(str, problems[:3]))})"
    with xr.open_zarr(path) as ds:
        recorded = ds.attrs.get("identity")
        run_ids = [str(r) for r in ds["run_id"].values] if "run_id" in ds.coords else []
    if recorded is None:
        return _unrecorded(path, wanted, run_ids)
    recorded = json.loads(recorded)
    differing = [key for key in wanted if recorded.get(key) != wanted[key]]
    return f"stale: its {', '.join(differing)} differ" if differing else ""


def _unrecorded(path: Path, wanted: dict, run_ids: list) -> str:
    """"" if a store without an identity can be adopted (see UNRECORDED), else why not."""
    why = "written before stores recorded their code and members"
    if UNRECORDED.get(wanted["metric"]) != wanted["code_sha"]:
        return f"{why}, by code other than this"
    if run_ids != [member[0] for member in wanted["members"]]:
        return f"{why}, of other members"
    sealed = (path / integrity.MANIFEST).stat().st_mtime
    modules = [registry.PACKAGE / f"{m}.py" for m in registry.code_modules(wanted["metric"])
               if not m.startswith("measures/")]
    older = [m.name for m in modules if m.stat().st_mtime > sealed]
    return f"{why}, before {', '.join(older)} changed" if older else ""


def measure_job(metrics: dict[str, dict], stores: dict[str, str], shard: str, runs: list,
                data_stores: dict, results, device: str, threads: int, chunk_size: int,
                log) -> Path:
    """Measure (or reuse) every metric of ``metrics`` (metric -> settings, in this order)
    into its store (``stores``: metric -> path), then seal the shard's measure record;
    returns its path. Raises MetricFailed, after sealing every other metric's store, if
    some metric failed."""
    _check_record(results, shard, runs)
    members = members_of(runs, results, data_stores)
    wanted = {name: identity(name, settings, members, metrics)
              for name, settings in metrics.items()}
    todo = []
    for name in metrics:
        why = reusable(stores[name], wanted[name])
        log(f"{name}: {'reused ' + stores[name] if not why else 'to measure: ' + why}")
        if why:
            todo.append(name)
    failures = _measure_todo(todo, metrics, stores, wanted, shard, runs, data_stores, results,
                             device, threads, chunk_size, log) if todo else {}
    if failures:
        raise MetricFailed(f"{len(failures)} of {len(metrics)} metrics of shard {shard} "
                           f"failed: {'; '.join(failures.values())} (tracebacks above). The "
                           "others are sealed and will be reused when the job runs again.")
    path = measure_record(results, shard, stores)
    integrity.seal_record(path, {"shard": shard, "stores": {
        name: {"store": Path(stores[name]).name, "identity": wanted[name]} for name in metrics}},
        [Path(stores[name]) / integrity.MANIFEST for name in metrics])
    return path


def _measure_todo(todo, metrics, stores, wanted, shard, runs, data_stores, results, device,
                  threads, chunk_size, log) -> dict[str, str]:
    """Measure the metrics of ``todo`` in order, each store sealed when done; metric -> why
    it failed, for those that did (and those that need one that did)."""
    import torch

    from ..training.train import resolve_device

    torch.set_num_threads(threads)
    device = resolve_device(device)
    datas = open_datasets(data_stores)
    progress = Progress(log, len(todo) * len(runs), "measurements")
    failures: dict[str, str] = {}
    for name in todo:
        order = list(metrics)
        early = [n for n in registry.metric(name).metric_needs
                 if n not in metrics or order.index(n) > order.index(name)]
        if early:
            raise ValueError(f"metric {name} needs {early} measured before it")
        lost = [n for n in registry.metric(name).metric_needs if n in failures]
        if lost:
            failures[name] = f"{name}: not measured, as {lost} failed"
            continue
        log(f"{name}: measuring {len(runs)} networks with {metrics[name]} on {device}")
        begin = time.perf_counter()
        try:
            needed = {need: integrity.open_store(stores[need])
                      for need in registry.metric(name).metric_needs}
            out = measure_metric(name, metrics[name], shard, runs, datas, results, needed,
                                 device, chunk_size, progress)
            out.attrs["identity"] = json.dumps(wanted[name], sort_keys=True)
            integrity.remove(stores[name])  # a stale store's files must not outlive it
            integrity.write_store(out, stores[name])
        except Exception as err:
            log(traceback.format_exc())
            failures[name] = str(err)
            continue
        log(f"{name}: {len(runs)} networks in {time.perf_counter() - begin:.1f} s, sealed "
            f"{stores[name]}")
    return failures


def copy_for(model):
    """A metric's own copy of a network it shares with other metrics (snapshots)."""
    return copy.deepcopy(model).eval()
