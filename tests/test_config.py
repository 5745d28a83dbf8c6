"""Config validation: defaults filled, bad values named with what is allowed."""

from __future__ import annotations

import copy

import pytest
import yaml
from workflow_helpers import REPO, TINY_CONFIG

from workflow_src.config import ConfigError, load_schema, validate_config
from workflow_src.runtable import HYPERPARAMETERS, build_run_table


def _validated(**overrides):
    config = copy.deepcopy(TINY_CONFIG)
    for dotted, value in overrides.items():
        *path, last = dotted.split("__")
        node = config
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return validate_config(config)


def test_default_config_is_valid_and_has_at_least_12_networks():
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    runs = build_run_table(config)
    assert len(runs) >= 12
    assert 1.0 in {run.data.label_noise for run in runs.values()}


def test_defaults_are_filled():
    config = _validated()
    assert config["training"]["target_train_acc"] == 1.0
    assert config["plots"]["color_by"] == "label_noise"


@pytest.mark.parametrize("key, value, expected", [
    ("grid__activation", ["gelu"], "grid.activation[0]"),
    ("grid__label_noise", [1.5], "grid.label_noise[0]"),
    ("grid__optimizer", ["lbfgs"], "grid.optimizer[0]"),
    ("data__n_train", 3, "data.n_train"),
    ("training__device", "tpu", "training.device"),
    ("plots__color_by", "colour", "plots.color_by"),
])
def test_bad_value_names_the_key(key, value, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        _validated(**{key: value})


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match="n_trian.*allowed keys: .*n_train"):
        _validated(data__n_trian=5)


def test_measure_points_cannot_exceed_test_set():
    with pytest.raises(ConfigError, match="measure.n_points"):
        _validated(measure__n_points=1000)


def test_every_schema_key_has_description_and_default():
    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{key} lacks a description"
            assert "default" in sub, f"{path}{key} lacks a default"
            walk(sub, f"{path}{key}.")

    walk(load_schema(), "")


def test_every_schema_key_is_commented_in_config_yaml():
    text = (REPO / "config.yaml").read_text()
    schema = load_schema()
    for section, sub in schema["properties"].items():
        keys = sub.get("properties", {}) or ({h: None for h in HYPERPARAMETERS}
                                             if section == "grid" else {section: None})
        for key in keys:
            line = next((ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:")), None)
            assert line is not None and "#" in line, f"config.yaml lacks a commented {key}"


def test_equal_runs_share_one_id_and_bookkeeping_does_not_change_it():
    config = _validated()
    ids = set(build_run_table(config))
    config["training"]["threads"] = 4
    config["training"]["device"] = "cpu"
    config["plots"]["color_by"] = "depth"
    assert set(build_run_table(config)) == ids
    config["grid"] = [config["grid"], config["grid"]]  # the same block twice: no new runs
    assert set(build_run_table(config)) == ids
    config["training"]["max_steps"] = 7
    assert set(build_run_table(config)).isdisjoint(ids)
