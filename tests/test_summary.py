"""summary.csv: expected signs, direction, CMI score and robust sign-error beside τ and Ψ."""

from __future__ import annotations

import itertools
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from workflow_src import stats
from workflow_src.integrity import open_store, seal_record, write_store
from workflow_src.stats import (conditional_mi_score, correlations, expected_signs,
                                granulated_kendall, network_table, scores, summary)
from workflow_src.stats import scoring

REPO = Path(__file__).resolve().parent.parent
OLD_TRAILING = ["kendall_tau", "kendall_tau_ci_low", "kendall_tau_ci_high", "kendall_p", "n",
                "confidence"]
NEW_COLUMNS = ["expected_sign", "direction", "cmi", "cmi_conditioning", "robust_sign_error",
               "sign_error_mean", "n_environments", "score_note",
               "optimizer_converged_fraction", "indicator_note"]


def grid_table(seed=0, seeds=2, **axes):
    """One network per point of axes × seeds; gap = 0.1·a + noise, tie-free, so it depends on
    a and on nothing else; attrs["hyperparameters"] as network_table sets them."""
    names = list(axes) + ["seed"]
    rows = [dict(zip(names, values)) for values in itertools.product(*axes.values(),
                                                                     range(seeds))]
    table = pd.DataFrame(rows)
    noise = np.random.default_rng(seed).uniform(0.0, 0.15, len(table))
    table["gap"] = 0.1 * table[names[0]].astype(float) + noise
    table.attrs["hyperparameters"] = names
    return table


def with_indicators(table):
    """same = gap, margin = wrong = −gap, tracks_a = the hyperparameter a only."""
    return table.assign(same=table["gap"], margin=-table["gap"], wrong=-table["gap"],
                        tracks_a=table["a"].astype(float))


SIGNS = {"same": 1, "margin": -1, "wrong": 1, "tracks_a": 1}
INDICATORS = list(SIGNS)


def stat_inputs(table, indicators):
    """correlations.csv and granulated.csv as rules correlate and granulate write them:
    pooled rows, and each dataset's when the table has several (column dataset)."""
    corr = stats.per_dataset(lambda part: correlations(part, indicators, n_boot=50), table)
    axes = list(table.attrs["hyperparameters"])
    psi = stats.per_dataset(lambda part: pd.concat(
        [granulated_kendall(part, name, axes) for name in indicators], ignore_index=True),
        table)
    return corr, psi


@pytest.fixture
def table():
    return with_indicators(grid_table(a=[0, 1, 2], b=[0, 1], c=[0, 1, 2]))  # 36 networks


# --- scores ---------------------------------------------------------------------------------

def test_scores_known_answers(table):
    out = scores(table, INDICATORS, SIGNS).set_index("indicator")
    assert list(out.reset_index().columns) == ["indicator", "target", "cmi", "cmi_conditioning",
                                               "robust_sign_error", "sign_error_mean",
                                               "n_environments", "score_note"]
    # a: 3 value pairs × 6 contexts (b, c); b: 1 × 9; c: 3 × 6.
    assert (out["n_environments"] == 18 + 9 + 18).all()
    for name in ["same", "margin"]:  # ordered as expected, whichever the expected sign
        assert out.loc[name, "robust_sign_error"] == 0.0
        assert out.loc[name, "sign_error_mean"] == 0.0
        assert out.loc[name, "cmi"] == pytest.approx(1.0)
    assert out.loc["wrong", "robust_sign_error"] == 1.0
    assert out.loc["wrong", "sign_error_mean"] == 1.0
    assert out.loc["wrong", "cmi"] == pytest.approx(1.0)  # K is blind to direction
    # Conditioning on a leaves tracks_a nothing to say: every group fixes its V_μ.
    assert out.loc["tracks_a", "cmi"] == pytest.approx(0.0, abs=1e-12)
    assert "a" in out.loc["tracks_a", "cmi_conditioning"].split("+")
    assert out.loc["same", "cmi_conditioning"] in {"a+b", "a+c", "b+c"}
    assert (out["score_note"] == "").all() and (out["target"] == "gap").all()
    # The scores match the scoring functions called directly on the oriented indicator.
    direct = scoring.robust_sign_error(table.assign(margin=table["gap"]), "margin")
    assert out.loc["margin", "robust_sign_error"] == direct["max"]


