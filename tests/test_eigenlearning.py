"""Eigenlearning (workflow_src.metrics.eigenlearning, measures/eigenlearning.py) against
closed forms (a diagonal kernel; a dot-product kernel on the hypercube, whose eigenfunctions
are the Walsh monomials), against sklearn's KernelRidge, against the average MSE of kernel
regression measured over random training sets, and at the κ equation's extremes."""

import itertools
from math import comb

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.kernel_ridge import KernelRidge

from workflow_src.jobs.measure_shard import MemberJob
from workflow_src.measures import eigenlearning as measure_module
from workflow_src.metrics import eigenlearning as el
from workflow_src.metrics.ntk import ntk_gram
from workflow_src.nets.models import ModelSpec, build_model


def rel(a, b):
    return abs(a - b) / abs(b)


# --- a diagonal kernel: K = M diag(λ), eigenvectors the standard basis -------------------

def diagonal_case(lam, seed=0, classes=3):
    lam = np.asarray(lam, dtype=np.float64)
    m = lam.size
    y = np.random.default_rng(seed).normal(size=(m, classes))
    return m * np.diag(lam), y, (y**2).sum(axis=1) / m  # v_i² = Σ_k Y[i, k]² / M


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_flat_spectrum_matches_its_closed_form(ridge):
    m, n, lam0 = 40, 13, 0.7
    kernel, y, v2 = diagonal_case(np.full(m, lam0))
    lam, v2_found = el.spectrum(kernel, y)
    assert np.allclose(lam, lam0, rtol=1e-12)
    assert rel(v2_found.sum(), v2.sum()) < 1e-12
    # M λ/(λ+κ) + δ/κ = n  <=>  n κ² + (nλ − Mλ − δ) κ − δλ = 0
    b = n * lam0 - m * lam0 - ridge
    kappa = (-b + np.sqrt(b * b + 4 * n * ridge * lam0)) / (2 * n)
    learn = lam0 / (lam0 + kappa)
    e0 = n / (n - m * learn**2)
    out = el.predict(lam, v2_found, n, ridge)
    assert rel(out["kappa"], kappa) < 1e-8
    assert rel(out["e0"], e0) < 1e-8
    assert rel(out["test_mse"], e0 * (1 - learn) ** 2 * v2.sum()) < 1e-8
    if ridge == 0:  # κ = λ(M − n)/n, L = n/M, E₀ = M/(M − n), MSE = (1 − n/M) Σ v²
        assert rel(out["kappa"], lam0 * (m - n) / n) < 1e-8
        assert rel(out["test_mse"], (1 - n / m) * v2.sum()) < 1e-8
        assert out["train_mse"] == 0


def test_two_level_spectrum_matches_its_closed_form():
    a, b, l1, l2, n = 5, 30, 2.0, 0.01, 9
    lam_true = np.r_[np.full(a, l1), np.full(b, l2)]
    kernel, y, v2 = diagonal_case(lam_true, seed=1)
    lam, v2_found = el.spectrum(kernel, y)
    # a l1/(l1+κ) + b l2/(l2+κ) = n, ridgeless: n κ² + (n(l1+l2) − (a+b) ... ) κ + ... = 0
    qa, qb, qc = n, n * (l1 + l2) - a * l1 - b * l2, n * l1 * l2 - (a + b) * l1 * l2
    kappa = (-qb + np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
    out = el.predict(lam, v2_found, n, 0.0)
    assert rel(out["kappa"], kappa) < 1e-8
    learn = lam_true / (lam_true + kappa)
    mse = n / (n - np.sum(learn**2)) * np.sum((1 - learn) ** 2 * v2)
    assert rel(out["test_mse"], mse) < 1e-8
    assert rel(out["learnabilities"].sum(), n) < 1e-10  # the conservation law at δ = 0


# --- a dot-product kernel on the hypercube {−1, 1}^d ---------------------------------------

def hypercube(d):
    return np.array(list(itertools.product([-1.0, 1.0], repeat=d)))


def walsh_eigenvalue(g, d, k):
    """λ_k = E_x g(Σx/d) χ_S(x), |S| = k: over the x with j coordinates −1, s of them in S."""
    return sum(g((d - 2 * j) / d) * (-1) ** s * comb(k, s) * comb(d - k, j - s)
               for j in range(d + 1) for s in range(min(k, j) + 1)) / 2**d


@pytest.mark.parametrize("ridge", [0.0, 0.05])
def test_hypercube_kernel_matches_walsh_closed_form(ridge):
    d, n = 6, 11
    x = hypercube(d)
    g = np.exp
    kernel = g(x @ x.T / d)
    # y = χ_{0} + 0.5 χ_{1,2} − 0.25 χ_{0,3,4}: coefficients 1, 0.5, −0.25 (orthonormal χ)
    y = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] - 0.25 * x[:, 0] * x[:, 3] * x[:, 4]
    by_degree = [walsh_eigenvalue(g, d, k) for k in range(d + 1)]
    lam_true = np.concatenate([np.full(comb(d, k), by_degree[k]) for k in range(d + 1)])
    v2_by_degree = {1: 1.0, 2: 0.25, 3: 0.0625}
    v2_true = np.concatenate([np.r_[v2_by_degree.get(k, 0.0), np.zeros(comb(d, k) - 1)]
                              for k in range(d + 1)])
    lam, v2 = el.spectrum(kernel, y)
    assert np.allclose(lam, np.sort(lam_true)[::-1], rtol=1e-10, atol=1e-14)
    found, truth = el.predict(lam, v2, n, ridge), el.predict(lam_true, v2_true, n, ridge)
    for key in ("kappa", "e0", "test_mse"):
        assert rel(found[key], truth[key]) < 1e-8, key
    # Σ L_i = n − δ/κ (the conservation law)
    assert rel(found["learnabilities"].sum(), n - ridge / found["kappa"]) < 1e-10


