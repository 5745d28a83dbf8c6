"""The metric registry (workflow_src/registry.py): every built-in metric is declared in its
module and read without importing torch; a malformed declaration is refused naming its
module; the store names of the metrics that existed before the registry are unchanged; the
config schema, aggregate's signs and convergence variables come from the declarations."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap

import pytest
import yaml
from workflow_helpers import REPO, TINY_CONFIG

from workflow_src import registry
from workflow_src.config import ConfigError, load_schema, validate_config

# The metrics from before the registry, in their measuring order; the metrics added since
# come after them (each metric's own test checks it).
BEFORE_REGISTRY = ("jacobian", "translation", "ellipses", "bounds", "norms", "critical",
                   "hessian", "sharpness", "pac_bayes", "ntk")
BUILT_IN = tuple(registry.metrics())
# The stores of the ten metrics that existed before the registry, as the rules named them
# then (rules/common.smk at ef0401f), for the default study (config.yaml), the tiny study of
# the workflow tests, and the schema's defaults: existing studies keep their stores.
BEFORE = {
    "config.yaml": {"jacobian": "c2358b1e", "translation": "2c4ff13f", "ellipses": "239a1762",
                    "bounds": "c2358b1e", "norms": "44136fa3", "critical": "f27813db",
                    "hessian": "65ba72a4", "sharpness": "c441237c", "pac_bayes": "96553a75",
                    "ntk": "788169ee", "snapshots": "768cd4d3"},
    "tiny": {"jacobian": "6ea18672", "translation": "b2b1a89d", "ellipses": "78dc79df",
             "bounds": "6ea18672", "norms": "44136fa3", "critical": "bc9b835f",
             "hessian": "4a9a1d6b", "sharpness": "c441237c", "pac_bayes": "96553a75",
             "ntk": "8ec946c4", "snapshots": "3ea005c4"},
    "defaults": {"jacobian": "c2358b1e", "translation": "2c8cdec7", "ellipses": "239a1762",
                 "bounds": "c2358b1e", "norms": "44136fa3", "critical": "f27813db",
                 "hessian": "65ba72a4", "sharpness": "c441237c", "pac_bayes": "96553a75",
                 "ntk": "788169ee", "snapshots": "768cd4d3"},
}
STUDIES = {"config.yaml": lambda: yaml.safe_load((REPO / "config.yaml").read_text()),
           "tiny": lambda: copy.deepcopy(TINY_CONFIG),
           "defaults": lambda: {"grid": copy.deepcopy(TINY_CONFIG["grid"])}}


def test_every_built_in_metric_is_declared_in_its_own_module():
    metrics = registry.metrics()
    # the measuring order (aggregate's: the Jacobian first)
    assert tuple(metrics)[:len(BEFORE_REGISTRY)] == BEFORE_REGISTRY
    modules = {p.stem for p in registry.MEASURES.glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(metrics)
    for name, metric in metrics.items():
        assert metric.path == registry.MEASURES / f"{name}.py"
        assert callable(registry.load(name)), name  # the function it names exists
        assert f"measures/{name}" in registry.code_modules(name)
    assert metrics["bounds"].metric_needs == ("jacobian",)
    assert "measures/jacobian" in registry.code_modules("bounds")


def test_declarations_config_and_analysis_modules_are_read_without_torch():
    """What the Snakefile, `python -m workflow_src.config check`, aggregate, the statistics
    and the figures import reads every declaration without importing torch; so does the
    measuring job until it has something to measure."""
    code = textwrap.dedent("""
        import sys, yaml
        from workflow_src import registry, stats
        from workflow_src.jobs import aggregate, measure_shard, snapshots
        from workflow_src.config import load_schema, main, validate_config
        from workflow_src.figures import studies
        assert main(["check"]) == 0
        config = validate_config(yaml.safe_load(open("config.yaml")))
        for name in registry.metrics():
            registry.store_name(name, registry.settings(name, config)), registry.code_sha(name)
        assert aggregate.expected_sign("jacobian_norm") == 1
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")))
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("source, message", [
    ("METRIC = {'name': NAME}\n", "line 1: METRIC must be a pure literal"),
    ("METRIC = {'name': f'{1}'}\n", "METRIC must be a pure literal"),
    ("METRIC = dict(name='broken')\n", "METRIC must be a pure literal"),
    ("X = 1\n", "no top-level METRIC"),
    ("METRIC = [1]\n", "METRIC is a list, not a dict"),
    ("METRIC = {'name': 'broken'}\n", "METRIC lacks keys"),
    ("def f(:\n", "not valid Python"),
], ids=["name", "f-string", "call", "missing", "list", "incomplete", "syntax"])
def test_a_malformed_declaration_is_refused_naming_its_module(tmp_path, source, message):
    (tmp_path / "broken.py").write_text(source)
    with pytest.raises(registry.DeclarationError) as error:
        registry.metrics(tmp_path)
    assert str(tmp_path / "broken.py") in str(error.value) and message in str(error.value)


