"""The double-descent tables and figures (workflow_src/figures/double_descent.py) on
synthetic networks and learning curves whose means, peak and near-threshold widths are
known by construction (the preset's small variant: tests/test_presets.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from workflow_src.figures import double_descent as dd

N_TRAIN = 100  # threshold n x K = 1,000 parameters on digits
WIDTHS = [2, 8, 12, 16, 64]
# 75 h + 10 parameters (64 inputs, 10 classes): 160, 610, 910, 1210, 4810


def parameters(width: int) -> int:
    return 64 * width + width + 10 * width + 10


def networks(test_error: dict, train_error: dict | None = None, seeds=(0, 1),
             noises=(0.0, 0.2)) -> pd.DataFrame:
    """One network per (noise, width, seed); test_error[(noise, width)] is a list with one
    error per seed (train error 0 unless train_error gives it the same way)."""
    rows = []
    for noise, width, (i, seed) in itertools.product(noises, WIDTHS, enumerate(seeds)):
        train = train_error[(noise, width)][i] if train_error else 0.0
        rows.append({"run_id": f"r{noise}-{width}-{seed}", "dataset": "digits", "depth": 1,
                     "label_noise": noise, "width": width, "seed": seed,
                     "n_parameters": parameters(width), "status": "converged",
                     "fit_step": 10.0, "train_acc": 1.0 - train,
                     "test_acc": 1.0 - test_error[(noise, width)][i]})
    return pd.DataFrame(rows)


# noise 0.2: a peak at width 12 (mean 0.30); noise 0: falling (peak at the smallest width)
ERRORS = {**{(0.2, w): e for w, e in zip(WIDTHS, ([0.2, 0.1], [0.2, 0.2], [0.25, 0.35],
                                                   [0.2, 0.3], [0.12, 0.14]))},
          **{(0.0, w): e for w, e in zip(WIDTHS, ([0.3, 0.3], [0.2, 0.2], [0.15, 0.15],
                                                  [0.1, 0.12], [0.08, 0.1]))}}


def test_table_has_each_networks_errors_and_the_threshold():
    table = dd.double_descent_table(networks(ERRORS), N_TRAIN)
    assert len(table) == 2 * 2 * len(WIDTHS) * 2
    assert set(table["threshold"]) == {N_TRAIN * 10}
    row = table[(table["run_id"] == "r0.2-12-1") & (table["error"] == "test")]
    assert row["value"].item() == pytest.approx(0.35)
    assert row["n_parameters"].item() == 910 and row["fit_step"].item() == 10.0
    assert (table[table["error"] == "train"]["value"] == 0).all()


def test_unknown_dataset_names_the_fix():
    frame = networks(ERRORS).assign(dataset="imagenet")
    with pytest.raises(ValueError, match="number of classes of \\['imagenet'\\].*CLASSES"):
        dd.double_descent_table(frame, N_TRAIN)


def test_width_table_averages_the_seeds():
    means = dd.width_table(dd.double_descent_table(networks(ERRORS), N_TRAIN))
    row = means[(means["label_noise"] == 0.2) & (means["width"] == 16)
                & (means["error"] == "test")]
    assert row["mean"].item() == pytest.approx(0.25)
    assert (row["low"].item(), row["high"].item()) == pytest.approx((0.2, 0.3))
    assert row["networks"].item() == 2


def test_peak_is_the_highest_mean_with_its_rise_and_fall():
    peak = dd.peak_table(dd.double_descent_table(networks(ERRORS), N_TRAIN))
    noisy = peak[peak["label_noise"] == 0.2].iloc[0]
    assert noisy["peak_width"] == 12 and noisy["peak_parameters"] == 910
    assert noisy["peak_over_threshold"] == pytest.approx(0.91)
    assert noisy["peak_test_error"] == pytest.approx(0.30)
    assert (noisy["peak_low"], noisy["peak_high"]) == pytest.approx((0.25, 0.35))
    # narrower widths' lowest mean: 0.15 (width 2); wider: 0.13 (width 64)
    assert noisy["rise"] == pytest.approx(0.15) and noisy["fall"] == pytest.approx(0.17)
    assert noisy["smallest_width"] == 2 and noisy["smallest_test_error"] == pytest.approx(0.15)
    assert noisy["largest_width"] == 64 and noisy["largest_test_error"] == pytest.approx(0.13)
    control = peak[peak["label_noise"] == 0.0].iloc[0]  # monotone: the peak is at an end
    assert control["peak_width"] == 2 and control["rise"] == 0.0
    assert control["fall"] == pytest.approx(0.3 - 0.09)
    assert control["networks_per_width"] == 2


def test_peak_of_equal_means_is_the_narrowest():
    flat = {key: [0.2, 0.2] for key in ERRORS}
    peak = dd.peak_table(dd.double_descent_table(networks(flat), N_TRAIN))
    assert set(peak["peak_width"]) == {2}
    assert np.allclose(peak["fall"], 0.0)


def curves(nets: pd.DataFrame, steps=(0, 10, 100, 1000)) -> pd.DataFrame:
    """A learning curve per network: test error = (width + seed) / 1000 * log10(step + 1)."""
    rows = []
    for net, step in itertools.product(nets.itertuples(), steps):
        test = (net.width + net.seed) / 1000 * np.log10(step + 1)
        rows.append({"run_id": net.run_id, "dataset": net.dataset, "depth": net.depth,
                     "label_noise": net.label_noise, "width": net.width, "seed": net.seed,
                     "step": step, "train_acc": 1.0 - test / 2, "test_acc": 1.0 - test})
    return pd.DataFrame(rows)


def test_epoch_table_keeps_the_widths_near_the_threshold_and_averages_seeds():
    nets = networks(ERRORS)
    table = dd.epoch_table(curves(nets), nets, N_TRAIN)
    # within a factor 2 of 1,000: 610, 910, 1210 (160 and 4810 are not)
    assert sorted(table["width"].unique()) == [8, 12, 16]
    assert table["step"].min() == 10  # step 0 cannot sit on a log axis
    row = table[(table["width"] == 12) & (table["label_noise"] == 0.2) & (table["step"] == 100)]
    test = row[row["error"] == "test"]["value"].item()
    train = row[row["error"] == "train"]["value"].item()
    assert test == pytest.approx((12.5 / 1000) * np.log10(101))  # mean of seeds 0 and 1
    assert train == pytest.approx(test / 2)
    assert set(table["networks"]) == {2}


def test_epoch_table_keeps_the_nearest_width_when_none_is_near():
    nets = networks(ERRORS)
    table = dd.epoch_table(curves(nets), nets, 20)  # threshold 200: 160 is nearest, 1.25x
    assert sorted(table["width"].unique()) == [2]
    far = nets[nets["width"] == 64]
    table = dd.epoch_table(curves(far), far, N_TRAIN)  # only 4,810 parameters, 4.8x
    assert sorted(table["width"].unique()) == [64]


def test_epoch_table_caps_the_widths_at_the_nearest():
    nets = networks(ERRORS)
    table = dd.epoch_table(curves(nets), nets, 9)  # threshold 90: only width 2 (160) is within 2x
    assert list(table["width"].unique()) == [2]
    many = pd.concat([nets.assign(width=w, n_parameters=p, run_id=nets["run_id"] + f"-{w}")
                      for w, p in zip(range(20, 27), range(900, 1250, 50))])
    table = dd.epoch_table(curves(many), many, N_TRAIN)
    # |log(p / 1000)|: 1000 0, 1050 0.049, 950 0.051, 1100 0.095, 900 0.105, ...
    assert sorted(table["n_parameters"].unique()) == [950, 1000, 1050, 1100]


def _data(spec: dict) -> list[dict]:
    return [value for key, value in spec.get("datasets", {}).items()]


def test_charts_draw_means_points_and_threshold():
    nets = networks(ERRORS)
    spec = dd.double_descent_chart(nets, N_TRAIN, 300, 200).to_dict()
    text = str(spec)
    assert "n_train x classes" in text and "'threshold': 1000.0" in text
    rows = [r for rows in _data(spec) for r in rows]
    means = [r for r in rows if "mean" in r and r.get("error") == "test"
             and r.get("label_noise") == 0.2 and r.get("width") == 12]
    assert means and means[0]["mean"] == pytest.approx(0.30)
    assert sum(1 for r in rows if "run_id" in r) == 2 * len(nets)
    epochs = dd.epoch_wise_chart(curves(nets), nets, N_TRAIN, 300, 200).to_dict()
    titles = str(epochs)
    assert "label noise 0.2" in titles and "label noise 0.0" in titles


def test_charts_without_parameter_counts_say_what_to_enable():
    nets = networks(ERRORS).drop(columns="n_parameters")
    for chart in (dd.double_descent_chart(nets, N_TRAIN, 300, 200),
                  dd.epoch_wise_chart(curves(nets), nets, N_TRAIN, 300, 200)):
        assert "enable measure.norms" in str(chart.to_dict())
