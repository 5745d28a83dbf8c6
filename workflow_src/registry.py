"""The metric registry: every metric a shard's measuring job can measure, as its module
declares it.

Each metric is one module of ``workflow_src/measures/`` whose top-level ``METRIC = {...}`` is
its declaration, in one place: its name, its settings (JSON schema with defaults, merged into
the config schema under ``measure.<section>`` by ``config.load_schema``), what it reads, the
variables it writes (dims, units, expected sign, description, the convergence variable of an
optimizer-based indicator), the modules its results depend on (its code hash), a relative
cost, and the name of the function that measures one network (``measure(model, data,
settings, job) -> xarray.Dataset``, see measure_shard.MemberJob). The rules (store names,
switches, the measuring job's code inputs and runtime), aggregate, verify, snapshots, the
statistics' signs and the figures' units (through metrics.zarr's attrs) all read it here.

**Why a literal read and not an import.** The Snakefile, ``python -m workflow_src.config
check``, aggregate, the statistics and the figures need the declarations but must not
import torch (~2 s a process), and a metric module is where its torch code belongs: one file
per metric, computation included (measures/gradient_noise.py). So the declaration must be
readable without executing the module. It is read from the module's source with ``ast`` and
``ast.literal_eval``: a pure literal (dicts, lists, strings, numbers, booleans, None; no
names, calls or f-strings), else DeclarationError names the module. Reading all of them
takes milliseconds; only the measuring job imports a module, through ``load``. (Modules
whose torch imports sit inside their functions would also have worked, but would have made
every metric module's top level a contract that nothing checks.)

Declaration keys (``REQUIRED`` and ``OPTIONAL``):

  name         the module's name: the store is ``<name>-<hash of its settings>.zarr``
  order        sort key of the measuring order, which is also the order of aggregate's
               stores (the Jacobian's first) and of the statistics' indicators
  description  the config section's description
  section      the key under ``measure:`` with its settings (null: none of its own)
  switch       null: always measured; else the setting that turns it on (``enabled``, or a
               count that disables it at 0), read after its caps
  settings     setting -> its JSON schema (type, bounds, default, description), plus:
                 from     another config key it is read from (then it is not in the section)
                 at_most  config keys whose values cap it (the capped value is stored)
                 hash     how it enters the store's name: true (default); false (not at all:
                          the switch); "default" (always at its default: bookkeeping with no
                          effect on results, so changing it renames nothing); {"omit": v}
                          (left out at v, so stores from before the setting keep their names)
  needs        what measure() reads: weights, initial_weights, training_data, test_points,
               and metric:<name> for another metric's result of the same network (measured
               first; its store is read back)
  variables    name -> {dims, description, units?, sign?, converged_by?}; a name ending in
               ``*`` matches any suffix (the same suffix replaces ``*`` in converged_by).
               sign (+1: a larger value goes with a larger gap, -1: a smaller one) marks an
               indicator the statistics score; converged_by names the variable (1/0) that
               says whether the indicator's optimizer converged
  code         workflow_src modules (``metrics/jacobian``) its results depend on besides
               its own module and the networks' (models, cnns): with those and its needs',
               its code hash
  cost         seconds per network of the default study (784-256-256 MLP, 1,000 training
               points, 1 thread): the SLURM runtime request of the measuring job
  snapshots    true if measure.snapshots can measure it along training
  measure      the name of the module's function that measures one network

Indicators a user brings (``measure.custom``, workflow_src/custom.py) join the registry at
run time through ``use_custom``, as metrics whose ``custom`` field holds their entry.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
from pathlib import Path

from .declarations import (DeclarationError, Metric, literal_dict, source_without,
                           top_level_assignment)
from .runtable import stable_hash

PACKAGE = Path(__file__).resolve().parent
MEASURES = PACKAGE / "measures"
REQUIRED = ("name", "order", "description", "section", "switch", "settings", "needs",
            "variables", "code", "cost", "snapshots", "measure")
OPTIONAL = ()
NEEDS = ("weights", "initial_weights", "training_data", "test_points")
VARIABLE_KEYS = {"dims", "description", "units", "sign", "converged_by"}
REGISTRY_KEYS = ("from", "at_most", "hash")  # setting keys that are not JSON schema
# What every metric's results depend on besides its declared code: the networks themselves.
COMMON_CODE = ("nets/models", "nets/spec", "nets/cnns", "nets/cnn_codes")


def declaration_node(path: Path) -> ast.Assign:
    """The module's top-level ``METRIC = ...`` statement."""
    try:
        tree = ast.parse(Path(path).read_text(), str(path))
    except SyntaxError as err:
        raise DeclarationError(f"metric module {path}: not valid Python ({err})") from None
    node = top_level_assignment(tree, "METRIC")
    if node is None:
        raise DeclarationError(f"metric module {path}: no top-level METRIC = {{...}} declaration")
    return node


