"""Files and folders written whole or not at all: a reader never sees half an output.

Every writer writes ``<name>.tmp`` next to the target, flushes it to disk, then renames
it over the target (``os.replace`` is atomic on one file system). This module is the
only place in the package (the two leaf libraries aside) that renames outputs into
place; a writer that needs another library's save function uses :func:`writing`::

    with atomic.writing("runs/manifest.parquet") as tmp:
        table.to_parquet(tmp)

and a folder is built in :func:`writing_dir` and swapped in whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def temp_path(path: str | os.PathLike[str]) -> Path:
    """The temporary name a write of ``path`` goes through: ``<name>.tmp`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def replace(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Rename the finished file ``tmp`` over ``path`` (after flushing it to disk)."""
    _fsync(Path(tmp))
    os.replace(tmp, path)
    return Path(path)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file path to write; renamed over ``path`` when the block ends without error.

    The folder of ``path`` is created; on an error the temporary file is removed and
    ``path`` keeps what it held.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder)."""
    with writing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (creating its folder)."""
    with writing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def link(source: str | os.PathLike[str], path: str | os.PathLike[str], *, symlink: bool = True) -> str:
    """Make ``path`` name the file ``source`` without copying it where the file systems allow.

    A hard link first; where there can be none (another file system, links not
    supported or not permitted), a symbolic link to the absolute path of ``source``
    when ``symlink`` allows it; else a copy. The link or copy is made under the
    temporary name and renamed over ``path``. Returns ``"hard"``, ``"symlink"`` or ``"copy"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    kind = "copy"
    try:
        os.link(source, tmp)
        kind = "hard"
    except FileNotFoundError:
        raise
    except OSError:
        if symlink:
            with contextlib.suppress(OSError):
                os.symlink(os.path.abspath(source), tmp)
                kind = "symlink"
    try:
        if kind == "copy":
            shutil.copyfile(source, tmp)
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # renaming a hard link over another link to the same file does nothing: drop the spare name
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    return kind


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


def replace_dir(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Swap the finished folder ``tmp`` in as ``path``; an existing ``path`` is removed only after.

    The old folder is first renamed aside, so at every moment ``path`` is either the
    complete old folder or the complete new one (never a mixture).
    """
    tmp, path = Path(tmp), Path(path)
    for file in tmp.rglob("*"):
        if file.is_file():
            _fsync(file)
    if not path.exists():
        os.replace(tmp, path)
        return path
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, aside / path.name)
    os.replace(tmp, path)
    shutil.rmtree(aside, ignore_errors=True)
    return path


@contextlib.contextmanager
def writing_dir(path: str | os.PathLike[str], *, unique: bool = False) -> Iterator[Path]:
    """A fresh temporary folder to fill; swapped in as ``path`` when the block ends without error.

    ``unique=True`` names the temporary folder uniquely (several writers of one
    destination, e.g. processes saving the same model) instead of ``<name>.tmp``,
    which a rerun after a kill clears. On an error the temporary folder is removed and
    ``path`` keeps what it held.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        tmp = temp_path(path)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync(file: Path) -> None:
    with open(file, "rb") as f:
        os.fsync(f.fileno())
