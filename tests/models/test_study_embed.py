"""Study embeddings: a study's videos embedded once each, pooled by the model's study pooling,
subsampled deterministically, and a study with no readable video skipped and listed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.data.datasets import open_dataset
from echoclip.data.synthetic import simulate_dataset
from echoclip.data.synthetic.anatomy import VIEWS
from echoclip.data.transforms import VideoTransform
from echoclip.errors import ConfigError, DataError
from echoclip.models.embed import (
    embed_studies,
    encode_videos,
    pool_studies,
    study_subsample,
    table_views,
)
from echoclip.models.factory import create_model


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("studies") / "sim"
    return simulate_dataset(
        out, n=4, seed=3, size=32, frames=16, fps=25.0, views=VIEWS, videos_per_view=(1, 2), progress=False
    )


@pytest.fixture(scope="module")
def model(stand_in_tokenizer_module):
    torch.manual_seed(0)
    return create_model("echoclip-tiny", tokenizer=stand_in_tokenizer_module).eval()


@pytest.fixture(scope="module")
def stand_in_tokenizer_module():
    from tests.models.conftest import ByteTokenizer

    return ByteTokenizer()


def _dataset(model, sim):
    return open_dataset(sim, None, VideoTransform(model.preprocess_config))


def test_mean_pooling_is_the_renormalised_mean_of_the_study_videos(model, sim):
    dataset = _dataset(model, sim)
    studies = embed_studies(model, dataset, progress=False)
    table = dataset.table
    assert studies.study_ids == list(dict.fromkeys(table["study_id"]))
    assert studies.features.shape == (table["study_id"].nunique(), model.config.embed_dim)
    videos = encode_videos(model, dataset, progress=False).features
    for sid, emb, rows in zip(studies.study_ids, studies.features, studies.rows, strict=True):
        assert list(rows) == list(np.flatnonzero(table["study_id"] == sid))
        mean = videos[rows].mean(axis=0)
        np.testing.assert_allclose(emb, mean / np.linalg.norm(mean), atol=1e-5)
    assert studies.views[0] == list(table.loc[studies.rows[0], "view"])
    assert not studies.skipped and not studies.failed and not studies.subsampled


def test_views_come_from_view_pred_then_view():
    table = pd.DataFrame({"view": ["A4C", None, "PLAX"], "view_pred": ["A2C", "A4C", float("nan")]})
    assert table_views(table) == ["A2C", "A4C", None]
    assert table_views(table.drop(columns="view_pred")) == ["A4C", None, "PLAX"]
    assert table_views(table.drop(columns=["view", "view_pred"])) is None


def test_a_200_video_study_is_subsampled_the_same_way_every_time(model):
    g = np.random.default_rng(0)
    emb = g.standard_normal((203, model.config.embed_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = ["big"] * 200 + ["small"] * 3
    first = pool_studies(model, emb, ids, max_videos=64)
    again = pool_studies(model, emb.copy(), list(ids), max_videos=64)
    assert len(first.rows[0]) == 64 and np.array_equal(first.rows[0], again.rows[0])
    assert np.array_equal(first.rows[0], study_subsample("big", 200, 64))
    assert list(first.rows[1]) == [200, 201, 202] and first.subsampled == ["big"]
    np.testing.assert_allclose(first.features, again.features)
    other = study_subsample("other", 200, 64)
    assert not np.array_equal(other, first.rows[0])  # seeded by the study id
    mean = emb[first.rows[0]].mean(axis=0)
    np.testing.assert_allclose(first.features[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_subsampling_happens_before_decoding(model, sim):
    dataset = _dataset(model, sim)
    studies = embed_studies(model, dataset, max_videos=2, progress=False)
    counts = dataset.table.groupby("study_id", sort=False).size()
    assert [len(r) for r in studies.rows] == [min(2, c) for c in counts]
    assert studies.subsampled == [s for s, c in counts.items() if c > 2]
    for sid, rows in zip(studies.study_ids, studies.rows, strict=True):
        own = np.flatnonzero(dataset.table["study_id"] == sid)
        assert list(rows) == list(own[study_subsample(sid, len(own), 2)])


def test_a_study_with_no_readable_video_is_skipped_and_listed(model, sim, tmp_path):
    manifest = pd.read_parquet(sim / "manifest.parquet")
    manifest["video_path"] = [str(sim / p) for p in manifest["video_path"]]
    broken = manifest["study_id"].iloc[0]
    for i in np.flatnonzero(manifest["study_id"] == broken):
        bad = tmp_path / f"bad{i}.avi"
        bad.write_bytes(b"not a video")
        manifest.loc[i, "video_path"] = str(bad)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    dataset = open_dataset(tmp_path / "manifest.parquet", None, VideoTransform(model.preprocess_config))
    studies = embed_studies(model, dataset, progress=False)
    assert studies.skipped == [broken] and broken not in studies.study_ids
    assert sorted(studies.failed) == list(np.flatnonzero(manifest["study_id"] == broken))
    assert len(studies) == manifest["study_id"].nunique() - 1
    assert len(dataset.skipped) == len(studies.failed)  # the dataset's log says which files and why


def test_files_of_one_study_and_bad_input(model, sim):
    paths = [sim / p for p in pd.read_parquet(sim / "manifest.parquet")["video_path"][:3]]
    studies = embed_studies(model, paths, progress=False)
    assert studies.study_ids == [0] and list(studies.rows[0]) == [0, 1, 2]
    with pytest.raises(DataError, match="2 study ids for 3 videos"):
        embed_studies(model, paths, study_ids=["a", "b"], progress=False)
    with pytest.raises(ConfigError, match="max_videos"):
        pool_studies(model, np.zeros((2, 4), np.float32), ["a", "a"], max_videos=0)
    with pytest.raises(DataError, match=r"\[N, D\]"):
        pool_studies(model, np.zeros((2, 3, 4), np.float32), ["a", "a"])
