"""Every conda environment pins exactly what pyproject.toml pins, so the two cannot drift."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO


def _pins(requirements) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        name, sep, version = requirement.partition("==")
        assert sep, f"{requirement!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


PYPROJECT = _pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
ENVS = sorted((REPO / "envs").glob("*.yaml"))


def test_there_are_environments():
    assert {p.name for p in ENVS} >= {"torch.yaml", "analysis.yaml"}


@pytest.mark.parametrize("env_path", ENVS, ids=lambda p: p.name)
def test_env_pins_match_pyproject(env_path):
    env = yaml.safe_load(env_path.read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for name, version in _pins(pip_section).items():
        assert PYPROJECT.get(name) == version, f"{env_path.name}: {name}=={version} vs pyproject"
    assert "python=3.11" in env["dependencies"]


def test_every_rule_env_exists():
    for smk in (REPO / "rules").glob("*.smk"):
        for line in smk.read_text().splitlines():
            if line.strip().startswith("ENV_") and "=" in line:
                target = line.split("=", 1)[1].strip().strip('"')
                assert (REPO / "rules" / target).resolve().is_file(), line


# --- Every rule's imports resolve in its own conda environment ---------------------------
# A rule runs its script in the env named by its `conda:` line; a module the script imports
# (directly, or through workflow_src's module-level imports) that the env does not install
# fails only under `--use-conda`, which cannot run here. So each env's scripts are imported
# in a subprocess whose import system refuses every distribution outside that env's pins
# and their requirements.
RULE_BLOCK = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)
ENV_NAMES = {"ENV_TORCH": "torch.yaml", "ENV_ANALYSIS": "analysis.yaml"}


def _rule_envs() -> dict[str, list[tuple[str, Path]]]:
    """env file name -> [(rule, script path)] for every rule that runs a script."""
    by_env: dict[str, list[tuple[str, Path]]] = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for name, body in RULE_BLOCK.findall(smk.read_text()):
            env = re.search(r"conda:\s*\n\s*(\w+)", body)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", body)
            if script is None:
                continue
            assert env is not None, f"{smk.name}: rule {name} runs a script but names no conda env"
            by_env.setdefault(ENV_NAMES[env.group(1)], []).append(
                (name, (REPO / "rules" / script.group(1)).resolve()))
    return by_env


RULE_ENVS = _rule_envs()

IMPORT_CHECK = r'''
import ast, importlib, importlib.abc, importlib.metadata as md, json, re, sys
allowed_dists, scripts = json.loads(sys.argv[1]), json.loads(sys.argv[2])

def closure(names):
    """The distributions pip would install for these pins: requirements, transitively."""
    todo, seen = [n.lower() for n in names], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower())
    return {n.replace("_", "-") for n in seen}

dists = closure(allowed_dists)
owners = md.packages_distributions()  # top-level import name -> distributions
# The script preamble of `snakemake` puts its own package on sys.path: the env needs no copy.
always = {"workflow_src", "snakemake"}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        if top in always or top in sys.stdlib_module_names or top not in owners:
            return None
        if any(d.lower().replace("_", "-") in dists for d in owners[top]):
            return None
        raise ImportError(f"{top} (distribution {owners[top][0]}) is not in this env")

sys.meta_path.insert(0, Refuse())
problems = []
for rule, path in scripts:
    for node in ast.walk(ast.parse(open(path).read())):
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                   [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as error:
                problems.append(f"rule {rule} ({path.rsplit('/', 1)[-1]}): import {module}: {error}")
print(json.dumps(problems))
'''


@pytest.mark.parametrize("env_name", sorted(RULE_ENVS), ids=str)
def test_every_rule_imports_resolve_in_its_env(env_name):
    env = yaml.safe_load((REPO / "envs" / env_name).read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    scripts = [(rule, str(path)) for rule, path in RULE_ENVS[env_name]]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, json.dumps(list(_pins(pip_section))),
         json.dumps(scripts)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    problems = json.loads(result.stdout.strip().splitlines()[-1])
    assert not problems, f"envs/{env_name} lacks what its rules import:\n" + "\n".join(problems)


def test_rule_env_parser_sees_every_rule():
    """The parser above finds the rules that run scripts, each in a known env."""
    rules = {rule for pairs in RULE_ENVS.values() for rule, _ in pairs}
    assert {"train", "measure", "aggregate", "plot_metrics", "correlate"} <= rules
    assert all(path.is_file() for pairs in RULE_ENVS.values() for _, path in pairs)
