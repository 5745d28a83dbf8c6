"""The metric stores' and the snapshot store's names (rules/common.smk METRIC_SETTINGS and
metric_store, rules/snapshots.smk SNAPSHOT_SETTINGS): each setting of a metric renames that
metric's store and no other; an `enabled` switch, the key order and bookkeeping settings
rename none. The rule files' own top-level Python is run here on a config (their Snakemake
blocks left out), and one dry run checks that Snakemake plans exactly those names."""

from __future__ import annotations

import copy
import functools
import re
from types import SimpleNamespace

import pytest
from workflow_helpers import REPO, TINY_CONFIG, snakemake

from workflow_src.config import load_schema, validate_config
from workflow_src.runtable import stable_hash

METRICS = ("jacobian", "translation", "ellipses", "bounds", "norms", "critical", "hessian",
           "sharpness", "pac_bayes", "ntk")
SECTION = {"translation": "transitions"}  # the measure.<section> of each metric's settings
SNAKEMAKE_BLOCK = re.compile(r"^(rule|checkpoint) \w+\s*:|^(wildcard_constraints|localrules"
                             r"|ruleorder|report|include|envvars)\s*:")


def rule_file_globals(config: dict, *names: str) -> dict:
    """The globals that the top-level Python of rules/<name> leaves, in order, for ``config``:
    each Snakemake block (``rule x:``, ``wildcard_constraints:``, ...) and its indented body
    are blanked (line numbers kept for tracebacks)."""
    namespace = {"config": config, "workflow": SimpleNamespace(basedir=str(REPO)),
                 "report": lambda path, **_: path,
                 "rules": SimpleNamespace(**{name: SimpleNamespace(output=[]) for name in
                                             ("plot_snapshots",)})}
    exec("import os", namespace)
    for name in names:
        lines, in_block = [], False
        for line in (REPO / "rules" / name).read_text().splitlines():
            if SNAKEMAKE_BLOCK.match(line):
                in_block = True
            elif in_block and line.strip() and not line[0].isspace():
                in_block = False
            lines.append("" if in_block else line)
        exec(compile("\n".join(lines), str(REPO / "rules" / name), "exec"), namespace)
    return namespace


def base_config() -> dict:
    """The tiny study with every setting inside the limits that clip it (n_points below the
    data's sizes), so that halving any count reaches the store's settings."""
    config = copy.deepcopy(TINY_CONFIG)
    config["data"] = {"n_train": 10_000, "n_test": 2_000}
    config["measure"] = {"n_points": 500}
    return validate_config(config)


def store_names(config: dict) -> dict[str, str]:
    """metric -> its store's path for one shard, and "snapshots" -> the snapshot store's."""
    found = rule_file_globals(config, "common.smk", "snapshots.smk")
    names = {metric: found["metric_store"](metric, "s") for metric in METRICS}
    return {**names, "snapshots": found["SNAPSHOT_STORE"].format(shard="s")}


@functools.cache
def base_names() -> dict[str, str]:
    return store_names(base_config())


