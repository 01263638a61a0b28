"""Append-only embedding store: ``.npy`` shards and parquet metadata in the same row order.

A store is a folder::

    store.json                              dimension, dtype, model, shard list (the commit point)
    embeddings/part-000000.npy              float16 or float32 [rows, dim], read memory-mapped
    metadata.parquet/part-000000.parquet    one row per embedding, same order

``metadata.parquet`` is a parquet dataset (a folder of parts), so
``pandas.read_parquet("EMB/metadata.parquet")`` reads it whole. An append writes a new
pair of parts under hidden temporary names, renames them into place, then replaces
``store.json``; readers see only the parts ``store.json`` lists, so an append that
dies half-way leaves the store as it was (its stray parts are removed by the next
append).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .errors import RetrievalError

FORMAT = "echoclip-embeddings"
VERSION = 1
DTYPES = ("float16", "float32")


class EmbeddingStore:
    """Embeddings of one modality (videos or reports) with one metadata row each.

    Example::

        store = EmbeddingStore.create("emb/videos", dim=512, model={"name": "tiny", "hash": h})
        store.append(embeddings, metadata=pd.DataFrame({"study_id": ids}))
        for batch in EmbeddingStore("emb/videos").iter_batches(): ...
    """

    def __init__(self, path: str | os.PathLike) -> None:
        """Open an existing store; use :meth:`create` to make a new one."""
        self.path = Path(path)
        manifest = _read_manifest(self.path)
        self.dim: int = manifest["dim"]
        self.dtype: str = manifest["dtype"]
        self.model: dict[str, Any] | None = manifest.get("model")
        self.video_root: str | None = manifest.get("video_root")
        self.columns: list[str] | None = manifest.get("columns")
        self._shards: list[dict[str, Any]] = manifest["shards"]
        self._arrays = [self._open_shard(s) for s in self._shards]

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        dim: int,
        dtype: str = "float16",
        model: dict[str, Any] | None = None,
        video_root: str | None = None,
    ) -> EmbeddingStore:
        """Make an empty store. ``model`` (``{"name", "hash"}``) names the model that makes the
        embeddings, so an index built from them can refuse a different model later;
        ``video_root`` is the folder that relative ``video_path`` metadata starts from."""
        path = Path(path)
        if dtype not in DTYPES:
            raise RetrievalError(f"{path}: dtype must be one of {DTYPES}, not {dtype!r}")
        if int(dim) <= 0:
            raise RetrievalError(f"{path}: dimension must be positive, not {dim}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RetrievalError(f"{path}: already exists and is not empty; refusing to overwrite")
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "embeddings").mkdir(parents=True)
        (tmp / "metadata.parquet").mkdir()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dim": int(dim),
            "dtype": dtype,
            "model": model,
            "video_root": video_root,
            "columns": None,
            "shards": [],
        }
        _write_json(tmp / "store.json", manifest)
        if path.exists():
            path.rmdir()  # empty, checked above
        os.replace(tmp, path)
        return cls(path)

    def __len__(self) -> int:
        return sum(s["rows"] for s in self._shards)

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, rows={len(self)}, dim={self.dim}, dtype={self.dtype})"

    def append(self, embeddings: np.ndarray, metadata: pd.DataFrame | None = None) -> None:
        """Add rows at the end, as one new shard. The first append with metadata fixes the
        columns; later appends must bring the same columns (or none, if the first had none)."""
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise RetrievalError(
                f"{self.path}: embeddings of shape {tuple(emb.shape)} do not match the store dimension {self.dim}"
            )
        if len(emb) == 0:
            return
        with np.errstate(over="ignore"):  # overflow to infinity is reported just below
            stored = emb.astype(self.dtype, copy=False)
        bad = ~np.isfinite(stored).all(axis=1)
        if bad.any():
            raise RetrievalError(
                f"{self.path}: {int(bad.sum())} embedding row(s) contain NaN or infinity "
                f"(first at appended row {int(np.argmax(bad))}); nothing was written"
            )
        columns = self._check_metadata(metadata, len(emb))
        self._remove_stray_parts()

        name = f"part-{len(self._shards):06d}"
        emb_file = self.path / "embeddings" / f"{name}.npy"
        _atomic_save_npy(stored, emb_file)
        meta_file = None
        if metadata is not None:
            meta_file = self.path / "metadata.parquet" / f"{name}.parquet"
            tmp = meta_file.with_name(f".{meta_file.name}.tmp")
            metadata.reset_index(drop=True).to_parquet(tmp, index=False)
            os.replace(tmp, meta_file)

        shard = {
            "rows": len(emb),
            "embeddings": f"embeddings/{name}.npy",
            "metadata": f"metadata.parquet/{name}.parquet" if meta_file else None,
        }
        _write_json(self.path / "store.json", self._manifest(shards=[*self._shards, shard], columns=columns))
        self._shards.append(shard)
        self.columns = columns
        self._arrays.append(self._open_shard(shard))

    def shard_arrays(self) -> list[np.ndarray]:
        """The shards as read-only memory-mapped arrays, in row order."""
        return list(self._arrays)

    def iter_batches(self, batch_size: int = 65_536) -> Iterator[np.ndarray]:
        """Yield consecutive float32 batches of at most ``batch_size`` rows, reading from disk
        as it goes (the whole store never needs to fit in memory)."""
        for array in self._arrays:
            for start in range(0, len(array), batch_size):
                yield np.ascontiguousarray(array[start : start + batch_size], dtype=np.float32)

    def embeddings(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Load rows (all when ``rows`` is None) into memory as float32, in the order given."""
        if rows is None:  # filled shard by shard: no second full-size copy at any time
            out = np.empty((len(self), self.dim), np.float32)
            offsets = self._offsets()
            for start, array in zip(offsets[:-1], self._arrays, strict=True):
                out[start : start + len(array)] = array
            return out
        rows = np.asarray(rows, dtype=np.int64)
        n = len(self)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise RetrievalError(f"{self.path}: row index out of range 0..{n - 1}")
        offsets = self._offsets()
        shard_of = np.searchsorted(offsets[1:], rows, side="right")
        out = np.empty((len(rows), self.dim), np.float32)
        for s in np.unique(shard_of):
            pick = shard_of == s
            local = rows[pick] - offsets[s]
            order = np.argsort(local)  # memory-mapped reads go faster in file order
            block = np.empty((len(local), self.dim), np.float32)
            block[order] = self._arrays[s][local[order]]
            out[pick] = block
        return out

    def metadata(self) -> pd.DataFrame | None:
        """All metadata rows in store order, or None for a store appended without metadata."""
        if self.columns is None:
            return None
        parts = [pd.read_parquet(self.path / s["metadata"]) for s in self._shards]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=self.columns)

    def _manifest(self, shards: list[dict[str, Any]], columns: list[str] | None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            "dtype": self.dtype,
            "model": self.model,
            "video_root": self.video_root,
            "columns": columns,
            "shards": shards,
        }

    def _offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([s["rows"] for s in self._shards])]).astype(np.int64)

    def _check_metadata(self, metadata: pd.DataFrame | None, rows: int) -> list[str] | None:
        if metadata is None:
            if self.columns is not None:
                raise RetrievalError(f"{self.path}: this store keeps metadata {self.columns}; append some")
            return None
        if not isinstance(metadata, pd.DataFrame):
            raise RetrievalError(f"{self.path}: metadata must be a pandas DataFrame")
        if len(metadata) != rows:
            raise RetrievalError(
                f"{self.path}: metadata has {len(metadata)} rows but there are {rows} embeddings"
            )
        columns = [str(c) for c in metadata.columns]
        if self._shards and self.columns is None:
            raise RetrievalError(f"{self.path}: this store was written without metadata; append none")
        if self.columns is not None and columns != self.columns:
            raise RetrievalError(
                f"{self.path}: metadata columns {columns} differ from the store's {self.columns}"
            )
        return columns

    def _open_shard(self, shard: dict[str, Any]) -> np.ndarray:
        file = self.path / shard["embeddings"]
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise RetrievalError(f"{file}: cannot be read as a .npy array ({e})") from None
        if array.shape != (shard["rows"], self.dim) or array.dtype != np.dtype(self.dtype):
            raise RetrievalError(
                f"{file}: holds {array.dtype} {tuple(array.shape)}, store.json says "
                f"{self.dtype} ({shard['rows']}, {self.dim})"
            )
        if shard["metadata"] is not None:
            meta = self.path / shard["metadata"]
            try:
                meta_rows = pq.ParquetFile(meta).metadata.num_rows
            except (OSError, ValueError) as e:
                raise RetrievalError(f"{meta}: cannot be read as parquet ({e})") from None
            if meta_rows != shard["rows"]:
                raise RetrievalError(
                    f"{meta}: has {meta_rows} rows but its embedding shard has {shard['rows']}"
                )
        return array

    def _remove_stray_parts(self) -> None:
        """Delete parts left by an append that died before committing store.json."""
        listed = {self.path / s["embeddings"] for s in self._shards}
        listed |= {self.path / s["metadata"] for s in self._shards if s["metadata"]}
        for folder in ("embeddings", "metadata.parquet"):
            for f in (self.path / folder).iterdir():
                if f not in listed:
                    f.unlink()


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / "store.json"
    if not file.is_file():
        raise RetrievalError(f"{path}: not an embedding store (no store.json)")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RetrievalError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RetrievalError(f"{file}: not an echoclip embedding store manifest")
    if manifest.get("dtype") not in DTYPES:
        raise RetrievalError(f"{file}: unknown dtype {manifest.get('dtype')!r}")
    return manifest


def _write_json(file: Path, data: dict[str, Any]) -> None:
    tmp = file.with_name(f".{file.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


def _atomic_save_npy(array: np.ndarray, file: Path) -> None:
    tmp = file.with_name(f".{file.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)
