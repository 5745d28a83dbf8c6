"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
import torch

from workflow_src.data.acquire import acquire


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits (always offline), read once for the whole run."""
    return acquire("digits")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread while a module's tests run: their networks are tiny, and on a shared
    2-core machine more threads only add contention (up to ~10x slower). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cnn_shard(tmp_path_factory, digits):
    """Two trained WRN-10-1 members (batch norm with the running statistics of training;
    label noise 0 and 0.5) of one shard, as stages 2 and 3 write them. (The 1.6M-parameter
    inception would take a minute here, most of it in SciPy's L-BFGS-B set-up.)"""
    from workflow_src.data.corrupt import make_corrupted
    from workflow_src.integrity import write_store
    from workflow_src.runtable import DataSpec, RunSpec
    from workflow_src.train_shard import train_shard

    results = tmp_path_factory.mktemp("cnn_shard")
    runs, stores = [], {}
    for seed, noise in enumerate((0.0, 0.5)):
        data = DataSpec("digits", 40, 20, "none", noise, 0, True, False)
        runs.append(RunSpec(data=data, width=1, depth=10, activation="relu", bias=True,
                            optimizer="adam", learning_rate=0.01, batch_size=20,
                            augment=False, seed=seed, target_train_acc=1.0, max_steps=4,
                            eval_every=2, architecture="wrn", batch_norm=True))
        path = results / "datasets" / f"{data.id}.zarr"
        write_store(make_corrupted(digits, data), path)
        stores[data.id] = str(path)
    train_shard("c" * 12, runs, stores, results, torch.device("cpu"), False,
                lambda *parts: None)
    return results, runs, stores


@pytest.fixture(autouse=True)
def seeded_global_generator():
    """Every test starts from the same state of torch's global generator, so a test that
    draws from it (torch.randn without a generator) sees the same numbers whichever tests
    ran before it: alone, with -k, or in the whole suite."""
    torch.manual_seed(0)
