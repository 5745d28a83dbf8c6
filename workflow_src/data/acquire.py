"""Stage 1: fetch a dataset's images and labels as uint8 arrays, with verified provenance.

Sources, in order: a directory the user configured (``data.root``), Debian's
``dataset-fashion-mnist`` package (Fashion-MNIST only), then torchvision's downloaders
(only when ``data.download`` is true). ``digits`` is scikit-learn's bundled copy, always
offline. Every source is verified where a checksum is published, and the arrays' own
SHA-256 is recorded so the aggregate can say exactly which data a study saw.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "svhn", "digits")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# MD5 of each archive as Zalando published it (torchvision's FashionMNIST.resources lists the
# same; kept here so that reading the files never imports torchvision, ~3 s per job).
FASHION_PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# SHA-256 of the *decompressed* idx files of Zalando's release. Debian recompresses the
# .gz files (so the published MD5s of the archives no longer match) but not their payload;
# these digests were computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1,
# whose archives decompress to the same idx files as the published ones.
FASHION_PAYLOAD_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DIGITS_TEST_FRACTION = 0.25  # digits has no official split; this one is fixed and seeded
DIGITS_SPLIT_SEED = 0


class DatasetUnavailable(RuntimeError):
    """The dataset could not be found or fetched; the message says how to provide it."""


@dataclass
class RawDataset:
    name: str
    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray  # (M, H, W, C) uint8
    test_labels: np.ndarray  # (M,) int64
    n_classes: int
    source: str  # where the data came from, for the provenance attributes

    @property
    def checksum(self) -> str:
        """SHA-256 over the four arrays: identifies the data whatever its container."""
        digest = hashlib.sha256()
        for array in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def acquire(name: str, root: str | None = None, download: bool = False,
            download_dir: str = "resources/downloads") -> RawDataset:
    """The raw dataset ``name`` from the first source that has it."""
    if name not in DATASETS:
        raise DatasetUnavailable(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if name == "digits":
        return _digits()
    if name == "fashion_mnist":
        return _fashion_mnist(root, download, download_dir)
    return _torchvision(name, root or download_dir, download)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: big-endian header, then uint8 data), gzip or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetUnavailable(f"{path} is not a uint8 idx file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(shape)):
        raise DatasetUnavailable(f"{path} is truncated: header says {shape}")
    return payload.reshape(shape)


def _verify_fashion_file(path: Path) -> None:
    """Accept either the published MD5 of the archive or the known digest of its payload."""
    published_md5 = FASHION_PUBLISHED_MD5.get(path.name)
    if published_md5 and hashlib.md5(path.read_bytes()).hexdigest() == published_md5:
        return
    with gzip.open(path, "rb") as handle:
        payload_sha = hashlib.sha256(handle.read()).hexdigest()
    if payload_sha != FASHION_PAYLOAD_SHA256[path.name]:
        raise DatasetUnavailable(
            f"{path} fails its checksum (neither the published MD5 of the archive nor the "
            f"SHA-256 of its contents match): the file is corrupt or not Fashion-MNIST; "
            f"delete it and provide the original"
        )


def _fashion_mnist(root, download, download_dir) -> RawDataset:
    if root:  # an explicit directory must hold the data: falling back would hide a typo
        if all((Path(root) / f).is_file() for f in FASHION_FILES.values()):
            return _fashion_from_dir(Path(root))
        raise DatasetUnavailable(
            f"Fashion-MNIST not found in data.root = {root!r}: it must hold "
            f"{', '.join(FASHION_FILES.values())}. Fix data.root, or set it to null to use "
            f"Debian's copy ({DEBIAN_FASHION_MNIST}) or a download."
        )
    searched = []
    for directory in (DEBIAN_FASHION_MNIST, Path(download_dir) / "FashionMNIST" / "raw"):
        searched.append(str(directory))
        if all((directory / f).is_file() for f in FASHION_FILES.values()):
            return _fashion_from_dir(directory)
    if download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(download_dir, train=True, download=True)
        except Exception as error:  # torchvision raises URLError, RuntimeError, ...
            raise DatasetUnavailable(_fashion_help(searched, f"download failed: {error}")) from error
        return _fashion_from_dir(Path(download_dir) / "FashionMNIST" / "raw")
    raise DatasetUnavailable(_fashion_help(searched, "download is disabled (data.download: false)"))


def _fashion_help(searched, reason) -> str:
    return (
        f"Fashion-MNIST not found in {', '.join(searched)}; {reason}. Fix: install Debian's "
        f"package (apt-get install dataset-fashion-mnist), or set data.root to a directory "
        f"holding the four idx .gz files, or set data.download: true on a machine with internet."
    )


def _fashion_from_dir(directory: Path) -> RawDataset:
    arrays = {}
    for key, filename in FASHION_FILES.items():
        _verify_fashion_file(directory / filename)
        arrays[key] = read_idx(directory / filename)
    return RawDataset(
        name="fashion_mnist",
        train_images=arrays["train_images"][..., None],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"][..., None],
        test_labels=arrays["test_labels"].astype(np.int64),
        n_classes=10,
        source=str(directory.resolve()),
    )


def _digits() -> RawDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # 8x8 images with values 0..16: rescale to the uint8 range every other dataset uses.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return RawDataset("digits", x_tr, y_tr, x_te, y_te, 10,
                      source="sklearn.datasets.load_digits (bundled)")


def _torchvision(name: str, root: str, download: bool) -> RawDataset:
    """mnist, cifar10, cifar100, svhn through torchvision, which checks the published MD5s."""
    from torchvision import datasets

    def load(train: bool):
        if name == "svhn":
            ds = datasets.SVHN(root, split="train" if train else "test", download=download)
            return np.transpose(ds.data, (0, 2, 3, 1)), np.asarray(ds.labels)
        cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10,
               "cifar100": datasets.CIFAR100}[name]
        ds = cls(root, train=train, download=download)
        images = np.asarray(ds.data)
        return (images[..., None] if images.ndim == 3 else images), np.asarray(ds.targets)

    try:
        (x_tr, y_tr), (x_te, y_te) = load(True), load(False)
    except Exception as error:
        raise DatasetUnavailable(
            f"{name} not found under {root!r} ({error}). Fix: set data.root to a directory "
            f"holding torchvision's copy of {name}, or set data.download: true on a machine "
            f"with internet."
        ) from error
    return RawDataset(name, x_tr.astype(np.uint8), y_tr.astype(np.int64),
                      x_te.astype(np.uint8), y_te.astype(np.int64),
                      n_classes=100 if name == "cifar100" else 10,
                      source=f"torchvision.datasets ({Path(root).resolve()})")


def to_xarray(raw: RawDataset) -> xr.Dataset:
    dims = ("height", "width", "channel")
    return xr.Dataset(
        {
            "train_images": (("train",) + dims, raw.train_images),
            "train_labels": (("train",), raw.train_labels),
            "test_images": (("test",) + dims, raw.test_images),
            "test_labels": (("test",), raw.test_labels),
        },
        attrs={"dataset": raw.name, "n_classes": raw.n_classes, "source": raw.source,
               "sha256": raw.checksum},
    )


def from_xarray(ds: xr.Dataset) -> RawDataset:
    return RawDataset(
        name=ds.attrs["dataset"],
        train_images=ds["train_images"].values,
        train_labels=ds["train_labels"].values,
        test_images=ds["test_images"].values,
        test_labels=ds["test_labels"].values,
        n_classes=int(ds.attrs["n_classes"]),
        source=ds.attrs["source"],
    )
