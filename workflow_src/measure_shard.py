"""Stage 4 for one shard (workflow_src/shards.py): one metric of every member network.

A job measures one metric of all members of a shard and writes one store,
``results/shards/<shard>/<metric>-<hash of the metric's settings>.zarr``, whose variables
carry a ``run`` dimension (coordinate ``run_id``, in the shard's order) in front of the
metric's own dimensions. Each member's network is read through its train.json, which the
shard's record vouches for (workflow_src/integrity.py), so a damaged member is named before
anything is computed from it.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from . import integrity
from .adapter import Progress
from .metrics.jacobian import pointwise_metrics
from .metrics.per_run import bound_metrics, ellipse_metrics, translation_metrics
from .models import build_model
from .train_shard import run_folder, shard_record

DATA_ATTRS = ("dataset", "source", "source_sha256")


def _test_points(data, n_points: int, device):
    """The first n_points test inputs (P, C, H, W) and their labels (P,), on the device."""
    x = torch.as_tensor(data["x_test"].values[:n_points], device=device)
    y = torch.as_tensor(data["y_test"].values[:n_points], device=device)
    return x, y


def jacobian(model, data, settings, job) -> xr.Dataset:
    n_points = settings["n_points"]
    x, y = _test_points(data, n_points, job.device)
    values = pointwise_metrics(model, x, y, job.chunk_size)
    return xr.Dataset({name: ("point", array) for name, array in values.items()},
                      coords={"point": np.arange(n_points),
                              "test_index": ("point", data["test_index"].values[:n_points])})


def translation(model, data, settings, job) -> xr.Dataset:
    x, _ = _test_points(data, settings["n_points"], job.device)
    return translation_metrics(model, x, settings["k_sampled"], settings["jacobian_positions"],
                               job.chunk_size, exact_cnn=settings.get("exact_cnn", False))


def ellipses(model, data, settings, job) -> xr.Dataset:
    train_x = torch.as_tensor(data["x_train"].values, device=job.device)  # (N, C, H, W)
    # Anchors come from the *clean* classes: "same class" means the same true class.
    train_y = torch.as_tensor(data["y_train_clean"].values, device=job.device)
    # Training starts from build_model(spec, run seed), so that call rebuilds the network's
    # initial weights exactly (tests/test_train.py checks it).
    initial = (build_model(model.spec, job.run.seed, job.device).eval()
               if settings["at_initialization"] else None)
    return ellipse_metrics(model, train_x, train_y, settings["per_kind"],
                           settings["n_positions"], settings["seed"], job.chunk_size,
                           initial_model=initial)


def bounds(model, data, settings, job) -> xr.Dataset:
    """Needs the member's Jacobian store (measured just before it in the same job)."""
    x, y = _test_points(data, settings["n_points"], job.device)
    jac = job.measured["jacobian"]
    return bound_metrics(model, x, y, jac["loss"].values, jac["logit_jacobian_norm"].values,
                         int(data.attrs["n_classes"]), job.chunk_size)


def _train_points(data, n_points: int | None, device):
    """The first n_points training inputs and the labels the network was trained on
    (possibly corrupted: these metrics are about the training loss as the network saw it)."""
    x = torch.as_tensor(data["x_train"].values[:n_points], device=device)
    y = torch.as_tensor(data["y_train"].values[:n_points], device=device)
    return x, y


def _initial(model, job):
    """The member's initial weights: training starts from build_model(spec, run seed)."""
    return build_model(model.spec, job.run.seed, job.device).eval()


def _without_attrs(ds: xr.Dataset) -> xr.Dataset:
    """Per-network attrs would be lost when members are stacked (the first one's would be
    kept for all): what varies per network is a variable, the rest is documented where the
    metric is defined."""
    out = ds.copy()
    out.attrs = {}
    for name in out.variables:
        out[name].attrs = {}
    return out


# The indicators beyond Novak's import their module when called: a job imports only what it
# measures (sharpness brings scipy.optimize, the NTK torch.func).
def norms(model, data, settings, job) -> xr.Dataset:
    from .metrics.norms import norm_metrics
    x, y = _train_points(data, None, job.device)
    return _without_attrs(norm_metrics(model, _initial(model, job), x, y, job.chunk_size))


def critical(model, data, settings, job) -> xr.Dataset:
    """Arpit et al.'s LASS; the settings are in grey levels, the network sees pixel/255."""
    from .metrics.critical import critical_sample_metrics
    x, _ = _test_points(data, settings["n_points"], job.device)
    out = critical_sample_metrics(model, x, alpha=settings["alpha"] / 255.0,
                                  beta=settings["beta"] / 255.0,
                                  radius=settings["radius"] / 255.0,
                                  max_iterations=settings["max_iterations"],
                                  seed=settings["seed"], chunk_size=job.chunk_size)
    return _without_attrs(out).assign_coords(point=np.arange(x.shape[0]))


def hessian(model, data, settings, job) -> xr.Dataset:
    from .metrics.hessian import hessian_metrics
    x, y = _train_points(data, settings["n_points"], job.device)
    return _without_attrs(hessian_metrics(
        model, x, y, n_iterations=settings["n_iterations"], tolerance=settings["tolerance"],
        n_probes=settings["n_probes"], seed=settings["seed"], chunk_size=job.chunk_size))


