"""Study level end to end on a tiny model and a simulated multi-view data set: zero-shot and
evaluation answer once per study, from the study's pooled embedding; bad flags are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.cli.main import main
from echoclip.data.datasets import open_dataset
from echoclip.data.synthetic import simulate_dataset, simulate_reports
from echoclip.data.synthetic.anatomy import VIEWS
from echoclip.data.transforms import VideoTransform
from echoclip.errors import ConfigError
from echoclip.evaluate import evaluate
from echoclip.models.embed import embed_studies, encode_videos
from echoclip.models.factory import create_model, get_tokenizer, load_model
from echoclip.tokenizer import EchoTokenizer
from echoclip.zeroshot.predict import zero_shot


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A multi-view simulated data set (``sim``) and a saved tiny model (``model``)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("study-level")
    sim = simulate_dataset(
        root / "sim",
        n=6,
        seed=4,
        size=32,
        frames=16,
        fps=25.0,
        views=VIEWS,
        videos_per_view=(1, 2),
        view_missing=0.1,
        progress=False,
    )
    tokenizer = EchoTokenizer.train(simulate_reports(40, seed=1))
    create_model("echoclip-tiny", tokenizer=tokenizer).save_pretrained(root / "model", tokenizer=tokenizer)
    return {"sim": sim, "model": root / "model", "root": root}


@pytest.fixture(scope="module")
def loaded(served):
    torch.set_num_threads(1)
    return load_model(served["model"]), get_tokenizer(served["model"])


def _dataset(model, sim):
    return open_dataset(sim, None, VideoTransform(model.preprocess_config))


def test_zero_shot_at_study_level_answers_once_per_study(served, loaded):
    model, tokenizer = loaded
    dataset = _dataset(model, served["sim"])
    table = dataset.table
    df = zero_shot(model, tokenizer, dataset, prompts="devices", level="study")
    assert list(df["study_id"]) == list(dict.fromkeys(table["study_id"]))
    assert list(df.columns[:4]) == ["study_id", "n_videos", "ood_score", "out_of_distribution"]
    assert list(df["n_videos"]) == list(table.groupby("study_id", sort=False).size())
    assert df.attrs["level"] == "study" and df.attrs["skipped_studies"] == []
    # the same as scoring the pooled embeddings, given ready-made or as video embeddings
    studies = embed_studies(model, dataset, progress=False)
    again = zero_shot(model, tokenizer, studies, prompts="devices", level="study")
    pd.testing.assert_frame_equal(df, again)
    videos = encode_videos(model, dataset, progress=False).features
    pooled = zero_shot(
        model, tokenizer, videos, prompts="devices", level="study", study_ids=list(table["study_id"])
    )
    np.testing.assert_allclose(pooled["pacemaker"], df["pacemaker"], rtol=1e-5)
    with pytest.raises(ConfigError, match="level must be one of"):
        zero_shot(model, tokenizer, videos, prompts="devices", level="patient")


def test_evaluate_at_study_level_keeps_clip_keys_and_marks_the_level(served, loaded, tmp_path):
    model, tokenizer = loaded
    dataset = _dataset(model, served["sim"])
    options = dict(prompt_sets=["ejection_fraction", "devices"], split=None, calibration_split=None)
    clip = evaluate(model, tokenizer, served["sim"], tmp_path / "clip", **options)
    study = evaluate(
        model, tokenizer, served["sim"], tmp_path / "study", level="study", max_videos=3, **options
    )
    assert "level" not in clip and study["level"] == "study"
    assert set(study) - {"level"} == set(clip)
    assert set(clip["data"]) < set(study["data"])
    counts = dataset.table.groupby("study_id").size()
    assert study["data"]["studies"] == clip["data"]["studies"] == len(counts)
    assert study["data"]["videos"] == int(np.minimum(counts, 3).sum()) < clip["data"]["videos"]
    assert study["data"]["subsampled_studies"] == int((counts > 3).sum())
    assert study["data"]["pooling"] == "mean" and study["data"]["label_disagreements"] == {}
    assert set(study["zero_shot"]) == set(clip["zero_shot"])
    retrieval = study["retrieval"]
    assert retrieval["video_to_report"]["n"] == len(counts) and 0 <= retrieval["mcmrr"] <= len(counts)
    predictions = pd.read_csv(tmp_path / "study" / "predictions.csv")
    assert len(predictions) == len(counts) and predictions["study_id"].is_unique
    assert "Study level" in (tmp_path / "study" / "summary.md").read_text()


def test_cli_zeroshot_and_evaluate_at_study_level(served, tmp_path, capsys):
    model, sim = str(served["model"]), str(served["sim"])
    out = tmp_path / "studies.csv"
    common = ["--model", model, "--data", sim, "--split", "all"]
    assert main(["zeroshot", *common, "--prompts", "devices", "--level", "study", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("zero-shot: 6 studies x 5 targets at study level")
    table = pd.read_csv(out)
    assert len(table) == 6 and table["study_id"].is_unique and "n_videos" in table
    files = pd.read_parquet(served["sim"] / "manifest.parquet")["video_path"][:3]
    paths = [str(served["sim"] / p) for p in files]
    one = tmp_path / "one.csv"
    assert main(["zeroshot", "--model", model, "--data", *paths, "--level", "study", "--out", str(one)]) == 0
    assert list(pd.read_csv(one)["n_videos"]) == [3]
    run = ["evaluate", *common, "--out", str(tmp_path / "eval"), "--level", "study", "--prompts", "devices"]
    assert main(run) == 0
    assert "(study level)" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["level"] == "study"


@pytest.mark.parametrize("command", ["zeroshot", "evaluate"])
def test_cli_refuses_bad_study_flags_in_one_line(served, tmp_path, capsys, command):
    run = [
        command,
        "--model",
        str(served["model"]),
        "--data",
        str(served["sim"]),
        "--out",
        str(tmp_path / "o.csv"),
    ]
    assert main([*run, "--level", "study", "--max-videos", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"echoclip {command}: error: --max-videos must be at least 1, not 0"
    with pytest.raises(SystemExit):
        main([*run, "--level", "patient"])


def test_study_index_and_search_by_a_study_folder(served, tmp_path, capsys):
    model, sim = str(served["model"]), served["sim"]
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert main(["embed", "--model", model, "--data", str(sim), "--out", str(emb), "--level", "study"]) == 0
    assert capsys.readouterr().out.startswith("embed: 6 studies")
    assert sorted(p.name for p in emb.iterdir()) == [
        "reports",
        "skipped.csv",
        "skipped_studies.csv",
        "studies",
    ]
    assert main(["index", "--embeddings", str(emb), "--out", str(idx)]) == 0
    assert "6 studies (Flat, exact)" in capsys.readouterr().out
    manifest = pd.read_parquet(sim / "manifest.parquet")
    from echoclip.retrieval import EmbeddingStore

    meta = EmbeddingStore(emb / "studies").metadata()
    assert list(meta["study_id"]) == list(dict.fromkeys(manifest["study_id"]))
    assert {"report", "patient_id", "split", "n_videos", "views"} <= set(meta.columns)
    assert "video_path" not in meta.columns
    # a study given as a folder of its files, some of which are not videos
    study = manifest["study_id"].iloc[0]
    folder = tmp_path / "query"
    folder.mkdir()
    for p in manifest.loc[manifest["study_id"] == study, "video_path"]:
        (folder / Path(p).name).write_bytes((sim / p).read_bytes())
    (folder / "notes.txt").write_text("not a video")
    run = ["search", "--index", str(idx), "--model", model, "--k", "3", "--json"]
    assert main([*run, "--study", str(folder), "--target", "studies"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["target"] == "studies" and found["query"]["unreadable"] == 1
    assert found["results"][0]["study_id"] == study  # the study's own row, pooled the same way
    assert found["query"]["videos"] == int((manifest["study_id"] == study).sum())
    assert main([*run, "--study", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "reports"
    # report -> study: a text against an index that holds studies, not videos
    assert main([*run, "--text", manifest["report"].iloc[0]]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits["target"] == "studies" and len(hits["results"]) == 3 and "n_videos" in hits["results"][0]


def test_search_by_an_unreadable_study_is_one_line(served, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.avi").write_bytes(b"nothing")
    (folder / "b.dcm").write_bytes(b"nothing")
    index = tmp_path / "idx"
    emb = tmp_path / "emb"
    model = str(served["model"])
    assert (
        main(["embed", "--model", model, "--data", str(served["sim"]), "--out", str(emb), "--level", "study"])
        == 0
    )
    assert main(["index", "--embeddings", str(emb), "--out", str(index)]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--model", model, "--study", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"echoclip search: error: {folder}: none of the 2 files of the study is a readable video"
    assert main(["search", "--index", str(index), "--model", model, "--study", str(folder / "c.avi")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_studies_pooled_from_a_video_store_equal_those_encoded_again(served, loaded, tmp_path):
    from echoclip.errors import DataError
    from echoclip.models.embed import embed_dataset, embed_study_dataset
    from echoclip.models.model_dir import model_identity
    from echoclip.retrieval import EmbeddingStore

    model, tokenizer = loaded
    identity = model_identity(served["model"])
    dataset = _dataset(model, served["sim"])
    embed_dataset(model, tokenizer, dataset, tmp_path / "emb", model_identity=identity, progress=False)
    videos = tmp_path / "emb" / "videos"
    encoded = embed_study_dataset(
        model, tokenizer, dataset, tmp_path / "again", model_identity=identity, progress=False
    )
    pooled = embed_study_dataset(
        model, tokenizer, dataset, tmp_path / "pooled", model_identity=identity, progress=False, videos=videos
    )
    assert pooled.studies.study_ids == encoded.studies.study_ids and pooled.videos == 6
    # the same studies, their videos and views; embeddings within the video store's float16
    np.testing.assert_allclose(pooled.studies.features, encoded.studies.features, atol=2e-3)
    a, b = (EmbeddingStore(d / "studies").metadata() for d in (tmp_path / "again", tmp_path / "pooled"))
    pd.testing.assert_frame_equal(a, b)
    # a study with no stored video is listed, not lost
    manifest = pd.read_parquet(served["sim"] / "manifest.parquet")
    first = manifest["study_id"].iloc[0]
    part = EmbeddingStore.create(tmp_path / "part", 128, model=identity)
    keep = (EmbeddingStore(videos).metadata()["study_id"] != first).to_numpy()
    part.append(EmbeddingStore(videos).embeddings()[keep], EmbeddingStore(videos).metadata()[keep])
    some = embed_study_dataset(
        model,
        tokenizer,
        dataset,
        tmp_path / "some",
        progress=False,
        model_identity=identity,
        videos=part.path,
    )
    assert first not in some.studies.study_ids and some.videos == 5
    skipped = pd.read_csv(tmp_path / "some" / "skipped_studies.csv")
    assert (
        skipped["study_id"].astype(str).tolist() == [str(first)]
        and skipped["reason"][0] == "no video in part"
    )
    # a store of another model, or of other studies, is refused in one line
    with pytest.raises(DataError, match="embedded by another model"):
        embed_study_dataset(
            model,
            tokenizer,
            dataset,
            tmp_path / "x",
            videos=videos,
            model_identity={"name": "m", "hash": "0"},
        )
    other = EmbeddingStore.create(tmp_path / "other", 128, model=identity)
    other.append(np.ones((1, 128), np.float32), pd.DataFrame({"study_id": ["elsewhere"]}))
    with pytest.raises(DataError, match="videos of 1 studies this data set does not have"):
        embed_study_dataset(
            model, tokenizer, dataset, tmp_path / "y", videos=other.path, model_identity=identity
        )