def read_declaration(path: Path) -> dict:
    """The module's declaration, read without importing it (see the module doc)."""
    node = declaration_node(path)
    return literal_dict(
        node,
        lambda err: DeclarationError(
            f"metric module {path}, line {node.lineno}: METRIC must be a pure literal "
            f"(dicts, lists, strings, numbers, booleans, None; no names, calls or "
            f"f-strings), so that it is read without importing the module: {err}"),
        lambda kind: DeclarationError(f"metric module {path}: METRIC is a {kind}, not a dict"))


def _check(declaration: dict, path: Path) -> None:
    def refuse(why):
        raise DeclarationError(f"metric module {path}: METRIC {why}")

    missing = [key for key in REQUIRED if key not in declaration]
    unknown = sorted(set(declaration) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        refuse(f"lacks keys {missing}" if missing else f"has unknown keys {unknown}")
    if declaration["name"] != path.stem:
        refuse(f"names {declaration['name']!r}, but the module is {path.stem!r}")
    settings = declaration["settings"]
    if not isinstance(settings, dict) or not all(isinstance(s, dict) for s in settings.values()):
        refuse("settings must map each setting to a dict (its JSON schema)")
    for key, setting in settings.items():
        if "from" not in setting and ("default" not in setting or "description" not in setting):
            refuse(f"setting {key!r} needs a default and a description")
    if declaration["switch"] is not None and declaration["switch"] not in settings:
        refuse(f"switch {declaration['switch']!r} is not one of its settings")
    for need in declaration["needs"]:
        if need not in NEEDS and not str(need).startswith("metric:"):
            refuse(f"needs {need!r}: choose from {list(NEEDS)} or metric:<name>")
    for name, variable in declaration["variables"].items():
        if not isinstance(variable, dict) or "dims" not in variable or "description" not in variable:
            refuse(f"variable {name!r} needs dims and a description")
        if set(variable) - VARIABLE_KEYS:
            refuse(f"variable {name!r} has unknown keys {sorted(set(variable) - VARIABLE_KEYS)}")
        if variable.get("sign") not in (None, 1, -1):
            refuse(f"variable {name!r}: sign must be +1 or -1")
    for module in declaration["code"]:
        if not (PACKAGE / f"{module}.py").is_file():
            refuse(f"lists code {module!r}, but workflow_src/{module}.py does not exist")
    if not isinstance(declaration["cost"], (int, float)) or declaration["cost"] <= 0:
        refuse("cost must be a positive number (seconds per network of the default study)")


def _metric(path: Path) -> Metric:
    declaration = read_declaration(path)
    _check(declaration, path)
    d = declaration
    return Metric(name=d["name"], module=f"workflow_src.measures.{path.stem}", path=path,
                  order=d["order"], description=d["description"], section=d["section"],
                  switch=d["switch"], settings=d["settings"], needs=tuple(d["needs"]),
                  variables=d["variables"], code=tuple(d["code"]), cost=float(d["cost"]),
                  snapshots=bool(d["snapshots"]), measure=d["measure"])


_CUSTOM: dict[str, Metric] = {}  # the study's measure.custom (use_custom), measured last


def use_custom(entries: list) -> dict[str, Metric]:
    """Make the indicators of measure.custom ``entries`` metrics of the registry (replacing
    those of a previous call); raises DeclarationError naming the entry and the fix."""
    from .custom import declare_all

    global _CUSTOM
    _CUSTOM = declare_all(entries or [], {n: m for n, m in metrics().items() if not m.custom})
    for cached in (metrics, _variables, code_sha):
        cached.cache_clear()
    return dict(_CUSTOM)


@functools.cache
def metrics(folder: Path = MEASURES) -> dict[str, Metric]:
    """name -> Metric for every module of ``folder``, in measuring order, then use_custom's."""
    found = [_metric(path) for path in sorted(Path(folder).glob("*.py"))
             if not path.name.startswith("_")]
    ordered = {m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))}
    for metric in ordered.values():
        for need in metric.metric_needs:
            if need not in ordered:
                raise DeclarationError(f"metric module {metric.path}: needs metric:{need}, "
                                       "which no metric module declares")
            if list(ordered).index(need) > list(ordered).index(metric.name):
                raise DeclarationError(f"metric module {metric.path}: needs metric:{need}, "
                                       f"which must come first (a lower order)")
    return {**ordered, **_CUSTOM}