def epsilon_name(epsilon: float) -> str:
    """The suffix naming one box size as an identifier (the statistics' formulas need
    one): 0.001 -> 'eps0p001', 0.0005 -> 'eps0p0005', 1e-05 -> 'eps1em05'."""
    return "eps" + f"{epsilon:g}".replace(".", "p").replace("-", "m").replace("+", "")


def sharpness(model, data, settings, job) -> xr.Dataset:
    """One scalar variable per box size (sharpness_full_eps1e-03, ...), so that each is an
    indicator of its own in the network table."""
    from .metrics.sharpness import sharpness_metrics
    x, y = _train_points(data, None, job.device)
    out = sharpness_metrics(model, x, y, epsilons=tuple(settings["epsilons"]),
                            subspace_dim=settings["subspace_dim"],
                            max_iterations=settings["max_iterations"], seed=settings["seed"],
                            chunk_size=job.chunk_size, restarts=settings.get("restarts", 0))
    flat = {}
    for name, da in out.data_vars.items():
        if "epsilon" not in da.dims:
            flat[name] = da
            continue
        for epsilon in da["epsilon"].values:
            flat[f"{name}_{epsilon_name(float(epsilon))}"] = da.sel(epsilon=epsilon, drop=True)
    return _without_attrs(xr.Dataset(flat))


def pac_bayes(model, data, settings, job) -> xr.Dataset:
    from .metrics.pac_bayes import pac_bayes_metrics
    x, y = _train_points(data, None, job.device)
    options = {k: v for k, v in settings.items() if k != "seed"}
    return _without_attrs(pac_bayes_metrics(model, x, y, seed=settings["seed"],
                                            chunk_size=job.chunk_size, **options))


def ntk(model, data, settings, job) -> xr.Dataset:
    from .metrics.ntk import ntk_metrics
    x, y = _train_points(data, settings["n_points"], job.device)
    x_test, y_test = _test_points(data, settings["n_test_points"], job.device)
    out = ntk_metrics(model, _initial(model, job), x, y, x_test, y_test,
                      n_points=settings["n_points"], top_k=settings["top_k"],
                      ridge=settings["ridge"], chunk_size=settings["chunk_size"])
    # The largest eigenvalue as a scalar of its own: the indicator (the rest stay in
    # ntk_top_eigenvalues, dim eigen).
    out["ntk_top_eigenvalue"] = out["ntk_top_eigenvalues"].isel(eigen=0, drop=True)
    out["ntk_top_eigenvalue_init"] = out["ntk_top_eigenvalues_init"].isel(eigen=0, drop=True)
    return _without_attrs(out)


METRICS = {"jacobian": jacobian, "translation": translation, "ellipses": ellipses,
           "bounds": bounds, "norms": norms, "critical": critical, "hessian": hessian,
           "sharpness": sharpness, "pac_bayes": pac_bayes, "ntk": ntk}


class MemberJob:
    """What a metric function may use besides the network, its data and the settings: the
    member's run, and the member's metrics measured before this one in the same job."""

    def __init__(self, device, chunk_size):
        self.device, self.chunk_size = device, chunk_size
        self.run, self.measured = None, {}


def measure_shard(metrics: dict[str, dict], shard: str, runs: list, data_stores: dict,
                  results, device, chunk_size: int, log) -> dict[str, xr.Dataset]:
    """metric -> its store for every member of the shard (members in the shard's order).

    metrics: metric -> its settings, measured in this order (the bounds after the Jacobian);
    runs: the members' RunSpecs; data_stores: data id -> path of its dataset; results: the
    results folder.
    """
    record_path = shard_record(results, shard)
    record = integrity.read_record(record_path, ("members",))
    missing = [run.id for run in runs if run.id not in record["members"]]
    if missing:
        raise integrity.DamagedOutputError([integrity.Problem(
            str(record_path), f"does not list members {missing}")])
    job = MemberJob(device, chunk_size)
    datas = {data_id: integrity.open_store(path) for data_id, path in data_stores.items()}
    progress = Progress(log, len(runs), "networks")
    per_member = {metric: [] for metric in metrics}
    for run in runs:
        progress.start(f"run {run.id}: {', '.join(metrics)}")
        folder = run_folder(results, run.id)
        model = integrity.load_model(folder / "model.pt", folder / "train.json", device).eval()
        job.run, job.measured = run, {}
        for metric, settings in metrics.items():
            job.measured[metric] = METRICS[metric](model, datas[run.data.id], settings, job)
            per_member[metric].append(job.measured[metric])
        progress.done(f"run {run.id}: done")
    first = datas[runs[0].data.id]
    return {metric: _stack_members(stores, runs, shard, first.attrs)
            for metric, stores in per_member.items()}


def _stack_members(stores: list[xr.Dataset], runs: list, shard: str, data_attrs) -> xr.Dataset:
    out = xr.concat(stores, dim="run", join="outer", fill_value=np.nan, coords="minimal",
                    compat="override", combine_attrs="override")
    out = out.assign_coords(run_id=("run", [run.id for run in runs]),
                            data_id=("run", [run.data.id for run in runs]))
    out.attrs.update({key: data_attrs[key] for key in DATA_ATTRS}, shard=shard)
    return out
