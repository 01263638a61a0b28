"""Test-wide settings: private temp and config dirs, fixed seeds, one thread."""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import pytest

_BASE = tempfile.mkdtemp(prefix="echoclip-tests-")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_BASE, "mpl"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_BASE, "inductor"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.manual_seed(0)
