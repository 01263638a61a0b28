"""Every endpoint of the API through FastAPI's TestClient, bad uploads included."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from echoclip.data.video import load_video

from .conftest import write_patient_dicom


def _upload(client, path, url="/api/search/video", name=None, **params):
    with open(path, "rb") as f:
        return client.post(url, files={"file": (name or path.name, f)}, params=params)


def test_health_names_the_model_and_the_indexes(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "echoclip-tiny" and len(body["model_hash"]) == 64
    assert body["indexes"] == {"videos": 8, "reports": 8} and body["device"] == "cpu"


def test_video_search_finds_reports_and_reads_findings(client, served):
    r = _upload(client, served["avi"], k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["video"] == {"file": served["avi"].name, "frames": 32, "fps": 25.0, "width": 32, "height": 32}
    assert body["target"] == "reports"
    hits = body["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert all(h["report"] and h["study_id"] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    ef = body["findings"]["ejection_fraction"]
    assert 5 <= ef["value"] <= 85 and ef["sd"] > 0 and ef["unit"] == "%"
    binary = {b["name"]: b for b in body["findings"]["binary"]}
    assert {"pacemaker", "tavr", "mitraclip", "impella", "pericardial_effusion"} <= set(binary)
    assert all(0 <= b["probability"] <= 1 for b in binary.values())
    (view,) = body["findings"]["categorical"]
    assert view["name"] == "view" and sum(view["probabilities"].values()) == pytest.approx(1)
    assert body["preview"].startswith("data:image/webp;base64,")
    assert set(body["timing_ms"]) == {"decode", "embed", "search"}


def test_preview_plays_the_decoded_frames(client, served):
    import base64

    preview = _upload(client, served["avi"]).json()["preview"]
    image = Image.open(io.BytesIO(base64.b64decode(preview.split(",", 1)[1])))
    assert image.format == "WEBP" and image.n_frames == 32


def test_video_search_ranks_every_report_once(client, served):
    hits = _upload(client, served["avi"], k=8).json()["results"]
    assert len(hits) == 8 and len({h["study_id"] for h in hits}) == 8


def test_zeroshot_endpoint(client, served):
    r = _upload(client, served["avi"], url="/api/zeroshot")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["findings"]["ejection_fraction"]["method"] == "echoclip_rank"
    assert "results" not in body and "preview" not in body


def test_zeroshot_of_a_dicom(client, served, tmp_path):
    dicom = write_patient_dicom(tmp_path / "study.dcm", served["avi"])
    r = _upload(client, dicom, url="/api/zeroshot")
    assert r.status_code == 200, r.text
    assert r.json()["video"]["frames"] == 32


def test_text_search_returns_videos_with_thumbnails(client):
    r = client.post("/api/search/text", json={"text": "SEVERELY REDUCED LV FUNCTION.", "k": 3})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all(h["thumbnail"] == f"/api/videos/{h['row']}/thumbnail" for h in hits)
    assert "video_path" not in hits[0]  # server paths stay on the server
    thumb = client.get(hits[0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (32, 32)


def test_text_search_asks_for_at_most_the_index(client):
    r = client.post("/api/search/text", json={"text": "NORMAL STUDY.", "k": 50})
    assert r.status_code == 200 and len(r.json()["results"]) == 8


@pytest.mark.parametrize(
    "payload",
    [
        {"text": ""},
        {"text": "   "},
        {"text": "x", "k": 0},
        {"text": "x", "k": 51},
        {"k": 3},
        {"text": "x" * 2001},
    ],
    ids=["empty", "blank", "k0", "k51", "no-text", "too-long"],
)
def test_bad_text_queries_are_refused(client, payload):
    r = client.post("/api/search/text", json=payload)
    assert r.status_code == 422 and r.json()["detail"]


def test_unknown_thumbnail_is_404(client):
    r = client.get("/api/videos/8/thumbnail")
    assert r.status_code == 404 and r.json() == {"detail": "no video 8: the index has 8"}
    assert client.get("/api/videos/-1/thumbnail").status_code == 422


def _bad(client, tmp_path, name, data, url="/api/search/video"):
    path = tmp_path / name
    path.write_bytes(data)
    r = _upload(client, path, url=url)
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    assert str(tmp_path) not in detail and "echoclip-upload-" not in detail  # no server paths
    return r.status_code, detail


@pytest.mark.parametrize("url", ["/api/search/video", "/api/zeroshot"])
def test_bad_uploads_get_a_readable_4xx(client, served, tmp_path, url):
    status, detail = _bad(client, tmp_path, "notes.txt", b"LV EJECTION FRACTION IS 55%.\n" * 20, url)
    assert status == 422 and detail.startswith("notes.txt: not a readable video container")

    avi = served["avi"].read_bytes()
    status, detail = _bad(client, tmp_path, "cut.avi", avi[: len(avi) // 2], url)
    assert status == 422 and detail.startswith("cut.avi: AVI file is truncated")

    assert _bad(client, tmp_path, "empty.avi", b"", url) == (400, "empty.avi: the file is empty")

    status, detail = _bad(client, tmp_path, "big.avi", np.zeros(2**20 + 1, np.uint8).tobytes(), url)
    assert status == 413 and detail == "the upload is larger than the limit of 1 MB"

    nopix = write_patient_dicom(tmp_path / "nopix.dcm", served["avi"], with_pixels=False)
    status, detail = _bad(client, tmp_path, nopix.name, nopix.read_bytes(), url)
    assert status == 422 and detail.startswith("nopix.dcm: no pixel data")


def test_upload_without_a_file_is_422(client):
    r = client.post("/api/search/video")
    assert r.status_code == 422 and r.json()["detail"]


def test_a_folder_in_the_upload_name_is_dropped(client, served):
    r = _upload(client, served["avi"], name="../../etc/a b$.avi")
    assert r.status_code == 200 and r.json()["video"]["file"] == "a b_.avi"


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(5):
            yield b"\0" * 300_000

    r = client.post(
        "/api/search/video", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 413 and "limit of 1 MB" in r.json()["detail"]


def test_page_and_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http" not in page.text.replace('href="/docs"', "")  # nothing fetched from elsewhere
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text  # the API page works offline too
    scripts = re.findall(r'src="([^"]+\.js)"', docs.text)
    assert scripts and all(client.get(src).status_code == 200 for src in scripts)
    assert "/api/search/video" in client.get("/openapi.json").json()["paths"]


def test_a_missing_index_fails_at_start(served, tmp_path):
    from echoclip.errors import DataError
    from echoclip.serve.app import create_app

    with pytest.raises(DataError, match="no index here"):
        create_app(served["model"], tmp_path)


def test_relative_video_paths_start_from_the_root_the_index_records(served, tmp_path):
    """An index keeps video paths relative to its data set and records where that is: the
    page shows stills without being told, and --video-root points elsewhere when the data moved."""
    import json
    import shutil

    import pandas as pd
    from fastapi.testclient import TestClient

    from echoclip.serve.app import create_app

    meta = pd.read_parquet(served["index"] / "videos" / "metadata.parquet")
    assert not any(Path(p).is_absolute() for p in meta["video_path"])
    r = TestClient(create_app(served["model"], served["index"])).get("/api/videos/0/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"

    index = shutil.copytree(served["index"], tmp_path / "idx")
    info_file = index / "videos" / "info.json"
    info = json.loads(info_file.read_text())
    moved = shutil.copytree(info["video_root"], tmp_path / "moved")
    info_file.write_text(json.dumps({**info, "video_root": str(tmp_path / "gone")}))
    assert TestClient(create_app(served["model"], index)).get("/api/videos/0/thumbnail").json() == {
        "detail": "the file of video 0 cannot be read on the server"
    }
    client = TestClient(create_app(served["model"], index, video_root=moved))
    r = client.get("/api/videos/0/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def _upload_study(client, paths, url="/api/search/video", **params):
    files = [("file", (Path(p).name, Path(p).read_bytes())) for p in paths]
    return client.post(url, files=files, params=params)


@pytest.mark.parametrize("url", ["/api/search/video", "/api/zeroshot"])
def test_several_files_of_one_study_are_answered_for_the_study(client, app, served, tmp_path, url):
    import pandas as pd

    manifest = pd.read_parquet(served["sim"] / "manifest.parquet")
    paths = [served["sim"] / p for p in manifest["video_path"][:3]]
    bad = tmp_path / "notes.avi"
    bad.write_bytes(b"not a video")
    r = _upload_study(client, [*paths, bad], url, **({"k": 3} if "search" in url else {}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["level"] == "study" and [v["file"] for v in body["videos"]] == [p.name for p in paths]
    assert body["video"]["file"] == paths[0].name
    assert [s["file"] for s in body["skipped"]] == ["notes.avi"]
    # the study's answer is that of its pooled embedding: the mean of its videos' (the tiny model has no pooling)
    engine = app.state.engine
    emb = np.stack([engine.embed_video(load_video(p))[0] for p in paths])
    mean = emb.mean(axis=0)
    expected = engine.zero_shot(mean / np.linalg.norm(mean))
    assert body["findings"]["ejection_fraction"]["value"] == pytest.approx(
        expected["ejection_fraction"]["value"], abs=1e-3
    )
    single = _upload(client, paths[0], url).json()
    assert single["level"] == "video" and single["skipped"] == [] and len(single["videos"]) == 1


def test_a_study_with_no_readable_file_is_422(client, tmp_path):
    paths = []
    for name in ("a.avi", "b.dcm"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(b"nothing here")
    r = _upload_study(client, paths, "/api/zeroshot")
    assert r.status_code == 422
    assert r.json()["detail"].startswith("none of the 2 files of the study is a readable video: a.avi")


def test_the_page_asks_the_prompt_sets_it_is_given(served, tmp_path):
    from fastapi.testclient import TestClient

    from echoclip.serve.app import create_app
    from echoclip.zeroshot.corpus_prompts import prompt_set_from_reports
    from echoclip.zeroshot.prompts import save_prompt_set

    reports = ["The left ventricle is severely dilated.", "The left ventricle is normal in size."]
    findings = save_prompt_set(prompt_set_from_reports(reports, "findings"), tmp_path / "findings.json")
    app = create_app(served["model"], served["index"], device="cpu", prompt_sets=["devices", str(findings)])
    assert app.state.engine.prompt_sets[1].targets["lv_dilation"].positive == (reports[0],)
    body = _upload(TestClient(app), served["avi"], k=2).json()
    binary = {b["name"] for b in body["findings"]["binary"]}
    assert {"pacemaker", "lv_dilation"} <= binary
    assert body["findings"]["ejection_fraction"] is None and body["findings"]["categorical"] == []


@pytest.mark.parametrize(
    ("prompts", "message"), [(",", "names no prompt set"), ("no-such-set", "no-such-set")]
)
def test_serve_refuses_bad_prompts_in_one_line(served, prompts, message, capsys):
    from echoclip.cli.main import main

    assert (
        main(
            ["serve", "--model", str(served["model"]), "--index", str(served["index"]), "--prompts", prompts]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
