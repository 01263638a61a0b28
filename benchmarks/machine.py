"""The machine a benchmark ran on, and the JSON line it reports, as the results files record
them (imported by the scripts beside it)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def describe_machine() -> str:
    """``"x86_64 <CPU model>, <n> cores"``: the CPU model from /proc/cpuinfo where there is one."""
    cpu = platform.processor() or "cpu"
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores"


def emit(line: dict[str, Any], results: str | os.PathLike[str] | None) -> None:
    """Print ``line`` as one JSON line and append it to the JSONL file ``results`` (none: ``None`` or ``""``)."""
    text = json.dumps(line)
    print(text)
    if results:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a", encoding="utf-8") as f:
            f.write(text + "\n")