def metric(name: str) -> Metric:
    return metrics()[name]


# --- the config -------------------------------------------------------------------------------

def schema_sections() -> dict[str, dict]:
    """measure.<section> -> its JSON schema, for every metric with a section of its own."""
    sections = {}
    for m in metrics().values():
        if m.section is None:
            continue
        properties = {key: {k: v for k, v in setting.items() if k not in REGISTRY_KEYS}
                      for key, setting in m.settings.items() if "from" not in setting}
        sections[m.section] = {"type": "object", "additionalProperties": False,
                               "description": m.description, "default": {},
                               "properties": properties}
    return sections


def merge_schema(schema: dict) -> dict:
    """``schema`` with every metric's section under measure and the metrics that snapshots can
    measure as the enum of measure.snapshots.metrics (in place; returned)."""
    measure = schema["properties"]["measure"]["properties"]
    clash = sorted(set(schema_sections()) & set(measure))
    if clash:
        raise DeclarationError(f"measure.{clash[0]} is declared by a metric module and in "
                               "schemas/config.schema.yaml: keep it in one place")
    # After the settings every metric shares (n_points, chunk_size), as the file had them.
    keys = list(measure)
    at = keys.index("chunk_size") + 1
    merged = {**{k: measure[k] for k in keys[:at]}, **schema_sections(),
              **{k: measure[k] for k in keys[at:]}}
    measure.clear()
    measure.update(merged)
    snapshot = measure["snapshots"]["properties"]["metrics"]
    snapshot["items"]["enum"] = [m.name for m in metrics().values() if m.snapshots]
    return schema


