"""Adapter for rule paired: Wilcoxon tests of every two-valued factor on matched pairs.

The factors are derived from the study: every hyperparameter axis with exactly two values
among the converged networks is a factor, tested on the pairs of networks that differ only
in it (Novak et al. 2018's true vs random labels, augmentation, relu vs hard_sigmoid,
mini-batch vs full batch). An axis without a single such pair is left out and logged.

Full-batch gd records batch_size = n_train, so a gd network never shares its batch size
with its mini-batch twin. For an optimizer factor with gd as one level, batch_size is
dropped from the matching keys and the test is run once per batch size of the mini-batch
side, which the row's note names.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from workflow_src import stats  # noqa: E402
from workflow_src.adapter import logged  # noqa: E402
from workflow_src.stats.paired import COLUMNS  # noqa: E402

FULL_BATCH = "gd"
NO_FACTOR = "no hyperparameter axis with exactly two values has matched pairs"
# pairs.csv: one row per (contrast, indicator, pair); the pair's other hyperparameters follow.
PAIRS = ["contrast", "factor", "level_a", "level_b", "indicator", "run_id_a", "run_id_b",
         "value_a", "value_b"]


def comparisons(table: pd.DataFrame, hyperparameters: list[str]):
    """(factor, levels, contrast, subset, keys, note) for every two-valued axis of ``table``.

    Levels are sorted (False before True, low before high), full-batch gd last, so
    differences read as level_b − level_a; ``contrast`` labels the comparison.
    """
    for factor in hyperparameters:
        values = table[factor].unique().tolist()
        if len(values) != 2:
            continue
        levels = tuple(sorted(values, key=lambda v: (v == FULL_BATCH, v)))
        if factor == "optimizer" and FULL_BATCH in levels:
            keys = [h for h in hyperparameters if h != "batch_size"]
            mini = table[table["optimizer"] != FULL_BATCH]
            for size in sorted(mini["batch_size"].unique()):
                subset = table[(table["optimizer"] == FULL_BATCH) | (table["batch_size"] == size)]
                note = (f"batch_size left out of the matching keys (gd uses all n_train points); "
                        f"mini-batch side batch_size={size}")
                contrast = f"{factor}: {levels[0]} (batch_size={size}) vs {levels[1]}"
                yield factor, levels, contrast, subset, keys, note
        else:
            contrast = f"{factor}: {levels[0]} vs {levels[1]}"
            yield factor, levels, contrast, table, hyperparameters, ""


with logged(snakemake.log[0]) as log:  # noqa: F821
    opts, out = snakemake.params.stats, snakemake.output  # noqa: F821
    ds = xr.open_zarr(snakemake.input.metrics).load()  # noqa: F821
    converged = stats.converged(stats.network_table(ds))
    hyperparameters = list(converged.attrs["hyperparameters"])
    tests, pairs = [], []
    for factor, levels, contrast, subset, keys, note in comparisons(converged, hyperparameters):
        for name in stats.indicator_names(ds):
            matched = stats.matched_pairs(subset, factor, levels, name, keys)
            if matched.empty:
                log(f"{contrast}: no matched pairs with finite {name}; skipped")
                continue
            row = stats.paired_factor_tests(subset, factor, levels, name, keys, opts["n_boot"],
                                            opts["confidence"], opts["seed"])
            row["note"] = "; ".join(part for part in (row["note"].iloc[0], note) if part)
            tests.append(row.assign(contrast=contrast))
            pairs.append(matched.assign(factor=factor, level_a=levels[0], level_b=levels[1],
                                        indicator=name, contrast=contrast))
    if tests:
        method = snakemake.params.correction  # noqa: F821
        table = stats.correct_multiple(pd.concat(tests, ignore_index=True), method,
                                       1 - opts["confidence"])
    else:
        table = stats.correct_multiple(pd.DataFrame([{"note": NO_FACTOR}], columns=COLUMNS))
        table["contrast"] = None
    table.insert(1, "contrast", table.pop("contrast"))
    table.to_csv(out.tests, index=False)
    pair_table = pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(columns=PAIRS)
    others = [h for h in hyperparameters if h in pair_table.columns]
    # A factor's own column is empty in its rows; keep integers integer around those gaps.
    integers = {h: "Int64" for h in others if pd.api.types.is_integer_dtype(converged[h])}
    pair_table[PAIRS + others].astype(integers).to_csv(out.pairs, index=False)
    log(table.to_string())
