"""A server started with a section index and reference reports: the draft report of an upload,
each section with its source study and similarity, and neighbour labels beside the prompts'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from .conftest import NEIGHBOURS_K


def _upload(client, path, url="/api/search/video", **params):
    with open(path, "rb") as f:
        return client.post(url, files={"file": (path.name, f)}, params=params)


def test_health_says_what_drafts_and_neighbours_are_served(drafting_client, client, served):
    body = drafting_client.get("/api/health").json()
    assert body["sections"][0] == "lv" and "comparison" not in body["sections"]
    train = pd.read_parquet(served["sim"] / "manifest.parquet").query("split == 'train'")
    assert body["neighbours"] == train["study_id"].nunique()
    plain = client.get("/api/health").json()
    assert plain["sections"] is None and plain["neighbours"] is None


def test_video_search_carries_the_draft_with_each_sections_source(drafting_client, served):
    r = _upload(drafting_client, served["avi"])
    assert r.status_code == 200, r.text
    draft = r.json()["draft"]
    manifest = pd.read_parquet(served["sim"] / "manifest.parquet")
    reports = dict(zip(manifest["study_id"].astype(str), manifest["report"], strict=False))
    names = [s["name"] for s in draft["sections"]]
    assert names[0] == "lv" and "comparison" not in names
    from echoclip.zeroshot.sections import split_sections

    assert draft["presence_k"] == 8  # the nearest whole reports that voted: all 8 indexed
    for s in draft["sections"]:
        if s["presence"] < 0.5:  # most of the nearest reports have no such section: nor has the draft
            assert s["text"] == "" and s["study_id"] is None and s["message"].startswith("not drafted")
            continue
        assert s["message"] is None and -1 <= s["similarity"] <= 1.0001
        assert s["text"] == split_sections(reports[s["study_id"]])[s["name"]]  # that study's section
    assert draft["sections"][0]["presence"] == 1.0  # every report has an LV section
    assert draft["text"].startswith(draft["sections"][0]["heading"] + ": ")
    for patient in manifest["patient_id"].astype(str):  # sources are studies, never patients
        assert patient not in r.text


def test_draft_endpoint_and_a_server_without_sections(drafting_client, client, served):
    r = _upload(drafting_client, served["avi"], url="/api/draft")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["draft"]["sections"] and set(body["timing_ms"]) == {"decode", "embed", "draft"}
    searched = _upload(drafting_client, served["avi"]).json()["draft"]
    assert body["draft"] == searched  # one video, one draft

    r = _upload(client, served["avi"], url="/api/draft")
    assert r.status_code == 404 and "no section index" in r.json()["detail"]
    assert _upload(client, served["avi"]).json()["draft"] is None


def test_draft_endpoint_drafts_a_study_from_several_files(drafting_client, served, tmp_path):
    manifest = pd.read_parquet(served["sim"] / "manifest.parquet")
    paths = [served["sim"] / p for p in manifest["video_path"][:3]]
    bad = tmp_path / "notes.avi"
    bad.write_bytes(b"not a video")
    files = [("file", (p.name, p.read_bytes())) for p in [*paths, bad]]
    r = drafting_client.post("/api/draft", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["level"] == "study" and [v["file"] for v in body["videos"]] == [p.name for p in paths]
    assert [s["file"] for s in body["skipped"]] == ["notes.avi"]
    # the study's draft is the one its video search carries: both draft the pooled embedding
    files = [("file", (p.name, p.read_bytes())) for p in paths]
    searched = drafting_client.post("/api/search/video", files=files).json()
    assert searched["level"] == "study" and body["draft"] == searched["draft"]
    single = _upload(drafting_client, paths[0], url="/api/draft").json()
    assert single["level"] == "video" and single["draft"]["sections"]


def test_neighbour_labels_sit_beside_the_prompt_predictions(drafting_client, client, served):
    from echoclip.data.video import load_video
    from echoclip.zeroshot.neighbours import load_neighbours

    findings = _upload(drafting_client, served["avi"]).json()["findings"]
    assert findings["neighbours_k"] == NEIGHBOURS_K
    binary = {b["name"]: b for b in findings["binary"]}
    assert all(0 <= binary[n]["neighbours"] <= 1 for n in ("pacemaker", "tavr", "pericardial_effusion"))
    assert all(0 <= b["probability"] <= 1 for b in binary.values())  # the prompts' answer stays

    # by hand: the share of the 3 most similar training reports whose study has a pacemaker
    engine = drafting_client.app.state.engine
    emb, _ = engine.embed_video(load_video(served["avi"]))
    refs = load_neighbours(served["emb"])
    nearest = np.argsort(-(refs.embeddings @ emb))[:NEIGHBOURS_K]
    expected = refs.labels["device_pacemaker"].astype(float).to_numpy()[nearest].mean()
    assert binary["pacemaker"]["neighbours"] == pytest.approx(expected)
    ef = findings["ejection_fraction"]
    ef_values = refs.labels["ef"].to_numpy(float)[nearest]
    assert ef_values.min() - 1e-6 <= ef["neighbours"] <= ef_values.max() + 1e-6

    plain = _upload(client, served["avi"]).json()["findings"]
    assert plain["neighbours_k"] is None and plain["ejection_fraction"]["neighbours"] is None
    assert all(b["neighbours"] is None for b in plain["binary"])


def test_a_section_index_of_another_model_fails_at_start(served, tmp_path):
    import json
    import shutil

    from echoclip.errors import package_errors
    from echoclip.serve.app import create_app

    other = shutil.copytree(served["sections"], tmp_path / "sections")
    info_file = other / "lv" / "info.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "model": {"name": "other", "hash": "0" * 64}}))
    with pytest.raises(package_errors(), match="not the model given"):
        create_app(served["model"], served["index"], sections=other)
