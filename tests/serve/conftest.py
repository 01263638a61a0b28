"""A tiny model and an index of 8 simulated studies, built once for the serve tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from echoclip.cli.main import main
from echoclip.data.synthetic import simulate_dataset, simulate_reports
from echoclip.models.factory import create_model
from echoclip.tokenizer import EchoTokenizer

pytest.importorskip("fastapi", reason="echoclip serve needs the serve extra")

# Written into the DICOM uploads of the privacy tests; must appear nowhere we emit.
PATIENT_NAME = "Zyxwvutson^Quintrella"
PATIENT_ID = "PID-7391-QXZ-5502"


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> dict[str, Path]:
    """``model``, ``index`` and ``sim`` (the data set) folders, and ``avi``: one of its videos."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("serve")
    sim = simulate_dataset(root / "sim", n=8, seed=0, size=32, frames=32, fps=25.0, progress=False)
    tokenizer = EchoTokenizer.train(simulate_reports(50, seed=1))
    create_model("echoclip-tiny", tokenizer=tokenizer).save_pretrained(root / "model", tokenizer=tokenizer)
    assert (
        main(["embed", "--model", str(root / "model"), "--data", str(sim), "--out", str(root / "emb")]) == 0
    )
    assert main(["index", "--embeddings", str(root / "emb"), "--out", str(root / "idx")]) == 0
    manifest = pd.read_parquet(sim / "manifest.parquet")
    return {
        "model": root / "model",
        "index": root / "idx",
        "sim": sim,
        "avi": sim / manifest["video_path"].iloc[0],
        "root": root,
    }


@pytest.fixture(scope="session")
def app(served):
    from echoclip.serve.app import create_app

    return create_app(served["model"], served["index"], max_upload_mb=1.0, device="cpu")


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


def write_patient_dicom(path: Path, video: Path, with_pixels: bool = True) -> Path:
    """``video`` as an ultrasound cine whose header names a (made-up) patient; without
    pixel data when asked."""
    import pydicom

    from echoclip.data.dicom import write_dicom
    from echoclip.data.video import load_video

    frames = load_video(video).frames
    tags = {
        "PatientName": PATIENT_NAME,
        "PatientID": PATIENT_ID,
        "PatientBirthDate": "19410203",
        "InstitutionName": "Qorvath Memorial",
    }
    write_dicom(frames, path, fps=25.0, tags=tags)
    if not with_pixels:
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
    return path
