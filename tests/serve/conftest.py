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
    """``model``, ``index`` and ``sim`` (the data set) folders, ``avi``: one of its videos, and
    ``unlike``: a video unlike them (a real echo cine when pydicom-data is installed, else noise);
    ``sections``: a section index of the data set's reports, ``emb``: its embeddings with labels
    (the neighbours' reference reports).

    The model's OOD reference holds the 8 served videos; its threshold is calibrated on 8
    other simulated studies.
    """
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.ood import fit_ood

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("serve")
    sim = simulate_dataset(root / "sim", n=8, seed=0, size=32, frames=32, fps=25.0, progress=False)
    held_out = simulate_dataset(root / "held", n=8, seed=2, size=32, frames=32, fps=25.0, progress=False)
    tokenizer = EchoTokenizer.train(simulate_reports(50, seed=1))
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    held_out_paths = [held_out / p for p in pd.read_parquet(held_out / "manifest.parquet")["video_path"]]
    fit_ood(model, open_dataset(sim, None, VideoTransform(model.preprocess_config)), held_out_paths)
    model.save_pretrained(root / "model", tokenizer=tokenizer)
    assert (
        main(["embed", "--model", str(root / "model"), "--data", str(sim), "--out", str(root / "emb")]) == 0
    )
    assert main(["index", "--embeddings", str(root / "emb"), "--out", str(root / "idx")]) == 0
    sections = ["index", "--sections", str(sim / "manifest.parquet"), "--split", "all"]
    assert main([*sections, "--model", str(root / "model"), "--out", str(root / "sections")]) == 0
    manifest = pd.read_parquet(sim / "manifest.parquet")
    return {
        "sections": root / "sections",
        "emb": root / "emb",
        "model": root / "model",
        "index": root / "idx",
        "sim": sim,
        "avi": sim / manifest["video_path"].iloc[0],
        "unlike": write_unlike_video(root / "unlike.avi"),
        "root": root,
    }


def write_unlike_video(path: Path) -> Path:
    """32 frames of pydicom-data's real apical cine, made small (under the 1 MB upload limit
    of the tests' app); without pydicom-data, uniform noise."""
    import importlib.metadata

    import numpy as np
    from PIL import Image

    from echoclip.data.video import load_video, save_video

    try:
        importlib.metadata.version("pydicom-data")
    except importlib.metadata.PackageNotFoundError:
        noise = np.random.default_rng(0).integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
        return save_video(noise, path, fps=25.0)
    from pydicom.data import get_testdata_file

    cine = load_video(get_testdata_file("color3d_jpeg_baseline.dcm"), n=32)
    small = np.stack([np.asarray(Image.fromarray(f).resize((128, 96))) for f in cine.frames])
    return save_video(small, path, fps=cine.fps)


@pytest.fixture(scope="session")
def app(served):
    from echoclip.serve.app import create_app

    return create_app(served["model"], served["index"], max_upload_mb=1.0, device="cpu")


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


NEIGHBOURS_K = 3


@pytest.fixture(scope="session")
def drafting_client(served):
    """A server with a section index and reference reports: draft reports and neighbour labels."""
    from fastapi.testclient import TestClient

    from echoclip.serve.app import create_app

    app = create_app(
        served["model"],
        served["index"],
        max_upload_mb=1.0,
        device="cpu",
        sections=served["sections"],
        neighbours=served["emb"],
        neighbours_k=NEIGHBOURS_K,
    )
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
