"""Retrieval speed and accuracy: exact search in torch (EchoPrime's method) against FAISS indexes.

N synthetic 512-d unit embeddings (float16 on disk, in an ``EmbeddingStore``) and 1,000
held-out queries from the same distribution. For each method, in its own process:
build seconds, retained memory (anonymous RSS after building minus before), queries/s
(batches of 100 queries) and recall@10 against the exact top 10:

- ``torch_exact``: all embeddings as one float32 tensor, ``q @ E.T`` then ``topk``
  (EchoPrime's method; its answers are the ground truth);
- ``faiss_flat``: ``IndexFlatIP`` (exact);
- ``hnsw32``: ``build_index(factory="HNSW32")`` (efSearch tuned to recall 0.95); its
  build grows as N log N and takes many minutes at 1M on two cores, so by default it is
  built on the first ``--hnsw-n`` vectors (an i.i.d. subset) and the build time is
  extrapolated to N; its queries/s and recall are those of the subset;
- ``ivf_pq``: ``IVF{n},PQ{m}x4fs`` (fast-scan 4-bit PQ, no re-ranking; nprobe tuned;
  8-bit ``PQ64`` is left out: its training takes minutes per 10k vectors on two cores);
- ``auto``: ``build_index(factory="auto")`` (at 1M: fast-scan IVF-PQ + exact re-ranking).

The target: ``auto`` answers at least 20x the queries/s of ``torch_exact`` at recall@10
>= 0.95. Then, if memory and disk allow, N = 10M with ``auto`` (IVF-PQ with an 8-bit
re-ranking copy) against exact search streamed from disk.

Data: 64 families of 16 clusters; the cluster centres of a family lie close together
on the sphere and the family shares a random 32-d subspace, so clusters overlap and
near neighbours cross cluster borders (an index must probe several lists). A vector is
``0.7 * centre + subspace part (norm ~1) + isotropic noise (norm ~0.3)``, normalised.
The JSON reports the mean similarity of a query to its 1st and 10th neighbour and to a
random vector, so the difficulty can be judged.

Each method runs in a fresh process with ``OMP_WAIT_POLICY=PASSIVE`` (on a machine shared
with other jobs, OpenMP threads that spin while waiting made faiss's PQ training 5x slower)
and glibc's default malloc settings, so memory freed while building is returned and the
RSS figure is what the method keeps.

    python benchmarks/bench_retrieval.py [--small] [--save benchmarks/results/retrieval.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from machine import emit

QUERY_BATCH = 100
CHUNK = 100_000
CLUSTERS, LATENT = 1024, 32
FAMILY, FAMILY_SPREAD = 16, 0.6  # clusters come in families of 16 whose centres are close
CENTRE_WEIGHT, LATENT_NORM, NOISE_NORM = 0.7, 1.0, 0.3


# ------------------------------------------------------------------ data


def clustered_unit_vectors(n: int, dim: int, seed: int) -> Any:
    """Yield float32 chunks of the synthetic distribution described above (fixed centres
    and subspaces; ``seed`` picks the samples)."""
    shape_rng = np.random.default_rng(12345)
    families = _unit_rows(shape_rng.standard_normal((CLUSTERS // FAMILY, dim), dtype=np.float32))
    spread = _unit_rows(shape_rng.standard_normal((CLUSTERS, dim), dtype=np.float32))
    centres = _unit_rows(np.repeat(families, FAMILY, axis=0) + FAMILY_SPREAD * spread)
    # a family shares one subspace, so its clusters overlap and neighbours cross cluster borders
    bases = np.repeat(
        shape_rng.standard_normal((CLUSTERS // FAMILY, LATENT, dim), dtype=np.float32), FAMILY, axis=0
    )
    bases /= np.sqrt(dim)
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        cluster = np.sort(rng.integers(0, CLUSTERS, m))
        z = rng.standard_normal((m, LATENT), dtype=np.float32) * (LATENT_NORM / np.sqrt(LATENT))
        x = CENTRE_WEIGHT * centres[cluster]
        x += rng.standard_normal((m, dim), dtype=np.float32) * (NOISE_NORM / np.sqrt(dim))
        bounds = np.searchsorted(cluster, np.arange(CLUSTERS + 1))
        for c in range(CLUSTERS):
            a, b = bounds[c], bounds[c + 1]
            if b > a:
                x[a:b] += z[a:b] @ bases[c]
        yield _unit_rows(x)[rng.permutation(m)]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_store(path: Path, n: int, dim: int, seed: int) -> float:
    from echoclip.retrieval import EmbeddingStore

    start = time.perf_counter()
    store = EmbeddingStore.create(path, dim=dim, dtype="float16")
    for chunk in clustered_unit_vectors(n, dim, seed):
        store.append(chunk)
    return time.perf_counter() - start


# ------------------------------------------------------------------ measuring


def rss_anon_gib() -> float:
    """Anonymous resident memory (heap, tensors, indexes; not memory-mapped file pages)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def timed_search(search: Any, queries: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    """Queries/s over all queries in batches, after one untimed warm-up batch."""
    search(queries[:QUERY_BATCH], k)
    found = []
    start = time.perf_counter()
    for i in range(0, len(queries), QUERY_BATCH):
        found.append(search(queries[i : i + QUERY_BATCH], k))
    seconds = time.perf_counter() - start
    return len(queries) / seconds, np.concatenate(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    from echoclip.retrieval.metrics import knn_recall

    return round(knn_recall(found, truth, 10), 4)


# ------------------------------------------------------------------ methods (each in its own process)


def method_torch_exact(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from echoclip.retrieval import EmbeddingStore

    torch.set_num_threads(os.cpu_count() or 1)
    queries = np.load(work / "queries.npy")
    before = rss_anon_gib()
    start = time.perf_counter()
    emb = torch.from_numpy(EmbeddingStore(work / "store").embeddings())
    build = time.perf_counter() - start
    memory = rss_anon_gib() - before

    def search(q: np.ndarray, k: int) -> np.ndarray:
        with torch.inference_mode():
            return (torch.from_numpy(q) @ emb.T).topk(k, dim=1).indices.numpy()

    qps, truth = timed_search(search, queries)
    np.save(work / "truth.npy", truth)
    with torch.inference_mode():
        top = (torch.from_numpy(queries[:200]) @ emb.T).topk(10, dim=1).values.numpy()
        random_pairs = (torch.from_numpy(queries[:200]) @ emb[:200].T).mean().item()
    return {
        "build_s": round(build, 2),
        "build_what": "load float16 store into one float32 tensor",
        "memory_gib": round(memory, 3),
        "qps": round(qps, 1),
        "recall@10": 1.0,
        "data_stats": {
            "sim_1st_neighbour": round(float(top[:, 0].mean()), 4),
            "sim_10th_neighbour": round(float(top[:, 9].mean()), 4),
            "sim_random_pair": round(random_pairs, 4),
        },
    }


def method_faiss_flat(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from echoclip.retrieval import EmbeddingStore

    store = EmbeddingStore(work / "store")
    queries, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    before = rss_anon_gib()
    start = time.perf_counter()
    index = faiss.IndexFlatIP(store.dim)
    for batch in store.iter_batches():
        index.add(batch)
    build = time.perf_counter() - start
    memory = rss_anon_gib() - before
    qps, found = timed_search(lambda q, k: index.search(q, k)[1], queries)
    return {
        "build_s": round(build, 2),
        "memory_gib": round(memory, 3),
        "qps": round(qps, 1),
        "recall@10": recall(found, truth),
    }


def _library_method(work: Path, factory: str, n_sub: int | None, sample_queries: int) -> dict[str, Any]:
    import faiss

    from echoclip.retrieval import EmbeddingStore, build_index

    store = EmbeddingStore(work / "store")
    queries = np.load(work / "queries.npy")
    before = rss_anon_gib()
    if n_sub is not None and n_sub < len(store):
        data = store.embeddings(np.arange(n_sub))
        truth = faiss.knn(queries, data, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
        before = rss_anon_gib()
        index = build_index(data, factory=factory, sample_queries=sample_queries)
    else:
        truth = np.load(work / "truth.npy")
        index = build_index(store, factory=factory, sample_queries=sample_queries)
    memory = rss_anon_gib() - before
    qps, found = timed_search(lambda q, k: index.search_arrays(q, k)[1], queries)
    info = index.info
    return {
        "factory": info["factory"],
        "n": len(index),
        "build_s": info["build_seconds"],
        "tuning_s": info.get("tuning_seconds", 0.0),
        "search_params": info["search_params"],
        "build_time_recall@10": info["recall_at_10"],
        "memory_gib": round(memory, 3),
        "qps": round(qps, 1),
        "recall@10": recall(found, truth),
    }


def method_hnsw32(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    result = _library_method(work, "HNSW32", args.hnsw_n, sample_queries=500)
    n_sub, n = result["n"], args.n
    if n_sub < n:
        result["build_s_extrapolated_to_n"] = round(
            result["build_s"] * (n / n_sub) * math.log(n) / math.log(n_sub), 1
        )
        result["note"] = (
            f"built on the first {n_sub:,} of {n:,} vectors; build time extrapolated as N log N; "
            "qps and recall measured on the subset"
        )
    return result


def method_ivf_pq(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from echoclip.retrieval.index import _ivf_lists, _pq_subquantizers

    factory = f"IVF{_ivf_lists(args.n)},PQ{_pq_subquantizers(args.dim)}x4fs"
    return _library_method(work, factory, None, sample_queries=500)


def method_auto(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    return _library_method(work, "auto", None, sample_queries=500)


def method_large_auto(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """10M: exact search streamed from disk (faiss, batch by batch) gives the truth and the
    baseline speed; then ``auto``."""
    import faiss

    from echoclip.retrieval import EmbeddingStore, build_index

    store = EmbeddingStore(work / "large")
    queries = np.load(work / "queries.npy")
    start = time.perf_counter()
    heap = faiss.ResultHeap(len(queries), 10, keep_max=True)
    first = 0
    for batch in store.iter_batches():
        scores, rows = faiss.knn(queries, batch, 10, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, rows + first)
        first += len(batch)
    heap.finalize()
    exact_s = time.perf_counter() - start
    before = rss_anon_gib()
    index = build_index(store, factory="auto", sample_queries=200)
    memory = rss_anon_gib() - before
    qps, found = timed_search(lambda q, k: index.search_arrays(q, k)[1], queries)
    info = index.info
    return {
        "n": len(index),
        "factory": info["factory"],
        "build_s": info["build_seconds"],
        "tuning_s": info.get("tuning_seconds"),
        "search_params": info["search_params"],
        "build_time_recall@10": info["recall_at_10"],
        "memory_gib": round(memory, 3),
        "qps": round(qps, 1),
        "recall@10": recall(found, heap.I),
        "exact_streamed_qps": round(len(queries) / exact_s, 2),
        "speedup_vs_exact_streamed": round(qps * exact_s / len(queries), 1),
    }


METHODS = {
    "torch_exact": method_torch_exact,
    "faiss_flat": method_faiss_flat,
    "hnsw32": method_hnsw32,
    "ivf_pq": method_ivf_pq,
    "auto": method_auto,
    "large_auto": method_large_auto,
}


def run_child(method: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--method",
        method,
        "--workdir",
        str(work),
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
        "--hnsw-n",
        str(args.hnsw_n),
    ]
    log(f"{method} ...")
    start = time.perf_counter()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"):  # keep freed memory out of the RSS figure
        env.pop(name, None)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    log(f"{method}: {result} ({time.perf_counter() - start:.0f} s)")
    return result


# ------------------------------------------------------------------ driver


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import faiss

    gpus = faiss.get_num_gpus()
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_available_gib():.0f} GiB available, "
        f"{f'{gpus} GPU' if gpus else 'no GPU'}, faiss {faiss.__version__}"
    )


def large_run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    need_mem = args.large_n * (args.dim // 16 + args.dim + 8) / 2**30 + 3  # 4-bit PQ + SQ8 + ids, + margin
    need_disk = args.large_n * args.dim * 2 / 2**30 + 1
    free_disk = shutil.disk_usage(work).free / 2**30
    if mem_available_gib() < need_mem or free_disk < need_disk:
        return {
            "n": args.large_n,
            "skipped": (
                f"needs ~{need_mem:.0f} GiB memory and {need_disk:.0f} GiB disk; "
                f"{mem_available_gib():.0f} GiB and {free_disk:.0f} GiB available"
            ),
        }
    log(f"writing {args.large_n:,} x {args.dim} float16 vectors")
    gen_s = write_store(work / "large", args.large_n, args.dim, seed=2)
    try:
        result = run_child("large_auto", work, args)
    finally:
        shutil.rmtree(work / "large", ignore_errors=True)
    result["generate_s"] = round(gen_s, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="60k vectors, no 10M run: a quick check")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--hnsw-n", type=int, default=250_000, help="vectors HNSW32 is built on (subset of N)")
    p.add_argument("--large-n", type=int, default=10_000_000, help="second, IVF-PQ-only run; 0 to skip")
    p.add_argument("--workdir", help="folder for the data (default: a new temporary folder)")
    p.add_argument("--save", help="also append the JSON line to this file")
    p.add_argument("--method", choices=sorted(METHODS), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.method:  # a child process: one method, one JSON line
        print(json.dumps(METHODS[args.method](Path(args.workdir), args)))
        return
    if args.small:
        args.n, args.hnsw_n, args.large_n, args.queries = 60_000, 20_000, 0, 500

    load_start = round(os.getloadavg()[0], 2)
    own_workdir = args.workdir is None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-retrieval-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        log(f"writing {args.n:,} x {args.dim} float16 vectors to {work}")
        gen_s = write_store(work / "store", args.n, args.dim, seed=0)
        np.save(
            work / "queries.npy", np.concatenate(list(clustered_unit_vectors(args.queries, args.dim, seed=1)))
        )
        methods = {
            m: run_child(m, work, args) for m in ("torch_exact", "faiss_flat", "hnsw32", "ivf_pq", "auto")
        }
        large = large_run(work, args) if args.large_n else {"skipped": "--large-n 0"}
    finally:
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)

    exact, auto = methods["torch_exact"], methods["auto"]
    speedup = auto["qps"] / exact["qps"]
    result = {
        "benchmark": "retrieval",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "query_batch": QUERY_BATCH,
        "data": {
            "on_disk": "float16 EmbeddingStore",
            "generate_s": round(gen_s, 1),
            **exact.pop("data_stats"),
        },
        "methods": methods,
        "auto_speedup_vs_torch_exact": round(speedup, 1),
        "target": "auto >= 20x torch_exact qps at recall@10 >= 0.95",
        "target_met": bool(speedup >= 20 and auto["recall@10"] >= 0.95),
        "large": large,
    }
    emit(result, args.save)


if __name__ == "__main__":
    main()
