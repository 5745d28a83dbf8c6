"""Config loading and validation: a study is exactly its files plus --config, then the
schema's defaults; bad values are named with what is allowed."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import immutables
import pytest
import yaml
from workflow_helpers import REPO, SNAKEMAKE, TINY_CONFIG, planned_shards
from workflow_helpers import tiny_study as _validated

from workflow_src.config import (SCHEMA_PATH, ConfigError, load_schema, load_study, main,
                                 read_study_file, study_files, validate_config)
from workflow_src.runtable import HYPERPARAMETERS, REQUIRED_AXES, build_run_table
from workflow_src.shards import plan_shards


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
    ("grid__optimizer", ["bfgs"], "grid.optimizer[0]"),
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
    """Every key is described and has a default, except the required ones (the grid)."""
    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{key} lacks a description"
            assert ("default" in sub) != (key in node.get("required", [])), (
                f"{path}{key}: a key has a default exactly when it is not required")
            walk(sub, f"{path}{key}.")

    walk(load_schema(), "")


def test_a_study_without_grid_is_an_error_naming_it():
    config = copy.deepcopy(TINY_CONFIG)
    del config["grid"]
    with pytest.raises(ConfigError, match="config key grid is missing"):
        validate_config(config)


def test_every_schema_key_is_commented_in_config_yaml():
    """Every key of the schema file, and every metric section the demo study lists (a
    metric's own settings are described in its declaration, workflow_src/measures/, which
    config.load_schema merges in: a new metric need not appear in config.yaml)."""
    text = (REPO / "config.yaml").read_text()
    schema = load_schema()
    with open(SCHEMA_PATH) as handle:
        in_file = set(yaml.safe_load(handle)["properties"]["measure"]["properties"])
    listed = [line.strip().split(":")[0] for line in text.splitlines()]
    sections = schema["properties"]["measure"]["properties"]
    for key in [k for k in sections if k not in in_file and k not in listed]:
        del sections[key]
    for section, sub in schema["properties"].items():
        keys = sub.get("properties", {}) or ({h: None for h in HYPERPARAMETERS}
                                             if section == "grid" else {section: None})
        for key in keys:
            line = next((ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:")), None)
            assert line is not None and "#" in line, f"config.yaml lacks a commented {key}"


def test_hyperparameters_are_the_grid_values_of_the_run():
    """Each coordinate is the run's own grid value, e.g. `seed` the network's seed, not the
    data's (data.seed, which seeds the subset: both are called seed)."""
    config = _validated()
    config["data"]["seed"] = 5
    config["grid"] = {**config["grid"], "seed": [0, 1, 2]}
    runs = list(build_run_table(config).values())
    assert sorted({run.hyperparameters()["seed"] for run in runs}) == [0, 1, 2]
    for run in runs:
        values = run.hyperparameters()
        assert values["seed"] == run.seed and values["dataset"] == run.data.dataset
        assert values["label_noise"] == run.data.label_noise and values["width"] == run.width


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


# --- What a study is made of: its files, --config, the schema's defaults ---------------------

def _write(path, config: dict):
    path.write_text(yaml.safe_dump(config))
    return path


def test_study_files_are_the_configfiles_else_config_yaml_beside_the_snakefile(tmp_path):
    given = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    assert study_files(given, REPO) == given
    assert study_files([], REPO) == [REPO / "config.yaml"]


def test_files_merge_in_order_then_overrides(tmp_path):
    first = _write(tmp_path / "first.yaml", {
        "study": "first", "data": {"n_train": 300, "n_test": 100},
        "grid": TINY_CONFIG["grid"], "stats": {"n_boot": 500}})
    second = _write(tmp_path / "second.yaml", {
        "data": {"n_train": 400}, "grid": {**TINY_CONFIG["grid"], "width": [8]}})
    # Snakemake hands --config over as an immutables.Map of parsed scalars.
    config = load_study([first, second], immutables.Map(study="cli", stats={"seed": 3}))
    assert config["study"] == "cli"
    assert config["data"] == {"n_train": 400, "n_test": 100}  # mappings merge key by key
    assert config["grid"]["width"] == [8] and config["grid"]["depth"] == [1, 2]
    assert config["stats"] == {"n_boot": 500, "seed": 3}


