"""A DICOM naming a patient, uploaded: the name and id appear in no response, page or log line."""

from __future__ import annotations

import logging

from .conftest import PATIENT_ID, PATIENT_NAME, write_patient_dicom

SECRETS = (PATIENT_NAME, PATIENT_ID, "Zyxwvutson", "Quintrella", "19410203", "Qorvath")


def _assert_clean(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"patient data leaked: {leaked}"


def test_patient_fields_reach_no_response_page_or_log(client, served, tmp_path, caplog):
    good = write_patient_dicom(tmp_path / "study.dcm", served["avi"])
    nopix = write_patient_dicom(tmp_path / "nopix.dcm", served["avi"], with_pixels=False)
    data = good.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 3])  # header whole, pixel data cut short
    bodies = []
    with caplog.at_level(logging.DEBUG):
        for path in (good, nopix, cut):
            for url in ("/api/search/video", "/api/zeroshot"):
                with open(path, "rb") as f:
                    r = client.post(url, files={"file": (path.name, f, "application/dicom")})
                bodies.append(r.text)
                assert r.status_code == (200 if path is good else 422), r.text
        # the file sent as a plain form field, not a file: refused without echoing it
        r = client.post("/api/zeroshot", data={"file": data.decode("latin-1")})
        assert r.status_code == 422
        bodies.append(r.text)
        bodies.append(client.post("/api/search/text", json={"text": "NORMAL STUDY."}).text)
        bodies.append(client.get("/").text)
        bodies.append(client.get("/static/app.js").text)
    assert PATIENT_ID in data.decode("latin-1")  # the file does carry them
    for body in bodies:
        _assert_clean(body)
    assert caplog.records, "nothing was logged; the log check would prove nothing"
    for record in caplog.records:
        _assert_clean(record.getMessage())
