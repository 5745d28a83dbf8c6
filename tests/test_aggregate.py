"""The study store: built from per-run stores, written portably, read back as strings."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
import zarr

from workflow_src.jobs.aggregate import build_metrics
from workflow_src.integrity import check_store, write_store
from workflow_src.runtable import HYPERPARAMETERS
from workflow_src.stats import converged, network_table

# The Zarr v3 core data types, plus "string": the variable-length UTF-8 type that the
# zarr-extensions registry specifies. Anything else (e.g. fixed_length_utf32) is not.
SPECIFIED_TYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "float16", "float32", "float64", "complex64", "complex128",
                   "string"}
RUNS = {
    "run_a": {"dataset": "digits", "corruption": "none", "label_noise": 0.0, "width": 16,
              "depth": 1, "activation": "relu", "bias": True, "optimizer": "sgd",
              "learning_rate": 0.1, "batch_size": 32, "augment": False, "seed": 0,
              "architecture": "mlp", "batch_norm": False, "momentum": 0.0,
              "weight_decay": 0.0, "lr_schedule": "constant", "loss_function": "cross_entropy"},
    "run_bb": {"dataset": "fashion_mnist", "corruption": "shuffled_pixels", "label_noise": 0.5,
               "width": 32, "depth": 2, "activation": "hard_tanh", "bias": False,
               "optimizer": "momentum", "learning_rate": 0.001, "batch_size": 64,
               "augment": "crop", "seed": 1, "architecture": "inception_small",
               "batch_norm": True, "momentum": 0.9, "weight_decay": 5e-4,
               "lr_schedule": "exponential", "loss_function": "squared"},
}
SUMMARIES = [
    {"train_acc": 1.0, "test_acc": 0.75, "gap": 0.25, "steps": 10, "status": "converged",
     "fit_step": 10},
    {"train_acc": 0.5, "test_acc": 0.25, "gap": 0.25, "steps": 20, "status": "unconverged",
     "fit_step": None},
]
KINDS = ["random", "same_class", "different_class"]


def as_shard(run_ids, store: xr.Dataset) -> xr.Dataset:
    """A store as a shard's measuring job writes it: a `run` dimension in front, coordinate
    run_id (here the same values for every member)."""
    return store.expand_dims(run=len(run_ids)).assign_coords(run_id=("run", list(run_ids)))


def run_stores(n_points: int, dataset: str, seed: int, run_id: str) -> list[xr.Dataset]:
    """A Jacobian store of n_points and an ellipse store of a shard holding one run."""
    rng = np.random.default_rng(seed)
    jacobian = xr.Dataset(
        {"loss": ("point", rng.uniform(size=n_points)),
         "correct": ("point", rng.integers(0, 2, n_points).astype(bool)),
         "jacobian_norm": ("point", rng.uniform(size=n_points)),
         "logit_jacobian_norm": ("point", rng.uniform(size=n_points))},
        coords={"point": np.arange(n_points), "test_index": ("point", np.arange(n_points) + 7)},
        attrs={"dataset": dataset, "data_id": f"{dataset}-x", "source": "synthetic",
               "source_sha256": "0" * 64},
    )
    ellipses = xr.Dataset(
        {"ellipse_jacobian_norm": (("ellipse", "position"), rng.uniform(size=(3, 4))),
         "ellipse_transitions": ("ellipse", rng.integers(0, 9, 3).astype(float))},
        coords={"ellipse_kind": ("ellipse", KINDS), "angle": ("position", np.arange(4.0))},
        attrs={"seed": seed},
    )
    return [as_shard([run_id], jacobian), as_shard([run_id], ellipses)]


def test_metrics_store_round_trips_strings_without_warnings(tmp_path):
    stores = [run_stores(5, "digits", 0, "run_a"), run_stores(3, "fashion_mnist", 1, "run_bb")]
    ds = build_metrics(RUNS, SUMMARIES, stores, code_version="test")
    path = tmp_path / "metrics.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_store(ds, path)
        back = xr.open_zarr(path).load()
        group = zarr.open_group(path, mode="r")
        arrays = {name: (array.metadata.to_dict()["data_type"], array[...])
                  for name, array in group.arrays()}
    assert check_store(path) == []  # written and sealed in one call

    strings = {"run_id": list(RUNS), "status": ["converged", "unconverged"],
               "ellipse_kind": KINDS,
               # true/false mixed with "crop": one coordinate of strings
               "augment": ["false", "crop"],
               **{name: [RUNS[r][name] for r in RUNS]
                  for name in HYPERPARAMETERS if isinstance(RUNS["run_a"][name], str)}}
    for name, expected in strings.items():
        assert back[name].values.tolist() == expected, name
        assert all(type(value) is str for value in back[name].values.tolist()), name
        assert arrays[name][0] == "string", name
    assert {name: data_type for name, (data_type, _) in arrays.items()
            if data_type not in SPECIFIED_TYPES} == {}
    # The rest of the contract survives the encoding.
    assert back["bias"].values.tolist() == [True, False]
    assert back["batch_norm"].dtype == bool
    assert (back["status"] == "converged").values.tolist() == [True, False]
    assert np.isnan(back["jacobian_norm"].values[1, 3:]).all()  # run_bb has 3 points
    numbers = [name for name in ds.variables if name not in strings]
    xr.testing.assert_identical(back[numbers].drop_encoding(), ds[numbers])
    assert back.attrs == ds.attrs
    kept = converged(network_table(back))
    assert kept["run_id"].tolist() == ["run_a"] and kept["dataset"].tolist() == ["digits"]


def test_shards_are_put_in_the_order_of_the_run_table():
    """Shards list their members in their own order; metrics.zarr follows the run table."""
    def jacobian(values):
        return xr.Dataset({"jacobian_norm": (("run", "point"), np.array(values, float))},
                          coords={"point": np.arange(2)},
                          attrs={"dataset": "digits", "source": "s", "source_sha256": "x"})

    runs = {name: {h: i for h in HYPERPARAMETERS} for i, name in enumerate("abcd")}
    summaries = [{"train_acc": 1.0, "test_acc": 0.5, "gap": 0.5, "steps": 10,
                  "status": "converged"}] * 4
    first = jacobian([[3, 3], [1, 1]]).assign_coords(run_id=("run", ["d", "b"]))
    second = jacobian([[0, 0], [2, 2]]).assign_coords(run_id=("run", ["a", "c"]))
    ds = build_metrics(runs, summaries, [[first], [second]], "v")
    assert ds["run_id"].values.tolist() == list("abcd")
    assert ds["jacobian_norm"].values[:, 0].tolist() == [0, 1, 2, 3]
    assert ds["width"].values.tolist() == [0, 1, 2, 3]
    try:
        build_metrics({**runs, "e": runs["a"]}, summaries + summaries[:1], [[first], [second]], "v")
    except ValueError as err:
        assert "exactly the study's runs" in str(err)
    else:
        raise AssertionError("a run missing from every shard must be refused")


def test_expected_signs_agree_with_the_metric_modules():
    """aggregate.py reads the signs from the metrics' declarations (workflow_src/measures/,
    read without PyTorch: its environment has none); they must be the ones each metric
    module states and argues."""
    from workflow_src.jobs.aggregate import expected_sign
    from workflow_src.metrics import norms, ntk, pac_bayes
    from workflow_src.registry import indicators

    INDICATORS = indicators()
    for module in (norms, pac_bayes, ntk):
        for name, sign in module.EXPECTED_SIGN.items():
            if name in INDICATORS:
                assert INDICATORS[name] == sign, name
    assert set(norms.EXPECTED_SIGN) <= set(INDICATORS)
    # The four measures are scored; sigma', alpha' (the same rankings reversed) are not.
    assert {n for n in pac_bayes.EXPECTED_SIGN if n in INDICATORS} == {
        "pac_bayes_flatness", "pac_bayes_mag_flatness", "pac_bayes_sharpness",
        "pac_bayes_mag_sharpness"}
    assert INDICATORS["ntk_top_eigenvalue"] == ntk.EXPECTED_SIGN["ntk_top_eigenvalues"]
    assert set(INDICATORS.values()) == {-1, +1}
    assert expected_sign("sharpness_full_eps0p001") == +1
    assert expected_sign("sharpness_full_evaluations_eps0p001") is None
    assert expected_sign("pac_bayes_sigma") is None and expected_sign("loss") is None


def test_convergence_variables_agree_with_the_metric_modules():
    """aggregate.py reads each optimizer's convergence variable from the metrics'
    declarations (no PyTorch in its environment); they must be the ones the metric modules
    write and name."""
    from workflow_src import registry
    from workflow_src.jobs.aggregate import converged_by
    from workflow_src.metrics import hessian, pac_bayes, sharpness

    INDICATORS = registry.indicators()
    for module in (hessian, pac_bayes):
        for name, flag in module.CONVERGED_BY.items():
            assert name in INDICATORS and converged_by(name) == flag, name
    declared = {name for m in registry.metrics().values() for name, v in m.variables.items()
                if "converged_by" in v and not name.endswith("*")}
    assert declared == set(hessian.CONVERGED_BY) | set(pac_bayes.CONVERGED_BY)
    for name, flag in sharpness.CONVERGED_BY.items():  # the measure adds _eps<ε> to both
        assert converged_by(f"{name}_eps0p001") == f"{flag}_eps0p001"
    assert converged_by("hessian_trace") is None and converged_by("margin") is None


def test_indicators_name_their_convergence_variable_when_the_store_has_it():
    jacobian, _ = run_stores(3, "digits", 0, "run_a")
    shard = [xr.concat([jacobian, run_stores(3, "digits", 1, "run_bb")[0]], dim="run"),
             xr.Dataset({"hessian_top_eigenvalue": ("run", [1.0, 2.0]),
                         "hessian_top_converged": ("run", [1.0, 0.0]),
                         "sharpness_full_eps0p001": ("run", [0.1, 0.2]),
                         "sharpness_full_converged_eps0p001": ("run", [0.0, 1.0]),
                         "sharpness_full_status_eps0p001": ("run", [1.0, 0.0]),
                         "sharpness_subspace_eps0p001": ("run", [0.1, 0.2]),  # an older store
                         "pac_bayes_flatness": ("run", [3.0, 4.0])},
                        coords={"run_id": ("run", list(RUNS))})]
    ds = build_metrics(RUNS, SUMMARIES, [shard], "test")
    assert ds["hessian_top_eigenvalue"].attrs["converged_by"] == "hessian_top_converged"
    assert ds["sharpness_full_eps0p001"].attrs["converged_by"] == \
        "sharpness_full_converged_eps0p001"
    for name in ("sharpness_subspace_eps0p001", "pac_bayes_flatness", "jacobian_norm"):
        assert "converged_by" not in ds[name].attrs, name  # no such variable in the store
    assert "role" not in ds["hessian_top_converged"].attrs
    assert ds["sharpness_full_status_eps0p001"].attrs["units"].startswith("L-BFGS-B stop")


def test_indicators_carry_their_expected_sign():
    """Only the registered indicators are marked for the statistics, each with its sign."""
    jacobian, _ = run_stores(3, "digits", 0, "run_a")
    shard = [xr.concat([jacobian, run_stores(3, "digits", 1, "run_bb")[0]], dim="run"),
             xr.Dataset({"margin": ("run", [1.0, 2.0]), "frobenius_sum": ("run", [3.0, 4.0]),
                         "sharpness_full_eps0p001": ("run", [0.1, 0.2]),
                         "pac_bayes_sigma": ("run", [0.1, 0.2])},
                        coords={"run_id": ("run", list(RUNS))})]
    ds = build_metrics(RUNS, SUMMARIES, [shard], "test")
    assert ds["margin"].attrs["expected_sign"] == -1
    assert ds["frobenius_sum"].attrs["expected_sign"] == +1
    assert ds["jacobian_norm"].attrs["expected_sign"] == +1
    assert ds["sharpness_full_eps0p001"].attrs["role"] == "indicator"
    assert "role" not in ds["pac_bayes_sigma"].attrs and "role" not in ds["loss"].attrs
    assert ds["margin"].attrs["units"].startswith("10th percentile")
