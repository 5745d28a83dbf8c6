"""The metric stores' and the snapshot store's names (rules/common.smk METRIC_SETTINGS and
metric_store, from each metric's declaration in workflow_src/measures/; rules/snapshots.smk
SNAPSHOT_SETTINGS): each setting of a metric renames that metric's store and no other; an
`enabled` switch, the key order and bookkeeping settings rename none. The rule files' own
top-level Python is run here on a config (their Snakemake blocks left out), and one dry run
checks that Snakemake plans the measure records and snapshot stores of those names."""

from __future__ import annotations

import copy
import functools
import re
from types import SimpleNamespace

import pytest
from workflow_helpers import REPO, TINY_CONFIG, snakemake

from workflow_src import registry
from workflow_src.config import load_schema, validate_config
from workflow_src.runtable import stable_hash

METRICS = tuple(registry.metrics())
# the measure.<section> of each metric's settings (jacobian and bounds have none)
SECTION = {m: d.section for m, d in registry.metrics().items() if d.section}
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
    # implicit_bias's default (100,000: every training point) is above n_train.
    config["measure"] = {"n_points": 500, "implicit_bias": {"n_points": 1_000}}
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


# Settings the schema documents as having no effect on results (hash: "default").
BOOKKEEPING = [(m, key) for m, d in registry.metrics().items()
               for key, setting in d.settings.items() if setting.get("hash") == "default"]


def settings_fields():
    """(metric, setting) for every setting the schema gives each metric but `enabled` and
    the bookkeeping ones."""
    measure = load_schema()["properties"]["measure"]["properties"]
    return [(metric, key) for metric in SECTION
            for key in measure[SECTION[metric]]["properties"]
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
    section = SECTION[metric]
    value = base_config()["measure"][section][key]
    changed = changed_stores(**{f"{section}__{key}": other_value(value)})
    # the snapshot store holds the settings of the metrics it measures (default: critical)
    assert changed == {metric} | ({"snapshots"} if metric == "critical" else set())


def test_the_number_of_test_points_renames_the_stores_that_read_them():
    assert changed_stores(n_points=250) == {"jacobian", "bounds", "snapshots"}


SWITCHED = tuple(m for m, d in registry.metrics().items() if d.switch == "enabled")


@pytest.mark.parametrize("metric", SWITCHED)
def test_switching_a_metric_on_or_off_renames_no_store(metric):
    assert SWITCHED[:6] == ("norms", "critical", "hessian", "sharpness", "pac_bayes", "ntk")
    assert SWITCHED == rule_file_globals(base_config(), "common.smk")["INDICATOR_METRICS"]
    assert changed_stores(**{f"{metric}__enabled": not base_config()["measure"][metric]
                             ["enabled"]}) == set()


@pytest.mark.parametrize("metric", list(SECTION))
def test_the_order_of_a_metrics_settings_renames_no_store(metric):
    section = SECTION[metric]
    settings = base_config()["measure"][section]
    assert changed_stores(**{section: dict(reversed(list(settings.items())))}) == set()


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
    """A dry run of a study with every metric on plans the measure records named by exactly
    these stores' names (the stores themselves are not outputs) and these snapshot stores."""
    config = copy.deepcopy(TINY_CONFIG)
    config["measure"] = {**copy.deepcopy(TINY_CONFIG["measure"]),
                         **{m: {"enabled": True} for m in SWITCHED},
                         "snapshots": {"enabled": True, "metrics": ["critical", "jacobian"]}}
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    planned = set(re.findall(r"results/shards/[0-9a-f]{12}/\w+-[0-9a-f]{8}\.(?:zarr|json)",
                             result.stdout))
    found = rule_file_globals(validate_config(copy.deepcopy(config)), "common.smk",
                              "snapshots.smk")
    names = sorted(found["metric_store"](m, "s").rsplit("/", 1)[1] for m in METRICS)
    expected = {f"results/shards/{shard}/measured-{stable_hash(names, 8)}.json"
                for shard in found["SHARDS"]}
    expected |= {found["SNAPSHOT_STORE"].format(shard=shard) for shard in found["SHARDS"]}
    assert found["MEASURED"] == list(METRICS)
    assert planned == expected and len(expected) == 2 * 2
