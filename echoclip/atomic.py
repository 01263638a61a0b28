"""Files written whole or not at all: a reader never sees half a metrics file.

Each writer writes ``<name>.tmp`` next to the target, flushes it to disk, then renames
it over the target (``os.replace`` is atomic on one file system).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy and torch scalars become Python numbers, NaN and
    infinities ``null``, paths strings, mapping keys strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` (made :func:`jsonable`) as indented JSON, atomically."""
    return write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")