# --- measured kernel regression ------------------------------------------------------------

def test_kernel_regression_mse_is_sklearns_kernel_ridge():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(30, 4))
    kernel = np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / 4)
    y = np.eye(3)[rng.integers(0, 3, 30)]
    train = rng.choice(30, 10, replace=False)
    test = np.setdiff1d(np.arange(30), train)
    fit = KernelRidge(alpha=0.1, kernel="precomputed").fit(kernel[np.ix_(train, train)],
                                                          y[train])
    expected = np.mean(np.sum((fit.predict(kernel[np.ix_(test, train)]) - y[test]) ** 2, 1))
    assert rel(el.kernel_regression_mse(kernel, y, train, 0.1), expected) < 1e-10


@pytest.mark.parametrize("n,ridge", [(16, 0.0), (32, 0.0), (32, 0.3)])
def test_prediction_matches_mean_measured_mse(n, ridge):
    """Hypercube d = 8 (M = 256), a target of Walsh monomials of degrees 1-3, 400 training
    sets. Tolerance: 3 standard errors of the mean (the Monte-Carlo error) plus 4 % of the
    prediction, the theory's own error here (it is exact only as n, M → ∞; at n/M ≤ 1/8
    its held-out prediction is within 0.1-1.1 % of a 2,000-draw mean for these cases)."""
    d = 8
    x = hypercube(d)
    kernel = np.exp(x @ x.T / d)
    y = np.stack([x[:, 0], x[:, 1] * x[:, 2], x[:, 3] * x[:, 4] * x[:, 5]], axis=1)
    lam, v2 = el.spectrum(kernel, y)
    delta = ridge * np.trace(kernel) / 256
    predicted = el.heldout_mse(el.predict(lam, v2, n, delta), n, 256)
    mean, se = el.measured_mse(kernel, y, n, delta, draws=400, seed=5)
    assert abs(predicted - mean) <= 3 * se + 0.04 * predicted, (predicted, mean, se)


# --- κ at its extremes -----------------------------------------------------------------------

def residual(lam, n, ridge, kappa):
    return abs(np.sum(lam / (lam + kappa)) + ridge / kappa - n) / n


def test_kappa_ridgeless_with_n_one_below_the_rank():
    lam = np.geomspace(1, 1e-6, 50)
    kappa = el.solve_kappa(lam, 49, 0.0)
    assert 0 < kappa < 1e-6 and residual(lam, 49, 0.0, kappa) < 1e-12


def test_kappa_with_eigenvalues_over_300_decades():
    lam = 10.0 ** -np.linspace(0, 300, 80)
    for n in (1, 40, 79):
        kappa = el.solve_kappa(lam, n, 0.0)
        assert kappa > 0 and residual(lam, n, 0.0, kappa) < 1e-12
    big = el.solve_kappa(1e200 * lam[:10], 3, 1e190)
    assert residual(1e200 * lam[:10], 3, 1e190, big) < 1e-12


def test_kappa_of_a_zero_kernel_is_ridge_over_n():
    assert rel(el.solve_kappa(np.zeros(5), 4, 2.0), 0.5) < 1e-15


def test_ridgeless_with_too_few_positive_eigenvalues_is_refused():
    with pytest.raises(ValueError, match="more than n positive eigenvalues"):
        el.solve_kappa(np.r_[np.ones(5), np.zeros(5)], 5, 0.0)
    with pytest.raises(ValueError, match="ridge must be"):
        el.solve_kappa(np.ones(5), 2, -1.0)
    with pytest.raises(ValueError, match="no held-out points"):
        el.kernel_regression_mse(np.eye(3), np.ones(3), [0, 1, 2], 0.0)