def test_scores_default_sign_is_plus_one(table):
    out = scores(table, ["margin", "same"]).set_index("indicator")  # no signs at all
    assert out.loc["margin", "robust_sign_error"] == 1.0
    assert out.loc["same", "robust_sign_error"] == 0.0
    out = scores(table, ["margin"], {"same": 1}).set_index("indicator")  # margin not listed
    assert out.loc["margin", "robust_sign_error"] == 1.0


def test_undefined_scores_carry_notes():
    one_axis = grid_table(a=[0, 1, 2], seeds=3)  # only a varies: no 2-subset to condition on
    one_axis["ind"] = one_axis["gap"]
    one_axis["empty"] = np.nan
    out = scores(one_axis, ["ind", "empty"]).set_index("indicator")
    assert np.isnan(out.loc["ind", "cmi"]) and out.loc["ind", "cmi_conditioning"] == ""
    assert out.loc["ind", "robust_sign_error"] == 0.0
    assert out.loc["ind", "score_note"].startswith("cmi: fewer than k=2 hyperparameters")
    assert "robust_sign_error" not in out.loc["ind", "score_note"]
    assert np.isnan(out.loc["empty", "robust_sign_error"])
    assert out.loc["empty", "n_environments"] == 0
    note = out.loc["empty", "score_note"]
    assert note.startswith("cmi: fewer than 2 networks") and "; robust_sign_error: no " in note


def test_defined_scores_have_no_note():
    table = grid_table(a=[0, 1, 2], b=[0, 1], c=[0, 1])
    table["gap"] = 0.1 * table["a"] + 0.01 * table["b"]  # fixed by (a, b): Ĩ_{a,b} undefined
    table["ind"] = table["gap"] + np.random.default_rng(1).normal(0, 0.01, len(table))
    assert conditional_mi_score(table, "ind")["note"] == "1 of 3 conditioning sets undefined"
    row = scores(table, ["ind"]).iloc[0]
    assert np.isfinite(row["cmi"]) and row["cmi_conditioning"] in {"a+c", "b+c"}
    assert row["score_note"] == ""


def test_bad_expected_sign_is_refused(table):
    with pytest.raises(ValueError, match="must be \\+1 or -1"):
        scores(table, ["same"], {"same": 0})


# --- summary --------------------------------------------------------------------------------

def test_summary_direction_and_scores(table):
    corr, psi = stat_inputs(table, INDICATORS)
    old = summary(corr, psi)  # the old call, without signs or scores
    out = summary(corr, psi, SIGNS, scores(table, INDICATORS, SIGNS))
    # The old columns, in their order, then the new ones; the ranking is unchanged.
    old_columns = (["indicator", "target", "rank_psi", "rank_tau", "psi", "n_groups"]
                   + [f"psi_{axis}" for axis in ["a", "b", "c", "seed"]] + OLD_TRAILING)
    assert sorted(old_columns[6:10]) == old_columns[6:10]  # the pivot sorts the axes
    assert list(out.columns) == old_columns + NEW_COLUMNS
    assert list(old.columns) == old_columns + NEW_COLUMNS
    pd.testing.assert_frame_equal(out[old_columns], old[old_columns])
    assert out["indicator"].tolist() == old["indicator"].tolist()
    rows = out.set_index("indicator")
    assert rows.loc["same", "kendall_tau"] == pytest.approx(1.0)
    assert rows.loc["margin", "kendall_tau"] == pytest.approx(-1.0)
    expected = {"same": (1, "as expected", 0.0), "margin": (-1, "as expected", 0.0),
                "wrong": (1, "reversed", 1.0)}
    for name, (sign, direction, rse) in expected.items():
        assert rows.loc[name, "expected_sign"] == sign
        assert rows.loc[name, "direction"] == direction
        assert rows.loc[name, "robust_sign_error"] == rse
        assert rows.loc[name, "sign_error_mean"] == rse
    assert rows.loc["tracks_a", "kendall_tau"] > 0.5  # a high τ ...
    assert rows.loc["tracks_a", "direction"] == "as expected"
    assert rows.loc["tracks_a", "cmi"] == pytest.approx(0.0, abs=1e-12)  # ... and no CMI


