"""FAISS indexes over embeddings, with their metadata rows, measured recall and safe save/load.

``build_index`` picks an index by size when ``factory="auto"``:

==========  =================================  ===========================================
vectors     index                              why
==========  =================================  ===========================================
< 100k      ``Flat``                           exact, and fast enough
>= 100k     ``IVF{n},PQ{m}x4fs,<refine>``      fast-scan PQ finds candidates, a re-rank on
                                               stored vectors (float32, float16 or 8-bit by
                                               size) restores the exact order
==========  =================================  ===========================================

``HNSW32`` is available by name but not chosen: in ``benchmarks/bench_retrieval.py`` it
built far more slowly and answered fewer queries per second than fast-scan IVF-PQ with
re-ranking at a like recall (the figures are in docs/experiments.md).

After building, it measures recall@10 against exact search on a sample of the indexed
vectors used as queries (their own row left out of both answers), tunes the search
depth (``nprobe``, ``k_factor``, ``efSearch``) on one half of that sample until it
reaches ``target_recall``, and reports the recall on the other, held-out half. The
figures go into ``info.json`` next to the index.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .errors import RetrievalError
from .metrics import knn_recall
from .store import EmbeddingStore

if TYPE_CHECKING:  # pragma: no cover
    import faiss

log = logging.getLogger(__name__)

FORMAT = "echoclip-index"
VERSION = 1
RESULT_COLUMNS = ("query", "rank", "score", "row")
METRICS = ("ip", "l2")
FLAT_MAX = 100_000
REFINE_FLAT_MAX_BYTES = 4 << 30  # float32 copy for re-ranking; above this, a float16 copy,
REFINE_FP16_MAX_BYTES = 8 << 30  # and above that, 8-bit codes
ADD_BATCH = 65_536
RECALL_K = 10


def choose_factory(n: int, dim: int, *, gpu: bool = False) -> str:
    """The faiss factory string ``build_index(factory="auto")`` uses for ``n`` vectors.

    On a GPU, exact search stays fast for longer and fast-scan/HNSW/refine indexes do not
    run there, so GPUs get ``Flat`` or a plain ``IVF,PQ``.
    """
    m = _pq_subquantizers(dim)
    nlist = _ivf_lists(n)
    if gpu:
        return "Flat" if n < 5_000_000 else f"IVF{nlist},PQ{m}"
    if n < FLAT_MAX:
        return "Flat"
    coarse = f"IVF{nlist}_HNSW32" if nlist >= 4096 else f"IVF{nlist}"  # graph assignment at scale
    if n * dim * 4 <= REFINE_FLAT_MAX_BYTES:
        refine = "RFlat"
    elif n * dim * 2 <= REFINE_FP16_MAX_BYTES:
        refine = "Refine(SQfp16)"
    else:
        refine = "Refine(SQ8)"
    return f"{coarse},PQ{m}x4fs,{refine}"


def _ivf_lists(n: int) -> int:
    """About sqrt(n) lists, a power of two: few enough that k-means training stays quick on
    a small CPU, many enough that a query scans a small share of the data."""
    return int(min(65_536, max(64, 2 ** round(math.log2(math.sqrt(max(n, 1)))))))


def _pq_subquantizers(dim: int) -> int:
    """About 8 dimensions per sub-quantizer (64 for 512-d), a divisor of ``dim``."""
    target = max(1, dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


class Index:
    """A faiss index whose vector ``i`` is metadata row ``i`` (and row ``i`` of the store it
    was built from). Build one with :func:`build_index`, or :meth:`load` a saved one."""

    def __init__(
        self,
        index: faiss.Index,
        metadata: pd.DataFrame | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if metadata is not None:
            metadata = metadata.reset_index(drop=True)
            _check_metadata_columns(metadata)
            if len(metadata) != index.ntotal:
                raise RetrievalError(
                    f"metadata has {len(metadata)} rows but the index has {index.ntotal} vectors"
                )
        self.index = index
        self.metadata = metadata
        self.info: dict[str, Any] = dict(info or {})
        self.info.setdefault("metric", "ip" if index.metric_type == _faiss().METRIC_INNER_PRODUCT else "l2")
        self.info.update(size=int(index.ntotal), dim=int(index.d))
        _apply_search_params(index, self.info.get("search_params") or {})
        self._gpu_index: Any = None

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def metric(self) -> str:
        return str(self.info["metric"])

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Index(factory={self.info.get('factory')!r}, size={self.size}, dim={self.dim}, metric={self.metric!r})"

    def search_arrays(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row ids, each [queries, k]; a row id of -1 means fewer than k were found.
        Scores are inner products for ``ip`` (higher is closer) and squared distances for
        ``l2`` (lower is closer)."""
        q = self._check_queries(queries, k)
        scores, rows = self._searcher().search(q, k)
        return scores, rows

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of ``rows`` ``[len(rows), dim]``: exact for a flat index, the
        decoded approximation for a compressed one (an index that cannot reconstruct raises)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.size):
            raise RetrievalError(f"rows must be in [0, {self.size}), got {rows.min()}..{rows.max()}")
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.index.reconstruct_batch(rows), dtype=np.float32)

    def search(self, queries: np.ndarray, k: int = 10) -> pd.DataFrame:
        """One row per query and hit: ``query`` (position of the query), ``rank`` (from 1),
        ``score``, ``row`` (position in the index and its store), then every metadata column."""
        scores, rows = self.search_arrays(queries, k)
        found = rows.ravel() >= 0
        nq = len(rows)
        table = pd.DataFrame(
            {
                "query": np.repeat(np.arange(nq), k)[found],
                "rank": np.tile(np.arange(1, k + 1), nq)[found],
                "score": scores.ravel()[found],
                "row": rows.ravel()[found],
            }
        )
        if self.metadata is not None:
            meta = self.metadata.iloc[table["row"].to_numpy()].reset_index(drop=True)
            table = pd.concat([table, meta], axis=1)
        return table

    def add(self, embeddings: np.ndarray, metadata: pd.DataFrame | None = None) -> None:
        """Append vectors (and their metadata rows, required when the index keeps metadata).
        The recall in ``info`` stays the one measured at build time."""
        emb = _as_float32_rows(embeddings, self.dim, "embeddings")
        if (metadata is None) != (self.metadata is None):
            need = "needs metadata rows" if self.metadata is not None else "keeps no metadata"
            raise RetrievalError(f"this index {need}")
        if metadata is not None:
            metadata = metadata.reset_index(drop=True)
            if len(metadata) != len(emb):
                raise RetrievalError(f"metadata has {len(metadata)} rows but there are {len(emb)} embeddings")
            if list(metadata.columns) != list(self.metadata.columns):
                raise RetrievalError(
                    f"metadata columns {list(metadata.columns)} differ from the index's {list(self.metadata.columns)}"
                )
        self.index.add(emb)
        if metadata is not None:
            self.metadata = pd.concat([self.metadata, metadata], ignore_index=True)
        self.info["size"] = self.size
        self._gpu_index = None

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``index.faiss``, ``metadata.parquet`` and ``info.json`` into a temporary folder
        and rename it into place: ``path`` holds the old index or the new one, never half of one."""
        faiss = _faiss()
        path = Path(path)
        if (
            path.exists()
            and not (path / "info.json").is_file()
            and (not path.is_dir() or any(path.iterdir()))
        ):
            raise RetrievalError(f"{path}: exists and is not an index directory; refusing to overwrite")
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            files = {"index.faiss": {"bytes": (tmp / "index.faiss").stat().st_size}}
            if self.metadata is not None:
                self.metadata.to_parquet(tmp / "metadata.parquet", index=False)
                files["metadata.parquet"] = {"rows": len(self.metadata)}
            info = dict(
                self.info,
                size=self.size,
                dim=self.dim,
                files=files,
                metadata_columns=None if self.metadata is None else [str(c) for c in self.metadata.columns],
            )
            with open(tmp / "info.json", "w") as f:
                json.dump(info, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if path.exists():
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        self.info = info
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expected_model_hash: str | None = None) -> Index:
        """Read an index saved by :meth:`save`. With ``expected_model_hash``, refuse an index
        whose embeddings were made by another model (their scores would be meaningless)."""
        faiss = _faiss()
        path = Path(path)
        info_file = path / "info.json"
        if not info_file.is_file():
            raise RetrievalError(f"{path}: not an index directory (no info.json)")
        try:
            info = json.loads(info_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RetrievalError(f"{info_file}: not valid JSON ({e})") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise RetrievalError(f"{info_file}: not an echoclip index description")
        _check_model(path, info, expected_model_hash)

        index_file = path / "index.faiss"
        if not index_file.is_file():
            raise RetrievalError(f"{index_file}: missing")
        expected_bytes = info.get("files", {}).get("index.faiss", {}).get("bytes")
        actual_bytes = index_file.stat().st_size
        if expected_bytes is not None and actual_bytes != expected_bytes:
            raise RetrievalError(
                f"{index_file}: {actual_bytes} bytes, but {expected_bytes} were written (truncated or altered)"
            )
        try:
            index = faiss.read_index(str(index_file))
        except RuntimeError as e:
            raise RetrievalError(f"{index_file}: faiss cannot read it ({_last_line(e)})") from None
        if index.ntotal != info.get("size") or index.d != info.get("dim"):
            raise RetrievalError(
                f"{index_file}: holds {index.ntotal} vectors of dimension {index.d}, info.json says "
                f"{info.get('size')} of dimension {info.get('dim')}"
            )

        metadata = None
        if info.get("metadata_columns") is not None:
            meta_file = path / "metadata.parquet"
            try:
                rows = pq.ParquetFile(meta_file).metadata.num_rows
            except (OSError, ValueError) as e:
                raise RetrievalError(f"{meta_file}: cannot be read as parquet ({e})") from None
            if rows != index.ntotal:
                raise RetrievalError(f"{meta_file}: has {rows} rows but the index has {index.ntotal} vectors")
            metadata = pd.read_parquet(meta_file)
        return cls(index, metadata, info)

    def _check_queries(self, queries: np.ndarray, k: int) -> np.ndarray:
        if self.size == 0:
            raise RetrievalError("the index is empty (0 vectors); add embeddings before searching")
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None]
        q = _as_float32_rows(q, self.dim, "queries")
        if len(q) == 0:
            raise RetrievalError("no queries given")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise RetrievalError(f"k must be a positive integer, not {k!r}")
        if k > self.size:
            raise RetrievalError(f"k={k} is larger than the index ({self.size} vectors)")
        return q

    def _searcher(self) -> faiss.Index:
        """A GPU copy of the index when a GPU is present and faiss supports the index type there;
        otherwise the index itself."""
        faiss = _faiss()
        if self._gpu_index is None:
            self._gpu_index = self.index
            if faiss.get_num_gpus() > 0:
                try:
                    gpu = faiss.index_cpu_to_all_gpus(self.index)
                except RuntimeError as e:  # fast-scan, HNSW and refine indexes stay on the CPU
                    log.info("searching on the CPU: %s", _last_line(e))
                else:
                    if gpu.ntotal == self.index.ntotal:
                        self._gpu_index = gpu
        return self._gpu_index


def build_index(
    embeddings: np.ndarray | EmbeddingStore,
    factory: str = "auto",
    metric: str = "ip",
    metadata: pd.DataFrame | None = None,
    *,
    model: dict[str, Any] | None = None,
    video_root: str | None = None,
    target_recall: float = 0.95,
    sample_queries: int = 1_000,
    seed: int = 0,
    progress: bool | None = None,
) -> Index:
    """Build an index over an array [N, D] or an :class:`EmbeddingStore` (read in batches;
    its metadata, model and video root come along unless given).

    Args:
        factory: ``"auto"`` (see :func:`choose_factory`) or any faiss factory string.
        metric: ``"ip"`` (inner product: cosine for L2-normalised embeddings) or ``"l2"``.
        metadata: one row per embedding, returned with each hit.
        model: ``{"name", "hash"}`` of the model that made the embeddings, kept in ``info``
            so that :meth:`Index.load` can refuse another model.
        video_root: the folder that relative ``video_path`` metadata starts from, kept in
            ``info`` so that a reader of the index finds the videos.
        target_recall: recall@10 the search depth is tuned to reach (approximate indexes).
        sample_queries: indexed vectors used as queries to tune and measure recall.
        progress: show a progress bar while adding (default: for 200k vectors or more).

    Example::

        index = build_index(EmbeddingStore("emb/reports"))
        index.search(video_embedding, k=5)[["rank", "score", "report"]]
    """
    faiss = _faiss()
    if metric not in METRICS:
        raise RetrievalError(f"metric must be one of {METRICS}, not {metric!r}")
    source = _Source(embeddings)
    if isinstance(embeddings, EmbeddingStore):
        metadata = embeddings.metadata() if metadata is None else metadata
        model = embeddings.model if model is None else model
        video_root = embeddings.video_root if video_root is None else video_root
    n, dim = source.n, source.dim
    if n == 0:
        raise RetrievalError("no embeddings to index (0 vectors)")
    if metadata is not None and len(metadata) != n:
        raise RetrievalError(f"metadata has {len(metadata)} rows but there are {n} embeddings")
    if metadata is not None:
        _check_metadata_columns(metadata)
    gpu = faiss.get_num_gpus() > 0
    chosen = choose_factory(n, dim, gpu=gpu) if factory == "auto" else factory
    metric_type = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    try:
        index = faiss.index_factory(dim, chosen, metric_type)
    except RuntimeError as e:
        raise RetrievalError(f"faiss cannot build {chosen!r} for dimension {dim}: {_last_line(e)}") from None
    show = n >= 200_000 if progress is None else progress
    rng = np.random.default_rng(seed)

    start = time.perf_counter()
    if not index.is_trained:
        rows = np.sort(rng.choice(n, size=min(n, _train_size(index)), replace=False))
        sample = source.rows(rows)
        _check_finite(sample, "embeddings")
        log.info("training %s on %d vectors", chosen, len(sample))
        try:
            index.train(sample)
        except RuntimeError as e:
            raise RetrievalError(
                f"training {chosen!r} on {len(sample)} vectors failed: {_last_line(e)}"
            ) from None
        del sample
    for first, batch in _progress(source.batches(), n, show, desc=f"index {chosen}"):
        _check_finite(batch, "embeddings", first)
        index.add(batch)
    build_seconds = time.perf_counter() - start

    info: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "factory": chosen,
        "requested_factory": factory,
        "metric": metric,
        "build_seconds": round(build_seconds, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "faiss_version": faiss.__version__,
        "model": model,
        "video_root": video_root,
    }
    info.update(_measure_and_tune(index, source, metric_type, target_recall, sample_queries, rng))
    return Index(index, metadata, info)


class _Source:
    """An array or a store, seen as rows that can be read in batches or picked by id."""

    def __init__(self, embeddings: np.ndarray | EmbeddingStore) -> None:
        if isinstance(embeddings, EmbeddingStore):
            self.store: EmbeddingStore | None = embeddings
            self.array = None
            self.n, self.dim = len(embeddings), embeddings.dim
        else:
            array = np.asarray(embeddings)
            if array.ndim != 2:
                raise RetrievalError(f"embeddings must be a 2-D array [N, D], not shape {array.shape}")
            self.store, self.array = None, array
            self.n, self.dim = array.shape

    def batches(self, size: int = ADD_BATCH) -> Iterator[tuple[int, np.ndarray]]:
        if self.store is not None:
            first = 0
            for batch in self.store.iter_batches(size):
                yield first, batch
                first += len(batch)
        else:
            for first in range(0, self.n, size):
                yield first, np.ascontiguousarray(self.array[first : first + size], dtype=np.float32)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        if self.store is not None:
            return self.store.embeddings(rows)
        return np.ascontiguousarray(self.array[rows], dtype=np.float32)


def _measure_and_tune(
    index: faiss.Index,
    source: _Source,
    metric_type: int,
    target: float,
    sample_queries: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Search depth that reaches ``target`` recall on half the sample, and the recall it
    gives on the other half."""
    faiss = _faiss()
    n = source.n
    k = min(RECALL_K, n - 1)
    if isinstance(faiss.downcast_index(index), faiss.IndexFlat):
        return {
            "exact": True,
            "recall_at_10": 1.0,
            "recall_k": RECALL_K,
            "recall_queries": 0,
            "search_params": {},
        }
    if k < 1 or sample_queries < 2:
        return {"exact": False, "recall_at_10": None, "recall_k": k, "recall_queries": 0, "search_params": {}}
    start = time.perf_counter()
    q_rows = np.sort(rng.choice(n, size=min(sample_queries, n), replace=False))
    queries = source.rows(q_rows)
    truth = _without_self(_exact_neighbors(source, queries, k + 1, metric_type), q_rows, k)
    tune, held = np.arange(0, len(q_rows), 2), np.arange(1, len(q_rows), 2)

    def recall(params: dict[str, Any], part: np.ndarray) -> float:
        _apply_search_params(index, params)
        _, found = index.search(queries[part], k + 1)
        return knn_recall(_without_self(found, q_rows[part], k), truth[part], k)

    tuning_recall, params = _tune(index, lambda p: recall(p, tune), target, k)
    if tuning_recall < target:
        log.warning("recall@%d %.3f on the tuning queries is below the target %.3f", k, tuning_recall, target)
    held_recall = recall(params, held)
    return {
        "exact": False,
        "recall_at_10": round(held_recall, 4),
        "recall_k": k,
        "recall_queries": int(len(held)),
        "tuning_recall": round(tuning_recall, 4),
        "target_recall": target,
        "search_params": params,
        "tuning_seconds": round(time.perf_counter() - start, 3),
    }