# --- the metric on a network ---------------------------------------------------------------

def test_measure_is_the_formulas_on_the_ntk_of_the_pool():
    spec = ModelSpec(input_shape=(1, 2, 3), n_classes=3, width=8, depth=2, activation="tanh",
                     bias=True)
    model = build_model(spec, seed=1)
    g = torch.Generator().manual_seed(0)
    data = xr.Dataset({"x_train": (("n", "c", "h", "w"), torch.randn(30, 1, 2, 3,
                                                                     generator=g).numpy()),
                       "y_train": ("n", torch.randint(0, 3, (30,), generator=g).numpy())})
    settings = {"n_pool": 20, "train_fraction": 0.25, "draws": 5, "seed": 0, "ridge": 1e-3,
                "top_k": 4, "chunk_size": 7}
    job = MemberJob("cpu", 64)
    job.run = type("Run", (), {"seed": 2})()
    out = measure_module.measure(model, data, settings, job)
    x = torch.as_tensor(data["x_train"].values[:20])
    targets = np.eye(3)[data["y_train"].values[:20]]
    for suffix, net in (("", model), ("_init", build_model(spec, seed=2))):
        expected = el.eigenlearning(ntk_gram(net, x), targets, 5, 1e-3, 5, 0, 4)
        for key in ("predicted_mse", "measured_mse", "kappa", "e0"):
            assert rel(float(out[f"eigenlearning_{key}{suffix}"]), expected[key]) < 1e-10
        assert np.allclose(out[f"eigenlearning_learnabilities{suffix}"], expected["learnabilities"])
    assert float(out["eigenlearning_n_train"]) == 5 and float(out["eigenlearning_n_pool"]) == 20
    assert measure_module.training_points(4, 0.01) == 1
    assert measure_module.training_points(4, 0.5) == 2


# --- the figure ----------------------------------------------------------------------------

def figure_dataset(n=12, seed=0):
    rng = np.random.default_rng(seed)
    measured = rng.uniform(0.5, 1.0, (2, n))
    data = {"test_acc": ("run", rng.uniform(0.5, 0.9, n))}
    for i, suffix in enumerate(("", "_init")):
        data[f"eigenlearning_predicted_mse{suffix}"] = ("run", measured[i] * (1 + 0.1 * i))
        data[f"eigenlearning_measured_mse{suffix}"] = ("run", measured[i])
        data[f"eigenlearning_measured_mse_se{suffix}"] = ("run", np.full(n, 0.01))
    # run_id as metrics.zarr gives it back: numpy's variable-width StringDType
    run_ids = np.array([f"r{i}" for i in range(n)], dtype=np.dtypes.StringDType())
    return xr.Dataset(data, coords={"run_id": ("run", run_ids)})


def test_figure_agreement_and_chart(tmp_path):
    from workflow_src.figures.catalogue import FIGURES, StudyData
    from workflow_src.figures.eigenlearning import agreement, eigenlearning_table
    from workflow_src.figures.output import save

    ds = figure_dataset()
    found = agreement(eigenlearning_table(ds))
    trained, initial = found["NTK at the trained weights"], found["NTK at the initial weights"]
    assert trained[0] == pytest.approx(1.0) and trained[1] == pytest.approx(0.0)
    assert initial[0] == pytest.approx(1.0) and initial[1] == pytest.approx(0.1)
    assert initial[2] == 12
    opts = {"width": 200, "height": 150}
    save(FIGURES["eigenlearning"].build(StudyData(metrics=lambda: ds), opts),
         str(tmp_path / "eigenlearning"))
    assert (tmp_path / "eigenlearning.png").stat().st_size > 1000
    without = ds.drop_vars([v for v in ds.data_vars if v.startswith("eigenlearning")])
    chart = FIGURES["eigenlearning"].build(StudyData(metrics=lambda: without), opts)
    assert "enable measure.eigenlearning" in chart.to_json()


def test_a_zero_or_diverged_kernel_gives_nan_not_an_error():
    y = np.eye(3)[np.arange(10) % 3]
    for kernel in (np.zeros((10, 10)), np.full((10, 10), np.nan)):
        out = el.eigenlearning(kernel, y, 3, 1e-6, draws=4, top_k=5)
        assert np.isnan(out["predicted_mse"]) and np.isnan(out["measured_mse"])
        assert out["learnabilities"].shape == (5,) and np.isnan(out["learnabilities"]).all()
