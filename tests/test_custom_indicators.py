"""Indicators a user brings (measure.custom, workflow_src/custom.py): the example's numbers
against a NumPy SVD reference, the declaration checks, the measuring job with a custom
indicator (stored, reused, re-measured when its source changes) and with broken ones (each
named, every other store intact), and the example through a tiny study to summary.csv."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from workflow_src import integrity, registry
from workflow_src.jobs import measure_shard as ms
from workflow_src.config import ConfigError
from workflow_src.nets.models import ModelSpec, build_model
from workflow_src.nets.checked import load_checked
from workflow_src.paths import run_folder

from test_measure_job import SHARD, results, run_job, runs, trained  # noqa: F401 (fixtures)
from workflow_helpers import REPO, TINY_CONFIG, snakemake, tiny_study

sys.path.insert(0, str(REPO))
from examples.indicators import spectral  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODULE = "gensens_test_indicators"
# A module of indicators, good and broken, written into the working directory of a test.
SOURCE = '''
import numpy as np
import torch
{extra}
INDICATORS = {{
    "good": {{"description": "readout weight sum and the test points' top logit",
              "variables": {{
                  "readout_sum": {{"dims": [], "sign": 1, "units": "sum", "description": "s"}},
                  "top_logit": {{"dims": ["point"], "sign": -1, "units": "logit",
                                 "description": "max logit"}}}}}},
}}


def good(model, data, settings):
    x, _ = data.test()
    with torch.no_grad():
        top = model(x).amax(dim=1)
        readout = float(model.readout.weight.sum())
        for p in model.parameters():
            p.mul_(2.0)  # its own copy: nothing else sees this
    return {{"readout_sum": readout * settings.get("scale", 1), "top_logit": top}}


def again(model, data, settings):
    return {{"readout_again": model.readout.weight.sum()}}


def raises(model, data, settings):
    raise ArithmeticError("the indicator diverged")


def wrong_shape(model, data, settings):
    return {{"value": np.zeros(3)}}


def nan(model, data, settings):
    return {{"value": float("nan")}}


def inf(model, data, settings):
    return {{"value": np.inf}}


def not_a_dict(model, data, settings):
    return 1.0


def extra(model, data, settings):
    return {{"value": 1.0, "surprise": 2.0}}
'''
SCALAR = {"value": {"dims": [], "sign": 1, "units": "u", "description": "d"}}
AGAIN = {"callable": f"{MODULE}:again", "variables": {
    "readout_again": {"dims": [], "units": "sum", "description": "the readout's sum"}}}


def write_module(folder: Path, extra: str = "") -> Path:
    path = folder / f"{MODULE}.py"
    path.write_text(SOURCE.format(extra=extra))
    sys.modules.pop(MODULE, None)
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory holding the test module; the registry's customs reset after."""
    folder = tmp_path / "work"
    folder.mkdir()
    write_module(folder)
    monkeypatch.chdir(folder)
    yield folder
    registry.use_custom([])
    sys.modules.pop(MODULE, None)


def custom_metrics(results, *entries) -> dict[str, dict]:
    """norms and the entries, as the measure job gets them."""
    registry.use_custom(list(entries))
    config = tiny_study(measure__custom=list(entries))
    return {"norms": {}, **{m: registry.settings(m, config) for m, d in
                            registry.metrics().items() if d.custom is not None}}


# --- the example: Bartlett et al.'s spectral complexity against NumPy -------------------------

def reference(weights, initial, rho) -> float:
    """R_A by NumPy's SVD and explicit row sums, float64."""
    spectral = [np.linalg.svd(a, compute_uv=False)[0] for a in weights]
    rows = [sum(np.sqrt(((a - m)[k] ** 2).sum()) for k in range(a.shape[0]))
            for a, m in zip(weights, initial)]
    distance = sum((r / s) ** (2 / 3) for r, s in zip(rows, spectral)) ** 1.5
    return float(np.prod([r * s for r, s in zip(rho, spectral)]) * distance)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_spectral_complexity_matches_a_numpy_svd_reference(scale):
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (6, 7), (3, 6)]
    weights = [scale * rng.standard_normal(s) for s in shapes]
    initial = [rng.standard_normal(s) for s in shapes]
    rho = [1.0, 1 / 6, 1.0]
    got, _ = spectral.complexity([torch.tensor(w) for w in weights],
                                 [torch.tensor(m) for m in initial], rho)
    assert got == pytest.approx(reference(weights, initial, rho), rel=1e-12)


def test_spectral_complexity_is_zero_at_initialisation_and_refuses_a_zero_matrix():
    w = [torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)]
    assert spectral.complexity(w, [a.clone() for a in w], [1.0, 1.0]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="zero"):
        spectral.complexity([torch.zeros(4, 3, dtype=torch.float64), w[1]], w, [1.0, 1.0])


