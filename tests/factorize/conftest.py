"""Single-threaded BLAS for this directory: on a shared 2-core machine OpenBLAS threads
contend with each other and with other jobs, which made these small problems several times
slower (and timings noisy). threadpoolctl is optional; without it nothing changes."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
