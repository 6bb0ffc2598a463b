"""Preprocessing tests run on small matrices: one BLAS thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_blas_thread():
    """These matrices are small: on a busy 2-core machine BLAS/OpenMP threads only contend."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield
