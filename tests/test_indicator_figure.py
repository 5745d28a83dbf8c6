"""The two overview figures (workflow_src.figures.indicators): indicators_vs_gap as a grid
of small multiples, and the ranking of the indicators by Ψ and τ. Checked from the chart
spec (panels, their size, their titles) and the PNG's pixel size, at the default 17
indicators and at 40; then the rule script plot_metrics on a sealed store."""

from __future__ import annotations

import runpy
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from workflow_src import stats
from workflow_src.figures import indicators, studies
from workflow_src.figures.output import save
from workflow_src.figures.synthetic import metrics_dataset, summary_tables
from workflow_src.figures.theme import use_theme
from workflow_src.integrity import seal_record, write_store
from workflow_src.stats.tables import network_table

REPO = Path(__file__).resolve().parent.parent
RUNS = [f"r{i}" for i in range(8)]
LONG_SIDE = 2000  # PNG pixels, at the default 17 indicators


def png_size(path) -> tuple[int, int]:
    return struct.unpack(">II", Path(path).read_bytes()[16:24])


def networks_table() -> pd.DataFrame:
    """8 networks, 4 per dataset; r7 missed its training target. ``optimizer`` is the
    hyperparameter that trained them (it once shadowed the indicator's optimizer state)."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "run_id": RUNS, "dataset": ["digits"] * 4 + ["mnist"] * 4,
        "status": ["converged"] * 7 + ["unconverged"], "gap": rng.uniform(0, 0.3, 8),
        "width": [16, 64] * 4, "optimizer": ["sgd", "adam"] * 4,
        "hessian_top_eigenvalue": rng.uniform(1, 10, 8), "margin": rng.uniform(1, 2, 8)})


# the Hessian's Lanczos stopped short on r1 and r3 (digits); r7 was not measured
FLAGS = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, np.nan]
TITLES = {"hessian_top_eigenvalue": ["hessian_top_eigenvalue (per network); expected: larger "
                                     "gap", "[nats]"],
          "margin": ["margin (per network); expected: smaller gap", "[logits]"]}


def cells(chart) -> list[dict]:
    """The grid's cells, in order, from the Vega-Lite spec."""
    return chart.to_dict()["concat"]


def panels(chart) -> dict[tuple[str, str], dict]:
    """(indicator, dataset) -> the panel's spec, with its data rows under "rows" (a study of
    several datasets: each panel is titled with its dataset)."""
    spec = chart.to_dict()
    found = {}
    for cell in spec["concat"]:
        for panel in cell.get("hconcat", [cell]):
            layers = panel.get("layer", [panel])
            rows = spec["datasets"][layers[-1]["data"]["name"]]
            found[layers[-1]["encoding"]["x"]["field"], panel["title"]["text"]] = {
                **panel, "rows": rows, "encoding": layers[-1]["encoding"]}
    return found


def test_stopped_short_networks_are_hollow_and_the_panel_says_how_many_converged():
    flags = pd.DataFrame({"hessian_top_eigenvalue": FLAGS},
                         index=pd.Index(RUNS, name="run_id"))
    found = panels(indicators.indicators_vs_gap_chart(
        networks_table(), TITLES, ["width", "optimizer"], "width", flags))
    digits = found["hessian_top_eigenvalue", "digits"]
    assert digits["title"]["text"] == "digits"
    assert digits["title"]["subtitle"] == ["optimizer converged: 2 of 4 (50%)"]
    state = indicators.SEARCH
    assert {r["run_id"]: r[state] for r in digits["rows"]} == {
        "r0": "converged", "r1": "stopped short", "r2": "converged", "r3": "stopped short"}
    # only the columns it draws: the hyperparameters are in stats/networks.csv
    assert set(digits["rows"][0]) == {"run_id", "status", "gap", "hessian_top_eigenvalue",
                                      "width", state}
    fill = digits["encoding"]["fillOpacity"]
    assert fill["condition"] == {"test": f"(datum['{state}'] === 'stopped short')",
                                 "value": 0.0}
    assert fill["value"] == 1.0  # the others filled
    assert digits["encoding"]["stroke"]["field"] == "width"  # the outline keeps the colour
    assert state in [t["field"] for t in digits["encoding"]["tooltip"]]
    # mnist: the 3 measured networks converged (r7 was not measured): no fraction
    mnist = found["hessian_top_eigenvalue", "mnist"]
    assert mnist["title"]["subtitle"] == ""
    assert [r[state] for r in mnist["rows"]] == ["converged"] * 3 + ["not measured"]
    # an indicator without an optimizer is drawn as before
    for dataset in ("digits", "mnist"):
        margin = found["margin", dataset]
        assert margin["title"]["subtitle"] == "" and "fillOpacity" not in margin["encoding"]
        assert all(state not in r for r in margin["rows"])
    # with the optimizer hyperparameter and no flags, no panel speaks of an optimizer
    plain = indicators.indicators_vs_gap_chart(networks_table(), TITLES,
                                               ["width", "optimizer"], "width")
    assert "optimizer converged" not in str(plain.to_dict())