def test_summary_direction_is_empty_for_nan_or_zero_tau(table):
    table = table.assign(flat=1.0)
    corr, psi = stat_inputs(table, ["same", "flat"])
    corr.loc[(corr["indicator"] == "same") & (corr["statistic"] == "kendall_tau"), "value"] = 0.0
    out = summary(corr, psi, {"flat": -1}).set_index("indicator")
    assert np.isnan(out.loc["flat", "kendall_tau"])  # constant indicator: τ undefined
    assert out.loc["flat", "direction"] == "" and out.loc["same", "direction"] == ""
    assert out.loc["flat", "expected_sign"] == -1


def test_summary_old_call_treats_every_indicator_as_plus_one(table):
    corr, psi = stat_inputs(table, INDICATORS)
    out = summary(corr, psi).set_index("indicator")
    assert (out["expected_sign"] == 1).all()
    assert out.loc["margin", "direction"] == "reversed"  # −gap against the default +1
    assert out["cmi"].isna().all() and out["robust_sign_error"].isna().all()
    assert (out["cmi_conditioning"] == "").all() and (out["score_note"] == "").all()


# --- the store and the rule script ----------------------------------------------------------

def make_store_dataset(signs: dict[str, int | None]):
    """An aggregate Dataset: 24 converged runs on a × b × seed plus 2 diverged runs whose
    indicators disagree with their gap; indicators = ±gap as ``signs`` says (None: the
    attribute is absent, as in stores written before it existed)."""
    table = grid_table(seed=4, a=[0, 1, 2], b=[0, 1], seeds=4)
    n = len(table) + 2
    gap = np.r_[table["gap"].to_numpy(), 0.9, 0.95]
    a = np.r_[table["a"].to_numpy(), 0, 0]
    b = np.r_[table["b"].to_numpy(), 0, 0]
    seed = np.r_[table["seed"].to_numpy(), 10, 11]
    coords = {"run_id": ("run", [f"r{i:04d}" for i in range(n)]), "a": ("run", a),
              "b": ("run", b), "seed": ("run", seed)}
    status = np.array(["converged"] * (n - 2) + ["diverged"] * 2)
    data = {"train_acc": ("run", np.ones(n)), "test_acc": ("run", 1.0 - gap),
            "gap": ("run", gap), "steps": ("run", np.full(n, 100)), "status": ("run", status)}
    ds = xr.Dataset(data, coords=coords, attrs={"hyperparameters": ["a", "b", "seed"]})
    for name, sign in signs.items():
        oriented = (sign or 1) * gap
        oriented[-2:] = oriented[-2:][::-1] - 10 * (sign or 1)  # diverged runs: far off
        ds[name] = ("run", oriented)
        ds[name].attrs["role"] = "indicator"
        if sign is not None:
            ds[name].attrs["expected_sign"] = sign
    return ds


def test_expected_signs_read_from_store_attrs(tmp_path):
    ds = make_store_dataset({"up": 1, "margin": -1, "legacy": None})
    write_store(ds, tmp_path / "metrics.zarr")
    back = open_store(tmp_path / "metrics.zarr")
    assert "expected_sign" not in back["legacy"].attrs
    assert expected_signs(back) == {"up": 1, "margin": -1, "legacy": 1}
    assert all(type(v) is int for v in expected_signs(back).values())
    assert expected_signs(back, ["margin"]) == {"margin": -1}
    ds["up"].attrs["expected_sign"] = 2
    with pytest.raises(ValueError, match="'up'"):
        expected_signs(ds)


class Named(list):
    """A Snakemake Namedlist stand-in: the paths, in order, and each by its name."""

    def __init__(self, **paths):
        super().__init__(paths.values())
        self.__dict__.update(paths)


