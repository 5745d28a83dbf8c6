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
