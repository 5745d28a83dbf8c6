"""Every conda environment pins exactly what pyproject.toml pins, so the two cannot drift."""

from __future__ import annotations

import tomllib

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
