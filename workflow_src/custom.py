"""Indicators a user brings: ``measure.custom`` names Python callables that the shard's
measuring job measures, caches, verifies and aggregates like the built-in metrics, and that
the statistics score and the figures draw like them (docs/metrics.md, "Indicators you
bring").

**An entry** of ``measure.custom``::

    - callable: mypackage.indicators:spectral_complexity   # module:function
      name: spectral_complexity  # the metric's name (its store's); default: the function's
      settings: {}               # passed to the function as they are; part of the store's name
      enabled: true              # default true
      # the declaration, here or in the module (below), never in both:
      variables: {...}
      description: "..."
      cost: 1.0                  # seconds per network of the default study (SLURM runtime)

The module is imported in the measuring job only, from the working directory (Snakemake's
``--directory``: the repository, or a project folder) or an installed package. The Snakefile
and ``python -m workflow_src.config check`` locate its file without importing it and read its
declaration with ``ast`` (workflow_src/registry.py says why), so it may import torch.

**The declaration**: ``variables`` maps each variable the function returns to ``{dims,
description, units, sign}``: dims ``[]`` (one number per network) or ``["point"]`` (one per
test point of ``data.test()``), sign +1 (a larger value goes with a larger generalization
gap) or -1 (a smaller one) for an indicator the statistics score, absent for a variable
that is only stored. It is either in the config entry or next to the function, as the
module-level literal ``INDICATORS = {"<function>": {"variables": {...}, "description": ...,
"cost": ...}}`` (dicts, lists, strings, numbers only).

**The function**: ``fn(model, data, settings) -> dict``. ``model`` is the trained network
(a torch.nn.Module in eval mode, float32, on the job's device), the function's own copy,
loaded afresh from model.pt: it may change it. ``data`` (class Data) gives copies of the
training points with the labels trained on (``data.train()``), of the first
``measure.n_points`` test points (``data.test()``), the initial network
(``data.initial_model()``), the run id, its hyperparameters, the device and a ``log``.
``settings`` is the entry's settings. It returns {variable: value} with exactly the declared
variables: a number (Python, NumPy or a 0-d tensor) for dims [], an array or tensor of shape
(n_points,) for ["point"]. Every value must be finite: where an indicator is undefined the
function raises, with a message that says why. The torch, NumPy and Python generators are
seeded to 0 and gradients are on (measure_shard.isolated); values are stored as float64.

**The store** is ``<name>-<hash>.zarr`` in each shard's folder; the hash covers the callable,
its settings, the number of test points (per-point variables only) and the source of its
module (the file's bytes, its INDICATORS literal left out, so editing a description or units
re-measures nothing). Its identity (measure_shard.identity) adds this module's source and the
networks'. A function that cannot be imported, raises, returns the wrong type, shape or
variables, NaN or an infinite value fails its metric with a message naming the callable,
the network (run id) and the shard; the job seals every other metric's store first.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np

from .declarations import (DeclarationError, Metric, literal_dict, source_without,
                           top_level_assignment)
from .runtable import HYPERPARAMETERS

CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DECLARED_IN = "INDICATORS"  # the module-level literal that may hold the declaration
DECLARATION_KEYS = ("variables", "description", "cost")
VARIABLE_KEYS = {"dims", "description", "units", "sign"}
DIMS = ([], ["point"])
ORDER = 1000  # after every built-in metric, in the order of measure.custom
# Names a custom metric or variable cannot take: the per-network training results and
# coordinates of metrics.zarr, the hyperparameters, and the shard's other files.
RESERVED = {"train_acc", "test_acc", "gap", "steps", "status", "run", "run_id", "point",
            "test_index", "data_id", "measured", "snapshots", "train", *HYPERPARAMETERS}


class CustomIndicatorError(DeclarationError):
    """A measure.custom entry that cannot be measured (raised before anything runs)."""


# --- the declaration (no import of the user's module) -----------------------------------------

def module_file(module: str, roots=None) -> Path:
    """The source file of ``module`` (dotted), looked up in the working directory, then on
    sys.path, without importing it; an installed package that only an import hook finds is
    located with importlib (which imports its parent packages)."""
    parts = module.split(".")
    for root in roots if roots is not None else [os.getcwd(), *sys.path]:
        base = Path(root or ".").joinpath(*parts)
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path.resolve()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise CustomIndicatorError(
            f"module {module!r} is neither in the working directory {os.getcwd()} nor an "
            "installed package: run Snakemake from the folder that holds it (--directory), "
            "or install its package into the environment")
    return Path(spec.origin).resolve()


def read_module(path: Path) -> tuple[dict, str]:
    """(the module's INDICATORS literal, {} without one; SHA-256 of its source without it)."""
    text = Path(path).read_text()
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError as err:
        raise CustomIndicatorError(f"{path}: not valid Python ({err})") from None
    node = top_level_assignment(tree, DECLARED_IN)
    if node is None:
        return {}, hashlib.sha256(text.encode()).hexdigest()[:16]
    declared = literal_dict(
        node,
        lambda err: CustomIndicatorError(
            f"{path}, line {node.lineno}: {DECLARED_IN} must be a pure literal (dicts, lists, "
            f"strings, numbers, booleans, None), read without importing the module: {err}"),
        lambda kind: CustomIndicatorError(f"{path}: {DECLARED_IN} must be a dict: function "
                                          "-> its declaration"))
    source = source_without(text, node)
    return declared, hashlib.sha256(source.encode()).hexdigest()[:16]


def _declaration(entry: dict, path: Path, declared: dict) -> dict:
    """The entry's declaration, from the entry or the module's INDICATORS (not both)."""
    function = entry["callable"].split(":")[1]
    here = {key: entry[key] for key in DECLARATION_KEYS if key in entry}
    there = declared.get(function)
    if there is not None and here:
        raise CustomIndicatorError(
            f"{sorted(here)} are given in the config entry and {path.name} declares "
            f"{DECLARED_IN}[{function!r}]: keep the declaration in one place")
    if there is None and "variables" not in here:
        raise CustomIndicatorError(
            f"has no declaration: give its variables in the config entry or as "
            f"{DECLARED_IN} = {{{function!r}: {{'variables': {{...}}}}}} in {path.name}")
    declaration = here if there is None else there
    if not isinstance(declaration, dict) or set(declaration) - set(DECLARATION_KEYS):
        raise CustomIndicatorError(f"its declaration must be a dict with keys "
                                   f"{list(DECLARATION_KEYS)} only")
    return declaration


def _check_variables(variables, taken: dict) -> None:
    if not isinstance(variables, dict) or not variables:
        raise CustomIndicatorError("variables must map at least one variable name to "
                                   "{dims, description, units, sign}")
    for var, spec in variables.items():
        where = f"variable {var!r}"
        if not isinstance(var, str) or not NAME.match(var):
            raise CustomIndicatorError(f"{where}: a name is lower case letters, digits and _")
        if var in RESERVED or var in taken:
            owner = "metrics.zarr" if var in RESERVED else f"metric {taken[var]}"
            raise CustomIndicatorError(f"{where} is already a variable of {owner}: rename it")
        if not isinstance(spec, dict) or set(spec) - VARIABLE_KEYS:
            raise CustomIndicatorError(f"{where}: its keys are {sorted(VARIABLE_KEYS)}")
        if "description" not in spec or spec.get("dims") not in DIMS:
            raise CustomIndicatorError(f"{where} needs a description and dims [] (one value "
                                       "per network) or [point] (one per test point)")
        if spec.get("sign", 1) not in (1, -1) or isinstance(spec.get("sign"), bool):
            raise CustomIndicatorError(f"{where}: sign must be +1 or -1 (or absent: stored, "
                                       "not scored)")


def declare(entry: dict, taken: dict, index: int) -> Metric:
    """The Metric of one measure.custom entry; ``taken``: variable -> the metric that has it
    (extended with this one's)."""
    if not CALLABLE.match(str(entry.get("callable", ""))):
        raise CustomIndicatorError("callable must be 'package.module:function'")
    module, function = entry["callable"].split(":")
    name = entry.get("name", function)
    if not NAME.match(name) or name in RESERVED:
        raise CustomIndicatorError(f"name {name!r}: lower case letters, digits and _, not one "
                                   f"of {sorted(RESERVED)}; set `name:`")
    path = module_file(module)
    declared, source = read_module(path)
    declaration = _declaration(entry, path, declared)
    _check_variables(declaration.get("variables"), taken)
    cost = declaration.get("cost", 1.0)
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost > 0:
        raise CustomIndicatorError("cost must be a positive number of seconds per network")
    taken.update(dict.fromkeys(declaration["variables"], name))
    resolved = {**entry, "name": name, "path": str(path), "source": source}
    return Metric(name=name, module=entry["callable"], path=path, order=ORDER + index,
                  description=declaration.get("description", entry["callable"]), section=None,
                  switch=None, settings={}, needs=("weights", "initial_weights",
                                                   "training_data", "test_points"),
                  variables=declaration["variables"], code=("custom",), cost=float(cost),
                  snapshots=False, measure=function, custom=resolved)


def declare_all(entries: list, builtin: dict) -> dict[str, Metric]:
    """name -> Metric of every enabled entry; raises CustomIndicatorError naming the entry."""
    taken = {var: m.name for m in builtin.values() for var in m.variables}
    out: dict[str, Metric] = {}
    for i, entry in enumerate(entries):
        if not entry.get("enabled", True):
            continue
        try:
            metric = declare(entry, taken, i)
            if metric.name in builtin or metric.name in out:
                raise CustomIndicatorError(f"name {metric.name!r} is already a metric's: "
                                           "set another `name:`")
        except CustomIndicatorError as err:
            raise CustomIndicatorError(f"config key measure.custom[{i}] "
                                       f"({entry.get('callable')}): {err}") from None
        out[metric.name] = metric
    return out


def settings(metric: Metric, config: dict) -> dict:
    """What the measuring job gets and the store's name hashes (see the module doc)."""
    entry = metric.custom
    out = {"callable": entry["callable"], "source": entry["source"],
           "settings": entry.get("settings", {})}
    if any(spec["dims"] == ["point"] for spec in metric.variables.values()):
        out["n_points"] = min(config["measure"]["n_points"], config["data"]["n_test"])
    return out


# --- measuring (in the shard's measuring job) -------------------------------------------------

class Data:
    """What a custom indicator's function gets besides the network and its settings."""

    def __init__(self, model, dataset, job, n_points: int | None):
        self.run_id, self.device, self.log = job.run.id, job.device, job.log
        self.hyperparameters = job.run.hyperparameters()
        self.n_points = n_points
        self.dataset = dataset  # the member's dataset (xarray, read-only): anything else
        self._job, self._spec_model = job, model

    def train(self):
        """(x, y): copies of every training input (N, ...) and the labels trained on."""
        return self._job.train_points(self.dataset)

    def test(self):
        """(x, y): copies of the first n_points test inputs and labels: per-point variables
        have one value for each of them, in this order."""
        return self._job.test_points(self.dataset, self.n_points)

    def initial_model(self):
        """The network at its initial weights (as training started), a fresh copy."""
        return self._job.initial_model(self._spec_model)


def import_callable(metric: Metric):
    """The function of ``metric``'s entry, imported from the working directory or an
    installed package (the module file whose source named the store)."""
    module, function = metric.module.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        imported = importlib.import_module(module)
    except Exception as err:
        raise ImportError(f"cannot import {module} for {metric.module} from the working "
                          f"directory {os.getcwd()} or an installed package: "
                          f"{type(err).__name__}: {err}. Fix the module, or run from the folder "
                          "that holds it (--directory)") from err
    origin = Path(getattr(imported, "__file__", "") or "").resolve()
    if origin != Path(metric.custom["path"]):
        raise ImportError(f"imported {module} from {origin}, but the store's name was hashed "
                          f"from {metric.custom['path']}: remove one of the two")
    fn = getattr(imported, function, None)
    if not callable(fn):
        raise ImportError(f"{module} has no function {function!r}: fix measure.custom's "
                          f"callable {metric.module}")
    return fn


def measure_function(metric: Metric):
    """``metric``'s measure function as the measuring job calls a built-in's: (model, data,
    settings, job) -> xarray.Dataset of the declared variables, checked."""
    def measure(model, data, settings, job):
        fn = import_callable(metric)
        n_points = settings.get("n_points")
        try:
            out = fn(model, Data(model, data, job, n_points), settings["settings"])
        except Exception as err:
            raise RuntimeError(f"{metric.module} raised {type(err).__name__}: {err} (its "
                               "traceback is in the log): fix the function, or raise with a "
                               "message that says why the indicator is undefined") from err
        return to_dataset(out, metric, n_points)
    return measure


def _as_array(value, where: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where} is a {type(value).__name__}, not a number or an array of "
                        f"numbers ({err})") from None