@pytest.mark.parametrize("activation", ["relu", "hard_sigmoid"])
def test_the_example_on_a_network_matches_the_reference(activation):
    spec = ModelSpec((1, 8, 8), 10, 9, 2, activation, True)
    model, start = build_model(spec, 1), build_model(spec, 0)

    class Data:
        def initial_model(self):
            return start
    out = spectral.spectral_complexity(model, Data(), {})
    w = [layer.weight.detach().double().numpy() for layer in [*model.hidden, model.readout]]
    m = [layer.weight.detach().double().numpy() for layer in [*start.hidden, start.readout]]
    rho = spectral.LIPSCHITZ[activation]
    assert out["spectral_complexity"] == pytest.approx(reference(w, m, [rho, rho, 1.0]),
                                                       rel=1e-10)


# --- declarations -----------------------------------------------------------------------------

@pytest.mark.parametrize("entry, message", [
    ({"callable": f"{MODULE}:good", "name": "norms"}, "name 'norms' is already a metric's"),
    ({"callable": f"{MODULE}:x", "variables": {"margin": SCALAR["value"]}},
     "variable 'margin' is already a variable of metric norms"),
    ({"callable": f"{MODULE}:x", "variables": {"gap": SCALAR["value"]}},
     "variable 'gap' is already a variable of metrics.zarr"),
    ({"callable": f"{MODULE}:good", "variables": SCALAR}, "keep the declaration in one place"),
    ({"callable": f"{MODULE}:raises"}, "has no declaration"),
    ({"callable": "no_such_module_here:f", "variables": SCALAR}, "neither in the working"),
    ({"callable": f"{MODULE}:x", "variables": {"v": {"dims": ["run"], "description": "d"}}},
     r"dims \[\] \(one value per network\) or \[point\]"),
    ({"callable": f"{MODULE}:x", "variables": {"v": {**SCALAR["value"], "sign": 2}}},
     "sign must be"),
    ({"callable": f"{MODULE}:x", "variables": {"v": {**SCALAR["value"], "color": 1}}},
     "its keys are"),
])
def test_the_config_check_refuses_a_bad_entry(workdir, entry, message):
    with pytest.raises(ConfigError, match=message) as error:
        tiny_study(measure__custom=[entry])
    assert "config key measure.custom[0]" in str(error.value)


@pytest.mark.parametrize("entry, message", [
    ({"callable": "mod.function"}, "does not match"),
    ({"callable": "a:b", "colour": "red"}, "'colour' was unexpected"),
])
def test_the_schema_refuses_bad_syntax_and_unknown_keys(workdir, entry, message):
    with pytest.raises(ConfigError, match=message):
        tiny_study(measure__custom=[entry])


def test_a_declaration_in_the_entry_or_the_module_is_read_without_importing(workdir):
    registry.use_custom([{"callable": f"{MODULE}:good"},
                         {"callable": f"{MODULE}:nan", "variables": SCALAR, "cost": 2}])
    assert MODULE not in sys.modules
    assert registry.expected_sign("top_logit") == -1 and registry.units("value") == "u"
    assert list(registry.metrics())[-2:] == ["good", "nan"]
    assert registry.metric("nan").cost == 2.0 and registry.code_modules("good") == [
        "custom", "nets/cnn_codes", "nets/cnns", "nets/models", "nets/spec"]


# --- the measuring job ------------------------------------------------------------------------

def test_a_custom_indicator_is_measured_stored_reused_and_re_measured_when_edited(
        results, workdir):
    # good doubles its model's weights after measuring: again, next, gets them as trained
    metrics = custom_metrics(results, {"callable": f"{MODULE}:good", "settings": {"scale": 3}},
                             AGAIN)
    record, stores, lines = run_job(results, metrics)
    assert Path(stores["good"]).name.startswith("good-")
    assert integrity.check_store(stores["good"]) == []
    folder, data_stores = results
    with xr.open_zarr(stores["good"]) as ds:
        assert ds["top_logit"].dims == ("run", "point")
        for i, run in enumerate(runs()):
            run_dir = run_folder(folder, run.id)
            model = load_checked(run_dir / "model.pt", run_dir / "train.json", "cpu")
            data = integrity.open_store(data_stores[run.data.id])
            n = metrics["good"]["n_points"]
            with torch.no_grad():
                top = model(torch.tensor(data["x_test"].values[:n])).amax(dim=1).numpy()
            readout = float(model.readout.weight.detach().sum())
            assert ds["readout_sum"].values[i] == pytest.approx(3 * readout, rel=1e-6)
            with xr.open_zarr(stores["again"]) as other:
                assert other["readout_again"].values[i] == pytest.approx(readout, rel=1e-6)
            np.testing.assert_allclose(ds["top_logit"].values[i], top, rtol=1e-6)
    _, _, again = run_job(results, metrics)
    assert any("good: reused" in line for line in again)
    # A changed description renames nothing; a changed function re-measures it only.
    path = workdir / f"{MODULE}.py"
    path.write_text(path.read_text().replace("max logit", "the largest logit"))
    assert custom_metrics(results, {"callable": f"{MODULE}:good",
                                    "settings": {"scale": 3}}, AGAIN) == metrics
    path.write_text(path.read_text() + "\n# an edit of its code\n")
    sys.modules.pop(MODULE, None)
    edited = custom_metrics(results, {"callable": f"{MODULE}:good", "settings": {"scale": 3}},
                            AGAIN)
    assert edited["good"]["source"] != metrics["good"]["source"]
    _, _, lines = run_job(results, edited)
    # both functions live in the edited module: both are measured again, norms is not
    assert [line.split(":")[0] for line in lines if ": to measure:" in line] == [
        "good", "again"]
    rescaled = custom_metrics(results, {"callable": f"{MODULE}:good",
                                        "settings": {"scale": 4}}, AGAIN)
    _, _, lines = run_job(results, rescaled)
    assert [line.split(":")[0] for line in lines if ": to measure:" in line] == ["good"]


