"""Retrieval metrics against hand-computed values and brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from echoclip.retrieval import RetrievalError
from echoclip.retrieval.metrics import (
    knn_recall,
    mcmrr,
    mean_rank,
    median_rank,
    mrr,
    ranks_of_true_pairs,
    recall_at_k,
    retrieval_metrics,
    same_patient_recall_at_k,
)

# row i's true pair is column i: ranks 1, 3, 2
SIM = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.8, 0.3, 0.5],
        [0.1, 0.7, 0.4],
    ]
)


def test_ranks_and_summaries_by_hand():
    ranks = ranks_of_true_pairs(SIM)
    assert ranks.tolist() == [1, 3, 2]
    assert recall_at_k(SIM, 1) == pytest.approx(1 / 3) and recall_at_k(ranks, 2) == pytest.approx(2 / 3)
    assert mean_rank(SIM) == 2.0 and median_rank(SIM) == 2.0
    assert mrr(SIM) == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    # columns: report 0 -> videos [.9,.8,.1] rank 1; report 1 -> [.1,.3,.7] rank 2; report 2 -> [.2,.5,.4] rank 2
    assert ranks_of_true_pairs(SIM.T).tolist() == [1, 2, 2]
    assert mcmrr(SIM) == pytest.approx((1 + 3 + 2 + 1 + 2 + 2) / 6)


def test_ranks_match_a_brute_force_sort():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((300, 300))
    want = [1 + int(np.sum(row > row[i])) for i, row in enumerate(sim)]
    assert ranks_of_true_pairs(sim).tolist() == want


def test_ties_count_against_the_model():
    assert ranks_of_true_pairs(np.ones((4, 4))).tolist() == [4, 4, 4, 4]
    assert recall_at_k(np.ones((4, 4)), 3) == 0.0


def test_perfect_and_reversed_retrieval():
    eye = np.eye(50)
    metrics = retrieval_metrics(eye)
    assert metrics["video_to_report/recall@1"] == 1.0 and metrics["report_to_video/mean_rank"] == 1.0
    assert metrics["mcmrr"] == 1.0 and metrics["candidates"] == 50
    assert retrieval_metrics(-eye)["video_to_report/median_rank"] == 50


def test_bad_shapes_are_refused():
    with pytest.raises(RetrievalError, match="square"):
        ranks_of_true_pairs(np.ones((3, 4)))
    with pytest.raises(RetrievalError, match="NaN"):
        ranks_of_true_pairs(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(RetrievalError, match="k must be"):
        recall_at_k(SIM, 0)


def test_knn_recall_counts_shared_neighbours():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [-1, -1, -1]])
    assert knn_recall(found, truth) == pytest.approx(2 / 6)
    assert knn_recall(found, truth, k=1) == 0.0
    assert knn_recall(truth, truth) == 1.0


def test_same_patient_recall():
    # patient A: studies a1 (two videos) and a2; patient B: b1 and b2; patient C: one study only
    emb = np.array(
        [[1, 0, 0], [0.9, 0.1, 0], [0.95, 0, 0.05], [0, 1, 0], [0, 0.9, 0.1], [0.7, 0.7, 0]], np.float32
    )
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    patients = ["A", "A", "A", "B", "B", "C"]
    studies = ["a1", "a1", "a2", "b1", "b2", "c1"]
    # C never counts; every A and B video finds its other study first
    assert same_patient_recall_at_k(emb, patients, studies, k=1) == 1.0
    # put B's second study far away: B's two queries now miss at k=1 (C and A are nearer)
    emb[4] = -emb[3]
    assert same_patient_recall_at_k(emb, patients, studies, k=1) == pytest.approx(3 / 5)
    assert same_patient_recall_at_k(emb, patients, studies, k=5) == 1.0
    with pytest.raises(RetrievalError, match="two different studies"):
        same_patient_recall_at_k(emb, patients, study_ids=patients, k=1)  # one study per patient
