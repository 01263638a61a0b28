"""EmbeddingStore: append order, memory-mapped reads, refusals, and crash safety."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from echoclip.retrieval import EmbeddingStore, RetrievalError


def test_appends_keep_row_order_across_shards(tmp_path, unit_vectors, row_metadata):
    a, b = unit_vectors(30, 16, seed=1), unit_vectors(20, 16, seed=2)
    store = EmbeddingStore.create(tmp_path / "emb", dim=16, model={"name": "m", "hash": "abc"})
    store.append(a, row_metadata(30))
    store.append(b, row_metadata(20, start=30))

    reopened = EmbeddingStore(tmp_path / "emb")
    assert len(reopened) == 50 and reopened.dim == 16 and reopened.model == {"name": "m", "hash": "abc"}
    expected = np.concatenate([a, b])
    np.testing.assert_allclose(reopened.embeddings(), expected, atol=1e-3)  # float16 on disk
    assert reopened.metadata()["value"].tolist() == list(range(50))
    batches = list(reopened.iter_batches(batch_size=7))
    assert all(x.dtype == np.float32 for x in batches)
    np.testing.assert_array_equal(np.concatenate(batches), reopened.embeddings())
    # the parquet folder reads whole with pandas, in the same order
    assert pd.read_parquet(tmp_path / "emb" / "metadata.parquet")["value"].tolist() == list(range(50))


def test_shards_are_float16_memory_maps(tmp_path, unit_vectors, row_metadata):
    store = EmbeddingStore.create(tmp_path / "emb", dim=8)
    store.append(unit_vectors(10, 8, seed=0))
    (shard,) = EmbeddingStore(tmp_path / "emb").shard_arrays()
    assert isinstance(shard, np.memmap) and shard.dtype == np.float16 and shard.shape == (10, 8)


def test_rows_are_picked_in_the_order_asked(tmp_path, unit_vectors, row_metadata):
    x = unit_vectors(40, 8, seed=3)
    store = EmbeddingStore.create(tmp_path / "emb", dim=8, dtype="float32")
    store.append(x[:25])
    store.append(x[25:])
    rows = np.array([39, 0, 26, 24, 25, 3])
    np.testing.assert_array_equal(store.embeddings(rows), x[rows])
    with pytest.raises(RetrievalError, match="out of range"):
        store.embeddings(np.array([40]))


def test_refuses_wrong_dimension_rows_nan_and_columns(tmp_path, unit_vectors, row_metadata):
    store = EmbeddingStore.create(tmp_path / "emb", dim=8)
    with pytest.raises(RetrievalError, match="dimension 8"):
        store.append(unit_vectors(5, 9, seed=0))
    with pytest.raises(RetrievalError, match="metadata has 4 rows but there are 5"):
        store.append(unit_vectors(5, 8, seed=0), row_metadata(4))
    bad = unit_vectors(5, 8, seed=0)
    bad[3, 2] = np.nan
    with pytest.raises(RetrievalError, match="NaN"):
        store.append(bad, row_metadata(5))
    with pytest.raises(RetrievalError, match="NaN"):  # finite in float32, infinite in float16
        store.append(np.full((1, 8), 1e6, np.float32), row_metadata(1))
    assert len(EmbeddingStore(tmp_path / "emb")) == 0
    assert not any((tmp_path / "emb" / "embeddings").iterdir())

    store.append(unit_vectors(5, 8, seed=0), row_metadata(5))
    with pytest.raises(RetrievalError, match="columns"):
        store.append(unit_vectors(2, 8, seed=0), row_metadata(2).rename(columns={"value": "other"}))
    with pytest.raises(RetrievalError, match="keeps metadata"):
        store.append(unit_vectors(2, 8, seed=0))


def test_create_refuses_a_non_empty_folder(tmp_path, unit_vectors, row_metadata):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "notes.txt").write_text("mine")
    with pytest.raises(RetrievalError, match="not empty"):
        EmbeddingStore.create(tmp_path / "emb", dim=4)
    with pytest.raises(RetrievalError, match="not an embedding store"):
        EmbeddingStore(tmp_path / "emb")


def test_a_truncated_shard_or_short_metadata_is_named(tmp_path, unit_vectors, row_metadata):
    store = EmbeddingStore.create(tmp_path / "emb", dim=8)
    store.append(unit_vectors(10, 8, seed=0), row_metadata(10))
    shard = tmp_path / "emb" / "embeddings" / "part-000000.npy"
    data = shard.read_bytes()
    shard.write_bytes(data[:-40])
    with pytest.raises(RetrievalError, match="part-000000.npy"):
        EmbeddingStore(tmp_path / "emb")
    shard.write_bytes(data)
    row_metadata(9).to_parquet(tmp_path / "emb" / "metadata.parquet" / "part-000000.parquet")
    with pytest.raises(RetrievalError, match="has 9 rows but its embedding shard has 10"):
        EmbeddingStore(tmp_path / "emb")


def test_an_append_that_died_before_commit_is_invisible_and_cleaned(tmp_path, unit_vectors, row_metadata):
    store = EmbeddingStore.create(tmp_path / "emb", dim=8)
    store.append(unit_vectors(10, 8, seed=0), row_metadata(10))
    manifest = (tmp_path / "emb" / "store.json").read_text()
    store.append(unit_vectors(5, 8, seed=1), row_metadata(5, start=10))
    (tmp_path / "emb" / "store.json").write_text(manifest)  # as if the process died before the commit

    reopened = EmbeddingStore(tmp_path / "emb")
    assert len(reopened) == 10 and len(reopened.metadata()) == 10
    reopened.append(unit_vectors(3, 8, seed=2), row_metadata(3, start=10))
    again = EmbeddingStore(tmp_path / "emb")
    assert len(again) == 13 and again.metadata()["value"].tolist() == list(range(13))
    assert json.loads((tmp_path / "emb" / "store.json").read_text())["shards"][1]["rows"] == 3