BROKEN = [
    ("raises", "raised ArithmeticError: the indicator diverged"),
    ("wrong_shape", r"'value' has shape \(3,\); its dims \[\] .* ask for shape \(\)"),
    ("nan", "'value' is NaN: an indicator must be finite"),
    ("inf", "'value' is an infinite value: an indicator must be finite"),
    ("not_a_dict", "returned a float, not a dict"),
    ("extra", r"returned variables \['value', 'surprise'\], declared \['value'\]"),
    ("missing_function", "has no function 'missing_function'"),
]


@pytest.mark.parametrize("function, message", BROKEN)
def test_a_broken_indicator_is_named_and_every_other_store_is_intact(
        results, workdir, function, message):
    metrics = custom_metrics(results, {"callable": f"{MODULE}:{function}", "name": "broken",
                                       "variables": SCALAR})
    with pytest.raises(ms.MetricFailed, match=message) as error:
        run_job(results, metrics)
    text = str(error.value)
    assert f"metric broken ({MODULE}:{function}) of network {runs()[0].id} in shard " \
           f"{SHARD}" in text
    folder = results[0] / "shards" / SHARD
    assert integrity.check_store(folder / registry.store_name("norms", {})) == []
    assert not (folder / registry.store_name("broken", metrics["broken"])).exists()
    assert not list(folder.glob("measured-*.json"))


def test_a_module_that_cannot_be_imported_is_named_with_the_fix(results, workdir):
    write_module(workdir, extra="import no_such_package_at_all")
    metrics = custom_metrics(results, {"callable": f"{MODULE}:nan", "name": "broken",
                                       "variables": SCALAR})
    with pytest.raises(ms.MetricFailed) as error:
        run_job(results, metrics)
    text = str(error.value)
    assert f"metric broken ({MODULE}:nan) of network {runs()[0].id} in shard {SHARD}" in text
    assert f"cannot import {MODULE}" in text and "No module named 'no_such_package_at_all'" \
        in text and "Fix the module" in text
    assert integrity.check_store(results[0] / "shards" / SHARD /
                                 registry.store_name("norms", {})) == []


# --- through a study --------------------------------------------------------------------------

@pytest.mark.workflow
@pytest.mark.slow
def test_the_example_is_measured_scored_and_drawn_in_a_tiny_study(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    config = {**TINY_CONFIG, "measure": {**TINY_CONFIG["measure"], "custom": [
        {"callable": "examples.indicators.spectral:spectral_complexity"}]}}
    target = "results/tiny/stats/summary.csv"
    figures = [f"results/tiny/figures/{stem}.html"
               for stem in ("indicators_vs_gap", "indicator_ranking")]
    done = snakemake(tmp_path, config, target, *figures)
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in figures:  # drawn like the built-in indicators (the spec holds its data)
        assert "spectral_complexity" in (tmp_path / figure).read_text(), figure
    import pandas as pd

    summary = pd.read_csv(tmp_path / target)
    row = summary[summary["indicator"] == "spectral_complexity"]
    assert len(row) >= 1 and set(row["expected_sign"]) == {1}
    assert row["kendall_tau"].notna().all() and row["psi"].notna().all()
    assert "spectral_complexity_distance" not in set(summary["indicator"])
    with xr.open_zarr(tmp_path / "results/tiny/metrics.zarr") as ds:
        values = ds["spectral_complexity"].values
        assert ds["spectral_complexity"].attrs["role"] == "indicator"
        assert np.isfinite(values).all() and (values > 0).all()