def declaration(**changes) -> str:
    base = registry.read_declaration(registry.MEASURES / "norms.py")
    return f"METRIC = {({**base, 'name': 'broken', **changes})!r}\n"


@pytest.mark.parametrize("changes, message", [
    ({"name": "other"}, "names 'other', but the module is 'broken'"),
    ({"needs": ["weights", "metric:nothing"]}, "needs metric:nothing"),
    ({"needs": ["weights", "metric:ntk"], "order": 1}, "which must come first"),
    ({"needs": ["the moon"]}, "needs 'the moon'"),
    ({"switch": "sometimes"}, "switch 'sometimes' is not one of its settings"),
    ({"variables": {"x": {"dims": []}}}, "variable 'x' needs dims and a description"),
    ({"variables": {"x": {"dims": [], "description": "d", "sign": 2}}}, "sign must be +1"),
    ({"code": ["metrics/nowhere"]}, "workflow_src/metrics/nowhere.py does not exist"),
    ({"cost": 0}, "cost must be a positive number"),
    ({"settings": {"enabled": {"type": "boolean"}}}, "needs a default and a description"),
], ids=lambda v: str(v)[:30])
def test_an_inconsistent_declaration_is_refused_naming_its_module(tmp_path, changes, message):
    for name in BUILT_IN:
        (tmp_path / f"{name}.py").write_bytes((registry.MEASURES / f"{name}.py").read_bytes())
    (tmp_path / "broken.py").write_text(declaration(**changes))
    with pytest.raises(registry.DeclarationError) as error:
        registry.metrics(tmp_path)
    assert str(tmp_path / "broken.py") in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("study", list(BEFORE))
def test_store_names_of_the_metrics_from_before_the_registry_are_unchanged(study):
    rules = pytest.importorskip("test_store_identities")
    config = validate_config(STUDIES[study]())
    found = rules.rule_file_globals(config, "common.smk", "snapshots.smk")
    names = {m: found["metric_store"](m, "s").rsplit("-", 1)[1].removesuffix(".zarr")
             for m in BEFORE[study] if m != "snapshots"}
    names["snapshots"] = found["SNAPSHOT_STORE"].rsplit("-", 1)[1].removesuffix(".zarr")
    assert names == BEFORE[study]


def test_the_schema_holds_each_metrics_settings_from_its_declaration_once():
    schema = load_schema()
    measure = schema["properties"]["measure"]["properties"]
    for metric in registry.metrics().values():
        if metric.section is None:
            continue
        section = measure[metric.section]
        assert section["description"] == metric.description
        assert set(section["properties"]) == {k for k, s in metric.settings.items()
                                              if "from" not in s}
        for key, setting in section["properties"].items():
            assert not set(setting) & set(registry.REGISTRY_KEYS), key
    enum = measure["snapshots"]["properties"]["metrics"]["items"]["enum"]
    assert enum == [m for m, d in registry.metrics().items() if d.snapshots]
    assert enum[:8] == [m for m in BEFORE_REGISTRY if m not in ("translation", "ellipses")]
    text = (REPO / "schemas" / "config.schema.yaml").read_text()
    for section in ("transitions", "ellipses", "norms", "critical", "hessian", "ntk"):
        assert f"\n      {section}:" not in text  # not repeated in the file
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"]["critical"] = {"n_points": 0}  # the declaration's minimum: 1
    with pytest.raises(ConfigError, match="measure.critical.n_points"):
        validate_config(config)


def test_settings_caps_switches_and_bookkeeping_follow_the_declarations():
    config = validate_config({**copy.deepcopy(TINY_CONFIG), "data": {"n_train": 150,
                                                                      "n_test": 100}})
    assert registry.settings("jacobian", config) == {"n_points": 40}  # measure.n_points
    assert registry.settings("translation", config)["n_points"] == 10
    assert registry.settings("ntk", config)["n_points"] == 150  # capped at data.n_train
    assert registry.switched_on("translation", config)
    config["measure"]["transitions"]["n_points"] = 0
    assert not registry.switched_on("translation", config)
    ntk = registry.settings("ntk", config)
    assert registry.store_name("ntk", {**ntk, "chunk_size": 7}) == \
        registry.store_name("ntk", ntk)  # bookkeeping: no effect on the name
    sharp = registry.settings("sharpness", config)
    assert "restarts" not in registry.hashed_settings("sharpness", sharp)
    assert registry.hashed_settings("sharpness", {**sharp, "restarts": 2})["restarts"] == 2


