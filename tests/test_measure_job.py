"""A shard's measuring job (workflow_src/jobs/measure_shard.py measure_job), without Snakemake:
every enabled metric into its own sealed store, reused when intact and current, re-measured
alone when its settings or code change, kept when the job dies in a later metric; the
stores do not depend on the order the metrics are measured in (each metric gets the network
in a state no other metric can leak into)."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from workflow_src import integrity, registry
from workflow_src.jobs import measure_shard as ms
from workflow_src.config import validate_config
from workflow_src.data.corrupt import make_corrupted
from workflow_src.integrity import write_store
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.jobs.train_shard import train_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHARD = "a" * 12
# Every metric on (those not named here at their defaults), each as small as its settings
# allow.
SMALL = {
    "n_points": 10,
    "transitions": {"n_points": 2, "k_sampled": 64, "jacobian_positions": 4},
    "ellipses": {"per_kind": 1, "n_positions": 8},
    "norms": {"enabled": True},
    "critical": {"enabled": True, "n_points": 3, "max_iterations": 5},
    "hessian": {"enabled": True, "n_points": 20, "n_iterations": 3, "n_probes": 2},
    "sharpness": {"enabled": True, "epsilons": [0.001], "subspace_dim": 3,
                  "max_iterations": 2},
    "pac_bayes": {"enabled": True, "bisection_steps": 2, "n_draws": 2, "ascent_steps": 2},
    "ntk": {"enabled": True, "n_points": 4, "n_test_points": 5, "top_k": 2, "chunk_size": 4},
}
MEASURE = {**{m: {"enabled": True} for m, d in registry.metrics().items()
              if d.switch == "enabled"}, **SMALL}
GRID = {"dataset": ["digits"], "corruption": ["none"], "label_noise": [0.0], "width": [8],
        "depth": [1], "activation": ["relu"], "bias": [True], "optimizer": ["adam"],
        "learning_rate": [0.01], "batch_size": [50], "augment": [False], "seed": [0]}


def study(**measure) -> dict:
    config = {"grid": GRID, "data": {"n_train": 100, "n_test": 50},
              "measure": {**copy.deepcopy(MEASURE), **measure}}
    return validate_config(config)


def metrics_of(config) -> dict[str, dict]:
    return {m: registry.settings(m, config) for m in registry.metrics()
            if registry.switched_on(m, config)}


def runs() -> list[RunSpec]:
    out = []
    for seed, noise in enumerate((0.0, 0.5)):
        data = DataSpec("digits", 100, 50, "none", noise, 0, True, False)
        out.append(RunSpec(data=data, width=8, depth=1, activation="relu", bias=True,
                           optimizer="adam", learning_rate=0.01, batch_size=50,
                           augment=False, seed=seed, target_train_acc=1.0, max_steps=60,
                           eval_every=20))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A results folder with a trained shard of two members and their datasets."""
    results = tmp_path_factory.mktemp("measure_job")
    stores = {}
    for run in runs():
        path = results / "datasets" / f"{run.data.id}.zarr"
        if not path.exists():
            write_store(make_corrupted(digits, run.data), path)
        stores[run.data.id] = str(path)
    train_shard(SHARD, runs(), stores, results, torch.device("cpu"), False, lambda *a: None)
    return results, stores


@pytest.fixture
def results(trained, tmp_path):
    """A copy of the trained shard's results folder, for one test."""
    source, stores = trained
    copy_ = tmp_path / "results"
    shutil.copytree(source, copy_)
    return copy_, {k: str(copy_ / Path(v).relative_to(source)) for k, v in stores.items()}


def run_job(results, metrics, log=None):
    folder, data_stores = results
    stores = {m: str(folder / "shards" / SHARD / registry.store_name(m, s))
              for m, s in metrics.items()}
    lines = []
    record = ms.measure_job(metrics, stores, SHARD, runs(), data_stores, folder, "cpu", 1, 16,
                            log or (lambda *parts: lines.append(" ".join(map(str, parts)))))
    return record, stores, lines


def measured(lines) -> list[str]:
    """The metrics a job measured (its log's 'to measure' lines)."""
    return [line.split(":")[0] for line in lines if ": to measure:" in line]


