"""Fashion-MNIST's idx reader and checksums (workflow_src.data.acquire), on idx files
written here byte by byte from known arrays, and on Debian's copy when it is installed."""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workflow_src.data import acquire as acquire_module
from workflow_src.data.acquire import (
    DEBIAN_FASHION_MNIST,
    FASHION_FILES,
    DatasetUnavailable,
    acquire,
    read_idx,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format by its specification: two zero bytes, type code 0x08 (uint8), the
    number of dimensions, each dimension as a big-endian uint32, then the data in C order."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes(order="C")


def write_gz(path, payload: bytes):
    with gzip.open(path, "wb") as handle:
        handle.write(payload)
    return path


def synthetic_fashion(seed=0):
    """Four small arrays in the shapes of Fashion-MNIST's files (fewer images, 3 x 4)."""
    rng = np.random.default_rng(seed)
    return {"train_images": rng.integers(0, 256, (7, 3, 4), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, 7, dtype=np.uint8),
            "test_images": rng.integers(0, 256, (5, 3, 4), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, 5, dtype=np.uint8)}


def write_fashion_dir(directory, arrays):
    """The four files under their published names; returns name -> SHA-256 of the payload."""
    digests = {}
    for key, name in FASHION_FILES.items():
        payload = idx_bytes(arrays[key])
        write_gz(directory / name, payload)
        digests[name] = hashlib.sha256(payload).hexdigest()
    return digests


@pytest.mark.parametrize("shape", [(6,), (4, 3, 5), (2, 1, 3, 2)])
def test_read_idx_returns_the_array_exactly(tmp_path, shape):
    # Distinct values, so any reordering (e.g. Fortran order, swapped axes) shows.
    array = (np.arange(np.prod(shape)) * 7 % 256).astype(np.uint8).reshape(shape)
    plain = tmp_path / "a.idx"
    plain.write_bytes(idx_bytes(array))
    for path in (write_gz(tmp_path / "a.gz", idx_bytes(array)), plain):  # gzip or not
        out = read_idx(path)
        assert out.dtype == np.uint8 and out.shape == shape
        np.testing.assert_array_equal(out, array)


def test_read_idx_refuses_bad_magic_and_truncated_files(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = idx_bytes(array)
    not_uint8 = write_gz(tmp_path / "float.gz", good[:2] + b"\x0d" + good[3:])  # 0x0d: float
    with pytest.raises(DatasetUnavailable, match="float.gz.*magic"):
        read_idx(not_uint8)
    truncated = write_gz(tmp_path / "short.gz", good[:-1])
    with pytest.raises(DatasetUnavailable, match=r"short.gz.*truncated.*\(3, 4\)"):
        read_idx(truncated)


def test_fashion_from_root_with_matching_payload_checksums(tmp_path, monkeypatch):
    arrays = synthetic_fashion()
    digests = write_fashion_dir(tmp_path, arrays)  # our own payloads' digests, by hashlib
    monkeypatch.setattr(acquire_module, "FASHION_PAYLOAD_SHA256", digests)
    raw = acquire("fashion_mnist", root=str(tmp_path))
    assert raw.name == "fashion_mnist" and raw.n_classes == 10
    assert raw.train_images.shape == (7, 3, 4, 1) and raw.test_images.shape == (5, 3, 4, 1)
    np.testing.assert_array_equal(raw.train_images[..., 0], arrays["train_images"])
    np.testing.assert_array_equal(raw.test_images[..., 0], arrays["test_images"])
    assert raw.train_labels.dtype == np.int64 and raw.test_labels.dtype == np.int64
    np.testing.assert_array_equal(raw.train_labels, arrays["train_labels"])
    np.testing.assert_array_equal(raw.test_labels, arrays["test_labels"])


def test_fashion_archive_with_the_published_md5_is_accepted(tmp_path, monkeypatch):
    """The other accepted proof: the archive's own MD5 equals the published one."""
    arrays = synthetic_fashion(seed=1)
    write_fashion_dir(tmp_path, arrays)
    md5s = {name: hashlib.md5((tmp_path / name).read_bytes()).hexdigest()
            for name in FASHION_FILES.values()}
    monkeypatch.setattr(acquire_module, "FASHION_PUBLISHED_MD5", md5s)
    raw = acquire("fashion_mnist", root=str(tmp_path))  # payload digests are the real ones
    np.testing.assert_array_equal(raw.train_labels, arrays["train_labels"])


def test_the_published_md5s_are_torchvisions():
    """The archives' MD5s kept in acquire.py (so reading the files never imports
    torchvision) are those torchvision's downloader checks."""
    from torchvision.datasets import FashionMNIST

    assert acquire_module.FASHION_PUBLISHED_MD5 == dict(FashionMNIST.resources)


def test_reading_fashion_mnist_does_not_import_torchvision(tmp_path):
    """The acquire job reads Debian's files (or data.root) without torchvision's import."""
    write_fashion_dir(tmp_path, synthetic_fashion())
    script = ("import sys\n"
              "from workflow_src.data import acquire as module\n"
              "try:\n"
              f"    module.acquire('fashion_mnist', root={str(tmp_path)!r})\n"
              "except module.DatasetUnavailable as err:\n"
              "    print(err)  # synthetic payloads fail the checksums, after they are checked\n"
              "print('torchvision' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout
    assert "fails its checksum" in out and out.splitlines()[-1] == "False", out


@pytest.mark.parametrize("corrupted", list(FASHION_FILES.values()))
def test_fashion_file_failing_its_checksum_is_refused_by_name(tmp_path, monkeypatch, corrupted):
    arrays = synthetic_fashion()
    digests = write_fashion_dir(tmp_path, arrays)
    digests[corrupted] = hashlib.sha256(b"something else").hexdigest()
    monkeypatch.setattr(acquire_module, "FASHION_PAYLOAD_SHA256", digests)
    with pytest.raises(DatasetUnavailable, match=f"{corrupted} fails its checksum") as error:
        acquire("fashion_mnist", root=str(tmp_path))
    assert "delete it" in str(error.value)


def test_fashion_real_payloads_are_refused_when_not_fashion_mnist(tmp_path):
    """With the shipped digests, a directory of other idx files is refused, not read."""
    write_fashion_dir(tmp_path, synthetic_fashion())
    with pytest.raises(DatasetUnavailable, match="fails its checksum"):
        acquire("fashion_mnist", root=str(tmp_path))


def test_fashion_root_missing_a_file_names_data_root(tmp_path):
    write_fashion_dir(tmp_path, synthetic_fashion())
    (tmp_path / FASHION_FILES["test_labels"]).unlink()
    with pytest.raises(DatasetUnavailable, match="data.root"):
        acquire("fashion_mnist", root=str(tmp_path))


@pytest.mark.skipif(not all((DEBIAN_FASHION_MNIST / f).is_file() for f in FASHION_FILES.values()),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_passes_its_checksums_with_the_documented_shapes():
    """Zalando's release: 60,000 training and 10,000 test images of 28 x 28, ten balanced
    classes (6,000 and 1,000 per class)."""
    raw = acquire("fashion_mnist", root=str(DEBIAN_FASHION_MNIST))
    assert raw.train_images.shape == (60_000, 28, 28, 1) and raw.train_images.dtype == np.uint8
    assert raw.test_images.shape == (10_000, 28, 28, 1) and raw.test_images.dtype == np.uint8
    assert np.bincount(raw.train_labels).tolist() == [6_000] * 10
    assert np.bincount(raw.test_labels).tolist() == [1_000] * 10
