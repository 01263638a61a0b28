"""The API says when an uploaded video is unlike the model's training videos, and says
nothing (``null``) for a model without an OOD reference."""

from __future__ import annotations

import shutil

import pytest

from echoclip.models.ood import OOD_FILE, OOD_WARNING


def _upload(client, path, url):
    with open(path, "rb") as f:
        return client.post(url, files={"file": (path.name, f)})


def test_health_says_uploads_are_checked(client):
    assert client.get("/api/health").json()["ood_reference"] is True


@pytest.mark.parametrize("url", ["/api/search/video", "/api/zeroshot"])
def test_an_unlike_video_is_flagged_with_the_warning(client, served, url):
    unlike = _upload(client, served["unlike"], url)
    assert unlike.status_code == 200, unlike.text
    ood = unlike.json()["ood"]
    assert ood["out_of_distribution"] is True and ood["score"] > ood["threshold"]
    assert ood["warning"] == OOD_WARNING
    assert unlike.json()["findings"]["binary"]  # the answers still come, marked

    like = _upload(client, served["avi"], url).json()["ood"]
    assert like["out_of_distribution"] is False and like["warning"] is None
    assert like["score"] <= like["threshold"] < ood["score"]


def test_a_model_without_a_reference_says_nothing(served, tmp_path):
    from fastapi.testclient import TestClient

    from echoclip.serve.app import create_app

    model = shutil.copytree(served["model"], tmp_path / "model")
    (model / OOD_FILE).unlink()
    client = TestClient(create_app(model, served["index"], device="cpu"))  # the same weights: the index fits
    assert client.get("/api/health").json()["ood_reference"] is False
    r = _upload(client, served["unlike"], "/api/zeroshot")
    assert r.status_code == 200, r.text
    assert r.json()["ood"] is None