def files_of(store) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes()
            for p in sorted(Path(store).rglob("*")) if p.is_file()}


def rude(measure):
    """``measure``, then every side effect a metric could leave behind: weights perturbed
    in place, gradients off, float64 by default, the global generators drawn from, its
    copies of the data changed."""
    def measure_rudely(model, data, settings, job):
        out = measure(model, data, settings, job)
        x, _ = job.train_points(data)
        x += 1.0
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.rand(3), np.random.rand(3)
        return out
    return measure_rudely


def test_two_orders_give_byte_identical_stores(results, tmp_path, monkeypatch):
    """Registry order, and that order reversed (the PAC-Bayes searches, the Hessian and the
    NTK before the Jacobian and the walks); the PAC-Bayes measure made to leave every side
    effect it could behind (rude), which no other metric may see."""
    load = registry.load
    monkeypatch.setattr(registry, "load",
                        lambda name: rude(load(name)) if name == "pac_bayes" else load(name))
    metrics = metrics_of(study())
    assert list(metrics) == list(registry.metrics())  # every metric on
    first = run_job(results, metrics)
    other = tmp_path / "other"
    shutil.copytree(results[0], other, ignore=shutil.ignore_patterns("*-*.zarr", "measured-*"))
    data_stores = {k: str(other / Path(v).relative_to(results[0])) for k, v in results[1].items()}
    order = []  # the registry's order reversed, each metric after those it reads
    for name in reversed(list(metrics)):
        order += [m for m in (*registry.metric(name).metric_needs, name) if m not in order]
    assert order.index("pac_bayes") < order.index("jacobian") < order.index("bounds")
    second = run_job((other, data_stores), {m: metrics[m] for m in order})
    assert measured(first[2]) == list(metrics) and measured(second[2]) == order
    for metric, store in first[1].items():
        mine, theirs = files_of(store), files_of(second[1][metric])
        assert mine.keys() == theirs.keys() and len(mine) > 3, metric
        assert [name for name in mine if mine[name] != theirs[name]] == [], metric
    assert first[0].read_bytes() == second[0].read_bytes()  # the records too


def test_a_current_store_is_reused_and_a_changed_setting_re_measures_its_metric_only(results):
    metrics = metrics_of(study(hessian={"enabled": False}, ntk={"enabled": False},
                               pac_bayes={"enabled": False}, sharpness={"enabled": False}))
    record, stores, lines = run_job(results, metrics)
    assert measured(lines) == list(metrics)
    written = {m: Path(s, integrity.MANIFEST).stat().st_mtime_ns for m, s in stores.items()}
    assert integrity.read_record(record, ("stores",))["shard"] == SHARD

    again, _, lines = run_job(results, metrics)
    assert measured(lines) == [] and again == record
    assert sum("reused" in line for line in lines) == len(metrics)

    changed = metrics_of(study(hessian={"enabled": False}, ntk={"enabled": False},
                               pac_bayes={"enabled": False}, sharpness={"enabled": False},
                               critical={"enabled": True, "n_points": 3,
                                         "max_iterations": 5, "seed": 7}))
    other, new_stores, lines = run_job(results, changed)
    assert measured(lines) == ["critical"] and other != record
    assert new_stores["critical"] != stores["critical"]
    for metric, store in new_stores.items():
        if metric != "critical":
            assert Path(store, integrity.MANIFEST).stat().st_mtime_ns == written[metric]


