"""Corruptions (Zhang et al. §2.1; docs/science.md §2) against independent counts and statistics."""

import math

import numpy as np
import pytest
from scipy import stats

from workflow_src.data.acquire import RawDataset
from workflow_src.data.corrupt import (
    CORRUPTIONS,
    balanced_subset,
    gaussian,
    label_noise,
    make_corrupted,
    random_pixels,
    shuffled_pixels,
)
from workflow_src.runtable import DataSpec

K = 10
H, W, C = 4, 5, 3  # non-square, multi-channel: catches height/width/channel mix-ups
N_TRAIN_POOL, N_TEST_POOL = 40, 12  # points per class in the raw splits


def synthetic_raw(seed=0, n_train_pool=N_TRAIN_POOL, n_test_pool=N_TEST_POOL):
    """Raw uint8 images whose pixel values are distinct within every (image, channel),
    so the position each output pixel came from can be read off its value."""
    rng = np.random.default_rng(seed)

    def split(per_class):
        n = per_class * K
        images = np.stack([
            np.stack([rng.choice(256, H * W, replace=False) for _ in range(C)], axis=-1)
            for _ in range(n)
        ]).reshape(n, H, W, C).astype(np.uint8)
        labels = rng.permutation(np.repeat(np.arange(K), per_class)).astype(np.int64)
        return images, labels

    x_tr, y_tr = split(n_train_pool)
    x_te, y_te = split(n_test_pool)
    return RawDataset("synthetic", x_tr, y_tr, x_te, y_te, K, source="test")


RAW = synthetic_raw()


def spec(**overrides):
    values = dict(dataset="synthetic", n_train=200, n_test=50, corruption="none",
                  label_noise=0.0, seed=0, corrupt_test_inputs=True, corrupt_test_labels=False)
    values.update(overrides)
    return DataSpec(**values)


def clean_images(raw_images, index):
    """(N, H, W, C) uint8 rows -> (N, C, H, W) float in pixel/255 units, computed by hand."""
    return np.moveaxis(raw_images[index].astype(np.float64) / 255.0, -1, 1)


def source_positions(clean, corrupted):
    """For (N, C, H, W) images with distinct values per (image, channel): the flat pixel
    position each output pixel was taken from, (N, C, H*W)."""
    n, c = clean.shape[:2]
    levels = lambda x: np.rint(np.asarray(x, dtype=np.float64) * 255).astype(int)  # noqa: E731
    flat_in, flat_out = levels(clean).reshape(n, c, -1), levels(corrupted).reshape(n, c, -1)
    match = flat_out[:, :, :, None] == flat_in[:, :, None, :]  # (N, C, out, in)
    assert (match.sum(-1) == 1).all(), "every output pixel must equal exactly one input pixel"
    return match.argmax(-1)


# --- label noise -----------------------------------------------------------------------

def test_label_noise_changed_fraction_is_binomial():
    n, p = 20000, 0.3
    labels = np.random.default_rng(1).integers(0, K, n)
    noisy = label_noise(labels, p, K, np.random.default_rng(2))
    q = p * (1 - 1 / K)  # a redraw can land on the original class
    changed = int((noisy != labels).sum())
    assert abs(changed - n * q) < 5 * math.sqrt(n * q * (1 - q))


def test_label_noise_redrawn_labels_are_uniform_over_the_other_classes():
    n, p = 20000, 0.3
    labels = np.zeros(n, dtype=np.int64)
    noisy = label_noise(labels, p, K, np.random.default_rng(3))
    counts = np.bincount(noisy[noisy != 0], minlength=K)[1:]
    assert stats.chisquare(counts).pvalue > 1e-4


def test_label_noise_zero_changes_nothing_and_keeps_input():
    labels = np.random.default_rng(4).integers(0, K, 5000)
    before = labels.copy()
    noisy = label_noise(labels, 0.0, K, np.random.default_rng(5))
    np.testing.assert_array_equal(noisy, before)
    np.testing.assert_array_equal(labels, before)