def test_left_out_sections_take_the_schema_defaults_not_config_yaml(tmp_path):
    """The demo's config.yaml walks 25 translation trajectories, the schema's default is
    100: a study file that says nothing about `measure` gets the schema's."""
    schema = load_schema()
    default = schema["properties"]["measure"]["properties"]["transitions"]["properties"][
        "n_points"]["default"]
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    assert demo["measure"]["transitions"]["n_points"] != default  # else this test proves nothing
    study = _write(tmp_path / "study.yaml", {"grid": TINY_CONFIG["grid"]})
    config = validate_config(load_study(study_files([study], REPO), {}))
    assert config["measure"]["transitions"]["n_points"] == default
    assert config["study"] == schema["properties"]["study"]["default"]
    assert {run.data.dataset for run in build_run_table(config).values()} == {"digits"}


def test_scale_override_selects_the_preset_variant():
    path = REPO / "studies" / "novak_gap.yaml"
    small = validate_config(load_study([path], immutables.Map(scale="small")))
    preset = yaml.safe_load(path.read_text())
    assert small["study"] == "novak_gap-small"
    assert small["grid"] == preset["scales"]["small"]["grid"]


def test_yaml_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("study: broken\ngrid:\n  width: depth: [1]\n")  # line 3: two colons
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}, line 3, column \d+: "):
        read_study_file(path)


