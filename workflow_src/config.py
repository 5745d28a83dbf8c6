"""Load a study's config and validate it against schemas/config.schema.yaml.

Runs when the workflow is parsed, before any job. The study is exactly the files the user
gave (or the workflow's own config.yaml when none), then the schema's defaults; a wrong key
or value stops the workflow with a message that names the key, what was given, and what is
allowed.

``python -m workflow_src.config check FILE...`` checks study files before Snakemake reads them
(the Makefile's targets run it first): Snakemake parses a ``--configfile`` itself, before the
workflow starts, and its messages name neither the file nor the line. Torch-free and fast.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
# The workflow's own study, beside the Snakefile: the study when no --configfile is given.
DEFAULT_STUDY_FILE = "config.yaml"


# Imported here rather than from runtable, which imports nothing of the config.
from . import registry  # noqa: E402
from .runtable import (  # noqa: E402
    FIXED_SIZE, INPUT_SHAPES, OPTIONAL_AXES, REQUIRED_AXES, architecture_problem,
    build_run_table)

EVERY_BLOCK = (f"every block lists all {len(REQUIRED_AXES)} axes: {', '.join(REQUIRED_AXES)} "
               f"(width and depth may be left out when every architecture of the block is "
               f"{' or '.join(FIXED_SIZE)}), and may list {', '.join(OPTIONAL_AXES)}")


class ConfigError(ValueError):
    """A config value the workflow cannot run with."""


def study_files(configfiles: Sequence, workflow_dir) -> list[Path]:
    """The files a study is made of: the --configfile(s) in the order given, else the
    config.yaml beside the Snakefile (``workflow.basedir``, whatever the working directory).
    A target read as a config file (``--configfile study.yaml verify``) is an error that
    shows the working order."""
    files = [Path(f) for f in configfiles]
    for path in files:
        if _is_a_target(path):
            raise ConfigError(_read_as_a_config_file(path, [f for f in files
                                                            if not _is_a_target(f)]))
    return files or [Path(workflow_dir) / DEFAULT_STUDY_FILE]


def _is_a_target(path: Path) -> bool:
    """A name like a rule or target (verify, all): no folder (Snakemake makes a config file's
    path absolute from the working directory), no suffix, and no such file."""
    return (path.parent in (Path("."), Path.cwd()) and not path.suffix
            and not path.exists())


def _read_as_a_config_file(path: Path, study: Sequence[Path]) -> str:
    files = " ".join(map(str, study)) or "studies/mine.yaml"
    return (f"config file {path.name} does not exist: {path.name} looks like a target (a rule "
            f"such as verify or all) that was read as a config file, because --configfile "
            f"takes every name after it; give targets first: snakemake {path.name} "
            f"--configfile {files}")


def read_study_file(path: Path) -> dict:
    """One YAML study file as a mapping; a missing file or a syntax error names the file
    (and the line and column, 1-based, where the YAML parser stopped, and that line)."""
    if _is_a_target(Path(path)):
        raise ConfigError(_read_as_a_config_file(Path(path), []))
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (give a study as snakemake "
                          f"--configfile FILE; without one, the workflow reads config.yaml "
                          f"beside its Snakefile)") from None
    try:
        study = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        snippet = mark.get_snippet(indent=4)
        raise ConfigError(f"config file {path}, line {mark.line + 1}, column {mark.column + 1}: "
                          f"not valid YAML: {error.problem or error.context}"
                          + (f"\n{snippet}" if snippet else "")) from None
    if not isinstance(study, dict):
        raise ConfigError(f"config file {path}: a study is a mapping of keys (study, data, grid, "
                          f"...), but the file holds {'nothing' if study is None else repr(study)}")
    return study


def load_study(files: Sequence[Path], overrides: Mapping) -> dict:
    """The study: ``files`` merged in order, then the ``--config`` overrides, exactly as
    Snakemake merges them (mappings key by key, anything else replaced). Nothing else is
    merged in: what the files leave out takes the schema's defaults in validate_config."""
    config: dict = {}
    for path in files:
        _deep_merge(config, read_study_file(path))
    _deep_merge(config, copy.deepcopy(dict(overrides)))  # never alias the caller's values
    return config


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """The config's JSON schema: the file's, with each metric's settings (measure.<section>)
    and the metrics snapshots can measure merged in from their declarations
    (workflow_src/registry.py, read without importing torch)."""
    with open(path) as handle:
        schema = yaml.safe_load(handle)
    return registry.merge_schema(schema)


