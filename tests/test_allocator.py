"""The allocator a long CPU run preloads: found where installed, and torch runs under it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from echoclip.allocator import allocator_name, mimalloc_library

needs_mimalloc = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="cmeel-mimalloc ships for x86_64 Linux",
)

# a few training-sized steps whose result must not depend on the allocator
PROBE = (
    "import torch; from echoclip.allocator import allocator_name; torch.manual_seed(0); "
    "x = torch.randn(1024, 4096); w = torch.randn(4096, 256, requires_grad=True); "
    "[(x @ w).relu().sum().backward() for _ in range(3)]; "
    "print(allocator_name(), float(w.grad.sum()))"
)


def _run(env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | env_extra
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@needs_mimalloc
def test_mimalloc_is_found_and_printed_by_the_module() -> None:
    library = mimalloc_library()
    assert library is not None and library.name == "libmimalloc.so" and library.is_file()
    printed = subprocess.run(
        [sys.executable, "-m", "echoclip.allocator"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert printed == str(library)


@needs_mimalloc
def test_torch_runs_under_preloaded_mimalloc_with_the_same_result() -> None:
    library = mimalloc_library()
    assert library is not None
    with_mimalloc = _run({"LD_PRELOAD": str(library)})
    without = _run({})
    assert with_mimalloc[0] == "mimalloc" and without[0] == "system"
    assert with_mimalloc[1] == without[1]


def test_this_process_reports_an_allocator() -> None:
    assert allocator_name() in {"mimalloc", "system"}
