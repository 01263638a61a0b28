"""Small embedding sets for the retrieval tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _unit_vectors(n: int, dim: int, seed: int, clusters: int = 0) -> np.ndarray:
    """Random unit vectors; with ``clusters``, scattered around that many centres."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    if clusters:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32) * 3
        x += centres[rng.integers(0, clusters, n)]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _row_metadata(n: int, start: int = 0) -> pd.DataFrame:
    """Metadata whose values say which row they belong to."""
    rows = np.arange(start, start + n)
    return pd.DataFrame({"study_id": [f"S{i:05d}" for i in rows], "value": rows.astype(float)})


@pytest.fixture
def unit_vectors():
    """``unit_vectors(n, dim, seed, clusters=0)``."""
    return _unit_vectors


@pytest.fixture
def row_metadata():
    """``row_metadata(n, start=0)``."""
    return _row_metadata


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """faiss's OpenMP threads spin while they wait; on a busy machine two spinning threads
    make small trainings many times slower than one thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