def test_label_noise_one_gives_uniform_labels_independent_of_the_original():
    n = 20000
    labels = np.zeros(n, dtype=np.int64)  # all one class: any structure left would show
    noisy = label_noise(labels, 1.0, K, np.random.default_rng(6))
    counts = np.bincount(noisy, minlength=K)
    assert counts.size == K
    assert stats.chisquare(counts).pvalue > 1e-4
    sigma = math.sqrt(n * (1 / K) * (1 - 1 / K))
    assert np.all(np.abs(counts - n / K) < 5 * sigma)
    assert labels.sum() == 0  # the input is not modified in place


# --- pixel corruptions, as functions ---------------------------------------------------

def test_shuffled_pixels_applies_the_given_permutation_to_every_channel():
    images = clean_images(RAW.train_images, np.arange(30))
    permutation = np.random.default_rng(7).permutation(H * W)
    out = shuffled_pixels(images, permutation)
    assert out.shape == images.shape
    expected = images.reshape(30, C, H * W)[:, :, permutation].reshape(images.shape)
    np.testing.assert_array_equal(out, expected)


def test_random_pixels_is_a_per_image_permutation_moving_channels_together():
    n = K * N_TRAIN_POOL
    images = clean_images(RAW.train_images, np.arange(n))
    out = random_pixels(images, np.random.default_rng(8))
    src = source_positions(images, out)  # (N, C, HW)
    assert (src == src[:, :1]).all(), "channels of one pixel must move together"
    perms = src[:, 0]
    assert len({tuple(p) for p in perms}) == n, "every image gets its own permutation"
    # A uniform random permutation has one fixed point on average (variance 1).
    fixed = (perms == np.arange(H * W)).sum(1)
    assert abs(fixed.mean() - 1.0) < 5 / math.sqrt(n)