def _lookup(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def settings(name: str, config: dict) -> dict:
    """The settings ``name``'s measure function gets: each setting (but the switch) as the
    study sets it, capped (at_most)."""
    m = metric(name)
    if m.custom is not None:
        from .custom import settings as custom_settings

        return custom_settings(m, config)
    section = config["measure"].get(m.section, {}) if m.section else {}
    out = {}
    for key, setting in m.settings.items():
        if setting.get("hash", True) is False:
            continue
        value = _lookup(config, setting["from"]) if "from" in setting else section[key]
        for cap in setting.get("at_most", ()):
            value = min(value, _lookup(config, cap))
        out[key] = value
    return out


def hashed_settings(name: str, settings: dict) -> dict:
    """What of ``settings`` (from settings()) names the store: bookkeeping at its default,
    a setting left out at its omit value."""
    if metric(name).custom is not None:
        return dict(settings)  # all of it: the entry's settings and the callable's source
    out = {}
    for key, value in settings.items():
        rule = metric(name).settings[key].get("hash", True)
        if isinstance(rule, dict) and value == rule["omit"]:
            continue
        out[key] = metric(name).settings[key]["default"] if rule == "default" else value
    return out


def switched_on(name: str, config: dict) -> bool:
    """Whether the study measures ``name``: always, or as its switch says (after its caps)."""
    m = metric(name)
    if m.switch is None:
        return True
    section = config["measure"][m.section]
    value = section[m.switch]
    for cap in m.settings[m.switch].get("at_most", ()):
        value = min(value, _lookup(config, cap))
    return bool(value)


def store_name(name: str, settings: dict) -> str:
    """<name>-<hash of its hashed settings>.zarr, ``settings`` from settings()."""
    return f"{name}-{stable_hash(hashed_settings(name, settings), 8)}.zarr"


# --- code -------------------------------------------------------------------------------------

def code_modules(name: str) -> list[str]:
    """The modules ``name``'s results depend on (workflow_src-relative, without .py): its
    own, its declared code, the networks' (COMMON_CODE) and those of the metrics it needs."""
    m = metric(name)
    modules = {*m.code, *COMMON_CODE} | ({f"measures/{m.name}"} if m.custom is None else set())
    for need in m.metric_needs:
        modules.update(code_modules(need))
    return sorted(modules)


def _source_without_declaration(path: Path) -> bytes:
    """A metric module's source with its declaration blanked: its units, descriptions or
    cost do not change what it measures."""
    return source_without(path.read_text(), declaration_node(path)).encode()


@functools.cache
def code_sha(name: str) -> str:
    """SHA-256 (16 hex digits) of the source of ``code_modules(name)``."""
    sha = hashlib.sha256()
    for module in code_modules(name):
        path = PACKAGE / f"{module}.py"
        source = (_source_without_declaration(path) if module.startswith("measures/")
                  else path.read_bytes())
        sha.update(module.encode() + b"\0" + source + b"\0")
    if metric(name).custom is not None:  # and the callable's module
        sha.update(metric(name).custom["source"].encode())
    return sha.hexdigest()[:16]


def load(name: str):
    """The function that measures one network (imports the metric's module: torch)."""
    m = metric(name)
    if m.custom is not None:
        from .custom import measure_function

        return measure_function(m)
    return getattr(importlib.import_module(m.module), m.measure)


# --- variables (aggregate, the statistics, the figures) ---------------------------------------

@functools.cache
def _variables() -> dict[str, tuple[str, dict]]:
    return {var: (m.name, spec) for m in metrics().values() for var, spec in m.variables.items()}


def variable(name: str) -> tuple[dict, str] | None:
    """(the declaration of variable ``name``, the suffix its pattern's * matched) or None."""
    declared = _variables()
    if name in declared:
        return declared[name][1], ""
    best = None
    for pattern, (_, spec) in declared.items():
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            if best is None or len(pattern) > len(best[0]):
                best = (pattern, spec)
    return None if best is None else (best[1], name[len(best[0]) - 1:])


def expected_sign(name: str) -> int | None:
    """+1 or -1 for an indicator the statistics score; None for any other variable."""
    found = variable(name)
    return None if found is None else found[0].get("sign")


def converged_by(name: str) -> str | None:
    """The variable that says whether indicator ``name``'s optimizer converged, or None."""
    found = variable(name)
    if found is None or "converged_by" not in found[0]:
        return None
    return found[0]["converged_by"].replace("*", found[1])


def units(name: str) -> str | None:
    found = variable(name)
    return None if found is None else found[0].get("units")


def indicators() -> dict[str, int]:
    """Every declared indicator (pattern names included) -> its expected sign."""
    return {var: spec["sign"] for var, (_, spec) in _variables().items() if "sign" in spec}