def synthetic(n_indicators: int, n_networks: int = 12):
    ds = metrics_dataset(n_networks, n_indicators, n_points=10, datasets=1)
    return ds, network_table(ds)


@pytest.mark.parametrize("n_indicators", [17, 40])
def test_indicators_vs_gap_is_a_grid_of_small_multiples(tmp_path, n_indicators):
    use_theme()
    ds, networks = synthetic(n_indicators)
    titles = studies.indicator_titles(ds)
    assert len(titles) == n_indicators
    chart = indicators.indicators_vs_gap_chart(networks, titles, list(ds.attrs[
        "hyperparameters"]), "label_noise", stats.optimizer_flags(ds))
    spec = chart.to_dict()
    assert spec["columns"] == indicators.GRID_COLUMNS
    grid = cells(chart)
    assert [c["title"]["text"] for c in grid] == list(titles)  # a panel per indicator
    for cell in grid:  # legible: the same panel size and fonts at 17 and at 40
        assert (cell["width"], cell["height"]) == indicators.PANEL
        assert cell["title"]["fontSize"] >= 10 and cell["title"]["subtitleFontSize"] >= 10
    save(chart, str(tmp_path / "indicators_vs_gap"))
    width, height = png_size(tmp_path / "indicators_vs_gap.png")
    rows = -(-n_indicators // indicators.GRID_COLUMNS)
    if n_indicators == 17:
        assert max(width, height) <= LONG_SIDE, (width, height)
    else:  # more rows, not smaller panels: the page grows down, its width stays
        assert rows == 8 and height > width
    assert width <= LONG_SIDE


def summary_inputs(n_indicators: int):
    ds, networks = synthetic(n_indicators)
    summary, granulated = summary_tables(ds, networks)
    summary.loc[0, ["kendall_tau", "direction"]] = [-0.5, "reversed"]
    summary.loc[1, ["kendall_tau", "direction"]] = [0.0, np.nan]  # no sign
    return summary, granulated


@pytest.mark.parametrize("n_indicators", [17, 40])
def test_ranking_chart_rows_intervals_and_sign_colours(tmp_path, n_indicators):
    use_theme()
    summary, granulated = summary_inputs(n_indicators)
    chart = indicators.indicator_ranking_chart(summary, granulated)
    spec = chart.to_dict()
    psi_panel, tau_panel = spec["hconcat"]
    assert [psi_panel["title"], tau_panel["title"]] == ["Ψ", "τ"]
    rows, axes = indicators.ranking_table(summary, granulated)
    assert len(rows) == n_indicators and rows["indicator"].is_unique
    assert list(rows["rank_psi"]) == sorted(rows["rank_psi"])  # ranked by |Ψ|
    order = psi_panel["layer"][2]["encoding"]["y"]["sort"]
    assert order == list(rows["indicator"])
    assert (psi_panel["height"], tau_panel["height"]) == (indicators.ROW * n_indicators,) * 2
    # τ: a rule from ci_low to ci_high under each point; Ψ: the axes' ψ, no interval
    interval = tau_panel["layer"][1]
    assert interval["mark"]["type"] == "rule"
    assert (interval["encoding"]["x"]["field"], interval["encoding"]["x2"]["field"]) == (
        "tau_ci_low", "tau_ci_high")
    assert all(layer["mark"]["type"] != "rule" or "x2" not in layer["encoding"]
               for layer in psi_panel["layer"])
    assert set(axes["axis"]) == set(granulated["axis"]) - {"__all__", "seed"}
    colours = {layer["encoding"]["color"]["field"] for layer in tau_panel["layer"][1:]}
    assert colours == {"tau_sign"}
    assert psi_panel["layer"][2]["encoding"]["color"]["field"] == "psi_sign"
    by_name = rows.set_index("indicator")
    first, second = summary["indicator"][:2]
    assert by_name.loc[first, "tau_sign"] == "reversed"
    assert by_name.loc[second, "tau_sign"] == "no sign"
    expected = np.sign(rows["psi"]) * rows["expected_sign"]
    assert list(rows["psi_sign"]) == list(np.where(expected > 0, "as expected", np.where(
        expected < 0, "reversed", "no sign")))
    save(chart, str(tmp_path / "indicator_ranking"))
    width, height = png_size(tmp_path / "indicator_ranking.png")
    assert width <= LONG_SIDE and (height <= LONG_SIDE or n_indicators == 40)


class Named(list):
    """Snakemake's named lists: a list of paths, each also an attribute."""

    def __init__(self, **paths):
        super().__init__(paths.values())
        self.__dict__.update(paths)

    def keys(self):
        return [k for k in self.__dict__]


def plot_metrics_job(tmp_path, color_by: str) -> SimpleNamespace:
    """rules/scripts/plot_metrics.py's ``snakemake`` object over a sealed store of the
    8 networks of ``networks_table`` (no ellipses)."""
    figures = tmp_path / "figures"
    stems = ["jacobian_vs_gap", "jacobian_by_correctness", "jacobian_vs_loss", "loss_bounds",
             "indicators_vs_gap"]
    outputs = {f"{stem}_{fmt}": str(figures / f"{stem}.{fmt}") for stem in stems
               for fmt in ("html", "png", "svg")}
    return SimpleNamespace(
        scriptdir=str(REPO / "rules" / "scripts"), rule="plot_metrics",
        input=Named(metrics=str(tmp_path / "metrics.zarr"),
                    networks=str(tmp_path / "networks.csv"),
                    correlate_seal=str(tmp_path / "seals/correlate.json"),
                    code=[str(REPO / "workflow_src/figures/indicators.py")]),
        output=Named(**outputs, seal=str(tmp_path / "seals/plot_metrics.json")),
        params=SimpleNamespace(figures_drawn=stems, figures=str(figures),
                               options={"color_by": color_by, "width": 200, "height": 150}),
        log=[str(tmp_path / "logs" / "plot_metrics.log")])


def write_study(tmp_path) -> None:
    """A sealed metrics.zarr of networks_table's networks, with per-point variables, the
    Hessian's convergence flags, and networks.csv sealed as rule correlate seals it."""
    table = networks_table()
    rng = np.random.default_rng(1)
    per_point = {name: (("run", "point"), rng.lognormal(0, 1, (8, 5)))
                 for name in ("jacobian_norm", "jacobian_norm_true_class", "loss")}
    ds = xr.Dataset(
        {"gap": ("run", table["gap"].to_numpy()), "status": ("run", table["status"].to_numpy()),
         "train_acc": ("run", np.ones(8)), "test_acc": ("run", 1 - table["gap"].to_numpy()),
         "steps": ("run", np.full(8, 100)), "bound_M": ("run", np.full(8, 4.0)),
         "n_classes": ("run", np.full(8, 10)),
         "hessian_top_eigenvalue": ("run", table["hessian_top_eigenvalue"].to_numpy()),
         "hessian_top_converged": ("run", np.asarray(FLAGS)),
         "margin": ("run", table["margin"].to_numpy()), **per_point,
         "correct": (("run", "point"), (rng.random((8, 5)) < 0.7).astype(float)),
         "within_bounds": (("run", "point"), np.ones((8, 5)))},
        coords={"run_id": ("run", RUNS), "dataset": ("run", table["dataset"].to_numpy()),
                "width": ("run", table["width"].to_numpy()),
                "optimizer": ("run", table["optimizer"].to_numpy())},
        attrs={"hyperparameters": ["dataset", "width", "optimizer"]})
    for name in ("hessian_top_eigenvalue", "margin", "jacobian_norm"):
        ds[name].attrs.update(role="indicator", expected_sign=1, units="u")
    ds["hessian_top_eigenvalue"].attrs["converged_by"] = "hessian_top_converged"
    write_store(ds, tmp_path / "metrics.zarr")
    stats.network_table(ds).to_csv(tmp_path / "networks.csv", index=False)
    (tmp_path / "seals").mkdir()
    seal_record(tmp_path / "seals/correlate.json", {"rule": "correlate"},
                [tmp_path / "networks.csv"])


def run_job(job) -> list[str]:
    runpy.run_path(str(REPO / "rules" / "scripts" / "plot_metrics.py"),
                   init_globals={"snakemake": job})
    return Path(job.log[0]).read_text().splitlines()


def test_plot_metrics_redraws_only_the_figures_an_option_changes(tmp_path):
    """The rule script on a sealed store: every figure drawn, the HTML carries the panel's
    converged fraction and loads vega.js; run again with the same options every figure is
    reused, and with another plots.color_by only the three figures that use it are drawn."""
    write_study(tmp_path)
    first = run_job(plot_metrics_job(tmp_path, "width"))
    assert "5 figures drawn, 0 reused" in first
    html = (tmp_path / "figures/indicators_vs_gap.html").read_text()
    assert "optimizer converged: 2 of 4 (50%)" in html
    assert '<script src="vega.js"></script>' in html and "cdn.jsdelivr" not in html
    png = (tmp_path / "figures/loss_bounds.png").read_bytes()
    assert run_job(plot_metrics_job(tmp_path, "width"))[-1] == "0 figures drawn, 5 reused"
    assert (tmp_path / "figures/loss_bounds.png").read_bytes() == png
    assert (tmp_path / "seals/plot_metrics.json").is_file()
    changed = run_job(plot_metrics_job(tmp_path, "optimizer"))
    drawn = {line.split(":")[0] for line in changed if ": drawn in" in line}
    assert drawn == {"jacobian_vs_gap", "jacobian_by_correctness", "indicators_vs_gap"}
    assert changed[-1] == "3 figures drawn, 2 reused"