def _fill_defaults(config: dict, schema: dict) -> None:
    """Set every missing key that has a schema default, recursing into objects."""
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            default = sub["default"]
            config[key] = dict(default) if isinstance(default, dict) else default
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(config[key], sub)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path]
    return "".join(parts).lstrip(".") or "<top level>"


def _describe_missing_axes(error: jsonschema.ValidationError) -> str:
    """A study without a grid, or a grid block without all its axes (nothing else has required
    keys): one line per block naming every missing axis, so a block never silently falls
    back on other values."""
    key = _key_path(error)
    if not error.absolute_path:  # the top level requires only `grid`
        return ("config key grid is missing: a study names its networks in a grid block "
                f"(or a list of blocks); {EVERY_BLOCK}; see studies/mine.yaml")
    index = error.absolute_path[-1]
    where = f"{key} (block {index + 1})" if isinstance(index, int) else key
    missing = [axis for axis in error.validator_value if axis not in error.instance]
    problem = ("the block is empty, so it has no networks" if not error.instance
               else f"missing axes {', '.join(missing)}")
    return f"config key {where}: {problem}; {EVERY_BLOCK}"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    if error.validator == "required":
        return _describe_missing_axes(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{error.message} under {key}; allowed keys: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"config key {key}: {error.instance!r} is not allowed; allowed: {error.validator_value}"
    if error.validator == "oneOf" and error.context:
        # Report the errors of the alternative whose type matches what the user wrote (a
        # mapping or a list), not the generic "not valid under any of the given schemas".
        branches: dict[int, list] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        matching = [errs for errs in branches.values()
                    if not any(e.validator == "type" and not e.relative_path for e in errs)]
        chosen = matching[0] if matching else [jsonschema.exceptions.best_match(error.context)]
        # dict.fromkeys: a block's missing axes are one error each but share one line.
        return "\n  - ".join(dict.fromkeys(_describe(sub) for sub in chosen))
    description = error.schema.get("description", "")
    hint = f" ({description})" if description else ""
    return f"config key {key}: {error.message}{hint}"


def _deep_merge(base: dict, overrides: dict) -> None:
    """Overrides win; mappings merge key by key, anything else (lists too) is replaced."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def apply_scale(config: dict) -> None:
    """``scale: NAME`` applies the preset's ``scales.NAME`` overrides, in place.

    The study then writes to results/<study>-<NAME>/, so a quick variant never overwrites
    the full study's aggregate. Runs are shared as usual when they coincide.
    """
    scale = config.get("scale", "full")
    if scale == "full":
        return
    scales = config.get("scales") or {}
    if scale not in scales:
        raise ConfigError(
            f"config key scale: {scale!r} is not defined under scales; "
            f"defined: {', '.join(['full', *scales])}"
        )
    _deep_merge(config, scales[scale])
    config["study"] = f"{config.get('study', 'demo')}-{scale}"


def validate_config(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Apply the scale, fill defaults in place, validate, check what the schema cannot."""
    schema = load_schema(schema_path)
    apply_scale(config)
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        # One problem is one line (the first a user sees names the key); several are a list.
        problems = "\n  - ".join(_describe(e) for e in errors)
        if "\n" not in problems:
            raise ConfigError(f"invalid configuration: {problems}")
        raise ConfigError(f"invalid configuration:\n  - {problems}")
    _check_semantics(config)
    return config


def _blocks(config: dict) -> list[tuple[str, dict]]:
    grid = config["grid"]
    if isinstance(grid, list):
        return [(f"grid[{i}] (block {i + 1})", block) for i, block in enumerate(grid)]
    return [("grid", grid)]


def _check_block(where: str, block: dict, training: dict) -> None:
    """What a grid block's axes mean together: sizes where a network needs them, inputs an
    architecture can take, schedules and augmentations that have what they need."""
    for architecture in block.get("architecture", ["mlp"]):
        for dataset in block["dataset"]:
            shape = INPUT_SHAPES[dataset]
            if architecture == "wrn":
                for width, depth in zip(*_pairs(block["width"], block["depth"])):
                    problem = architecture_problem(architecture, shape, width, depth)
                    if problem:
                        raise ConfigError(f"config key {where}: architecture wrn on {dataset}: "
                                          f"{problem}")
            elif architecture != "mlp":
                problem = architecture_problem(architecture, shape, 0, 0)
                if problem:
                    raise ConfigError(f"config key {where}: architecture {architecture} on "
                                      f"{dataset}: {problem}")
            if "crop" in block["augment"] and (architecture == "mlp" or min(shape[1:]) <= 28):
                raise ConfigError(
                    f"config key {where}: augment crop takes random 28x28 crops of inputs "
                    f"larger than 28 px for the convolutional architectures, which see "
                    f"centre crops at test time; {architecture} on {dataset} "
                    f"({'x'.join(map(str, shape[1:]))} px) cannot use it: use augment true "
                    f"(translations and flips) or false")
    if "multistep" in block.get("lr_schedule", []) and not training["lr_milestones"]:
        raise ConfigError(
            f"config key {where}: lr_schedule multistep needs training.lr_milestones, the "
            f"steps after which the learning rate drops; it is empty")


def _pairs(widths, depths):
    """Every (width, depth) combination of a block, as two parallel lists."""
    pairs = [(w, d) for w in widths for d in depths]
    return [w for w, _ in pairs], [d for _, d in pairs]


# The metrics that walk a network's hidden units (activation patterns), by their switch.
HIDDEN_UNIT_METRICS = (("transitions", "n_points"), ("ellipses", "per_kind"))


def _check_linear_classifiers(config: dict) -> None:
    """A depth-0 mlp (a linear classifier) has no hidden units to count transitions of."""
    linear = [where for where, block in _blocks(config)
              if "mlp" in block.get("architecture", ["mlp"]) and 0 in block.get("depth", [])]
    for section, switch in HIDDEN_UNIT_METRICS:
        if linear and config["measure"][section][switch]:
            raise ConfigError(
                f"config key {linear[0]}: depth 0 (a linear classifier, no hidden layer) has "
                f"no hidden units, so measure.{section} (transitions of activation patterns) "
                f"does not apply to it; set measure.{section}.{switch}: 0, or train the "
                f"depth-0 networks in a study of their own")


def _check_semantics(config: dict) -> None:
    data = config["data"]
    for where, block in _blocks(config):
        _check_block(where, block, config["training"])
    _check_linear_classifiers(config)
    if config["plots"]["double_descent"] and not config["measure"]["norms"]["enabled"]:
        # (rules/studies.smk checks it too; here it stops before Snakemake's includes run)
        raise ConfigError("config key plots.double_descent: the figure's x axis is each "
                          "network's n_parameters, which measure.norms measures; set "
                          "measure.norms.enabled: true (it costs ~0.1 s a network)")
    snapshot_metrics = config["measure"]["snapshots"]["metrics"]
    if "bounds" in snapshot_metrics and "jacobian" not in snapshot_metrics:
        raise ConfigError("config key measure.snapshots.metrics: the bounds are computed from "
                          "the Jacobian's per-point values; list jacobian too")
    if config["measure"]["n_points"] > data["n_test"]:
        raise ConfigError(
            f"config key measure.n_points: {config['measure']['n_points']} exceeds "
            f"data.n_test = {data['n_test']}; lower measure.n_points or raise data.n_test"
        )
    try:  # measure.custom: each callable's module found and its declaration read, no import
        from .custom import declare_all
        declare_all(config["measure"]["custom"],
                    {name: m for name, m in registry.metrics().items() if m.custom is None})
    except registry.DeclarationError as err:
        raise ConfigError(str(err)) from None


# --- The checker the Makefile runs before Snakemake ------------------------------------------

def check_study(files: Sequence) -> tuple[dict, int]:
    """The validated study of ``files`` (the repository's config.yaml when none), as the
    Snakefile builds it, and its number of networks; raises ConfigError naming the file,
    line and column, or the key."""
    config = validate_config(load_study(study_files(files, SCHEMA_PATH.parent.parent), {}))
    return config, len(build_run_table(config))  # what the workflow does next with it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_src.config",
        description="Check study files before Snakemake reads them (file, line and column "
                    "for YAML errors; the key for wrong values).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("check", "check the study the files make (merged in order)"),
                       ("results-dir", "print the study's results folder, results/<study>")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("files", nargs="*", metavar="FILE",
                             help="study files (default: config.yaml, the default study)")
    args = parser.parse_args(argv)
    try:
        config, networks = check_study(args.files)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    results = f"results/{config['study']}"
    if args.command == "results-dir":
        print(results)
    else:
        print(f"{' + '.join(args.files) or DEFAULT_STUDY_FILE}: OK (study {config['study']}, "
              f"{networks} networks, results in {results}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
