"""Stage 2: a class-balanced subset of a raw dataset, corrupted as in Zhang et al. 2017.

Zhang, Bengio, Hardt, Recht, Vinyals, arXiv 1611.03530, §2.1. Every corruption is a pure
function of (data, seed): each draws from its own numpy Generator spawned from the data
seed, so changing one corruption never changes another's randomness. The result is frozen
on disk and reused for every epoch.

Images leave this stage as float32 in pixel/255 units, (N, C, H, W): exactly what the
network sees (the gaussian corruption is not confined to [0, 1]).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..runtable import DataSpec
from .acquire import RawDataset

CORRUPTIONS = ("none", "shuffled_pixels", "random_pixels", "gaussian")
# Independent random streams, one per use of the data seed.
_STREAM_SUBSET, _STREAM_LABELS, _STREAM_PIXELS = 0, 1, 2


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def balanced_subset(labels: np.ndarray, n: int, n_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of n points, n // K per class (the remainder to randomly chosen classes)."""
    per_class = np.full(n_classes, n // n_classes)
    per_class[rng.choice(n_classes, n % n_classes, replace=False)] += 1
    chosen = []
    for k in range(n_classes):
        pool = np.flatnonzero(labels == k)
        if pool.size < per_class[k]:
            raise ValueError(
                f"class {k} has only {pool.size} points but the subset needs {per_class[k]}; "
                f"lower data.n_train / data.n_test"
            )
        chosen.append(rng.choice(pool, per_class[k], replace=False))
    return np.sort(np.concatenate(chosen))


def label_noise(labels: np.ndarray, p: float, n_classes: int,
                rng: np.random.Generator) -> np.ndarray:
    """With probability p each label is replaced by a uniform draw over all K classes.

    The draw may return the original class, so the expected fraction of changed labels is
    p (1 - 1/K); p = 1 gives Zhang's random labels.
    """
    replace = rng.random(labels.shape[0]) < p
    noisy = labels.copy()
    noisy[replace] = rng.integers(0, n_classes, int(replace.sum()))
    return noisy


def shuffled_pixels(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """The same permutation of pixel positions for every image (channels move together)."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w)


def random_pixels(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An independent permutation of pixel positions for every image."""
    n, c, h, w = images.shape
    perms = rng.permuted(np.tile(np.arange(h * w), (n, 1)), axis=1)  # (N, HW)
    flat = images.reshape(n, c, h * w)
    return np.take_along_axis(flat, perms[:, None, :], axis=2).reshape(n, c, h, w)


def gaussian(shape, mean: np.ndarray, std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """I.i.d. Gaussian images with the given per-channel mean and std (C,)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    return noise * std[None, :, None, None] + mean[None, :, None, None]


def _as_float(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in pixel/255 units."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def corrupt_inputs(x_train, x_test, spec: DataSpec):
    """Apply the pixel corruption to train (and, if configured, test) images."""
    rng = _rng(spec.seed, _STREAM_PIXELS)
    if spec.corruption == "none":
        return x_train, x_test
    if spec.corruption == "shuffled_pixels":
        permutation = rng.permutation(x_train.shape[2] * x_train.shape[3])
        apply = lambda x: shuffled_pixels(x, permutation)  # noqa: E731
    elif spec.corruption == "random_pixels":
        apply = lambda x: random_pixels(x, rng)  # noqa: E731
    elif spec.corruption == "gaussian":
        # Statistics of the original (uncorrupted) training subset, per channel.
        mean, std = x_train.mean(axis=(0, 2, 3)), x_train.std(axis=(0, 2, 3))
        apply = lambda x: gaussian(x.shape, mean, std, rng)  # noqa: E731
    else:
        raise ValueError(f"corruption {spec.corruption!r} is not one of {CORRUPTIONS}")
    x_train = apply(x_train)
    return x_train, (apply(x_test) if spec.corrupt_test_inputs else x_test)


def make_corrupted(raw: RawDataset, spec: DataSpec) -> xr.Dataset:
    """The dataset a run trains and is evaluated on, with provenance in ``attrs``."""
    subset_rng = _rng(spec.seed, _STREAM_SUBSET)
    train_index = balanced_subset(raw.train_labels, spec.n_train, raw.n_classes, subset_rng)
    test_index = balanced_subset(raw.test_labels, spec.n_test, raw.n_classes, subset_rng)
    x_train, x_test = corrupt_inputs(
        _as_float(raw.train_images[train_index]), _as_float(raw.test_images[test_index]), spec
    )
    y_train_clean = raw.train_labels[train_index]
    y_test_clean = raw.test_labels[test_index]
    label_rng = _rng(spec.seed, _STREAM_LABELS)
    y_train = label_noise(y_train_clean, spec.label_noise, raw.n_classes, label_rng)
    y_test = (label_noise(y_test_clean, spec.label_noise, raw.n_classes, label_rng)
              if spec.corrupt_test_labels else y_test_clean)
    image_dims = ("channel", "height", "width")
    return xr.Dataset(
        {
            "x_train": (("train",) + image_dims, x_train.astype(np.float32)),
            "y_train": (("train",), y_train),  # labels the network is trained on
            "y_train_clean": (("train",), y_train_clean),
            "x_test": (("test",) + image_dims, x_test.astype(np.float32)),
            "y_test": (("test",), y_test),  # labels test accuracy is measured against
            "y_test_clean": (("test",), y_test_clean),
            "train_index": (("train",), train_index),  # rows of the raw training split
            "test_index": (("test",), test_index),
        },
        attrs={
            **{k: v for k, v in spec.__dict__.items()},
            "data_id": spec.id,
            "n_classes": raw.n_classes,
            "source": raw.source,
            "source_sha256": raw.checksum,
            "inputs_corrupted": "train+test" if spec.corruption != "none" and spec.corrupt_test_inputs
            else ("train" if spec.corruption != "none" else "none"),
            "labels_corrupted": ("train+test" if spec.corrupt_test_labels else "train")
            if spec.label_noise > 0 else "none",
            "fraction_train_labels_changed": float(np.mean(y_train != y_train_clean)),
            "units": "pixel intensity / 255",
        },
    )
