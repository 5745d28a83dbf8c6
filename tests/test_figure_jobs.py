"""What a statistics or figure job costs before its work: the modules its script imports
(never torch; the figures neither statsmodels' formulas nor scikit-learn), and the reuse of
figures whose options, inputs and code are unchanged (workflow_src/figures/output.py)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_src.figures import output
from workflow_src.figures.catalogue import FIGURES, options

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "rules" / "scripts"
STATS_SCRIPTS = ["collect_curves", "correlate", "granulate", "regress", "paired", "summarize"]
FIGURE_SCRIPTS = sorted(p.stem for p in SCRIPTS.glob("plot_*.py"))
# What each figure job does not use: it must not pay for importing it.
NOT_IN_FIGURE_JOBS = ["torch", "torchvision", "sklearn", "statsmodels.formula",
                      "statsmodels.discrete"]

IMPORTS = r'''
import ast, importlib, json, sys
sys.path.insert(0, sys.argv[1])
found = {}
for path in json.loads(sys.argv[2]):
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError:  # a name imported from a module, not a module
                pass
print(json.dumps(sorted(sys.modules)))
'''


def imported(scripts: list[str]) -> set[str]:
    """Every module loaded by importing what the rule scripts import (in a fresh process:
    this one has torch already)."""
    paths = [str(SCRIPTS / f"{name}.py") for name in scripts]
    result = subprocess.run([sys.executable, "-c", IMPORTS, str(REPO), json.dumps(paths)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(f"{name}.") for m in modules)


def test_every_figure_script_is_checked():
    assert {"plot_metrics", "plot_summary", "plot_training", "plot_keskar",
            "plot_double_descent", "plot_snapshots"} <= set(FIGURE_SCRIPTS)


@pytest.mark.parametrize("script", STATS_SCRIPTS)
def test_statistics_jobs_do_not_import_torch(script):
    modules = imported([script])
    assert "workflow_src.integrity" in modules  # the check imported the script's imports
    assert not loaded(modules, "torch"), script


@pytest.mark.parametrize("script", FIGURE_SCRIPTS)
def test_figure_jobs_import_only_what_they_draw_with(script):
    modules = imported([script])
    assert "workflow_src.figures.job" in modules
    assert [name for name in NOT_IN_FIGURE_JOBS if loaded(modules, name)] == []


DRAW = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from workflow_src.figures.catalogue import FIGURES
from workflow_src.figures.output import save
from workflow_src.figures.synthetic import synthetic_study
from workflow_src.figures.theme import use_theme
use_theme()
data, _ = synthetic_study(30, 6)
opts = {"color_by": "label_noise", "width": 200, "height": 150, "n_train": 100}
for stem in FIGURES:
    save(FIGURES[stem].build(data, opts), f"{sys.argv[2]}/{stem}")
print(json.dumps(sorted(sys.modules)))
'''


@pytest.mark.slow
def test_drawing_every_figure_imports_no_torch(tmp_path):
    """Not only the imports: building and writing every figure (whatever the figure modules
    import on first use) loads no torch, scikit-learn or statsmodels' formulas."""
    result = subprocess.run([sys.executable, "-c", DRAW, str(REPO), str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert [name for name in NOT_IN_FIGURE_JOBS if loaded(modules, name)] == []
    assert len(list(tmp_path.glob("*.png"))) == len(FIGURES)


# --- reuse --------------------------------------------------------------------------------
class Chart:
    """Stands in for an altair chart: counts how often a figure was built."""
    built = 0


@pytest.fixture
def fake_save(monkeypatch):
    """output.save writing three small files instead of rendering."""
    def save(chart, stem):
        Path(stem).parent.mkdir(parents=True, exist_ok=True)
        for fmt in output.FORMATS:
            Path(f"{stem}.{fmt}").write_text(f"{fmt} of {chart}")
    monkeypatch.setattr(output, "save", save)


def draw(directory, inputs, **opts) -> bool:
    def build():
        Chart.built += 1
        return f"chart {Chart.built}"
    figures = output.Figures(directory, code=[Path(output.__file__)], log=lambda *a: None)
    return figures.draw("figure", build, options=opts, inputs=inputs)


def test_a_figure_is_reused_until_its_options_inputs_or_files_change(tmp_path, fake_save):
    data = tmp_path / "networks.csv"
    data.write_text("a,b\n1,2\n")
    figures = tmp_path / "figures"
    assert draw(figures, [data], width=1) is True
    first = (figures / "figure.png").read_text()
    for fmt in output.FORMATS:  # Snakemake removes a job's outputs before it runs
        (figures / f"figure.{fmt}").unlink()
    assert draw(figures, [data], width=1) is False  # reused: linked from the cache
    assert (figures / "figure.png").read_text() == first
    assert draw(figures, [data], width=2) is True  # another option value
    data.write_text("a,b\n1,3\n")
    assert draw(figures, [data], width=2) is True  # other input content
    assert draw(figures, [data], width=2) is False
    (figures / ".cache" / "figure.svg").write_text("damaged")  # the record no longer holds
    assert draw(figures, [data], width=2) is True
    assert (figures / "figure.svg").read_text() != "damaged"


def test_a_store_input_is_keyed_by_its_manifest(tmp_path):
    store = tmp_path / "metrics.zarr"
    store.mkdir()
    (store / "manifest.json").write_text('{"files": {}}')
    assert output.content_digest(store) == output.content_digest(store / "manifest.json")


def test_each_job_is_keyed_only_by_the_options_its_figures_use():
    plots = {"color_by": "depth", "width": 420, "height": 300, "double_descent": False}
    assert options(plots, ["learning_curves", "indicator_ranking"]) == {
        "height": 300, "width": 420}
    assert options(plots, ["indicators_vs_gap"]) == {"color_by": "depth"}
    assert options(plots, ["double_descent"], n_train=300)["n_train"] == 300
    assert all(set(f.options) <= {"color_by", "width", "height", "n_train"}
               for f in FIGURES.values())


def test_time_to_fit_of_a_fixed_budget_network_is_its_fit_step():
    """fit_table: a network trained on past its fit (training.stop_at_target: false) is
    timed at its fit_step, with its final test accuracy; one that never fitted at its
    budget; without fit_step (tables from before it) the last evaluation, as before."""
    import numpy as np
    import pandas as pd

    from workflow_src.figures.studies import fit_table

    curves = pd.DataFrame({
        "run_id": ["a"] * 3 + ["b"] * 2, "step": [0, 10, 20, 0, 10],
        "seconds": [0.0, 1.0, 2.0, 0.0, 3.0], "test_acc": [0.1, 0.5, 0.6, 0.1, 0.7],
        "fit_step": [10, 10, 10, np.nan, np.nan], "dataset": ["digits"] * 5,
        "label_noise": [0.0] * 5, "corruption": ["none"] * 5,
        "status": ["converged"] * 3 + ["unconverged"] * 2})
    hyper = ["dataset", "label_noise", "corruption"]
    fits = fit_table(curves, hyper).set_index("run_id")
    assert (fits.loc["a", "steps"], fits.loc["a", "seconds"]) == (10, 1.0)
    assert fits.loc["a", "test_error"] == pytest.approx(0.4)
    assert (fits.loc["b", "steps"], fits.loc["b", "seconds"]) == (10, 3.0)
    old = fit_table(curves.drop(columns="fit_step"), hyper).set_index("run_id")
    assert (old.loc["a", "steps"], old.loc["a", "seconds"]) == (20, 2.0)
