"""The test tiers (tests/README.md): `make test` runs every test, `make test-fast` leaves out
the markers workflow, slurm, presets and slow; both print the slowest tests; a test that
starts Snakemake without the workflow marker fails (the guard in tests/conftest.py)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest
from conftest import UnmarkedWorkflowTest, starts_snakemake
from workflow_helpers import REPO, SNAKEMAKE

MAKE = shutil.which("make")


def pytest_command(target: str) -> tuple[list[str], list[str]]:
    """What `make TARGET` puts before `python -m pytest`, and the arguments it gives pytest
    (make -n, install taken as done)."""
    result = subprocess.run([MAKE, "-n", "--no-print-directory", "-o", "install", "-o",
                             "system-data", target], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if " -m pytest" in line]
    assert len(lines) == 1, result.stdout
    before, after = lines[0].split(" -m pytest", 1)
    return shlex.split(before)[:-1], shlex.split(after)


@pytest.mark.skipif(MAKE is None, reason="no make on this machine")
def test_make_test_runs_everything_and_test_fast_leaves_out_the_slow_markers():
    (full_env, full), (fast_env, fast) = pytest_command("test"), pytest_command("test-fast")
    assert full_env == [] and "-m" not in full and "-k" not in full
    assert not any(a.startswith("tests") for a in full)  # testpaths: every test
    assert fast[fast.index("-m") + 1] == "not workflow and not slurm and not presets and not slow"
    assert fast_env == ["OMP_NUM_THREADS=1"]
    for command in (full, fast):
        assert any(a.startswith("--durations=") for a in command), command
        assert "--strict-markers" in command, command


def test_every_marker_is_registered():
    registered = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]["markers"]
    assert {m.split(":")[0] for m in registered} >= {"workflow", "slurm", "presets", "slow"}


@pytest.mark.parametrize("args, expected", [
    ([str(SNAKEMAKE), "-n"], True),
    (["snakemake", "--version"], True),
    ("snakemake -n --cores 1", True),
    ([sys.executable, "-m", "snakemake", "-n"], True),
    ([sys.executable, "-c", "print('snakemake')"], False),
    (["make", "-n", "run"], False),
])
def test_the_guard_recognises_a_snakemake_command(args, expected):
    assert starts_snakemake(args) == expected


def test_an_unmarked_test_cannot_start_snakemake():
    """Refused before any process starts; a test marked workflow may (below)."""
    with pytest.raises(UnmarkedWorkflowTest, match="not marked workflow"):
        subprocess.run([str(SNAKEMAKE), "--version"], capture_output=True)
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0


@pytest.mark.workflow
def test_a_workflow_test_may_start_snakemake():
    result = subprocess.run([str(SNAKEMAKE), "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
