"""build_index / Index: exact results, metadata, recall, save/load, and bad input."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest

from echoclip.retrieval import EmbeddingStore, Index, RetrievalError, build_index, choose_factory


def numpy_top_k(x: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric == "ip":
        scores = q @ x.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        scores = ((q[:, None, :] - x[None]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_search_equals_numpy_argsort(unit_vectors, metric):
    x, q = unit_vectors(300, 16, seed=1), unit_vectors(7, 16, seed=2)
    index = build_index(x, factory="Flat", metric=metric)
    scores, rows = index.search_arrays(q, k=10)
    want_rows, want_scores = numpy_top_k(x, q, 10, metric)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert index.info["exact"] and index.info["recall_at_10"] == 1.0


def test_search_table_carries_each_rows_metadata(unit_vectors, row_metadata):
    x = unit_vectors(200, 16, seed=1)
    index = build_index(x, metadata=row_metadata(200))
    table = index.search(x[[5, 17]], k=4)
    assert list(table.columns) == ["query", "rank", "score", "row", "study_id", "value"]
    assert table["query"].tolist() == [0] * 4 + [1] * 4 and table["rank"].tolist() == [1, 2, 3, 4] * 2
    assert table["row"].tolist()[::4] == [5, 17]  # each vector finds itself first
    assert (table["value"] == table["row"]).all()
    assert (table["study_id"] == [f"S{r:05d}" for r in table["row"]]).all()


def test_save_load_round_trip_gives_identical_results(tmp_path, unit_vectors, row_metadata):
    data = unit_vectors(2020, 32, seed=1, clusters=20)
    x, q = data[:2000], data[2000:]
    index = build_index(
        x,
        factory="HNSW32",
        metadata=row_metadata(2000),
        model={"name": "tiny", "hash": "f" * 64},
        sample_queries=200,
    )
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx", expected_model_hash="f" * 64)
    pd.testing.assert_frame_equal(loaded.search(q, 10), index.search(q, 10))
    info = json.loads((tmp_path / "idx" / "info.json").read_text())
    assert (
        info["factory"] == "HNSW32" and info["size"] == 2000 and info["dim"] == 32 and info["metric"] == "ip"
    )
    assert info["model"] == {"name": "tiny", "hash": "f" * 64} and info["build_seconds"] > 0
    assert info["search_params"] == loaded.info["search_params"] and "efSearch" in info["search_params"]
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "index.faiss",
        "info.json",
        "metadata.parquet",
    ]


def test_measured_recall_matches_a_recount_and_reaches_the_target(unit_vectors):
    data = unit_vectors(3100, 32, seed=4, clusters=30)
    x, q = data[:3000], data[3000:]  # queries from the same clusters, not indexed
    index = build_index(x, factory="IVF32,PQ16x4fs,RFlat", target_recall=0.9, sample_queries=300)
    info = index.info
    assert info["recall_k"] == 10 and info["recall_queries"] == 150
    assert info["recall_at_10"] >= 0.85 and info["tuning_recall"] >= 0.9
    assert set(info["search_params"]) == {"nprobe", "k_factor"}
    # recount on fresh queries with the tuned settings
    _, found = index.search_arrays(q, 10)
    _, exact = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert hits >= 0.8


def test_building_from_a_store_equals_building_from_its_array(tmp_path, unit_vectors, row_metadata):
    x = unit_vectors(120, 16, seed=1)
    store = EmbeddingStore.create(tmp_path / "emb", dim=16, dtype="float32", model={"name": "m", "hash": "h"})
    store.append(x[:70], row_metadata(70))
    store.append(x[70:], row_metadata(50, start=70))
    from_store = build_index(store)
    from_array = build_index(x, metadata=row_metadata(120))
    pd.testing.assert_frame_equal(from_store.search(x[:3], 5), from_array.search(x[:3], 5))
    assert from_store.info["model"] == {"name": "m", "hash": "h"}


def test_add_appends_vectors_and_rows(unit_vectors, row_metadata):
    x = unit_vectors(100, 16, seed=1)
    index = build_index(x[:60], metadata=row_metadata(60))
    index.add(x[60:], row_metadata(40, start=60))
    table = index.search(x[90], k=1)
    assert len(index) == 100 and table["row"].item() == 90 and table["value"].item() == 90
    with pytest.raises(RetrievalError, match="needs metadata"):
        index.add(x[:2])


def test_auto_picks_flat_then_fast_scan_ivf_pq_with_a_re_rank_that_fits():
    assert choose_factory(50_000, 512) == "Flat"
    assert choose_factory(200_000, 512) == "IVF512,PQ64x4fs,RFlat"
    assert choose_factory(1_000_000, 512) == "IVF1024,PQ64x4fs,RFlat"
    assert choose_factory(3_000_000, 512) == "IVF2048,PQ64x4fs,Refine(SQfp16)"
    assert choose_factory(10_000_000, 512) == "IVF4096_HNSW32,PQ64x4fs,Refine(SQ8)"
    assert choose_factory(10_000_000, 512, gpu=True) == "IVF4096,PQ64"
    faiss.index_factory(100, choose_factory(1_000_000, 100))  # a valid factory for an odd dimension


def test_bad_queries_are_refused(unit_vectors):
    index = build_index(unit_vectors(50, 16, seed=1))
    with pytest.raises(RetrievalError, match="dimension 8 but the index has dimension 16"):
        index.search(unit_vectors(2, 8, seed=2), k=3)
    with pytest.raises(RetrievalError, match="k=51 is larger than the index"):
        index.search(unit_vectors(2, 16, seed=2), k=51)
    q = unit_vectors(2, 16, seed=2)
    q[1, 0] = np.nan
    with pytest.raises(RetrievalError, match="NaN"):
        index.search(q, k=3)
    with pytest.raises(RetrievalError, match="empty"):
        Index(faiss.IndexFlatIP(16)).search(unit_vectors(1, 16, seed=2), k=1)


def test_bad_embeddings_are_refused(unit_vectors, row_metadata):
    x = unit_vectors(50, 16, seed=1)
    x[33, 4] = np.nan
    with pytest.raises(RetrievalError, match="first at row 33"):
        build_index(x)
    with pytest.raises(RetrievalError, match="0 vectors"):
        build_index(np.empty((0, 16), np.float32))
    with pytest.raises(RetrievalError, match="metadata has 49 rows but there are 50"):
        build_index(unit_vectors(50, 16, seed=1), metadata=row_metadata(49))
    with pytest.raises(RetrievalError, match="clash"):
        build_index(unit_vectors(5, 16, seed=1), metadata=pd.DataFrame({"score": range(5)}))


@pytest.fixture
def saved(tmp_path, unit_vectors, row_metadata):
    index = build_index(
        unit_vectors(100, 16, seed=1), metadata=row_metadata(100), model={"name": "tiny", "hash": "a" * 64}
    )
    return index.save(tmp_path / "idx")


def test_a_truncated_index_file_is_named_and_never_loads(saved):
    data = (saved / "index.faiss").read_bytes()
    (saved / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(RetrievalError, match=r"index.faiss: \d+ bytes, but \d+ were written"):
        Index.load(saved)
    info = json.loads((saved / "info.json").read_text())
    del info["files"]  # even without the recorded size, faiss's own read fails clearly
    (saved / "info.json").write_text(json.dumps(info))
    with pytest.raises(RetrievalError, match="faiss cannot read it"):
        Index.load(saved)


def test_metadata_with_the_wrong_row_count_is_refused(saved, row_metadata):
    row_metadata(99).to_parquet(saved / "metadata.parquet", index=False)
    with pytest.raises(RetrievalError, match="has 99 rows but the index has 100 vectors"):
        Index.load(saved)


def test_an_index_of_another_model_is_refused(saved, tmp_path, unit_vectors):
    with pytest.raises(RetrievalError, match="model 'tiny'.*not the model given"):
        Index.load(saved, expected_model_hash="b" * 64)
    build_index(unit_vectors(10, 16, seed=1)).save(tmp_path / "anonymous")
    with pytest.raises(RetrievalError, match="does not record which model"):
        Index.load(tmp_path / "anonymous", expected_model_hash="b" * 64)
    with pytest.raises(RetrievalError, match="no info.json"):
        Index.load(tmp_path)


def test_a_failed_save_keeps_the_previous_index(saved, unit_vectors):
    before = Index.load(saved)
    unwritable = pd.DataFrame({"mixed": [1, "a"] * 50})  # pyarrow cannot store mixed types
    with pytest.raises(Exception, match="mixed"):
        build_index(unit_vectors(100, 16, seed=9), metadata=unwritable).save(saved)
    assert not saved.with_name(saved.name + ".tmp").exists()
    after = Index.load(saved)
    pd.testing.assert_frame_equal(after.metadata, before.metadata)


def test_save_replaces_an_index_but_not_other_folders(saved, tmp_path, unit_vectors):
    build_index(unit_vectors(30, 16, seed=2)).save(saved)
    assert len(Index.load(saved)) == 30
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep")
    with pytest.raises(RetrievalError, match="not an index directory; refusing"):
        build_index(unit_vectors(30, 16, seed=2)).save(tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep"


def test_vectors_gives_back_the_stored_rows_of_a_flat_index(unit_vectors):
    x = unit_vectors(50, 16, seed=2)
    index = build_index(x, factory="Flat", metric="ip")
    rows = np.array([5, 0, 5, 49])
    np.testing.assert_array_equal(index.vectors(rows), x[rows].astype(np.float32))
    assert index.vectors(np.array([], dtype=int)).shape == (0, 16)
    with pytest.raises(RetrievalError, match="rows must be in"):
        index.vectors(np.array([50]))