def test_yaml_error_shows_the_line_and_where_the_parser_stopped(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("study: broken\ngrid:\n  width: depth: [1]\n")
    with pytest.raises(ConfigError) as raised:
        read_study_file(path)
    assert str(raised.value).splitlines() == [
        f"config file {path}, line 3, column 15: not valid YAML: mapping values are not "
        f"allowed here",
        "      width: depth: [1]",
        "                  ^"]


@pytest.mark.parametrize("given", [["studies/mine.yaml", "verify"], ["studies/mine.yaml", "all"]])
def test_a_target_read_as_a_config_file_shows_the_working_order(given, monkeypatch):
    """`snakemake --configfile studies/mine.yaml verify`: --configfile takes every name after
    it, so verify arrives as a config file (Snakemake passes the paths made absolute)."""
    monkeypatch.chdir(REPO)
    target = given[-1]
    for configfiles in (given, [Path(f).absolute() for f in given]):
        with pytest.raises(ConfigError) as raised:
            study_files(configfiles, REPO)
        message = str(raised.value)
        assert message.startswith(f"config file {target} does not exist: {target} looks like "
                                  f"a target"), message
        assert "read as a config file" in message and "\n" not in message
        assert message.endswith(f"give targets first: snakemake {target} --configfile "
                                f"{configfiles[0]}"), message
    with pytest.raises(ConfigError, match=rf"snakemake {target} --configfile studies/"):
        read_study_file(Path(target))
    # A missing file in a folder is only missing.
    with pytest.raises(ConfigError, match="does not exist \\(give a study as snakemake"):
        load_study(study_files([f"studies/{target}"], REPO), {})


def test_missing_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "nothere.yaml"
    with pytest.raises(ConfigError) as raised:
        read_study_file(path)
    assert str(path) in str(raised.value) and "does not exist" in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("text", ["", "- study\n- grid\n"])
def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{re.escape(str(path))}: a study is a mapping"):
        read_study_file(path)


def test_one_problem_is_one_line_that_names_the_key():
    with pytest.raises(ConfigError) as raised:
        _validated(grid__width=[-1])
    assert str(raised.value) == ("invalid configuration: config key grid.width[0]: -1 is less "
                                 "than the minimum of 1")


def test_double_descent_without_norms_is_a_config_error():
    """Checked with the config, not only where rules/studies.smk needs it: so the checker
    and the Snakefile's one-message exit report it too."""
    with pytest.raises(ConfigError, match="config key plots.double_descent: .*set "
                                          "measure.norms.enabled: true"):
        _validated(plots__double_descent=True, measure__norms__enabled=False)
    _validated(plots__double_descent=True, measure__norms__enabled=True)


# --- The checker the Makefile runs before Snakemake reads the study --------------------------

def test_the_checker_accepts_every_preset_and_prints_where_results_go(capsys):
    for path in sorted((REPO / "studies").glob("*.yaml")):
        assert main(["check", str(path)]) == 0, capsys.readouterr().err
    assert main(["check"]) == 0  # the default study
    out = capsys.readouterr().out
    assert out.endswith("config.yaml: OK (study demo, 12 networks, results in results/demo/)\n")
    assert main(["results-dir", "studies/novak_gap.yaml"]) == 0
    assert capsys.readouterr().out == "results/novak_gap\n"


def test_the_checker_names_file_line_and_column_and_needs_no_torch(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("study: broken\ngrid:\n  width: depth: [1]\n")
    script = ("import sys; from workflow_src.config import main; status = main(sys.argv[1:]); "
              "assert 'torch' not in sys.modules, 'imports torch'; sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", script, "check", str(broken)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"config file {broken}, line 3, column 15: not valid YAML"), \
        result.stderr
    result = subprocess.run([sys.executable, "-m", "workflow_src.config", "check",
                             "studies/mine.yaml", "verify"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1
    assert "snakemake verify --configfile studies/mine.yaml" in result.stderr, result.stderr


@pytest.mark.workflow
@pytest.mark.parametrize("value, expected", [
    ({"width": -1}, "invalid configuration: config key grid.width[0]: -1 is less than the "
                    "minimum of 1"),
    ({"depth": [1, -1]}, "invalid configuration: config key grid.depth[1]: -1 is less than "
                         "the minimum of 0"),
])
def test_the_snakefile_prints_the_key_first_without_a_traceback(tmp_path, value, expected):
    """What a user sees of a bad value: the line naming the key first (after Snakemake's
    notice of its workflow profile), no 'ConfigError in file Snakefile' nor traceback."""
    study = copy.deepcopy(TINY_CONFIG)
    study["grid"].update({axis: v if isinstance(v, list) else [v] for axis, v in value.items()})
    path = _write(tmp_path / "study.yaml", study)
    status, output = _dry_run(tmp_path, "--configfile", path)
    lines = [line for line in output.splitlines()
             if not line.startswith("Using workflow specific profile")]
    assert status == 1 and lines == [expected], output
    status, output = _dry_run(tmp_path, "--config", "grid=[]")
    lines = [line for line in output.splitlines()
             if not line.startswith("Using workflow specific profile")]
    assert status == 1 and lines == ["invalid configuration: config key grid: [] should be "
                                     "non-empty"], output


# --- Every grid block lists every axis --------------------------------------------------------

def _without(block: dict, *axes: str) -> dict:
    return {axis: values for axis, values in block.items() if axis not in axes}


def test_a_block_missing_an_axis_names_it():
    with pytest.raises(ConfigError) as raised:
        _validated(grid=_without(TINY_CONFIG["grid"], "dataset"))
    message = str(raised.value)
    assert "config key grid: missing axes dataset; every block lists all 12 axes: " in message
    assert ", ".join(REQUIRED_AXES) in message


def test_every_block_of_a_list_names_its_missing_axes():
    full = TINY_CONFIG["grid"]
    with pytest.raises(ConfigError) as raised:
        _validated(grid=[full, _without(full, "dataset", "seed"), _without(full, "width")])
    lines = str(raised.value).splitlines()[1:]
    assert len(lines) == 2, lines  # one line per incomplete block, none for the complete one
    assert lines[0].startswith("  - config key grid[1] (block 2): missing axes dataset, seed;")
    assert lines[1].startswith("  - config key grid[2] (block 3): missing axes width;")


@pytest.mark.parametrize("grid, expected", [
    ({}, "config key grid: the block is empty, so it has no networks"),
    ([], "config key grid: [] should be non-empty"),
])
def test_an_empty_grid_is_an_error(grid, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        _validated(grid=grid)


# --- Through the CLI: the study means the same wherever it is run from -----------------------

def _dry_run(cwd, *args):
    """`snakemake -n` of this workflow from cwd; returns (exit status, output)."""
    result = subprocess.run([str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "-n",
                             "--cores", "1", *map(str, args)],
                            capture_output=True, text=True, timeout=300, cwd=cwd)
    return result.returncode, result.stdout + result.stderr


def _planned_shards(output: str) -> set[str]:
    """The shards whose training a dry run plans (a shard's id is the hash of its members)."""
    return planned_shards(output)


@pytest.fixture
def decoy_dir(tmp_path):
    """A working directory with a config.yaml: the demo's, with a data seed and a target that
    change every run id. No study file may inherit them (nor its grid)."""
    workdir = tmp_path / "with_config_yaml"
    workdir.mkdir()
    decoy = yaml.safe_load((REPO / "config.yaml").read_text())
    decoy["data"]["seed"], decoy["training"]["target_train_acc"] = 7, 0.9
    _write(workdir / "config.yaml", decoy)
    return workdir


@pytest.mark.workflow
def test_study_file_plans_the_same_runs_from_any_directory(tmp_path, decoy_dir):
    study = {**TINY_CONFIG, "grid": {**TINY_CONFIG["grid"], "depth": [1]}}
    path = _write(tmp_path / "study.yaml", study)
    expected = set(plan_shards(build_run_table(validate_config(copy.deepcopy(study)))))
    bare = tmp_path / "bare"
    bare.mkdir()
    for cwd, workdir in ((decoy_dir, decoy_dir), (REPO, decoy_dir), (bare, bare)):
        status, output = _dry_run(cwd, "--directory", workdir, "--configfile", path)
        assert status == 0, output
        assert _planned_shards(output) == expected, (cwd, workdir)


@pytest.mark.workflow
def test_default_study_is_config_yaml_beside_the_snakefile(tmp_path, decoy_dir):
    (decoy_dir / "config.yaml").write_text(yaml.safe_dump({**TINY_CONFIG, "study": "decoy"}))
    demo = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    status, output = _dry_run(decoy_dir, "--directory", decoy_dir)
    assert status == 0, output
    assert _planned_shards(output) == set(plan_shards(build_run_table(demo)))


@pytest.mark.workflow
@pytest.mark.parametrize("grid, expected", [
    (_without(TINY_CONFIG["grid"], "dataset"), "config key grid: missing axes dataset;"),
    ({}, "config key grid: the block is empty"),
])
def test_incomplete_grid_fails_even_beside_config_yaml(tmp_path, decoy_dir, grid, expected):
    path = _write(tmp_path / "study.yaml", {**TINY_CONFIG, "grid": grid})
    status, output = _dry_run(decoy_dir, "--directory", decoy_dir, "--configfile", path)
    assert status != 0 and expected in output, output
    assert not (decoy_dir / "results").exists()


@pytest.mark.workflow
def test_broken_default_config_yaml_names_file_and_line(tmp_path):
    """Without --configfile the workflow reads config.yaml itself, so its message applies
    (a broken --configfile is read, and reported, by Snakemake before the Snakefile runs)."""
    workflow_dir = tmp_path / "workflow"
    workflow_dir.mkdir()
    shutil.copy(REPO / "Snakefile", workflow_dir / "Snakefile")  # fails before its includes
    (workflow_dir / "config.yaml").write_text("study: demo\ngrid: width: [1]\n")  # line 2
    result = subprocess.run([str(SNAKEMAKE), "--snakefile", str(workflow_dir / "Snakefile"),
                             "-n"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"config file {workflow_dir / 'config.yaml'}, line 2, column " in output, output
