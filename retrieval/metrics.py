"""Retrieval metrics for paired embeddings and for approximate search.

Cross-modal metrics take a square similarity matrix whose true pair for row ``i`` is
column ``i`` (rows = videos and columns = reports gives video→report; pass ``sim.T``
for report→video), or the 1-based ranks that :func:`ranks_of_true_pairs` returns.
Ties count against the model: a true pair tied with ``t`` others is ranked after them,
so a model that scores everything equally gets the worst rank, not the best.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import RetrievalError

_BLOCK = 2048  # rows per block, so an N x N boolean never has to exist at once


def ranks_of_true_pairs(similarity: np.ndarray) -> np.ndarray:
    """1-based rank of column ``i`` among all columns of row ``i``, for every row."""
    sim = np.asarray(similarity)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] == 0:
        raise RetrievalError(f"similarity must be a non-empty square matrix, not shape {sim.shape}")
    if not np.isfinite(sim).all():
        raise RetrievalError("similarity contains NaN or infinity")
    ranks = np.empty(len(sim), np.int64)
    for start in range(0, len(sim), _BLOCK):
        block = sim[start : start + _BLOCK]
        true = block[np.arange(len(block)), np.arange(start, start + len(block))][:, None]
        # 1 + (strictly better) + (tied, other than the pair itself)
        ranks[start : start + len(block)] = (block >= true).sum(axis=1)
    return ranks


def _ranks(similarity_or_ranks: np.ndarray) -> np.ndarray:
    values = np.asarray(similarity_or_ranks)
    if values.ndim == 1:
        if values.size == 0 or (values < 1).any():
            raise RetrievalError("ranks must be a non-empty vector of 1-based ranks")
        return values
    return ranks_of_true_pairs(values)


def recall_at_k(similarity_or_ranks: np.ndarray, k: int) -> float:
    """Fraction of rows whose true pair is among the top ``k``."""
    if k < 1:
        raise RetrievalError(f"k must be at least 1, not {k}")
    return float(np.mean(_ranks(similarity_or_ranks) <= k))


def mean_rank(similarity_or_ranks: np.ndarray) -> float:
    """Mean 1-based rank of the true pair (1 is perfect, (N+1)/2 is chance)."""
    return float(np.mean(_ranks(similarity_or_ranks)))


def median_rank(similarity_or_ranks: np.ndarray) -> float:
    """Median 1-based rank of the true pair, as reported by most retrieval papers."""
    return float(np.median(_ranks(similarity_or_ranks)))


def mrr(similarity_or_ranks: np.ndarray) -> float:
    """Mean reciprocal rank of the true pair (1 is perfect)."""
    return float(np.mean(1.0 / _ranks(similarity_or_ranks)))


def mcmrr(similarity: np.ndarray) -> float:
    """Mean cross-modal retrieval rank, as EchoCLIP reports it: the rank of the true pair
    among all candidates, averaged over both directions (video→report and report→video)."""
    sim = np.asarray(similarity)
    return float(np.mean(np.concatenate([ranks_of_true_pairs(sim), ranks_of_true_pairs(sim.T)])))


def retrieval_metrics(similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Every cross-modal metric for both directions of a video x report similarity matrix.

    Example::

        sim = video_emb @ report_emb.T            # row i and column i belong to study i
        retrieval_metrics(sim)["video_to_report/recall@5"]
    """
    sim = np.asarray(similarity)
    out: dict[str, float] = {}
    for name, matrix in (("video_to_report", sim), ("report_to_video", sim.T)):
        ranks = ranks_of_true_pairs(matrix)
        for k in ks:
            out[f"{name}/recall@{k}"] = recall_at_k(ranks, k)
        out[f"{name}/mean_rank"] = mean_rank(ranks)
        out[f"{name}/median_rank"] = median_rank(ranks)
        out[f"{name}/mrr"] = mrr(ranks)
    out["mcmrr"] = mcmrr(sim)
    out["candidates"] = float(len(sim))
    return out


def knn_recall(found: np.ndarray, truth: np.ndarray, k: int | None = None) -> float:
    """Recall@k of an approximate search: the share of the true ``k`` nearest neighbours
    (``truth``, row ids per query) that the search returned in its first ``k`` (``found``).
    Ids of -1 (no result) never count."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2 or len(found) != len(truth) or len(found) == 0:
        raise RetrievalError(
            f"found {found.shape} and truth {truth.shape} must be [queries, k] of equal length"
        )
    k = truth.shape[1] if k is None else k
    hits, wanted = 0, 0
    for got, want in zip(found[:, :k], truth[:, :k], strict=True):
        want = set(want[want >= 0].tolist())
        hits += len(want & set(got[got >= 0].tolist()))
        wanted += len(want)
    if wanted == 0:
        raise RetrievalError("truth holds no neighbours")
    return hits / wanted


def same_patient_recall_at_k(
    embeddings: np.ndarray,
    patient_ids: Sequence[str],
    study_ids: Sequence[str],
    k: int = 10,
) -> float:
    """Patient identification: for each video of a patient with another study, rank the
    videos of every other study by similarity and count a hit when one of the top ``k``
    belongs to the same patient. Videos of the query's own study are never candidates.

    Embeddings should be L2-normalised (the score is the inner product).
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    patients, studies = np.asarray(patient_ids), np.asarray(study_ids)
    if emb.ndim != 2 or not (len(emb) == len(patients) == len(studies)):
        raise RetrievalError(
            f"embeddings {emb.shape}, {len(patients)} patient ids and {len(studies)} study ids must match"
        )
    if not np.isfinite(emb).all():
        raise RetrievalError("embeddings contain NaN or infinity")
    if k < 1:
        raise RetrievalError(f"k must be at least 1, not {k}")
    # a query counts only if its patient has a video in some other study
    studies_per_patient: dict[object, set] = {}
    for p, s in zip(patients.tolist(), studies.tolist(), strict=True):
        studies_per_patient.setdefault(p, set()).add(s)
    eligible = np.array([len(studies_per_patient[p]) > 1 for p in patients.tolist()])
    if not eligible.any():
        raise RetrievalError("no patient has videos in two different studies; patient recall is undefined")
    queries = np.flatnonzero(eligible)
    hits = 0
    for start in range(0, len(queries), _BLOCK):
        q = queries[start : start + _BLOCK]
        sim = emb[q] @ emb.T
        sim[studies[q][:, None] == studies[None, :]] = -np.inf
        kk = min(k, len(emb) - 1)
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        valid = np.take_along_axis(sim, top, axis=1) > -np.inf
        same = patients[top] == patients[q][:, None]
        hits += int((same & valid).any(axis=1).sum())
    return hits / len(queries)
