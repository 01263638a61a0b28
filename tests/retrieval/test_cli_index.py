"""`echoclip index` over the stores `echoclip embed` writes (videos/ and reports/)."""

from __future__ import annotations

import json

from echoclip.cli.main import main
from echoclip.retrieval import EmbeddingStore, Index


def test_index_builds_one_index_per_store(tmp_path, capsys, unit_vectors, row_metadata):
    model = {"name": "tiny", "hash": "c" * 64}
    for name, n in (("videos", 120), ("reports", 40)):
        store = EmbeddingStore.create(tmp_path / "emb" / name, dim=16, model=model)
        store.append(unit_vectors(n, 16, seed=n), row_metadata(n))

    assert main(["index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("index: 40 reports (Flat, exact); 120 videos (Flat, exact)")

    videos = Index.load(tmp_path / "idx" / "videos", expected_model_hash="c" * 64)
    assert len(videos) == 120 and videos.metadata["study_id"].iloc[7] == "S00007"
    info = json.loads((tmp_path / "idx" / "reports" / "info.json").read_text())
    assert info["size"] == 40 and info["model"] == model


def test_index_with_a_factory_and_a_single_store(tmp_path, capsys, unit_vectors):
    store = EmbeddingStore.create(tmp_path / "emb", dim=16)
    store.append(unit_vectors(300, 16, seed=1, clusters=5))
    args = [
        "index",
        "--embeddings",
        str(tmp_path / "emb"),
        "--out",
        str(tmp_path / "idx"),
        "--factory",
        "HNSW16",
        "--sample-queries",
        "100",
    ]
    assert main(args) == 0
    assert "300 vectors (HNSW16, recall@10" in capsys.readouterr().out
    assert Index.load(tmp_path / "idx").info["factory"] == "HNSW16"


def test_index_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["index", "--embeddings", str(tmp_path / "empty"), "--out", str(tmp_path / "idx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no embedding store (store.json)" in err
    assert not (tmp_path / "idx").exists()
