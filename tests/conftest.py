"""Test-wide settings: private temp and config dirs, fixed seeds, one thread."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import sys
import tempfile

import numpy as np
import pytest

_BASE = tempfile.mkdtemp(prefix="echoclip-tests-")
atexit.register(shutil.rmtree, _BASE, ignore_errors=True)
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_BASE, "mpl"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_BASE, "inductor"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch = sys.modules.get("torch")  # seed torch when a test uses it; don't import it for those that don't
    if torch is not None:
        torch.manual_seed(0)
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def load_benchmark():
    """``load_benchmark("bench_study")``: a script of ``benchmarks/`` imported as a module (the
    scripts import their ``machine`` helper from beside them)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))

        def load(name: str):
            spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module

        yield load