def other_value(value):
    """A different value of a setting's type, inside any clipping limit: counts halve."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value // 2 if value > 1 else value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, list):
        return value[:1] if len(value) > 1 else value * 2
    raise TypeError(value)


# Settings the schema documents as having no effect on results.
BOOKKEEPING = [("ntk", "chunk_size")]
NTK_CHUNK_BUG = ("measure.ntk.chunk_size ('no effect on results', per the schema) is hashed "
                 "into the NTK store's name (rules/common.smk), so changing it re-measures "
                 "every network's NTK")


def settings_fields():
    """(metric, setting) for every setting the schema gives each metric but `enabled` and
    the bookkeeping ones."""
    measure = load_schema()["properties"]["measure"]["properties"]
    return [(metric, key) for metric in METRICS if metric not in ("jacobian", "bounds")
            for key in measure[SECTION.get(metric, metric)]["properties"]
            if key != "enabled" and (metric, key) not in BOOKKEEPING]


def changed_stores(**measure_changes) -> set[str]:
    config = base_config()
    for dotted, value in measure_changes.items():
        section, _, key = dotted.rpartition("__")
        (config["measure"][section] if section else config["measure"])[key] = value
    after = store_names(config)
    return {metric for metric, name in base_names().items() if name != after[metric]}


@pytest.mark.parametrize("metric, key", settings_fields(),
                         ids=[f"{metric}.{key}" for metric, key in settings_fields()])
def test_each_setting_of_a_metric_renames_that_metrics_store_only(metric, key):
    section = SECTION.get(metric, metric)
    value = base_config()["measure"][section][key]
    changed = changed_stores(**{f"{section}__{key}": other_value(value)})
    # the snapshot store holds the settings of the metrics it measures (default: critical)
    assert changed == {metric} | ({"snapshots"} if metric == "critical" else set())


def test_the_number_of_test_points_renames_the_stores_that_read_them():
    assert changed_stores(n_points=250) == {"jacobian", "bounds", "snapshots"}


SWITCHED = ("norms", "critical", "hessian", "sharpness", "pac_bayes", "ntk")


@pytest.mark.parametrize("metric", SWITCHED)
def test_switching_a_metric_on_or_off_renames_no_store(metric):
    assert SWITCHED == rule_file_globals(base_config(), "common.smk")["INDICATOR_METRICS"]
    assert changed_stores(**{f"{metric}__enabled": not base_config()["measure"][metric]
                             ["enabled"]}) == set()


@pytest.mark.parametrize("metric", [m for m in METRICS if m not in ("jacobian", "bounds")])
def test_the_order_of_a_metrics_settings_renames_no_store(metric):
    section = SECTION.get(metric, metric)
    settings = base_config()["measure"][section]
    assert changed_stores(**{section: dict(reversed(list(settings.items())))}) == set()


@pytest.mark.xfail(strict=True, reason=NTK_CHUNK_BUG)
@pytest.mark.parametrize("metric, key", BOOKKEEPING)
def test_a_metric_setting_without_effect_on_results_renames_no_store(metric, key):
    value = base_config()["measure"][metric][key]
    assert changed_stores(**{f"{metric}__{key}": other_value(value)}) == set()


@pytest.mark.parametrize("section, key, value", [
    ("training", "threads", 4), ("training", "checkpoint_every", 7), ("training", "device", "cpu"),
    ("measure", "chunk_size", 16), ("shards", "size", 1), ("stats", "n_boot", 500),
    ("plots", "color_by", "depth")], ids=lambda v: str(v))
def test_bookkeeping_settings_rename_no_store(section, key, value):
    config = base_config()
    config[section][key] = value
    assert store_names(config) == base_names()


def test_the_exact_cnn_walk_enters_the_translation_store_only_when_on():
    """Stores of studies from before the switch keep their names: off, it is not hashed."""
    measure = base_config()["measure"]
    legacy = {"n_points": measure["transitions"]["n_points"],
              "k_sampled": measure["transitions"]["k_sampled"],
              "jacobian_positions": measure["transitions"]["jacobian_positions"]}
    assert base_names()["translation"] == \
        f"results/shards/s/translation-{stable_hash(legacy, 8)}.zarr"
    assert changed_stores(transitions__exact_cnn=True) == {"translation"}


@pytest.mark.parametrize("change, renamed", [
    ({"steps": [1, 10, 100]}, True), ({"metrics": ["critical"]}, True),
    ({"metrics": ["critical", "jacobian", "norms"]}, True),
    ({"steps": [10000, 1000, 100, 10, 1, 10]}, False),  # order and repeats do not count
    ({"metrics": ["jacobian", "critical"]}, False), ({"enabled": True}, False)],
    ids=lambda v: str(v))
def test_the_snapshot_store_is_named_by_its_steps_and_metrics(change, renamed):
    config = base_config()
    config["measure"]["snapshots"].update(change)
    assert (store_names(config)["snapshots"] != base_names()["snapshots"]) is renamed


@pytest.mark.workflow
def test_snakemake_plans_the_stores_named_here(tmp_path):
    """A dry run of a study with every metric on plans exactly these stores' paths."""
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"] = {**copy.deepcopy(TINY_CONFIG["measure"]),
                         **{m: {"enabled": True} for m in METRICS[4:]},
                         "snapshots": {"enabled": True, "metrics": ["critical", "jacobian"]}}
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    planned = set(re.findall(r"results/shards/[0-9a-f]{12}/\w+-[0-9a-f]{8}\.zarr",
                             result.stdout))
    found = rule_file_globals(validate_config(copy.deepcopy(config)), "common.smk",
                              "snapshots.smk")
    expected = {found["metric_store"](metric, shard) for metric in METRICS
                for shard in found["SHARDS"]}
    expected |= {found["SNAPSHOT_STORE"].format(shard=shard) for shard in found["SHARDS"]}
    assert planned == expected and len(expected) == 2 * 11
