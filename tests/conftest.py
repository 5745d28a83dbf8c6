"""Fixtures shared by the unit tests, and the guard of the `workflow` marker.

The guard: a test that starts the Snakemake CLI (a process whose program is `snakemake`, or
`python -m snakemake`), in its body or in any fixture it uses, must be marked `workflow`;
an unmarked one fails at that call, naming the marker. So `-m "not workflow"` (and
`make test-fast`) never starts Snakemake, and a new workflow test cannot slip into the fast
tier unmarked. It watches subprocess.Popen, which subprocess.run and check_output use; a
Snakemake started by another program (make, a shell script) is not seen. The tiers and
markers are described in tests/README.md.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

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
    from workflow_src.jobs.train_shard import train_shard

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
def same_torch_threads():
    """A test leaves torch's thread count as it found it: measure_shard sets it to the job's
    threads (tests pass 8), which would otherwise hold for every test after it."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def float32_default_dtype():
    """Every test starts with torch's default dtype float32 and must leave it so: a test
    module that set float64 at import time once made 46 tests collected with it fail far
    from the cause (float and double weights in one matmul)."""
    assert torch.get_default_dtype() == torch.float32, (
        "torch's default dtype is not float32 when this test starts: a test module sets it "
        "at import time or a test did not put it back (use a fixture that restores it)")
    yield
    if torch.get_default_dtype() != torch.float32:
        torch.set_default_dtype(torch.float32)
        pytest.fail("this test left torch's default dtype changed: put it back after use")


@pytest.fixture(autouse=True)
def seeded_global_generator():
    """Every test starts from the same state of torch's global generator, so a test that
    draws from it (torch.randn without a generator) sees the same numbers whichever tests
    ran before it: alone, with -k, or in the whole suite."""
    torch.manual_seed(0)


# --- The guard of the workflow marker --------------------------------------------------------

_running: list[pytest.Item] = []  # the test being set up, run or torn down


def starts_snakemake(args) -> bool:
    """Whether a Popen argument list runs the Snakemake CLI."""
    argv = [args] if isinstance(args, (str, bytes, Path)) else list(args)
    if not argv:
        return False
    words = [str(a) for a in argv]
    if Path(words[0].split()[0] if len(words) == 1 else words[0]).name == "snakemake":
        return True
    return any(a == "-m" and b == "snakemake" for a, b in zip(words, words[1:]))


class UnmarkedWorkflowTest(Exception):
    """A test not marked workflow started Snakemake."""


_popen_init = subprocess.Popen.__init__


def _guarded_popen_init(self, args, *rest, **kwargs):
    if _running and starts_snakemake(args):
        item = _running[-1]
        if item.get_closest_marker("workflow") is None:
            raise UnmarkedWorkflowTest(
                f"{item.nodeid} starts Snakemake ({' '.join(map(str, args))[:120]}) but is not "
                f"marked workflow: add @pytest.mark.workflow (see tests/README.md)")
    _popen_init(self, args, *rest, **kwargs)


def pytest_configure(config):
    subprocess.Popen.__init__ = _guarded_popen_init


def pytest_unconfigure(config):
    subprocess.Popen.__init__ = _popen_init


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Remembers the test whose setup, call or teardown is running (fixtures of any scope
    are set up within the first test that needs them)."""
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()