def test_gaussian_has_requested_per_channel_mean_and_std():
    shape = (2000, 3, 4, 4)
    mean = np.array([0.1, 0.5, -2.0], dtype=np.float32)
    std = np.array([0.2, 1.0, 3.0], dtype=np.float32)
    out = gaussian(shape, mean, std, np.random.default_rng(9))
    assert out.shape == shape
    m = out.size // 3  # samples per channel
    got_mean = out.mean(axis=(0, 2, 3), dtype=np.float64)
    got_std = out.std(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_array_less(np.abs(got_mean - mean), 5 * std / math.sqrt(m))
    np.testing.assert_array_less(np.abs(got_std - std), 5 * std / math.sqrt(2 * m))
    z = (out[:, 1] - mean[1]) / std[1]
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-4


# --- balanced subset -------------------------------------------------------------------

@pytest.mark.parametrize("n", [100, 107, 3])
def test_balanced_subset_counts_differ_by_at_most_one(n):
    rng = np.random.default_rng(10)
    labels = rng.integers(0, K, 3000)  # unequal class sizes
    index = balanced_subset(labels, n, K, np.random.default_rng(11))
    assert index.size == n
    assert np.unique(index).size == n
    assert index.min() >= 0 and index.max() < labels.size
    counts = np.bincount(labels[index], minlength=K)
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == n


def test_balanced_subset_too_large_for_a_class_raises():
    labels = np.repeat(np.arange(K), 5)
    labels[0] = 1  # class 0 now has 4 points
    with pytest.raises(ValueError, match="n_train"):
        balanced_subset(labels, 50, K, np.random.default_rng(0))


@pytest.mark.parametrize("field,value", [("n_train", K * N_TRAIN_POOL + K),
                                         ("n_test", K * N_TEST_POOL + K)])
def test_make_corrupted_subset_larger_than_pool_raises_naming_the_setting(field, value):
    with pytest.raises(ValueError, match=field):
        make_corrupted(RAW, spec(**{field: value}))


# --- make_corrupted --------------------------------------------------------------------

def test_clean_dataset_is_the_subset_as_float_nchw():
    ds = make_corrupted(RAW, spec())
    assert ds["x_train"].dims == ("train", "channel", "height", "width")
    assert ds["x_train"].shape == (200, C, H, W) and ds["x_test"].shape == (50, C, H, W)
    assert ds["x_train"].dtype == np.float32 and ds["x_test"].dtype == np.float32
    tr, te = ds["train_index"].values, ds["test_index"].values
    np.testing.assert_allclose(ds["x_train"].values, clean_images(RAW.train_images, tr), rtol=1e-6)
    np.testing.assert_allclose(ds["x_test"].values, clean_images(RAW.test_images, te), rtol=1e-6)
    np.testing.assert_array_equal(ds["y_train_clean"].values, RAW.train_labels[tr])
    np.testing.assert_array_equal(ds["y_test_clean"].values, RAW.test_labels[te])
    np.testing.assert_array_equal(ds["y_train"].values, RAW.train_labels[tr])
    assert np.bincount(RAW.train_labels[tr], minlength=K).tolist() == [20] * K
    assert np.bincount(RAW.test_labels[te], minlength=K).tolist() == [5] * K
    assert ds.attrs["inputs_corrupted"] == "none" and ds.attrs["labels_corrupted"] == "none"


@pytest.mark.parametrize("corrupt_test", [True, False])
def test_shuffled_pixels_one_permutation_for_all_train_and_test_images(corrupt_test):
    ds = make_corrupted(RAW, spec(corruption="shuffled_pixels", corrupt_test_inputs=corrupt_test))
    x_tr_clean = clean_images(RAW.train_images, ds["train_index"].values)
    x_te_clean = clean_images(RAW.test_images, ds["test_index"].values)
    x_tr = ds["x_train"].values.astype(np.float64)
    permutation = source_positions(x_tr_clean[:1], x_tr[:1])[0, 0]  # from one image
    assert sorted(permutation) == list(range(H * W))
    assert (permutation != np.arange(H * W)).any()
    expected = x_tr_clean.reshape(-1, C, H * W)[:, :, permutation].reshape(x_tr.shape)
    np.testing.assert_allclose(x_tr, expected, rtol=1e-6)
    np.testing.assert_allclose(np.sort(x_tr.reshape(-1, C, H * W), -1),
                               np.sort(x_tr_clean.reshape(-1, C, H * W), -1), rtol=1e-6)
    x_te = ds["x_test"].values.astype(np.float64)
    if corrupt_test:
        expected_te = x_te_clean.reshape(-1, C, H * W)[:, :, permutation].reshape(x_te.shape)
        assert ds.attrs["inputs_corrupted"] == "train+test"
    else:
        expected_te = x_te_clean
        assert ds.attrs["inputs_corrupted"] == "train"
    np.testing.assert_allclose(x_te, expected_te, rtol=1e-6)


@pytest.mark.parametrize("corrupt_test", [True, False])
def test_random_pixels_independent_permutation_per_image(corrupt_test):
    ds = make_corrupted(RAW, spec(corruption="random_pixels", corrupt_test_inputs=corrupt_test))
    x_tr_clean = clean_images(RAW.train_images, ds["train_index"].values)
    x_te_clean = clean_images(RAW.test_images, ds["test_index"].values)
    src_tr = source_positions(x_tr_clean, ds["x_train"].values.astype(np.float64))
    perms = [tuple(p) for p in src_tr[:, 0]]
    if corrupt_test:
        src_te = source_positions(x_te_clean, ds["x_test"].values.astype(np.float64))
        perms += [tuple(p) for p in src_te[:, 0]]
        assert ds.attrs["inputs_corrupted"] == "train+test"
    else:
        np.testing.assert_allclose(ds["x_test"].values, x_te_clean, rtol=1e-6)
        assert ds.attrs["inputs_corrupted"] == "train"
    assert len(set(perms)) == len(perms)


@pytest.mark.parametrize("corrupt_test", [True, False])
def test_gaussian_matches_clean_training_statistics(corrupt_test):
    ds = make_corrupted(RAW, spec(corruption="gaussian", corrupt_test_inputs=corrupt_test))
    x_tr_clean = clean_images(RAW.train_images, ds["train_index"].values)
    x_te_clean = clean_images(RAW.test_images, ds["test_index"].values)
    mean, std = x_tr_clean.mean(axis=(0, 2, 3)), x_tr_clean.std(axis=(0, 2, 3))
    x_tr = ds["x_train"].values.astype(np.float64)
    m = x_tr.size // C
    np.testing.assert_array_less(np.abs(x_tr.mean(axis=(0, 2, 3)) - mean), 5 * std / math.sqrt(m))
    np.testing.assert_array_less(np.abs(x_tr.std(axis=(0, 2, 3)) - std), 5 * std / math.sqrt(2 * m))
    # Unrelated to the images it replaces.
    r = np.corrcoef(x_tr.ravel(), x_tr_clean.ravel())[0, 1]
    assert abs(r) < 5 / math.sqrt(x_tr.size)
    x_te = ds["x_test"].values.astype(np.float64)
    if corrupt_test:
        z = (x_te - mean[None, :, None, None]) / std[None, :, None, None]
        assert abs(z.mean()) < 5 / math.sqrt(z.size)
        assert abs(z.std() - 1) < 5 / math.sqrt(2 * z.size)
        assert ds.attrs["inputs_corrupted"] == "train+test"
    else:
        np.testing.assert_allclose(x_te, x_te_clean, rtol=1e-6)
        assert ds.attrs["inputs_corrupted"] == "train"


def test_gaussian_noise_does_not_depend_on_the_input_pixels():
    """Two raw datasets with the same labels but different pixels: after standardising
    with each one's own training statistics, the noise is the same draw."""
    other = synthetic_raw(seed=0)
    other.train_images = np.random.default_rng(12).integers(0, 256, RAW.train_images.shape,
                                                            dtype=np.uint8)
    out = []
    for raw in (RAW, other):
        ds = make_corrupted(raw, spec(corruption="gaussian"))
        clean = clean_images(raw.train_images, ds["train_index"].values)
        mean, std = clean.mean(axis=(0, 2, 3)), clean.std(axis=(0, 2, 3))
        out.append((ds["x_train"].values - mean[None, :, None, None]) / std[None, :, None, None])
    assert not np.allclose(RAW.train_images, other.train_images)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("corrupt_test", [False, True])
def test_label_noise_on_train_only_unless_configured(corrupt_test):
    ds = make_corrupted(RAW, spec(label_noise=0.5, corrupt_test_labels=corrupt_test))
    y_tr, y_tr_clean = ds["y_train"].values, ds["y_train_clean"].values
    y_te, y_te_clean = ds["y_test"].values, ds["y_test_clean"].values
    np.testing.assert_array_equal(y_tr_clean, RAW.train_labels[ds["train_index"].values])
    np.testing.assert_array_equal(y_te_clean, RAW.test_labels[ds["test_index"].values])
    n, q = y_tr.size, 0.5 * (1 - 1 / K)
    changed = (y_tr != y_tr_clean).sum()
    assert abs(changed - n * q) < 5 * math.sqrt(n * q * (1 - q))
    assert ds.attrs["fraction_train_labels_changed"] == pytest.approx(changed / n)
    if corrupt_test:
        assert ds.attrs["labels_corrupted"] == "train+test"
        assert (y_te != y_te_clean).any()
    else:
        assert ds.attrs["labels_corrupted"] == "train"
        np.testing.assert_array_equal(y_te, y_te_clean)
    # Labels only: the images are the clean subset.
    np.testing.assert_allclose(ds["x_train"].values,
                               clean_images(RAW.train_images, ds["train_index"].values), rtol=1e-6)
    assert ds.attrs["inputs_corrupted"] == "none"


def test_pixel_corruption_leaves_labels_and_label_noise_unchanged():
    """Each corruption draws from its own stream: adding a pixel corruption does not
    change the subset or the noisy labels of the same seed."""
    base = make_corrupted(RAW, spec(label_noise=0.5))
    for corruption in ("shuffled_pixels", "random_pixels", "gaussian"):
        ds = make_corrupted(RAW, spec(corruption=corruption, label_noise=0.5))
        for name in ("train_index", "test_index", "y_train", "y_test"):
            np.testing.assert_array_equal(ds[name].values, base[name].values)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_same_seed_same_output_different_seed_different(corruption):
    first = make_corrupted(RAW, spec(corruption=corruption, label_noise=0.3, seed=5))
    again = make_corrupted(RAW, spec(corruption=corruption, label_noise=0.3, seed=5))
    other = make_corrupted(RAW, spec(corruption=corruption, label_noise=0.3, seed=6))
    for name in first.data_vars:
        np.testing.assert_array_equal(first[name].values, again[name].values)
    assert first.attrs == again.attrs
    for name in ("x_train", "x_test", "y_train", "train_index"):
        assert not np.array_equal(first[name].values, other[name].values), name
    if corruption != "none":
        # With the subset held fixed (full pool), the pixel corruption itself still differs.
        full = dict(n_train=K * N_TRAIN_POOL, n_test=K * N_TEST_POOL, corruption=corruption)
        a = make_corrupted(RAW, spec(seed=5, **full))
        b = make_corrupted(RAW, spec(seed=6, **full))
        np.testing.assert_array_equal(a["train_index"].values, b["train_index"].values)
        assert not np.array_equal(a["x_train"].values, b["x_train"].values)


# --- label noise at a sample size that separates p from p (1 - 1/K) ----------------------
# n = 50,000, p = 0.5, K = 10: the flip rate is 0.45 if each label is redrawn with
# probability p, and 0.405 if the redraw probability were p (1 - 1/K); the binomial sd of
# the flip rate is ~0.0022, so the two are ~20 sd apart and a 5 sd band tells them apart.
N_LARGE, P_LARGE = 50_000, 0.5


def assert_redrawn_with_probability(clean, noisy, p):
    """Flip rate p (1 - 1/K) within 5 sd, and the redraw-implied transition matrix: from
    class i, class j != i with probability p / K each, class i with 1 - p + p / K."""
    n = clean.size
    flips = np.mean(noisy != clean)
    q = p * (1 - 1 / K)
    assert abs(flips - q) < 5 * math.sqrt(q * (1 - q) / n)
    observed = np.zeros((K, K))
    np.add.at(observed, (clean, noisy), 1)
    expected_rows = np.full((K, K), p / K) + np.eye(K) * (1 - p)
    expected = expected_rows * observed.sum(axis=1, keepdims=True)
    assert stats.chisquare(observed.ravel(), expected.ravel(), ddof=K - 1).pvalue > 1e-4


def test_label_noise_redraws_with_probability_p_not_the_flip_rate():
    labels = np.random.default_rng(21).integers(0, K, N_LARGE)
    noisy = label_noise(labels, P_LARGE, K, np.random.default_rng(22))
    assert_redrawn_with_probability(labels, noisy, P_LARGE)


def test_make_corrupted_passes_label_noise_p_unchanged():
    """The same check through make_corrupted, which reads p from the run's DataSpec."""
    n_per_class = N_LARGE // K
    labels = np.repeat(np.arange(K), n_per_class).astype(np.int64)
    images = np.zeros((N_LARGE, 1, 1, 1), dtype=np.uint8)  # pixels play no part here
    raw = RawDataset("synthetic", images, labels, images[:K], labels[::n_per_class], K, "test")
    ds = make_corrupted(raw, spec(n_train=N_LARGE, n_test=K, label_noise=P_LARGE))
    clean, noisy = ds["y_train_clean"].values, ds["y_train"].values
    assert clean.size == N_LARGE
    assert_redrawn_with_probability(clean, noisy, P_LARGE)
    assert ds.attrs["fraction_train_labels_changed"] == pytest.approx(np.mean(noisy != clean))