def test_aggregate_signs_and_convergence_variables_come_from_the_declarations():
    from workflow_src.jobs.aggregate import converged_by, expected_sign, units
    from workflow_src.metrics import hessian, norms, ntk, pac_bayes, sharpness

    indicators = registry.indicators()
    for module in (norms, pac_bayes, ntk):  # the signs each metric module states and argues
        for name, sign in module.EXPECTED_SIGN.items():
            if name in indicators:
                assert indicators[name] == sign, name
    assert set(norms.EXPECTED_SIGN) <= set(indicators)
    assert indicators["ntk_top_eigenvalue"] == ntk.EXPECTED_SIGN["ntk_top_eigenvalues"]
    for module in (hessian, pac_bayes):
        for name, flag in module.CONVERGED_BY.items():
            assert converged_by(name) == flag, name
    for name, flag in sharpness.CONVERGED_BY.items():
        assert converged_by(f"{name}_eps0p001") == f"{flag}_eps0p001"
    assert expected_sign("sharpness_full_eps0p0005") == 1
    assert expected_sign("sharpness_full_evaluations_eps0p001") is None
    assert expected_sign("pac_bayes_sigma") is None and expected_sign("loss") is None
    assert converged_by("margin") is None
    assert units("sharpness_subspace_status_eps0p001").startswith("L-BFGS-B stop")
    assert units("gap") == "fraction (train_acc - test_acc)"
    assert units("ellipse_transitions_init").startswith("as ellipse_transitions")


def test_a_declarations_text_is_not_part_of_its_code_hash(tmp_path, monkeypatch):
    """Editing a metric's units, descriptions or cost re-measures nothing; editing its
    function does."""
    import shutil

    package = tmp_path / "workflow_src"
    shutil.copytree(registry.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(registry, "PACKAGE", package)
    monkeypatch.setattr(registry, "MEASURES", package / "measures")
    for cached in (registry.metrics, registry.code_sha, registry._variables):
        cached.cache_clear()
    try:
        before = {m: registry.code_sha(m) for m in BUILT_IN}
        path = package / "measures" / "norms.py"
        path.write_text(path.read_text().replace('"cost": 0.06', '"cost": 0.6'))
        registry.code_sha.cache_clear()
        assert {m: registry.code_sha(m) for m in BUILT_IN} == before
        path.write_text(path.read_text() + "\n# an edit of its code\n")
        registry.code_sha.cache_clear()
        after = {m: registry.code_sha(m) for m in BUILT_IN}
        assert {m for m in BUILT_IN if after[m] != before[m]} == {"norms"}
        metrics = package / "metrics" / "jacobian.py"
        metrics.write_text(metrics.read_text() + "\n")
        registry.code_sha.cache_clear()
        changed = {m for m in BUILT_IN if registry.code_sha(m) != after[m]}
        assert changed == {"jacobian", "bounds", "translation", "ellipses", "hessian",
                           "sharpness", "pac_bayes"}
    finally:
        for cached in (registry.metrics, registry.code_sha, registry._variables):
            cached.cache_clear()


def test_every_declared_variable_has_units_or_is_bookkeeping_of_an_indicator():
    """Indicators carry units (the figures' axis titles read them from metrics.zarr)."""
    for metric in registry.metrics().values():
        for name, variable in metric.variables.items():
            if "sign" in variable:
                assert "units" in variable, f"{metric.name}: indicator {name} has no units"
            json.dumps(variable)  # plain data


NO_TORCH = '''
import sys


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} imported while parsing the workflow")


sys.meta_path.insert(0, Refuse())
'''


@pytest.mark.workflow
def test_parsing_the_snakefile_imports_no_torch(tmp_path, monkeypatch):
    """A dry run in an interpreter that refuses torch (a sitecustomize module) plans the
    study with every metric on: the Snakefile, the rules and the registry never import it."""
    import os

    from workflow_helpers import snakemake

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_TORCH)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path / "site"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    guard = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                           text=True)
    assert "imported while parsing" in guard.stderr  # the guard works
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"].update({m: {"enabled": True} for m, d in registry.metrics().items()
                              if d.switch == "enabled"})
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^measure\s+2$", result.stdout, re.MULTILINE), result.stdout


def test_the_measuring_jobs_runtime_request_follows_the_metrics_costs_and_shard_size():
    from types import SimpleNamespace

    rules = pytest.importorskip("test_store_identities")
    config = validate_config(copy.deepcopy(TINY_CONFIG))
    found = rules.rule_file_globals(config, "common.smk")
    shard = next(iter(found["SHARDS"]))
    size = len(found["SHARDS"][shard])
    seconds = sum(registry.metric(m).cost for m in found["MEASURED"]) * size
    minutes = found["measure_minutes"](SimpleNamespace(shard=shard), 1)
    assert minutes == 10 + -(-3 * seconds // 60)
    assert found["measure_minutes"](SimpleNamespace(shard=shard), 2) == 2 * minutes
    config["measure"]["ntk"]["enabled"] = True  # 209 s a network
    more = rules.rule_file_globals(config, "common.smk")["measure_minutes"](
        SimpleNamespace(shard=shard), 1)
    assert more == 10 + -(-3 * (seconds + 209.0 * size) // 60) and more > minutes
