"""The Makefile's study targets: `make run|check|verify|report STUDY=FILE` check the study's
files before Snakemake reads them (file, line and column of a YAML error), then hand them to
Snakemake after its targets (--configfile takes every name after it); the report goes to
results/<study>/report.html. Snakemake is a stand-in here that records its arguments, and
the install and dataset steps are taken as done (make -o), so nothing is installed or run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml
from workflow_helpers import REPO

MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="no make on this machine")
BROKEN = "study: broken\ngrid:\n  width: depth: [1]\n"  # line 3, column 15: a second colon


@pytest.fixture
def bin_dir(tmp_path):
    """A BIN for the Makefile: this interpreter as python, and a snakemake that appends its
    arguments to calls.txt beside it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (folder / "snakemake").write_text(f'#!/bin/sh\necho "$*" >> "{folder}/calls.txt"\n')
    for script in folder.iterdir():
        script.chmod(0o755)
    return folder


def make(bin_dir, *args):
    """`make ARGS` in the repository with BIN=bin_dir, install and system-data taken as done."""
    result = subprocess.run([MAKE, "--no-print-directory", "-o", "install", "-o", "system-data",
                             f"BIN={bin_dir}", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    calls = bin_dir / "calls.txt"
    return result, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("args, expected", [
    (["run"], ["--cores 2 --configfile config.yaml"]),
    (["run", "STUDY=studies/mine.yaml", "CORES=4"], ["--cores 4 --configfile studies/mine.yaml"]),
    (["verify"], ["--cores 1 verify --configfile config.yaml"]),
    (["verify", "STUDY=studies/mine.yaml"], ["--cores 1 verify --configfile studies/mine.yaml"]),
    (["report"], ["--cores 2 --configfile config.yaml",
                  "--report results/demo/report.html --configfile config.yaml"]),
    (["report", "STUDY=studies/novak_gap.yaml"],
     ["--cores 2 --configfile studies/novak_gap.yaml",
      "--report results/novak_gap/report.html --configfile studies/novak_gap.yaml"]),
], ids=["run", "run-study", "verify", "verify-study", "report", "report-study"])
def test_each_target_checks_the_study_then_hands_it_to_snakemake(bin_dir, args, expected):
    result, calls = make(bin_dir, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == expected, result.stdout
    study = next((a.split("=", 1)[1] for a in args if a.startswith("STUDY=")), "config.yaml")
    assert f"{study}: OK (study " in result.stdout, result.stdout  # the checker ran


@pytest.mark.parametrize("target", ["check", "run", "verify", "report"])
def test_a_yaml_error_names_file_line_and_column_before_snakemake_runs(bin_dir, tmp_path,
                                                                        target):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result, calls = make(bin_dir, target, f"STUDY={broken}")
    assert result.returncode != 0 and calls == [], result.stdout + result.stderr
    assert (f"config file {broken}, line 3, column 15: not valid YAML: mapping values are not "
            f"allowed here") in result.stderr, result.stderr


def test_a_bad_value_names_the_key(bin_dir, tmp_path):
    study = yaml.safe_load((REPO / "studies/mine.yaml").read_text())
    study.setdefault("measure", {})["n_points"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(study))
    result, calls = make(bin_dir, "check", f"STUDY={bad}")
    assert result.returncode != 0 and calls == []
    assert "invalid configuration: config key measure.n_points: -1 is less than the minimum" \
        in result.stderr, result.stderr


def test_gallery_draws_the_default_study_whatever_the_study(bin_dir):
    """The README's gallery is the default study's: STUDY does not change what it runs."""
    result = subprocess.run([MAKE, "-n", "-o", "install", "-o", "system-data",
                             f"BIN={bin_dir}", "gallery", "STUDY=studies/mine.yaml"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{bin_dir}/snakemake --cores 2 --configfile config.yaml" in result.stdout
    assert "studies/mine.yaml" not in result.stdout


def test_install_says_what_it_installs_and_shows_pip_progress(tmp_path):
    """The install (4-5 minutes on a fresh machine) announces itself, and pip lists what it
    collects and installs (no progress bars, for CI logs)."""
    result = subprocess.run([MAKE, "-n", "-W", "pyproject.toml", "install"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "this takes 4-5 minutes" in result.stdout, result.stdout
    big = [line for line in result.stdout.splitlines() if "pip install" in line and "-e" in line]
    assert len(big) == 1 and "--quiet" not in big[0] and "--progress-bar off" in big[0], big
