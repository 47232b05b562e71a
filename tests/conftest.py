"""Shared test setup.

The tests run small problems; with more than one intra-op thread they only contend for the CI
machine's two cores (and, on a busy machine, OpenMP spin-waiting makes them many times slower).
Every test module therefore runs with one torch thread and one BLAS/OpenMP thread, and leaves
torch's deterministic mode as it found it.
"""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_module():
    n = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(autouse=True)
def _own_plan_cache(tmp_path, monkeypatch):
    """Budget plans (conr/budget_plans.py) go to the test's own folder, never the user's home."""
    monkeypatch.setenv("CONR_CACHE_DIR", str(tmp_path / "conr-cache"))
