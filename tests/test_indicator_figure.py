"""The indicators-vs-gap figure (workflow_src.figures.studies.indicators_vs_gap_chart, rule
plot_indicators_vs_gap): networks whose optimizer for an indicator stopped short are drawn
hollow, and a panel with any says in its title how many of its networks converged."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import xarray as xr

from workflow_src import stats
from workflow_src.figures import studies
from workflow_src.integrity import seal_record, write_store

REPO = Path(__file__).resolve().parent.parent
RUNS = [f"r{i}" for i in range(8)]


def networks_table() -> pd.DataFrame:
    """8 networks, 4 per dataset; r7 missed its training target."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "run_id": RUNS, "dataset": ["digits"] * 4 + ["mnist"] * 4,
        "status": ["converged"] * 7 + ["unconverged"], "gap": rng.uniform(0, 0.3, 8),
        "width": [16, 64] * 4, "hessian_top_eigenvalue": rng.uniform(1, 10, 8),
        "margin": rng.uniform(1, 2, 8)})


# the Hessian's Lanczos stopped short on r1 and r3 (digits); r7 was not measured
FLAGS = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, np.nan]
TITLES = {"hessian_top_eigenvalue": ["hessian_top_eigenvalue (per network)", "[nats]"],
          "margin": ["margin (per network)", "[logits]"]}


def panels(chart) -> dict[tuple[str, str], dict]:
    """(indicator, dataset) -> the panel's spec, with its data rows under "rows"."""
    spec = chart.to_dict()
    out = {}
    for row in spec["vconcat"]:
        for panel in row["hconcat"]:
            rows = spec["datasets"][panel["data"]["name"]]
            indicator = panel["encoding"]["x"]["field"]
            out[indicator, rows[0]["dataset"]] = {**panel, "rows": rows}
    return out


def test_stopped_short_networks_are_hollow_and_the_panel_says_how_many_converged():
    flags = pd.DataFrame({"hessian_top_eigenvalue": FLAGS},
                         index=pd.Index(RUNS, name="run_id"))
    found = panels(studies.indicators_vs_gap_chart(networks_table(), TITLES, ["width"],
                                                   "width", 200, 150, flags))
    digits = found["hessian_top_eigenvalue", "digits"]
    assert digits["title"] == ["digits", "optimizer converged: 2 of 4 (50%)",
                               "hollow: stopped short"]
    assert {r["run_id"]: r["optimizer"] for r in digits["rows"]} == {
        "r0": "converged", "r1": "stopped short", "r2": "converged", "r3": "stopped short"}
    fill = digits["encoding"]["fillOpacity"]
    assert fill["condition"] == {"test": "(datum.optimizer === 'stopped short')", "value": 0.0}
    assert fill["value"] == 1.0  # the others filled
    assert digits["encoding"]["stroke"]["field"] == "width"  # the outline keeps the colour
    assert "optimizer" in [t["field"] for t in digits["encoding"]["tooltip"]]
    # mnist: the 3 measured networks converged (r7 was not measured): a plain title
    mnist = found["hessian_top_eigenvalue", "mnist"]
    assert mnist["title"] == "mnist"
    assert [r["optimizer"] for r in mnist["rows"]] == ["converged"] * 3 + ["not measured"]
    # an indicator without an optimizer is drawn as before
    for dataset in ("digits", "mnist"):
        margin = found["margin", dataset]
        assert margin["title"] == dataset and "fillOpacity" not in margin["encoding"]
        assert all("optimizer" not in r for r in margin["rows"])


def test_without_flags_the_figure_is_unchanged():
    table = networks_table()
    plain = studies.indicators_vs_gap_chart(table, TITLES, ["width"], "width", 200, 150)
    empty = pd.DataFrame(index=pd.Index(RUNS, name="run_id"))
    assert plain.to_dict() == studies.indicators_vs_gap_chart(
        table, TITLES, ["width"], "width", 200, 150, empty).to_dict()


def test_the_rule_script_reads_the_flags_from_the_store(tmp_path):
    """rules/scripts/plot_indicators_vs_gap.py on a store whose Hessian names its
    convergence variable: the HTML carries the panel's converged fraction."""
    table = networks_table()
    ds = xr.Dataset(
        {"gap": ("run", table["gap"].to_numpy()),
         "status": ("run", table["status"].to_numpy()),
         "hessian_top_eigenvalue": ("run", table["hessian_top_eigenvalue"].to_numpy()),
         "hessian_top_converged": ("run", np.asarray(FLAGS)),
         "margin": ("run", table["margin"].to_numpy())},
        coords={"run_id": ("run", RUNS), "dataset": ("run", table["dataset"].to_numpy()),
                "width": ("run", table["width"].to_numpy())},
        attrs={"hyperparameters": ["dataset", "width"]})
    for name in ("hessian_top_eigenvalue", "margin"):
        ds[name].attrs.update(role="indicator", expected_sign=1, units="u")
    ds["hessian_top_eigenvalue"].attrs["converged_by"] = "hessian_top_converged"
    assert list(stats.optimizer_flags(ds)["hessian_top_eigenvalue"].isna()) == \
        [False] * 7 + [True]
    write_store(ds, tmp_path / "metrics.zarr")
    table.to_csv(tmp_path / "networks.csv", index=False)
    (tmp_path / "seals").mkdir()
    seal_record(tmp_path / "seals/correlate.json", {"rule": "correlate"},
                [tmp_path / "networks.csv"])
    figures = tmp_path / "figures"
    outputs = {fmt: str(figures / f"indicators_vs_gap.{fmt}") for fmt in ("html", "png", "svg")}

    class Named(list):
        def __init__(self, **paths):
            super().__init__(paths.values())
            self.__dict__.update(paths)

    job = SimpleNamespace(
        scriptdir=str(REPO / "rules" / "scripts"), rule="plot_indicators_vs_gap",
        input=Named(metrics=str(tmp_path / "metrics.zarr"),
                    networks=str(tmp_path / "networks.csv"),
                    correlate_seal=str(tmp_path / "seals/correlate.json")),
        output=Named(**outputs, seal=str(tmp_path / "seals/plot_indicators_vs_gap.json")),
        params=SimpleNamespace(plots={"color_by": "width", "width": 200, "height": 150},
                               figures=str(figures)),
        log=[str(tmp_path / "logs" / "plot.log")])
    runpy.run_path(str(REPO / "rules" / "scripts" / "plot_indicators_vs_gap.py"),
                   init_globals={"snakemake": job})
    html = Path(outputs["html"]).read_text()
    assert "optimizer converged: 2 of 4 (50%)" in html and "stopped short" in html