def run_summarize(tmp_path, ds) -> pd.DataFrame:
    """rules/scripts/summarize.py on the store ``ds``, with correlations.csv and granulated.csv
    as rules correlate and granulate write (and seal) them; summary.csv read back."""
    store = tmp_path / "metrics.zarr"
    write_store(ds, store)
    converged = stats.converged(network_table(open_store(store)))
    corr, psi = stat_inputs(converged, stats.indicator_names(ds))
    seals = {}
    for rule, name, frame in (("correlate", "correlations", corr),
                              ("granulate", "granulated", psi)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        seals[f"{rule}_seal"] = str(tmp_path / "seals" / f"{rule}.json")
        (tmp_path / "seals").mkdir(exist_ok=True)
        seal_record(seals[f"{rule}_seal"], {"rule": rule}, [tmp_path / f"{name}.csv"])
    job = SimpleNamespace(
        scriptdir=str(REPO / "rules" / "scripts"), rule="summarize",
        input=Named(correlations=str(tmp_path / "correlations.csv"),
                    granulated=str(tmp_path / "granulated.csv"), metrics=str(store), **seals),
        output=Named(summary=str(tmp_path / "summary.csv"),
                     seal=str(tmp_path / "seals" / "summarize.json")),
        log=[str(tmp_path / "logs" / "summarize.log")],
    )
    runpy.run_path(str(REPO / "rules" / "scripts" / "summarize.py"),
                   init_globals={"snakemake": job})
    return pd.read_csv(tmp_path / "summary.csv", keep_default_na=False, na_values=[""])


def test_summarize_script_writes_scores(tmp_path):
    # "legacy" is −gap without an expected_sign: it counts as +1, so it reads "reversed".
    ds = make_store_dataset({"up": 1, "margin": -1, "legacy": -1})
    del ds["legacy"].attrs["expected_sign"]
    assert (ds["status"] == "converged").sum() == 24
    out = run_summarize(tmp_path, ds)
    assert list(out.columns[-len(NEW_COLUMNS):]) == NEW_COLUMNS
    rows = out.set_index("indicator")
    assert rows["expected_sign"].to_dict() == {"up": 1, "margin": -1, "legacy": 1}
    assert rows["direction"].to_dict() == {"up": "as expected", "margin": "as expected",
                                           "legacy": "reversed"}
    # Only converged networks are scored: the diverged pair would give errors above 0.
    assert rows["robust_sign_error"].to_dict() == {"up": 0.0, "margin": 0.0, "legacy": 1.0}
    assert rows["sign_error_mean"].to_dict() == {"up": 0.0, "margin": 0.0, "legacy": 1.0}
    assert (rows["n_environments"] == 3 * 2 + 1 * 3).all()  # a: 3 pairs × 2 b; b: 1 × 3 a
    assert rows["cmi"].to_numpy() == pytest.approx([1.0, 1.0, 1.0])
    assert (rows["cmi_conditioning"] == "a+b").all()
    assert rows["score_note"].isna().all()  # written empty
    assert rows["optimizer_converged_fraction"].isna().all()  # no optimizer here
    assert rows["indicator_note"].isna().all()
    assert "expected signs" in (tmp_path / "logs" / "summarize.log").read_text()


# --- optimizers that stopped short, indicators that rank nothing ----------------------------

def with_optimizer(ds, name, flags):
    """``name`` found by an optimizer whose convergence (per run) is ``flags``."""
    ds = ds.copy()
    ds[f"{name}_converged"] = ("run", np.asarray(flags, dtype=float))
    ds[name].attrs["converged_by"] = f"{name}_converged"
    return ds


def test_summary_gives_each_optimizers_converged_fraction_and_skips_constants(tmp_path):
    """Over the 24 converged networks: "up"'s optimizer stopped short on 6 (the diverged
    pair's flags do not count), "margin"'s on none; "csr" is 0 everywhere (as the critical
    sample ratio of a small study): no rank, and a note saying why."""
    ds = make_store_dataset({"up": 1, "margin": -1, "legacy": 1})
    ds["csr"] = ("run", np.r_[np.zeros(24), 0.5, 0.7])  # diverged networks differ
    ds["csr"].attrs.update(role="indicator", expected_sign=1)
    ds = with_optimizer(ds, "up", [0.0] * 6 + [1.0] * 18 + [0.0, 0.0])
    ds = with_optimizer(ds, "margin", [1.0] * 23 + [np.nan] + [0.0, 0.0])  # one not measured
    out = run_summarize(tmp_path, ds).set_index("indicator")
    assert out.loc["up", "optimizer_converged_fraction"] == 18 / 24
    assert out.loc["up", "indicator_note"] == \
        "optimizer did not converge for 6 of 24 networks (up_converged)"
    assert out.loc["margin", "optimizer_converged_fraction"] == 1.0
    assert np.isnan(out.loc["margin", "indicator_note"])  # written empty: nothing to say
    assert np.isnan(out.loc["legacy", "optimizer_converged_fraction"])  # no optimizer
    assert out.loc["csr", "indicator_note"] == "constant over the 24 networks: ranks nothing"
    assert np.isnan(out.loc["csr", "rank_psi"]) and np.isnan(out.loc["csr", "rank_tau"])
    assert out.loc["csr", "psi"] == 0.0  # every pair tied, as Jiang et al. count it
    assert out.index[-1] == "csr"  # after every ranked indicator
    ranked = out.drop(index="csr")
    assert sorted(ranked["rank_psi"]) == [1, 1, 1] and sorted(ranked["rank_tau"]) == [1, 1, 1]


def test_indicator_notes_read_the_store_generically():
    ds = make_store_dataset({"up": 1, "flat": 1})
    ds["flat"].values[:] = 3.0
    ds["flat"].values[-1] = np.nan  # a diverged network: not scored anyway
    ds = with_optimizer(ds, "flat", [0.0] * 26)
    ds["up"].attrs["converged_by"] = "not_in_this_store"  # an older store: ignored
    notes = stats.indicator_notes(ds).set_index("indicator")
    assert notes.loc["flat", "constant"] and not notes.loc["up", "constant"]
    assert notes.loc["flat", "optimizer_converged_fraction"] == 0.0
    assert notes.loc["flat", "indicator_note"] == (
        "constant over the 24 networks: ranks nothing; "
        "optimizer did not converge for 24 of 24 networks (flat_converged)")
    assert np.isnan(notes.loc["up", "optimizer_converged_fraction"])
    assert notes.loc["up", "indicator_note"] == ""
    flags = stats.optimizer_flags(ds)
    assert list(flags.columns) == ["flat"] and flags.index.name == "run_id"
    assert flags.attrs["converged_by"] == {"flat": "flat_converged"}
    assert len(flags) == 26  # every run: the figures mark them all


def test_summary_without_notes_ranks_as_before(table):
    """A constant indicator is ranked (Ψ 0) unless the notes say it is constant."""
    table = table.assign(flat=1.0)
    corr, psi = stat_inputs(table, ["same", "flat"])
    plain = summary(corr, psi).set_index("indicator")
    assert plain.loc["flat", "rank_psi"] == 2
    notes = pd.DataFrame({"indicator": ["flat", "same"], "constant": [True, False],
                          "optimizer_converged_fraction": [np.nan, 0.5],
                          "indicator_note": ["constant", ""]})
    noted = summary(corr, psi, notes_df=notes).set_index("indicator")
    assert np.isnan(noted.loc["flat", "rank_psi"]) and noted.loc["same", "rank_psi"] == 1
    assert noted.loc["same", "optimizer_converged_fraction"] == 0.5
    assert noted.loc["flat", "indicator_note"] == "constant"


# --- the faster paths of conditional_mi_score ----------------------------------------------

@pytest.mark.parametrize("seeds", [1, 3, 6])
def test_cmi_counting_routes_agree_exactly(monkeypatch, seeds):
    """conditional_mi_score counts pairs per configuration (seeds repeat them), from pairs
    kept for every S, or afresh per S in blocks; each must give identical numbers (ties in
    target and indicator, NaN in a key and in the indicator included)."""
    table = grid_table(seed=7, seeds=seeds, a=[0, 1, 2], b=["x", "y"], c=[0.5, np.nan])
    rng = np.random.default_rng(8)
    table["gap"] = rng.integers(0, 5, len(table)) / 10  # tied gaps
    table["ind"] = np.where(rng.random(len(table)) < 0.15, np.nan,
                            rng.integers(0, 4, len(table)).astype(float))  # tied, some NaN

    def run():
        return {k: conditional_mi_score(table, "ind", k=k) for k in range(4)}

    default = run()
    monkeypatch.setattr(scoring, "_CONFIG_CELLS", 0)  # never per configuration
    kept = run()
    monkeypatch.setattr(scoring, "_PAIRS_KEPT", 0)  # nor from kept pairs: blocks per S
    blocked = run()
    for k in range(4):
        for other in (kept[k], blocked[k]):
            pd.testing.assert_frame_equal(default[k]["per_subset"], other["per_subset"],
                                          check_exact=True)
            assert default[k]["argmin"] == other["argmin"]
            assert default[k]["note"] == other["note"]
            assert (default[k]["score"] == other["score"]
                    or np.isnan([default[k]["score"], other["score"]]).all())
    assert np.isfinite(default[2]["score"])