def to_dataset(out, metric: Metric, n_points: int | None):
    """The function's dict as the metric's Dataset of one network, every value checked."""
    import xarray as xr

    fix = f"(declared in {Path(metric.custom['path']).name} or the config entry)"
    if not isinstance(out, dict):
        raise TypeError(f"{metric.module} returned a {type(out).__name__}, not a dict "
                        f"{{variable: value}} of its declared variables {list(metric.variables)}")
    missing = [v for v in metric.variables if v not in out]
    extra = [v for v in out if v not in metric.variables]
    if missing or extra:
        raise ValueError(f"{metric.module} returned variables {list(out)}, declared "
                         f"{list(metric.variables)} {fix}: return exactly the declared ones")
    variables = {}
    for var, spec in metric.variables.items():
        where = f"{metric.module}'s {var!r}"
        values = _as_array(out[var], where)
        shape = () if spec["dims"] == [] else (n_points,)
        if values.shape != shape:
            what = "one number" if shape == () else "one value per test point of data.test()"
            raise ValueError(f"{where} has shape {values.shape}; its dims {spec['dims']} "
                             f"{fix} ask for shape {shape}: {what}")
        bad = ~np.isfinite(values)
        if bad.any():
            kinds = [k for k, hit in (("NaN", np.isnan(values).any()),
                                      ("an infinite value", np.isinf(values).any())) if hit]
            at = "" if shape == () else f" at {int(bad.sum())} of {n_points} points"
            raise ValueError(f"{where} is {' and '.join(kinds)}{at}: an indicator must be "
                             "finite for every network; raise where it is undefined")
        variables[var] = (tuple(spec["dims"]), values)
    coords = {"point": np.arange(n_points)} if n_points is not None else {}
    return xr.Dataset(variables, coords=coords)
