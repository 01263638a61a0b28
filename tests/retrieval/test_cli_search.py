"""`echoclip embed` -> `echoclip index` -> `echoclip search` on a simulated set."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from echoclip.cli.main import main
from echoclip.data.synthetic import simulate_dataset, simulate_reports
from echoclip.models.factory import create_model
from echoclip.tokenizer import EchoTokenizer


def _simulate(root: Path, n: int) -> Path:
    return simulate_dataset(
        root / "sim", n=n, seed=0, size=32, frames=32, fps=25.0, views=("A4C", "A2C"), progress=False
    )


@pytest.fixture(scope="module")
def study_set(tmp_path_factory) -> tuple[Path, Path, Path]:
    """5 simulated studies (two patients, with 3 and 2 studies), two views each, and a
    tiny model directory."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("search")
    sim = _simulate(root, n=5)
    tokenizer = EchoTokenizer.train(simulate_reports(50, seed=1))
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    model.save_pretrained(root / "model", tokenizer=tokenizer)
    return root, sim, root / "model"


def _cli(*args: object) -> int:
    return main([str(a) for a in args])


def _first_words(text: str, n: int = 6) -> str:
    return " ".join(text.split()[:n])


def test_embed_index_search(study_set, capsys):
    root, sim, model = study_set
    manifest = pd.read_parquet(sim / "manifest.parquet")
    reports = dict(zip(manifest["study_id"], manifest["report"], strict=True))

    assert _cli("embed", "--model", model, "--data", sim, "--out", root / "emb") == 0
    assert "embed: 10 videos and 5 reports" in capsys.readouterr().out
    assert _cli("index", "--embeddings", root / "emb", "--out", root / "idx") == 0
    capsys.readouterr()

    # text -> videos: a table of study ids and report text, then one summary line
    assert (
        _cli(
            "search", "--index", root / "idx", "--model", model, "--text", "SEVERE LV DYSFUNCTION.", "--k", 3
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["rank", "score", "study_id", "patient_id"]
    assert lines[-1].startswith("search: top 3 of 10 videos for the text query")
    for line in lines[1:4]:
        study = line.split()[2]
        assert _first_words(reports[study]) in line

    # video -> reports as JSON, whole report texts
    video = sim / manifest["video_path"].iloc[0]
    assert (
        _cli("search", "--index", root / "idx", "--model", model, "--video", video, "--k", 2, "--json") == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["target"] == "reports" and [r["rank"] for r in payload["results"]] == [1, 2]
    assert all(r["report"] == reports[r["study_id"]] for r in payload["results"])

    # same patient: every video outside the query's own study, its patient's ones flagged
    args = [
        "search",
        "--index",
        root / "idx",
        "--model",
        model,
        "--video",
        video,
        "--k",
        8,
        "--same-patient",
        "--json",
    ]
    assert _cli(*args) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    own_study, own_patient = manifest[["study_id", "patient_id"]].iloc[0]
    assert len(results) == 8 and own_study not in {r["study_id"] for r in results}
    expected_same = int(((manifest["patient_id"] == own_patient) & (manifest["study_id"] != own_study)).sum())
    assert expected_same > 0 and sum(r["same_patient"] for r in results) == expected_same


def test_search_refuses_an_index_of_another_model(study_set, capsys):
    root, sim, model = study_set
    if not (root / "idx").exists():
        _cli("embed", "--model", model, "--data", sim, "--out", root / "emb", "--overwrite")
        _cli("index", "--embeddings", root / "emb", "--out", root / "idx")
    torch.manual_seed(1)  # other weights (the same seed would make the very same model)
    other = create_model("echoclip-tiny", tokenizer=EchoTokenizer.load(model / "tokenizer.json"))
    other.save_pretrained(root / "other", tokenizer=EchoTokenizer.load(model / "tokenizer.json"))
    capsys.readouterr()
    assert _cli("search", "--index", root / "idx", "--model", root / "other", "--text", "NORMAL STUDY.") == 1
    err = capsys.readouterr().err.strip()
    assert "built from embeddings of model 'echoclip-tiny'" in err and "not the model given" in err


@pytest.mark.slow
def test_search_with_a_trained_model(tmp_path, capsys):
    """The acceptance run: a tiny model trained for a few steps on a simulated set."""
    from echoclip.train.clip import train_clip
    from echoclip.train.config import TrainConfig

    sim = _simulate(tmp_path, n=10)
    tokenizer = EchoTokenizer.train(simulate_reports(50, seed=1))
    config = TrainConfig(
        out=str(tmp_path / "clip"), steps=4, batch_size=4, warmup_steps=1, tensorboard=False, progress=False
    )
    train_clip(
        sim,
        config,
        model="echoclip-tiny",
        tokenizer=tokenizer,
        augment=False,
        val_split=None,
        zero_shot_prompts=None,
    )
    model = tmp_path / "clip" / "final"
    assert _cli("embed", "--model", model, "--data", sim, "--out", tmp_path / "emb") == 0
    assert _cli("index", "--embeddings", tmp_path / "emb", "--out", tmp_path / "idx") == 0
    capsys.readouterr()
    assert _cli("search", "--index", tmp_path / "idx", "--model", model, "--text", "LVEF 35%.", "--k", 5) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    manifest = pd.read_parquet(sim / "manifest.parquet")
    reports = dict(zip(manifest["study_id"], manifest["report"], strict=True))
    assert len(lines) == 7 and lines[-1].startswith("search: top 5 of 20 videos")
    assert all(_first_words(reports[line.split()[2]]) in line for line in lines[1:6])