def test_an_edited_metric_source_re_measures_that_metric_only(results, monkeypatch):
    metrics = metrics_of(study(hessian={"enabled": False}, ntk={"enabled": False},
                               pac_bayes={"enabled": False}, sharpness={"enabled": False}))
    run_job(results, metrics)
    code_sha = registry.code_sha
    monkeypatch.setattr(registry, "code_sha",
                        lambda name: "edited" if name == "norms" else code_sha(name))
    _, _, lines = run_job(results, metrics)
    assert measured(lines) == ["norms"]
    assert any("norms: to measure: stale: its code_sha differ" in line for line in lines)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the job catches it."""


def dying_in(metric, error):
    load = registry.load

    def patched(name):
        if name != metric:
            return load(name)

        def measure(*args):
            raise error
        return measure
    return patched


def test_a_killed_job_resumes_with_the_metrics_it_finished(results, monkeypatch):
    metrics = metrics_of(study(hessian={"enabled": False}, ntk={"enabled": False},
                               pac_bayes={"enabled": False}, sharpness={"enabled": False}))
    third = list(metrics)[2]
    with monkeypatch.context() as patch:
        patch.setattr(registry, "load", dying_in(third, Killed()))
        with pytest.raises(Killed):
            run_job(results, metrics)
    folder = results[0] / "shards" / SHARD
    assert not list(folder.glob("measured-*.json"))  # no record: Snakemake runs it again
    done = list(metrics)[:2]
    for metric in done:
        store = folder / registry.store_name(metric, metrics[metric])
        assert integrity.check_store(store) == [], metric
    _, _, lines = run_job(results, metrics)
    assert measured(lines) == list(metrics)[2:]
    assert all(any(f"{m}: reused" in line for line in lines) for m in done)


def test_a_failing_metric_is_named_and_the_others_are_sealed(results, monkeypatch):
    metrics = metrics_of(study(hessian={"enabled": False}, ntk={"enabled": False},
                               pac_bayes={"enabled": False}, sharpness={"enabled": False}))
    monkeypatch.setattr(registry, "load", dying_in("jacobian", ValueError("no luck")))
    with pytest.raises(ms.MetricFailed) as error:
        run_job(results, metrics)
    message = str(error.value)
    assert f"metric jacobian (workflow_src.measures.jacobian) of network {runs()[0].id} " \
           f"in shard {SHARD}: ValueError: no luck" in message
    assert "bounds: not measured, as ['jacobian'] failed" in message
    folder = results[0] / "shards" / SHARD
    for metric in metrics:
        store = folder / registry.store_name(metric, metrics[metric])
        assert (integrity.check_store(store) == []) is (metric not in ("jacobian", "bounds"))


def test_a_metric_writing_an_undeclared_variable_is_refused(results, monkeypatch):
    load = registry.load

    def patched(name):
        measure = load(name)
        if name != "norms":
            return measure
        return lambda *args: measure(*args).assign(surprise=((), 1.0))
    monkeypatch.setattr(registry, "load", patched)
    metrics = {"norms": {}}
    with pytest.raises(ms.MetricFailed, match="wrote variable 'surprise', which norms.py "
                                              "does not declare"):
        run_job(results, metrics)


def test_measure_member_restores_what_a_metric_changes_of_torchs_global_state(monkeypatch):
    def rude(model, data, settings, job):
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(123)
        return xr.Dataset({"n_parameters": ((), 1.0)})

    monkeypatch.setattr(registry, "load", lambda name: rude)
    state = torch.random.get_rng_state()
    ms.measure_member("norms", None, None, {}, ms.MemberJob("cpu", 8))
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_store_from_before_identities_is_adopted_only_while_current(results, monkeypatch):
    """A store the rules measure_<metric> wrote (no identity) is reused while its metric's
    code is the code it was checked against and it is newer than that code's modules."""
    metrics = {"norms": {}}
    _, stores, _ = run_job(results, metrics)
    store = Path(stores["norms"])
    with xr.open_zarr(store) as ds:
        old = ds.load()
    del old.attrs["identity"]
    integrity.remove(store)
    write_store(old, store)  # as the old rule wrote it
    monkeypatch.setitem(ms.UNRECORDED, "norms", "0" * 16)
    _, _, lines = run_job(results, metrics)
    assert measured(lines) == ["norms"] and "by code other than this" in "".join(lines)
    integrity.remove(store)
    write_store(old, store)
    monkeypatch.setitem(ms.UNRECORDED, "norms", registry.code_sha("norms"))
    _, _, lines = run_job(results, metrics)
    assert measured(lines) == [] and any("norms: reused" in line for line in lines)
    manifest = store / integrity.MANIFEST
    os.utime(manifest, (manifest.stat().st_atime, 0))  # sealed before its code changed
    _, _, lines = run_job(results, metrics)
    assert measured(lines) == ["norms"], lines
    assert "before norms.py" in "".join(lines) or "before cnns.py" in "".join(lines)
    with xr.open_zarr(store) as ds:
        assert "identity" in ds.attrs  # measured again, it records one
