"""The machine a benchmark ran on, as the results files record it (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_machine() -> str:
    """``"x86_64 <CPU model>, <n> cores"``: the CPU model from /proc/cpuinfo where there is one."""
    cpu = platform.processor() or "cpu"
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores"
