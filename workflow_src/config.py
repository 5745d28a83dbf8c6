"""Validate a study's config against schemas/config.schema.yaml, filling in defaults.

Runs when the workflow is parsed, before any job: a wrong key or value stops the workflow
with a message that names the key, what was given, and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value the workflow cannot run with."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


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


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
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
        return "\n  - ".join(_describe(sub) for sub in chosen)
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
        lines = "\n  - ".join(_describe(e) for e in errors)
        raise ConfigError(f"invalid configuration:\n  - {lines}")
    _check_semantics(config)
    return config


def _check_semantics(config: dict) -> None:
    data = config["data"]
    if config["measure"]["n_points"] > data["n_test"]:
        raise ConfigError(
            f"config key measure.n_points: {config['measure']['n_points']} exceeds "
            f"data.n_test = {data['n_test']}; lower measure.n_points or raise data.n_test"
        )
