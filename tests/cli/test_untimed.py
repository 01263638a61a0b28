"""A DICOM cine without frame timing: ``--fps`` reads it in every command that reads videos;
without it, every command that reads a data set skips it, counts it and lists it, and a
query that is that file is an error (one line, exit 1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import echoclip
from echoclip.cli.main import main
from echoclip.data.dicom import write_dicom
from echoclip.retrieval import EmbeddingStore
from echoclip.tokenizer import EchoTokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A model and a manifest of two timed cines and one untimed cine."""
    root = tmp_path_factory.mktemp("untimed")
    torch.manual_seed(0)
    model = echoclip.create_model("echoclip-tiny", video={"image_size": 32, "num_frames": 8})
    model.save_pretrained(root / "model", tokenizer=EchoTokenizer())
    rng = np.random.default_rng(0)
    rows = []
    for i, fps in enumerate([25.0, 30.0, None]):
        frames = rng.integers(0, 255, (24, 48, 48, 3), dtype=np.uint8)
        write_dicom(frames, root / f"cine{i}.dcm", fps=fps)
        rows.append(
            {
                "video_path": f"cine{i}.dcm",
                "report": f"LV EJECTION FRACTION IS {40 + 5 * i}%.",
                "patient_id": str(i),
                "study_id": str(i),
                "ef": 40.0 + 5 * i,
                "split": "test",
            }
        )
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_embed_skips_and_lists_it_or_reads_it_with_fps(data, capsys):
    base = ["embed", "--model", str(data / "model"), "--data", str(data), "--out"]
    code, out, _ = _run([*base, str(data / "emb")], capsys)
    assert code == 0 and "1 unreadable" in out
    assert len(EmbeddingStore(data / "emb" / "videos")) == 2
    assert "cine2.dcm" in (data / "emb" / "skipped.csv").read_text()
    code, out, _ = _run([*base, str(data / "emb-fps"), "--fps", "30"], capsys)
    assert code == 0 and "unreadable" not in out
    assert len(EmbeddingStore(data / "emb-fps" / "videos")) == 3


def test_zeroshot_skips_and_counts_it_or_reads_it_with_fps(data, capsys, tmp_path):
    base = ["zeroshot", "--model", str(data / "model"), "--out", str(tmp_path / "p.csv"), "--data"]
    for given in ([str(data), "--split", "all"], [str(data / f"cine{i}.dcm") for i in range(3)]):
        code, out, _ = _run([*base, *given], capsys)
        assert code == 0 and "(1 unreadable videos skipped)" in out
        assert len(pd.read_csv(tmp_path / "p.csv")) == 2
        code, out, _ = _run([*base, *given, "--fps", "30"], capsys)
        assert code == 0 and "unreadable" not in out
        assert len(pd.read_csv(tmp_path / "p.csv")) == 3


def test_evaluate_skips_and_counts_it_or_reads_it_with_fps(data, capsys, tmp_path):
    base = ["evaluate", "--model", str(data / "model"), "--data", str(data), "--prompts", "ejection_fraction"]
    assert _run([*base, "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["data"]["studies"] == 2
    assert _run([*base, "--out", str(tmp_path / "b"), "--fps", "30"], capsys)[0] == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["data"]["studies"] == 3


def test_search_with_it_as_the_query(data, capsys):
    assert _run(["index", "--embeddings", str(data / "emb-fps"), "--out", str(data / "idx")], capsys)[0] == 0
    base = [
        "search",
        "--index",
        str(data / "idx"),
        "--model",
        str(data / "model"),
        "--video",
        str(data / "cine2.dcm"),
    ]
    code, _, err = _run(base, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--fps" in err
    code, out, _ = _run([*base, "--fps", "30", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["results"]) == 3