def _tune(index: faiss.Index, recall: Any, target: float, k: int) -> tuple[float, dict[str, Any]]:
    """The cheapest search depth whose recall reaches ``target`` (else the best one found),
    and its recall. ``recall(params)`` measures one setting."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    refine = _find(index, faiss.IndexRefine)
    hnsw = _find(index, faiss.IndexHNSW)
    if ivf is not None:
        nprobes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p < ivf.nlist] + [ivf.nlist]
        factors = (1, 2, 4, 8, 16, 32, 64) if refine is not None else (None,)
        settings = [[_ivf_params(p, f) for f in factors] for p in nprobes]
    elif hnsw is not None:
        settings = [[{"efSearch": ef}] for ef in (16, 32, 64, 128, 256, 512, 1024) if ef >= k]
    elif refine is not None:
        settings = [[{"k_factor": f}] for f in (1, 2, 4, 8, 16, 32, 64)]
    else:
        return recall({}), {}
    # Outer steps (nprobe, efSearch) are tried at their deepest re-rank; once one reaches the
    # target, the shallowest re-rank that still does is kept.
    best: tuple[float, dict[str, Any]] = (-1.0, {})
    for step in settings:
        deepest = recall(step[-1])
        if deepest > best[0]:
            best = (deepest, step[-1])
        if deepest >= target:
            for params in step[:-1]:
                r = recall(params)
                if r >= target:
                    return r, params
            return deepest, step[-1]
    return best


def _ivf_params(nprobe: int, k_factor: int | None) -> dict[str, Any]:
    return {"nprobe": nprobe} if k_factor is None else {"nprobe": nprobe, "k_factor": k_factor}


def _apply_search_params(index: faiss.Index, params: dict[str, Any]) -> None:
    faiss = _faiss()
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    if "k_factor" in params:
        _find(index, faiss.IndexRefine).k_factor = float(params["k_factor"])
    if "efSearch" in params:
        _find(index, faiss.IndexHNSW).hnsw.efSearch = int(params["efSearch"])


def _find(index: faiss.Index, cls: type) -> Any:
    """The first index of type ``cls`` in a chain of refine/pre-transform wrappers."""
    faiss = _faiss()
    current = faiss.downcast_index(index)
    while current is not None:
        if isinstance(current, cls):
            return current
        inner = getattr(current, "base_index", None) or getattr(current, "index", None)
        current = faiss.downcast_index(inner) if inner is not None else None
    return None


def _exact_neighbors(source: _Source, queries: np.ndarray, k: int, metric_type: int) -> np.ndarray:
    """Row ids of the exact ``k`` nearest rows, streaming over the source in batches."""
    faiss = _faiss()
    heap = faiss.ResultHeap(len(queries), k, keep_max=metric_type == faiss.METRIC_INNER_PRODUCT)
    for first, batch in source.batches():
        scores, rows = faiss.knn(queries, batch, min(k, len(batch)), metric=metric_type)
        heap.add_result(scores, rows + first)
    heap.finalize()
    return heap.I


def _without_self(rows: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """Drop each query's own row (and empty results), keep the first ``k``."""
    out = np.full((len(rows), k), -1, np.int64)
    for i, (found, own) in enumerate(zip(rows, query_rows, strict=True)):
        kept = found[(found != own) & (found >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


def _train_size(index: faiss.Index) -> int:
    """Enough vectors for k-means to place every IVF list (faiss asks for 39 per list)."""
    ivf = _faiss().try_extract_index_ivf(index)
    return max(50_000, 40 * ivf.nlist) if ivf is not None else 50_000


def _progress(
    batches: Iterator[tuple[int, np.ndarray]], total: int, show: bool, desc: str
) -> Iterator[tuple[int, np.ndarray]]:
    if not show:
        yield from batches
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional for this library
        yield from batches
        return
    with tqdm(total=total, unit="vec", unit_scale=True, desc=desc) as bar:
        for first, batch in batches:
            yield first, batch
            bar.update(len(batch))


def _as_float32_rows(values: np.ndarray, dim: int, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise RetrievalError(f"{what} must be a 2-D array [N, D], not shape {array.shape}")
    if array.shape[1] != dim:
        raise RetrievalError(f"{what} have dimension {array.shape[1]} but the index has dimension {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    _check_finite(array, what)
    return array


def _check_finite(array: np.ndarray, what: str, first_row: int = 0) -> None:
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise RetrievalError(
            f"{what} contain NaN or infinity in {int(bad.sum())} row(s), first at row {first_row + int(np.argmax(bad))}"
        )


def _check_metadata_columns(metadata: pd.DataFrame) -> None:
    clash = [c for c in metadata.columns if c in RESULT_COLUMNS]
    if clash:
        raise RetrievalError(
            f"metadata columns {clash} clash with the search result columns {list(RESULT_COLUMNS)}"
        )


def _check_model(path: Path, info: dict[str, Any], expected_hash: str | None) -> None:
    if expected_hash is None:
        return
    model = info.get("model") or {}
    recorded = model.get("hash")
    if recorded is None:
        raise RetrievalError(f"{path}: the index does not record which model made its embeddings; rebuild it")
    if recorded != expected_hash:
        raise RetrievalError(
            f"{path}: built from embeddings of model {model.get('name')!r} ({recorded[:12]}), not the "
            f"model given ({expected_hash[:12]}); embed and index again with this model"
        )


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def _faiss() -> Any:
    """faiss, imported on first use (the GPU build loads large CUDA libraries)."""
    import faiss

    return faiss


def find_index_folder(path: str | os.PathLike[str], target: str) -> Path:
    """``path`` itself when it is an index, else its ``target`` sub-folder (``videos`` or
    ``reports``, as ``echoclip index`` writes them)."""
    path = Path(path)
    if (path / "info.json").is_file():
        return path
    if (path / target / "info.json").is_file():
        return path / target
    raise RetrievalError(f"{path}: no index here or in {path / target} (build one with `echoclip index`)")
